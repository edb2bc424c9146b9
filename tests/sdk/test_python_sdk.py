#!/usr/bin/python3
"""The Python SDK (sdk/python/quiver_client) against a live quiver-node --dev.

One node is started for the whole suite (--gossip off, gRPC on a free port read from its ready
line) and killed in tearDownClass; every test works in collections of its own. Covered: every
Client method, payload round trips of every value type, numeric and UUID ids, text and dict
filters, the error classes, automatic splitting of upserts (by count and by bytes), the scroll
generator, and numpy input when numpy is importable.

Usage: test_python_sdk.py --node build/bin/quiver-node --stubs build/python [unittest options]
(quiver_client is found through PYTHONPATH=sdk/python, or relative to this file.)
"""
import argparse
import array
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

ARGS = None

try:
    import numpy
except ImportError:  # optional: the SDK must work without it
    numpy = None


def _import_sdk():
    try:
        import quiver_client
    except ImportError:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(here, "..", "..", "sdk", "python"))
        import quiver_client
    return quiver_client


qc = _import_sdk()


def start_node(data_dir, log_dir, extra=()):
    """quiver-node --dev on a free port; returns (process, port). stdout/stderr go to files (no
    pipe can fill up and stall the node)."""
    out_path = os.path.join(log_dir, "node.stdout")
    out = open(out_path, "w")
    err = open(os.path.join(log_dir, "node.stderr"), "w")
    proc = subprocess.Popen(
        [ARGS.node, "--dev", "--data", data_dir, "--grpc", "127.0.0.1:0", "--gossip", "off",
         "--log-level", "warn", *extra], stdout=out, stderr=err)
    out.close()
    err.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(out_path) as f:
            m = re.search(r"quiver-node ready: .*\bport=(\d+)", f.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    with open(os.path.join(log_dir, "node.stderr")) as f:
        raise RuntimeError(f"quiver-node did not become ready: {f.read()[-2000:]}")


def stop_node(proc, tmp):
    """Kills the node, removes its directory; fails if a sanitizer reported anything."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    try:
        with open(os.path.join(tmp, "node.stderr"), errors="replace") as f:
            log = f.read()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # A sanitizer build reports on stderr (UBSan without stopping the node).
    if any("Sanitizer" in ln or "runtime error:" in ln for ln in log.splitlines()):
        raise AssertionError("quiver-node reported sanitizer errors:\n" + log[-4000:])


class SdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="quiver-pysdk-")
        cls.proc, cls.port = start_node(os.path.join(cls.tmp, "data"), cls.tmp)
        cls.target = f"127.0.0.1:{cls.port}"
        cls.db = qc.Client(cls.target, timeout=120, stubs_dir=ARGS.stubs)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.db.close()
        finally:
            stop_node(cls.proc, cls.tmp)

    _seq = 0

    def new_collection(self, dim=4, **kw):
        SdkTest._seq += 1
        name = f"{self._testMethodName[5:][:40]}-{SdkTest._seq}".replace("_", "-")
        info = self.db.create_collection(name, dim, **kw)
        self.assertEqual(info.name, name)
        return name

    # -- health, status, members -----------------------------------------------------------------
    def test_health(self):
        self.assertIs(self.db.health(), True)
        self.assertIs(self.db.health("quiver.v1.Points"), True)
        with self.assertRaises(qc.NotFound) as cm:
            self.db.health("no.such.Service")
        self.assertEqual(cm.exception.code, "NOT_FOUND")

    def test_status(self):
        st = self.db.status()
        self.assertIsInstance(st, qc.NodeStatus)
        self.assertEqual(st.mode, "dev")
        self.assertTrue(st.healthy)
        self.assertTrue(st.node_id)
        self.assertTrue(st.version)
        self.assertEqual(st.grpc_address.rsplit(":", 1)[1], str(self.port))
        self.assertEqual(st.members_alive, 1)
        self.assertIsNotNone(st.raw)

    def test_members(self):
        ms = self.db.members()
        self.assertEqual(len(ms), 1)
        m = ms[0]
        self.assertIsInstance(m, qc.Member)
        self.assertEqual(m.state, "alive")
        self.assertEqual(m.role, "dev")
        self.assertTrue(m.is_self)
        self.assertEqual(m.id, self.db.status().node_id)
        self.assertIn("cpu", m.load)

    # -- collections -----------------------------------------------------------------------------
    def test_create_describe_list_drop(self):
        name = "lifecycle-coll"
        info = self.db.create_collection(name, 8, metric="cosine", index="hnsw", m=8,
                                         ef_construction=100, ef_search=32)
        self.assertIsInstance(info, qc.CollectionInfo)
        self.assertEqual((info.dim, info.metric, info.index), (8, "cosine", "hnsw"))
        self.assertEqual((info.m, info.ef_construction, info.ef_search), (8, 100, 32))
        self.assertEqual((info.shards, info.replication), (1, 1))
        self.assertIs(info.created, True)
        self.assertGreater(info.uid, 0)

        again = self.db.create_collection(name, 8, metric="cosine", m=8, ef_construction=100,
                                          ef_search=32, if_not_exists=True)
        self.assertIs(again.created, False)
        self.assertEqual(again.uid, info.uid)
        with self.assertRaises(qc.AlreadyExists) as cm:
            self.db.create_collection(name, 8, metric="cosine")
        self.assertEqual(cm.exception.code, "ALREADY_EXISTS")
        with self.assertRaises(qc.AlreadyExists):
            self.db.create_collection(name, 16, metric="cosine", if_not_exists=True)

        d = self.db.describe(name)
        self.assertEqual((d.name, d.dim, d.metric, d.m, d.uid), (name, 8, "cosine", 8, info.uid))
        self.assertIsNone(d.created)
        self.assertEqual(d.status, "ready")

        self.assertIn(name, self.db.list_collections())
        names = self.db.list_collections()
        self.assertEqual(names, sorted(names))
        infos = self.db.list_collections(with_info=True)
        self.assertEqual([i.name for i in infos], names)
        self.assertEqual(next(i for i in infos if i.name == name).uid, info.uid)

        self.assertIs(self.db.drop(name), True)
        self.assertNotIn(name, self.db.list_collections())
        with self.assertRaises(qc.NotFound):
            self.db.describe(name)
        with self.assertRaises(qc.NotFound):
            self.db.drop(name)
        self.assertIs(self.db.drop(name, if_exists=True), False)

    def test_index_types_and_parameters(self):
        flat = self.db.describe(self.new_collection(index="flat", metric="dot"))
        self.assertEqual((flat.index, flat.metric, flat.m, flat.nlist), ("flat", "dot", None, None))
        int8 = self.db.describe(self.new_collection(index="hnsw-int8", m=12))
        self.assertEqual((int8.index, int8.m), ("hnsw-int8", 12))
        ivf = self.db.describe(self.new_collection(index="ivf-flat", nlist=8, nprobe=2,
                                                   training_sample=100))
        self.assertEqual((ivf.index, ivf.nlist, ivf.nprobe, ivf.training_sample),
                         ("ivf-flat", 8, 2, 100))
        self.assertIsNone(ivf.m)
        default = self.db.describe(self.new_collection())
        self.assertEqual((default.index, default.metric, default.m, default.ef_search),
                         ("hnsw", "l2", 16, 64))
        # parameters of another index type: the server's INVALID_ARGUMENT
        with self.assertRaises(qc.InvalidArgument):
            self.db.create_collection("ivf-with-m", 4, index="ivf-flat", m=16)
        # the client's own checks
        with self.assertRaises(qc.InvalidArgument):
            self.db.create_collection("bad-metric", 4, metric="manhattan")
        with self.assertRaises(qc.InvalidArgument):
            self.db.create_collection("bad-index", 4, index="lsh")
        with self.assertRaises(ValueError):  # InvalidArgument is a ValueError too
            self.db.create_collection("bad-m", 4, m=-1)

    def test_create_invalid_arguments(self):
        for name, dim in (("bad name!", 4), ("", 4), ("ok-name", 0), ("ok-name", 70000)):
            with self.subTest(name=name, dim=dim):
                with self.assertRaises(qc.InvalidArgument) as cm:
                    self.db.create_collection(name, dim)
                self.assertEqual(cm.exception.code, "INVALID_ARGUMENT")
                self.assertTrue(cm.exception.message)

    # -- points: payloads and ids ----------------------------------------------------------------
    PAYLOAD = {
        "s": "héllo wörld", "empty_s": "", "i": 42, "neg": -7, "zero": 0,
        "i64max": 2 ** 63 - 1, "i64min": -2 ** 63, "f": 2.0, "pi": 3.14159, "negf": -0.5,
        "t": True, "fl": False, "none": None, "lst": [1, "two", 3.0, True, None],
        "nested": [[1, 2], ["a"], []], "empty_l": [],
    }

    def assertPayloadEqual(self, got, want):
        self.assertEqual(set(got), set(want))
        for k, v in want.items():
            self.assertEqual(got[k], v, k)
            self.assertEqual(_types(got[k]), _types(v), f"type of {k}")

    def test_payload_round_trip_every_type(self):
        name = self.new_collection(index="flat")
        self.db.upsert(name, [(1, [1, 0, 0, 0], self.PAYLOAD), (2, [0, 1, 0, 0], None),
                              (3, [0, 0, 1, 0], {})], wait=True)
        p1, p2, p3 = self.db.get(name, [1, 2, 3])
        self.assertPayloadEqual(p1.payload, self.PAYLOAD)
        self.assertEqual((p2.payload, p3.payload), ({}, {}))
        self.assertIsNone(p1.vector)
        hit = self.db.search(name, [1, 0, 0, 0], k=1)[0]
        self.assertEqual(hit.id, 1)
        self.assertPayloadEqual(hit.payload, self.PAYLOAD)
        scrolled = {p.id: p.payload for p in self.db.scroll(name)}
        self.assertPayloadEqual(scrolled[1], self.PAYLOAD)
        # int vs float survives: 2.0 stays a float, 42 an int
        self.assertIsInstance(p1.payload["f"], float)
        self.assertIsInstance(p1.payload["i"], int)
        self.assertIs(p1.payload["t"], True)
        # payload selection
        only = self.db.get(name, 1, with_payload=["s", "i", "missing"])[0].payload
        self.assertEqual(only, {"s": "héllo wörld", "i": 42})
        rest = self.db.get(name, 1, with_payload={"exclude": ["s", "i"]})[0].payload
        self.assertEqual(set(rest), set(self.PAYLOAD) - {"s", "i"})
        self.assertIsNone(self.db.get(name, 1, with_payload=False)[0].payload)
        # values that cannot be encoded are refused before sending
        for bad in ({"d": {"x": 1}}, {"o": object()}, {1: "x"}, {"big": 2 ** 63}):
            with self.subTest(bad=bad), self.assertRaises(qc.InvalidArgument):
                self.db.upsert(name, [(9, [1, 1, 1, 1], bad)])
        # what the server validates: NaN in a payload
        with self.assertRaises(qc.InvalidArgument):
            self.db.upsert(name, [(9, [1, 1, 1, 1], {"x": float("nan")})])
        self.assertEqual(self.db.count(name), 3)

    def test_int_and_uuid_ids(self):
        name = self.new_collection(index="flat")
        u1 = "123E4567-E89B-12D3-A456-426614174000"
        u2 = uuid.UUID("00000000-0000-4000-8000-000000000001")
        pts = [(0, [1, 0, 0, 0]), (2 ** 64 - 1, [0, 1, 0, 0]), (u1, [0, 0, 1, 0]),
               {"id": u2, "vector": [0, 0, 0, 1], "payload": {"k": "u2"}},
               {"id": 1, "vector": [1, 1, 0, 0]}]
        r = self.db.upsert(name, pts, wait=True)
        self.assertEqual((r.points, r.requests, r.status), (5, 1, "applied"))
        self.assertGreater(r.log_index, 0)
        got = self.db.get(name, [u1.lower(), 2 ** 64 - 1, 0, str(u2), 1, 12345])
        self.assertEqual([p.id for p in got], [u1.lower(), 2 ** 64 - 1, 0, str(u2), 1])
        self.assertEqual(got[3].payload, {"k": "u2"})
        # numeric and UUID ids are separate spaces; UUIDs come back lower-case
        ids = [p.id for p in self.db.scroll(name)]
        self.assertEqual(sorted(ids, key=str), sorted([0, 1, 2 ** 64 - 1, u1.lower(), str(u2)],
                                                      key=str))
        self.assertTrue(all(isinstance(i, int) for i in ids[:3]))  # numeric before UUIDs
        self.assertTrue(all(isinstance(i, str) for i in ids[3:]))
        # a malformed UUID: the server's INVALID_ARGUMENT; a negative id, a bool: the client's
        for bad in ("not-a-uuid", -1, 2 ** 64, True, 1.5):
            with self.subTest(bad=bad), self.assertRaises(qc.InvalidArgument):
                self.db.upsert(name, [(bad, [1, 1, 1, 1])])
        with self.assertRaises(qc.InvalidArgument):
            self.db.get(name, ["zz"])

    def test_vector_input_forms(self):
        name = self.new_collection(index="flat")
        pts = [(1, [1, 2, 3, 4]), (2, (1.5, 2.5, 3.5, 4.5)), (3, array.array("f", [4, 3, 2, 1])),
               (4, array.array("d", [0.25, 0.5, 0.75, 1.0])), (5, range(4))]
        self.db.upsert(name, pts, wait=True)
        got = {p.id: p.vector for p in self.db.get(name, [1, 2, 3, 4, 5], with_vectors=True)}
        self.assertEqual(got, {1: [1, 2, 3, 4], 2: [1.5, 2.5, 3.5, 4.5], 3: [4, 3, 2, 1],
                               4: [0.25, 0.5, 0.75, 1.0], 5: [0, 1, 2, 3]})
        hit = self.db.search(name, array.array("f", [4, 3, 2, 1]), k=1, with_vectors=True)[0]
        self.assertEqual((hit.id, hit.vector), (3, [4, 3, 2, 1]))
        for bad in ("abcd", [1, "x", 3, 4], None, {"a": 1}):
            with self.subTest(bad=bad), self.assertRaises(qc.InvalidArgument):
                self.db.upsert(name, [(9, bad)])
        for bad in ((9,), (9, [1, 2, 3, 4], None, "extra"), {"id": 9}, {"id": 9, "vec": [1]}):
            with self.subTest(bad=bad), self.assertRaises(qc.InvalidArgument):
                self.db.upsert(name, [bad])
        # what the server validates: dimension and NaN
        with self.assertRaises(qc.InvalidArgument) as cm:
            self.db.upsert(name, [(9, [1, 2, 3])])
        self.assertEqual(cm.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(qc.InvalidArgument):
            self.db.upsert(name, [(9, [1, 2, 3, float("nan")])])
        with self.assertRaises(qc.InvalidArgument):
            self.db.search(name, [1, 2, 3])
        self.assertEqual(self.db.count(name), 5)  # the failed batches wrote nothing

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_numpy_input(self):
        np = numpy
        name = self.new_collection(dim=8, index="flat")
        rng = np.random.default_rng(7)
        vecs = rng.standard_normal((50, 8)).astype(np.float32)
        pts = [(np.uint64(i), vecs[i], {"i": np.int64(i), "f": np.float32(0.5),
                                        "b": np.bool_(i % 2 == 0), "arr": np.arange(3)})
               for i in range(50)]
        r = self.db.upsert(name, pts, wait=True)
        self.assertEqual(r.points, 50)
        p = self.db.get(name, [np.int32(7)], with_vectors=True)[0]
        self.assertEqual(p.id, 7)
        np.testing.assert_array_equal(np.array(p.vector, dtype=np.float32), vecs[7])
        self.assertEqual(p.payload, {"i": 7, "f": 0.5, "b": False, "arr": [0, 1, 2]})
        self.assertIsInstance(p.payload["i"], int)
        self.assertIsInstance(p.payload["f"], float)
        self.assertIs(p.payload["b"], False)
        hits = self.db.search(name, vecs[3].astype(np.float64), k=3)
        self.assertEqual(hits[0].id, 3)
        batch = self.db.search_batch(name, vecs[:5], k=1)
        self.assertEqual([h[0].id for h in batch], [0, 1, 2, 3, 4])
        rec = self.db.recommend(name, vecs[10], k=1)  # one numpy vector as the example
        self.assertEqual(rec[0].id, 10)
        with self.assertRaises(qc.InvalidArgument):
            self.db.search(name, vecs[:2])  # 2-D query

    # -- search, batch, recommend, count ---------------------------------------------------------
    def _grid(self, n=100, **kw):
        """A flat collection of n points on a line: id i at (i, 0, 0, 0), payload label = i % 10,
        name = "p<i>", even = (i % 2 == 0), price = i / 4 (float); every 10th has tag = None and
        no price; the others tags = ["t<i%3>", "all"]."""
        name = self.new_collection(index="flat", **kw)
        pts = []
        for i in range(n):
            pl = {"label": i % 10, "name": f"p{i}", "even": i % 2 == 0}
            if i % 10 == 0:
                pl["tag"] = None
            else:
                pl["price"] = i / 4
                pl["tags"] = [f"t{i % 3}", "all"]
            pts.append((i, [float(i), 0, 0, 0], pl))
        self.db.upsert(name, pts, wait=True)
        return name

    def test_search(self):
        name = self._grid()
        hits = self.db.search(name, [10.2, 0, 0, 0], k=3)
        self.assertEqual([h.id for h in hits], [10, 11, 9])
        self.assertIsInstance(hits[0], qc.ScoredPoint)
        self.assertAlmostEqual(hits[0].distance, 0.04, places=4)
        self.assertEqual(hits[1].payload["name"], "p11")
        self.assertIsNone(hits[0].vector)
        # default k is 10; offset paginates
        self.assertEqual(len(self.db.search(name, [0, 0, 0, 0])), 10)
        page2 = self.db.search(name, [0, 0, 0, 0], k=3, offset=3, with_payload=False)
        self.assertEqual([h.id for h in page2], [3, 4, 5])
        self.assertIsNone(page2[0].payload)
        # max_distance (squared L2), exact, ef, vectors
        near = self.db.search(name, [50, 0, 0, 0], k=100, max_distance=4.0, exact=True, ef=50,
                              with_vectors=True)
        self.assertEqual(sorted(h.id for h in near), [48, 49, 50, 51, 52])
        self.assertEqual(near[0].vector, [50, 0, 0, 0])
        # text filter and dict filter give the same answers
        t = self.db.search(name, [0, 0, 0, 0], k=5, filter="label = 3 and price < 20")
        self.assertEqual([h.id for h in t], [3, 13, 23, 33, 43])
        d = self.db.search(name, [0, 0, 0, 0], k=5, filter={"must": [
            {"field": "label", "match": 3}, {"field": "price", "range": {"lt": 20}}]})
        self.assertEqual([h.id for h in d], [h.id for h in t])
        self.assertEqual([h.id for h in self.db.search(name, [0, 0, 0, 0], k=3,
                                                       filter={"label": 7, "even": False})],
                         [7, 17, 27])
        with self.assertRaises(qc.InvalidArgument):
            self.db.search(name, [0, 0, 0, 0], k=10001)
        with self.assertRaises(qc.InvalidArgument):
            self.db.search(name, [0, 0, 0, 0], filter="label = ")
        with self.assertRaises(qc.NotFound):
            self.db.search("no-such-collection", [0, 0, 0, 0])

    def test_search_batch(self):
        name = self._grid()
        res = self.db.search_batch(name, [[5, 0, 0, 0], (20, 0, 0, 0), array.array("f",
                                                                                 [99, 0, 0, 0])],
                                   k=2, filter="even = true", with_payload=["name"])
        self.assertEqual([[h.id for h in r] for r in res], [[4, 6], [20, 18], [98, 96]])
        self.assertEqual(res[0][0].payload, {"name": "p4"})
        many = self.db.search_batch(name, [[float(i % 100), 0, 0, 0] for i in range(1500)], k=1)
        self.assertEqual(len(many), 1500)  # over 1,024 queries: two requests
        self.assertEqual([r[0].id for r in many[1020:1030]], [i % 100 for i in range(1020, 1030)])
        self.assertEqual(self.db.search_batch(name, []), [])
        with self.assertRaises(qc.InvalidArgument):
            self.db.search_batch(name, [[1, 2, 3, 4], [1, 2]])

    def test_recommend(self):
        name = self._grid()
        recs = self.db.recommend(name, positive=[20, 22], k=3)
        self.assertEqual([h.id for h in recs][:1], [21])  # mean of 20 and 22; examples excluded
        self.assertNotIn(20, [h.id for h in recs])
        self.assertNotIn(22, [h.id for h in recs])
        neg = self.db.recommend(name, positive=[50], negative=[40], k=3)  # query 2*50-40 = 60
        self.assertEqual([h.id for h in neg], [60, 59, 61])
        best = self.db.recommend(name, positive=[30, 70], strategy="best", k=4)
        self.assertEqual(sorted(h.id for h in best), [29, 31, 69, 71])
        vec = self.db.recommend(name, positive=[[80, 0, 0, 0]], negative=[90], k=2,
                                filter={"must_not": [{"field": "even", "match": True}]})
        self.assertEqual([h.id for h in vec], [69, 71])  # query 2*80-90 = 70, odd ids only
        single = self.db.recommend(name, 5, k=1, filter="label != 4 and label != 6")
        self.assertEqual([h.id for h in single], [3])
        with self.assertRaises(qc.NotFound):
            self.db.recommend(name, positive=[12345])
        with self.assertRaises(qc.InvalidArgument):
            self.db.recommend(name, positive=[])
        with self.assertRaises(qc.InvalidArgument):
            self.db.recommend(name, positive=[1], strategy="median")

    def test_filters_text_and_dict(self):
        name = self._grid()
        cases = [
            ("label = 3", {"label": 3}, 10),
            ("name = 'p42'", {"must": {"field": "name", "match": "p42"}}, 1),
            ("even = true", {"even": True}, 50),
            ("label in [1, 2]", {"label": [1, 2]}, 20),
            ("tags in ['t0']", {"tags": ["t0"]}, 30),
            ("label not in [0, 1, 2]", {"must": [{"field": "label", "except": [0, 1, 2]}]}, 70),
            ("name not in ['p1', 'p2']", {"must": [{"field": "name", "except": ["p1", "p2"]}]},
             98),
            ("price >= 10 and price < 20",
             {"must": [{"field": "price", "gte": 10, "lt": 20}]}, 36),
            ("price > 24.5", {"must": [{"field": "price", "range": {"gt": 24.5}}]}, 1),
            ("tag is null", {"must": [{"is_null": "tag"}]}, 10),
            ("tag is null", {"tag": None}, 10),
            ("price is empty", {"must": [{"is_empty": "price"}]}, 10),
            ("id in [1, 2, 3, 500]", {"must": [{"has_id": [1, 2, 3, 500]}]}, 3),
            ("label = 1 or label = 2", {"should": [{"field": "label", "match": 1},
                                                   {"field": "label", "match": 2}]}, 20),
            ("not (even = true)", {"must_not": [{"field": "even", "match": True}]}, 50),
            ("(label = 1 or label = 3) and even = false",
             {"must": [{"should": [{"field": "label", "match": 1},
                                   {"field": "label", "match": 3}]},
                       {"field": "even", "match": False}]}, 20),
        ]
        for text, d, want in cases:
            with self.subTest(text=text, dict=d):
                self.assertEqual(self.db.count(name, text), want)
                self.assertEqual(self.db.count(name, d, exact=True), want)
                self.assertEqual(len(list(self.db.scroll(name, filter=d, limit=7))), want)
        # min_should: at least 2 of 3
        two_of = {"should": [{"field": "label", "match": 1}, {"field": "even", "match": False},
                             {"field": "price", "range": {"lt": 5}}], "min_should": 2}
        want = sum(1 for i in range(100)
                   if (i % 10 == 1) + (i % 2 == 1) + (i % 10 != 0 and i / 4 < 5) >= 2)
        self.assertEqual(self.db.count(name, two_of), want)
        # the raw proto Filter passes through
        raw = self.db.pb.common.Filter(must=[self.db.pb.common.Condition(
            match=self.db.pb.common.FieldMatch(field="label", integer=5))])
        self.assertEqual(self.db.count(name, raw), 10)
        # malformed: client-side (dict) and server-side (text)
        for bad in ({"must": [{"field": "label"}]}, {"must": [{"wat": 1}]},
                    {"must": [], "label": 3}, {"label": 1.5}, {"label": [1, "a"]},
                    {"must": [{"field": "price", "range": {"gt": "x"}}]}, 42):
            with self.subTest(bad=bad), self.assertRaises(qc.InvalidArgument):
                self.db.count(name, bad)
        for bad in ("label = ", "label ==== 3", "(label = 3"):
            with self.subTest(bad=bad), self.assertRaises(qc.InvalidArgument) as cm:
                self.db.count(name, bad)
            self.assertEqual(cm.exception.code, "INVALID_ARGUMENT")

    def test_count(self):
        name = self._grid(n=30)
        self.assertEqual(self.db.count(name), 30)
        self.assertEqual(self.db.count(name, exact=True), 30)
        self.assertEqual(self.db.count(name, "label < 5"), 15)
        with self.assertRaises(qc.NotFound):
            self.db.count("no-such-collection")

    # -- get, delete, scroll ---------------------------------------------------------------------
    def test_get(self):
        name = self._grid(n=20)
        got = self.db.get(name, [5, 3, 5, 999, 3], with_vectors=True)
        self.assertEqual([p.id for p in got], [5, 3])  # first occurrences; missing left out
        self.assertIsInstance(got[0], qc.Point)
        self.assertEqual(got[0].vector, [5, 0, 0, 0])
        self.assertEqual(got[0].payload["name"], "p5")
        self.assertGreater(got[0].version, 0)
        self.assertEqual(self.db.get(name, []), [])
        with self.assertRaises(qc.NotFound):
            self.db.get("no-such-collection", [1])

    def test_delete(self):
        name = self._grid()
        r = self.db.delete(name, ids=[1, 2, 3, 1000], wait=True)
        self.assertIsInstance(r, qc.WriteResult)
        self.assertEqual((r.status, r.requests), ("applied", 1))
        self.assertEqual(self.db.count(name), 97)
        self.assertEqual(self.db.get(name, [1, 2, 3, 4])[0].id, 4)
        r = self.db.delete(name, filter="label = 5", wait=True)
        self.assertEqual(r.points, 10)
        self.assertEqual(self.db.count(name), 87)
        r = self.db.delete(name, filter={"must": [{"field": "label", "match": 6},
                                                  {"field": "even", "match": True}]}, wait=True)
        self.assertEqual(r.points, 10)
        self.assertEqual(self.db.count(name, "label = 6"), 0)
        r = self.db.delete(name, ids=7)  # one id; wait=False: committed
        self.assertIn(r.status, ("committed", "applied"))
        _eventually(lambda: self.db.count(name) == 76)
        # exactly one of ids / filter; an empty filter is refused by the server
        with self.assertRaises(qc.InvalidArgument):
            self.db.delete(name)
        with self.assertRaises(qc.InvalidArgument):
            self.db.delete(name, ids=[1], filter="label = 1")
        with self.assertRaises(qc.InvalidArgument):
            self.db.delete(name, filter={})
        with self.assertRaises(qc.NotFound):
            self.db.delete("no-such-collection", ids=[1])
        self.assertEqual(self.db.count(name), 76)

    def test_scroll_generator(self):
        name = self._grid(n=257)
        it = self.db.scroll(name, limit=10)
        self.assertTrue(hasattr(it, "__next__"))
        seen = [p.id for p in it]
        self.assertEqual(seen, list(range(257)))  # every point once, ascending ids
        page = list(self.db.scroll(name, filter="even = true", limit=100, with_payload=False,
                                   with_vectors=True))
        self.assertEqual([p.id for p in page], list(range(0, 257, 2)))
        self.assertIsNone(page[0].payload)
        self.assertEqual(page[1].vector, [2, 0, 0, 0])
        self.assertEqual(list(self.db.scroll(name, filter="label = 99")), [])
        with self.assertRaises(qc.InvalidArgument):
            list(self.db.scroll(name, limit=10001))
        with self.assertRaises(qc.NotFound):
            list(self.db.scroll("no-such-collection"))

    # -- splitting and streaming -----------------------------------------------------------------
    def test_upsert_splits_by_count(self):
        name = self.new_collection(dim=2, index="flat")
        n = 25_000
        r = self.db.upsert(name, ((i, (float(i % 97), float(i % 89)), {"i": i} if i % 2 else None)
                                  for i in range(n)), wait=True)
        self.assertEqual((r.points, r.requests, r.status), (n, 3, "applied"))
        self.assertEqual(len(r.operation_ids), 3)
        self.assertEqual(self.db.count(name), n)
        ids = [p.id for p in self.db.scroll(name, limit=4000, with_payload=False)]
        self.assertEqual(len(ids), n)
        self.assertEqual(ids, list(range(n)))  # every point exactly once
        got = self.db.get(name, range(0, 12_000))  # over 10,000 ids: two requests
        self.assertEqual(len(got), 12_000)
        self.assertEqual(got[11_999].payload, {"i": 11_999})
        r = self.db.delete(name, ids=range(0, 20_000), wait=True)
        self.assertEqual((r.requests, r.points), (2, 20_000))
        self.assertEqual(self.db.count(name), 5_000)

    def test_upsert_splits_by_bytes(self):
        name = self.new_collection(dim=256, index="flat")
        small = qc.Client(self.target, timeout=120, max_message_bytes=1 << 20)
        try:
            # ~1.1 KB per point, 3,000 points = ~3.4 MB: under 1,000 points per 1 MiB request
            r = small.upsert(name, [(i, [float(i)] * 256) for i in range(3000)], wait=True)
        finally:
            small.close()
        self.assertEqual(r.points, 3000)
        self.assertGreaterEqual(r.requests, 4)
        self.assertEqual(self.db.count(name), 3000)

    def test_upsert_many_streams_with_progress(self):
        name = self.new_collection(index="flat")
        seen = []

        def gen():
            for i in range(2500):
                yield {"id": i, "vector": [i, 1, 2, 3], "payload": {"n": i}}

        r = self.db.upsert_many(name, gen(), batch=700, progress=seen.append, wait=True)
        self.assertEqual((r.points, r.requests), (2500, 4))
        self.assertEqual(seen, [700, 1400, 2100, 2500])
        self.assertEqual(self.db.count(name), 2500)
        self.assertEqual(self.db.upsert_many(name, iter(())).requests, 0)
        with self.assertRaises(qc.InvalidArgument):
            self.db.upsert_many(name, gen(), batch=0)
        # a failure midway: what was written is reported in .partial
        bad = ((i, [1, 2, 3, 4] if i != 11_500 else [1, 2]) for i in range(10_000, 12_000))
        with self.assertRaises(qc.InvalidArgument) as cm:
            self.db.upsert_many(name, bad, batch=1000, wait=True)
        self.assertEqual(cm.exception.partial.points, 1000)

    def test_upsert_wait_false_then_visible(self):
        name = self.new_collection()
        r = self.db.upsert(name, [(i, [i, 0, 0, 1]) for i in range(50)])
        self.assertIn(r.status, ("committed", "applied"))
        _eventually(lambda: self.db.count(name) == 50)
        _eventually(lambda: len(self.db.search(name, [1, 0, 0, 1], k=50)) == 50)
        self.assertEqual(self.db.upsert(name, []).requests, 0)  # nothing to send

    # -- errors and connection -------------------------------------------------------------------
    def test_error_classes(self):
        self.assertTrue(issubclass(qc.NotFound, qc.QuiverError))
        self.assertTrue(issubclass(qc.InvalidArgument, ValueError))
        with self.assertRaises(qc.QuiverError) as cm:
            self.db.describe("missing-collection")
        e = cm.exception
        self.assertIsInstance(e, qc.NotFound)
        self.assertEqual(e.code, "NOT_FOUND")
        self.assertIn("missing-collection", e.message)
        self.assertIn("NOT_FOUND", str(e))
        base = qc.QuiverError("INTERNAL", "boom")
        self.assertEqual((base.code, base.message), ("INTERNAL", "boom"))
        import pickle
        again = pickle.loads(pickle.dumps(e))
        self.assertEqual((type(again), again.code, again.message), (type(e), e.code, e.message))

    def test_unreachable_server_is_unavailable(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with qc.Client(f"127.0.0.1:{port}", timeout=5) as c:
            with self.assertRaises(qc.QuiverError) as cm:
                c.status()
            self.assertIsInstance(cm.exception, (qc.Unavailable, qc.DeadlineExceeded))

    def test_client_arguments(self):
        with self.assertRaises(qc.InvalidArgument):
            qc.Client(self.target, cert="/nonexistent.pem")  # cert without key
        empty = tempfile.mkdtemp(dir=self.tmp)
        with self.assertRaises(ImportError) as cm:
            qc.Client(self.target, stubs_dir=empty)
        self.assertIn(empty, str(cm.exception))
        with qc.Client(self.target, stubs_dir=ARGS.stubs) as c:
            self.assertIn(self.target, repr(c))
            self.assertTrue(c.health())


def make_certs(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=quiver-sdk-test-ca")
    for who, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                "extendedKeyUsage=serverAuth\n"),
                     ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, who + ".ext"), "w") as f:
            f.write(ext)
        run("req", *ec, "-keyout", who + ".key", "-out", who + ".csr", "-subj", "/CN=" + who)
        run("x509", "-req", "-in", who + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", who + ".pem", "-days", "2", "-extfile", who + ".ext")
    return {k: os.path.join(d, k) for k in ("ca.pem", "server.pem", "server.key", "client.pem",
                                            "client.key")}


@unittest.skipIf(shutil.which("openssl") is None, "openssl is not installed")
class TlsTest(unittest.TestCase):
    """A node serving mutual TLS: the client's tls/ca/cert/key arguments."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="quiver-pysdk-tls-")
        cls.pem = make_certs(cls.tmp)
        cls.proc, port = start_node(
            os.path.join(cls.tmp, "data"), cls.tmp,
            ["--tls-cert", cls.pem["server.pem"], "--tls-key", cls.pem["server.key"],
             "--tls-ca", cls.pem["ca.pem"], "--tls-require-client-cert"])
        cls.target = f"127.0.0.1:{port}"

    @classmethod
    def tearDownClass(cls):
        stop_node(cls.proc, cls.tmp)

    def test_mutual_tls(self):
        p = self.pem
        with qc.Client(self.target, tls=True, ca=p["ca.pem"], cert=p["client.pem"],
                       key=p["client.key"], stubs_dir=ARGS.stubs) as c:
            self.assertTrue(c.health())
            c.create_collection("tls-coll", 2, index="flat")
            c.upsert("tls-coll", [(1, [1, 2], {"over": "tls"})], wait=True)
            self.assertEqual(c.get("tls-coll", 1)[0].payload, {"over": "tls"})

    def test_refused_without_client_certificate_or_tls(self):
        for kw in ({"ca": self.pem["ca.pem"]}, {}):
            with self.subTest(tls=kw), qc.Client(self.target, timeout=5, **kw) as c:
                with self.assertRaises(qc.QuiverError) as cm:
                    c.status()
                self.assertIn(cm.exception.code, ("UNAVAILABLE", "DEADLINE_EXCEEDED"))


def _types(v):
    if isinstance(v, list):
        return [_types(x) for x in v]
    return type(v).__name__


def _eventually(pred, timeout=30):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="quiver-node binary")
    parser.add_argument("--stubs", required=True, help="generated Python stubs (<build>/python)")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)

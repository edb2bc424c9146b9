#!/usr/bin/python3
"""Recovery of quiver-node from damaged or missing index snapshots, log replay, drop, data-dir lock.

Each test has its own data directory and node processes (--dev, gossip off):
  a_ a snapshot with bytes flipped in its middle,
  b_ a snapshot truncated to half, and one truncated to zero length,
  c_ a deleted snapshot:
     points are written (upserts, overwrites, deletes), exact search results and the state are
     recorded, the node gets SIGTERM (it snapshots at shutdown), the snapshot is damaged, and the
     node restarted on it must come up, log that the snapshot is unusable and that it rebuilds
     the index from the store, give identical exact-search results, HNSW results that agree
     with them, the same Count and every point's vector (float32 bits) and payload; a further
     restart must load the fresh snapshot written at the next shutdown without a warning;
  d_ many small upserts and deletes: SIGKILL before any snapshot exists (the index is rebuilt
     from the store), then SIGTERM (snapshot), more small writes, SIGKILL: the restart loads the
     snapshot and replays the log suffix; every point is checked after each restart;
  e_ drop: 20,000 points of dim 64 are written next to a small collection, the big one is
     dropped; after a restart it stays dropped (List shows only the small one, whose points are
     intact), its snapshot file is gone, and <data>/db shrinks to a fraction of its size before
     the drop (RocksDB keeps its own small files); the name can be created again, empty;
  f_ a second node on a --data directory in use is refused (exit status 1 and a message) while
     the first keeps serving; after the first stops, a new one opens the directory;
  g_ a filter delete of 30,000 points killed before it is applied is replayed at the restart;
  h_ a drop, then a create of the same name, survives a SIGKILL;
  i_ --fsync interval: the background fsync follows writes and stops while nothing is written;
  j_ a collection still training truncates its applied log, and a SIGKILL after that loses
     nothing.

Usage: test_recovery.py --node build/bin/quiver-node --python-dir build/python [-v]
"""
import argparse
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodeproc  # noqa: E402

ARGS = None
STOP_TIMEOUT_S = nodeproc.STOP_TIMEOUT_S
RPC_TIMEOUT_S = 60
grpc = C = CG = P = PG = M = None  # imported in main() once --python-dir is known


class Node(nodeproc.Node):
    """One quiver-node process on `data`; stderr goes to `log_path` (port None: not ready)."""

    def __init__(self, data, log_path, extra=()):
        super().__init__(ARGS.node, data, log_path, extra)


def f32(values):
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def bits(values):
    return struct.pack(f"<{len(values)}f", *values)


def rand_vec(rng, dim):
    return f32([rng.uniform(-1.0, 1.0) for _ in range(dim)])


def payload(i, rng):
    p = M.Payload()
    p.fields["i"].integer_value = i
    p.fields["tag"].string_value = rng.choice(["red", "green", "blue", "ünïcode ✓"])
    p.fields["x"].double_value = rng.uniform(-100, 100)
    if i % 3 == 0:
        p.fields["l"].list_value.values.add().bool_value = True
        p.fields["l"].list_value.values.add().null_value.SetInParent()
    return p


def pl_bytes(p):
    return p.SerializeToString(deterministic=True)


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass  # RocksDB deletes files while we walk
    return total


class RecoveryTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qv-recovery-")
        self.data = os.path.join(self.tmp, "data")
        self.nodes = []
        self.model = {}  # collection -> {id: (vector bits, payload bytes)}

    def tearDown(self):
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ----

    def start(self, extra=(), expect_ready=True):
        log = os.path.join(self.tmp, f"node-{len(self.nodes)}.log")
        node = Node(self.data, log, extra)
        self.nodes.append(node)
        if expect_ready:
            self.assertIsNotNone(node.port, f"node did not start: {node.first_line!r}\n"
                                 f"{node.tail()}")
            self.assertNotRegex(node.stderr(), r"AddressSanitizer|runtime error|LeakSanitizer")
        return node

    def stop(self, node, sig=signal.SIGTERM):
        rc = node.stop(sig)
        want = 0 if sig == signal.SIGTERM else -signal.SIGKILL
        self.assertEqual(rc, want, f"exit status after {sig.name}\n{node.tail()}")
        self.assertNotRegex(node.stderr(), r"AddressSanitizer|runtime error|LeakSanitizer")

    def create(self, node, name, dim, **kw):
        resp = node.colls.Create(C.CreateCollectionRequest(
            name=name, dimension=dim, metric=M.METRIC_L2,
            index=M.IndexConfig(type=M.INDEX_TYPE_HNSW,
                                hnsw=M.HnswParams(m=12, ef_construction=64)), **kw),
            timeout=RPC_TIMEOUT_S)
        self.assertTrue(resp.created)
        self.model[name] = {}
        return resp.info.config.uid

    def upsert(self, node, coll, items, wait=False):
        """items: [(id, vector, Payload)]"""
        node.points.Upsert(P.UpsertPointsRequest(
            collection=coll, wait=wait,
            points=[M.PointStruct(id=M.PointId(num=i), vector=M.Vector(data=v), payload=p)
                    for i, v, p in items]), timeout=RPC_TIMEOUT_S)
        for i, v, p in items:
            self.model[coll][i] = (bits(v), pl_bytes(p))

    def delete(self, node, coll, ids, wait=False):
        node.points.Delete(P.DeletePointsRequest(
            collection=coll, ids=M.PointIdList(ids=[M.PointId(num=i) for i in ids]), wait=wait),
            timeout=RPC_TIMEOUT_S)
        for i in ids:
            self.model[coll].pop(i, None)

    def count(self, node, coll):
        return node.points.Count(P.CountPointsRequest(collection=coll, exact=True),
                                 timeout=RPC_TIMEOUT_S).count

    def check_points(self, node, coll, probe_ids=()):
        """Every modelled point holds its vector bits and payload; probe_ids (deleted or never
        written) are absent; Count agrees."""
        model = self.model[coll]
        ids = sorted(set(model) | set(probe_ids))
        got = {}
        for i in range(0, len(ids), 1000):
            resp = node.points.Get(P.GetPointsRequest(
                collection=coll, ids=[M.PointId(num=x) for x in ids[i:i + 1000]],
                with_vectors=True, with_payload=M.PayloadSelector(enable=True)),
                timeout=RPC_TIMEOUT_S)
            for p in resp.points:
                got[p.id.num] = (bits(p.vector.data), pl_bytes(p.payload))
        missing = [i for i in model if i not in got]
        self.assertEqual(missing[:10], [], f"{len(missing)} acknowledged points missing\n"
                         f"{node.tail()}")
        wrong = [i for i in model if got[i] != model[i]]
        self.assertEqual(wrong[:10], [], f"{len(wrong)} points differ\n{node.tail()}")
        extra = [i for i in got if i not in model]
        self.assertEqual(extra[:10], [], f"{len(extra)} deleted points are back\n{node.tail()}")
        self.assertEqual(self.count(node, coll), len(model))

    def searches(self, node, coll, queries, exact, k=10):
        out = []
        for q in queries:
            params = M.SearchParams(exact=True) if exact else M.SearchParams(ef=128)
            resp = node.points.Search(P.SearchRequest(
                collection=coll, vector=M.Vector(data=q), k=k, params=params),
                timeout=RPC_TIMEOUT_S)
            out.append([(p.id.num, p.distance) for p in resp.points])
        return out

    def snapshot_path(self, uid):
        return os.path.join(self.data, "snapshots", f"{uid:016x}.qvi")

    # ---- a, b, c: damaged snapshots ----

    def damaged_snapshot_is_rebuilt(self, damage, what):
        rng = random.Random(11)
        dim = 16
        node = self.start()
        uid = self.create(node, "r", dim)
        for b in range(6):
            self.upsert(node, "r", [(i, rand_vec(rng, dim), payload(i, rng))
                                    for i in range(b * 500, b * 500 + 500)])
        self.upsert(node, "r", [(i, rand_vec(rng, dim), payload(i, rng))
                                for i in range(0, 3000, 29)])  # overwrites
        deleted = list(range(5, 3000, 31))
        self.delete(node, "r", deleted, wait=True)
        queries = [rand_vec(rng, dim) for _ in range(8)] + \
            [struct.unpack(f"<{dim}f", self.model["r"][i][0]) for i in (1, 777, 2999)]
        before = self.searches(node, "r", queries, exact=True)
        self.check_points(node, "r", deleted)
        self.stop(node)
        self.assertIn("index snapshot at log index", node.stderr())
        path = self.snapshot_path(uid)
        self.assertTrue(os.path.exists(path), f"no snapshot {path} after SIGTERM\n{node.tail()}")

        damage(path)

        node = self.start()
        log = node.stderr()
        self.assertRegex(log, r"WARN .*collection r: index snapshot .* is unusable .*rebuilding "
                         r"the index from the store", f"{what}: no warning\n{node.tail()}")
        m = re.search(r"collection r: index rebuilt from the store \((\d+) points\)", log)
        self.assertIsNotNone(m, f"{what}: no rebuild\n{node.tail()}")
        self.assertEqual(int(m.group(1)), len(self.model["r"]))
        after = self.searches(node, "r", queries, exact=True)
        self.assertEqual(after, before, f"{what}: exact results differ after the rebuild")
        approx = self.searches(node, "r", queries, exact=False)
        hits = sum(len({i for i, _ in a} & {i for i, _ in b}) for a, b in zip(approx, before))
        self.assertGreaterEqual(hits, 0.9 * sum(len(b) for b in before),
                                f"{what}: HNSW recall after the rebuild")
        for q, res in zip(queries[-3:], approx[-3:]):  # stored vectors find themselves
            self.assertEqual(res[0][1], 0.0)
        self.check_points(node, "r", deleted)
        self.stop(node)

        # the rebuilt index is snapshotted at shutdown and the next start uses it cleanly
        node = self.start()
        self.assertNotRegex(node.stderr(), r"WARN|ERROR", f"{what}: second restart\n"
                            f"{node.tail()}")
        self.assertNotIn("rebuilt from the store", node.stderr())
        self.assertEqual(self.searches(node, "r", queries, exact=True), before)
        self.check_points(node, "r", deleted)
        self.stop(node)

    def test_a_corrupt_snapshot_is_rebuilt_from_the_store(self):
        def flip(path):
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.seek(size // 2)
                chunk = f.read(64)
                f.seek(size // 2)
                f.write(bytes(b ^ 0xA5 for b in chunk))
        self.damaged_snapshot_is_rebuilt(flip, "flipped bytes")

    def test_b_truncated_snapshot_is_rebuilt_from_the_store(self):
        def truncate(path):
            os.truncate(path, os.path.getsize(path) // 2)
        self.damaged_snapshot_is_rebuilt(truncate, "truncated to half")

    def test_b_zero_length_snapshot_is_rebuilt_from_the_store(self):
        self.damaged_snapshot_is_rebuilt(lambda path: os.truncate(path, 0), "zero length")

    def test_c_deleted_snapshot_is_rebuilt_from_the_store(self):
        self.damaged_snapshot_is_rebuilt(os.unlink, "deleted")

    # ---- d: log replay ----

    def small_writes(self, node, rng, dim, n, id_space):
        deleted = set()
        for _ in range(n):
            if rng.random() < 0.1 and self.model["s"]:
                ids = rng.sample(sorted(self.model["s"]), min(2, len(self.model["s"])))
                self.delete(node, "s", ids, wait=rng.random() < 0.2)
                deleted.update(ids)
            else:
                items = [(i, rand_vec(rng, dim), payload(i, rng))
                         for i in {rng.randrange(id_space) for _ in range(rng.randint(1, 4))}]
                self.upsert(node, "s", items, wait=rng.random() < 0.2)
                deleted.difference_update(i for i, _, _ in items)
        return deleted

    def test_d_small_upserts_survive_log_replay(self):
        rng = random.Random(12)
        dim = 8
        node = self.start()
        uid = self.create(node, "s", dim)
        deleted = self.small_writes(node, rng, dim, 400, 1500)
        self.stop(node, signal.SIGKILL)
        self.assertFalse(os.path.exists(self.snapshot_path(uid)), "a snapshot exists already")

        node = self.start()  # no snapshot: the index comes from the store
        self.assertNotRegex(node.stderr(), r"WARN|ERROR", node.tail())
        self.check_points(node, "s", deleted)
        self.stop(node)  # snapshot at shutdown
        self.assertTrue(os.path.exists(self.snapshot_path(uid)))

        node = self.start()
        deleted |= self.small_writes(node, rng, dim, 400, 1500)
        self.stop(node, signal.SIGKILL)

        node = self.start()  # the snapshot plus the log after it
        log = node.stderr()
        self.assertNotRegex(log, r"WARN|ERROR", node.tail())
        self.assertNotIn("rebuilt from the store", log, "the snapshot was not used")
        self.assertRegex(log, rf"collection s: {len(self.model['s'])} points, log index \d+")
        self.check_points(node, "s", deleted)
        q = [rand_vec(rng, dim) for _ in range(5)]
        exact = self.searches(node, "s", q, exact=True)
        approx = self.searches(node, "s", q, exact=False)
        hits = sum(len({i for i, _ in a} & {i for i, _ in b}) for a, b in zip(approx, exact))
        self.assertGreaterEqual(hits, 0.9 * sum(len(b) for b in exact), "HNSW recall")
        self.stop(node)

    # ---- e: drop ----

    def test_e_dropped_collection_stays_dropped_and_frees_disk(self):
        rng = random.Random(13)
        node = self.start(["--snapshot-points", "5000"])
        big = self.create(node, "big", 64)
        self.create(node, "keep", 4)
        self.upsert(node, "keep", [(i, rand_vec(rng, 4), payload(i, rng)) for i in range(100)],
                    wait=True)
        for b in range(20):
            self.upsert(node, "big", [(i, rand_vec(rng, 64), payload(i, rng))
                                      for i in range(b * 1000, b * 1000 + 1000)], wait=True)
        self.assertEqual(self.count(node, "big"), 20000)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.snapshot_path(big)) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertTrue(os.path.exists(self.snapshot_path(big)), "no snapshot of 'big'")
        db = os.path.join(self.data, "db")
        size_before = dir_size(db)

        resp = node.colls.Drop(C.DropCollectionRequest(name="big"), timeout=RPC_TIMEOUT_S)
        self.assertTrue(resp.dropped)
        self.assertFalse(os.path.exists(self.snapshot_path(big)), "snapshot left after drop")
        size_dropped = dir_size(db)
        self.stop(node)

        node = self.start()
        names = list(node.colls.List(C.ListCollectionsRequest(), timeout=RPC_TIMEOUT_S).names)
        self.assertEqual(names, ["keep"], node.tail())
        with self.assertRaises(grpc.RpcError) as cm:
            self.count(node, "big")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.check_points(node, "keep")
        self.assertFalse(os.path.exists(self.snapshot_path(big)))
        size_after = dir_size(db)
        if ARGS.verbose:
            print(f"\n  db size: {size_before} bytes before the drop, {size_dropped} right "
                  f"after, {size_after} after a restart", file=sys.stderr)
        # 20,000 x 64 floats are 5 MB in the vectors alone; what stays is RocksDB's own files
        self.assertGreater(size_before, 5_000_000)
        self.assertLess(size_after, size_before // 5,
                        f"db {size_before} -> {size_after} bytes: the space was not given back")
        # a collection created again under the name starts empty, and stays so over a restart
        self.create(node, "big", 64)
        self.assertEqual(self.count(node, "big"), 0)
        self.upsert(node, "big", [(7, rand_vec(rng, 64), payload(7, rng))], wait=True)
        self.stop(node)
        node = self.start()
        self.check_points(node, "big", [0, 1, 19999])
        self.check_points(node, "keep")
        self.stop(node)

    # ---- f: the data directory lock ----

    def test_f_second_node_on_the_same_data_dir_is_refused(self):
        rng = random.Random(14)
        first = self.start()
        self.create(first, "x", 4)
        self.upsert(first, "x", [(i, rand_vec(rng, 4), payload(i, rng)) for i in range(50)],
                    wait=True)
        second = self.start(expect_ready=False)
        self.assertIsNone(second.port, "a second node opened a data directory in use")
        self.assertEqual(second.proc.wait(STOP_TIMEOUT_S), 1)
        self.assertRegex(second.stderr(), r"is in use by another quiver-node process")
        # the first one is untouched and still serves
        self.check_points(first, "x")
        self.upsert(first, "x", [(50, rand_vec(rng, 4), payload(50, rng))], wait=True)
        self.stop(first)
        third = self.start()
        self.assertNotRegex(third.stderr(), r"WARN|ERROR", third.tail())
        self.check_points(third, "x")
        self.stop(third)


    def test_g_big_filter_delete_then_sigkill(self):
        """A filter delete matching more points than an upsert batch may hold is one log entry;
        killed before it is applied, the node must replay it (not call it corrupt)."""
        node = self.start()
        self.create(node, "big", 4)
        rng = random.Random(7)
        for b in range(3):
            pl = M.Payload()
            pl.fields["g"].integer_value = 1
            self.upsert(node, "big", [(b * 10000 + i, rand_vec(rng, 4), pl) for i in range(10000)])
        resp = node.points.Delete(P.DeletePointsRequest(collection="big", filter_text="g = 1"),
                                  timeout=RPC_TIMEOUT_S)
        self.assertGreater(resp.result.shards[0].log_index, 0)
        self.stop(node, signal.SIGKILL)
        node = self.start()
        self.assertEqual(self.count(node, "big"), 0, node.tail())
        self.stop(node)

    def test_h_drop_then_create_same_name_survives_restart(self):
        """The new collection's definition must not be deleted by the old one's drop."""
        node = self.start()
        self.create(node, "x", 4)
        rng = random.Random(8)
        self.upsert(node, "x", [(i, rand_vec(rng, 4), M.Payload()) for i in range(500)])
        node.colls.Drop(C.DropCollectionRequest(name="x"), timeout=RPC_TIMEOUT_S)
        uid = self.create(node, "x", 4)
        self.upsert(node, "x", [(i, rand_vec(rng, 4), M.Payload()) for i in range(10)], wait=True)
        self.stop(node, signal.SIGKILL)
        node = self.start()
        info = node.colls.Describe(C.DescribeCollectionRequest(name="x"),
                                   timeout=RPC_TIMEOUT_S).info
        self.assertEqual(info.config.uid, uid)
        self.check_points(node, "x")
        self.stop(node)

    def test_i_interval_fsync_runs_after_writes_only(self):
        """--fsync interval: the log is fsynced in the background soon after a write (the fsync
        counter grows), and not at all while nothing is written."""
        log = os.path.join(self.tmp, "node-interval.log")
        node = nodeproc.Node(ARGS.node, self.data, log,
                             ("--fsync", "interval", "--fsync-interval-ms", "50"), http=True)
        self.nodes.append(node)
        self.assertIsNotNone(node.port, node.tail())

        def fsyncs():
            url = f"http://127.0.0.1:{node.http_port}/metrics"
            with urllib.request.urlopen(url, timeout=RPC_TIMEOUT_S) as r:
                body = r.read().decode()
            m = re.search(r"(?m)^quiver_log_fsyncs_total (\S+)$", body)
            self.assertIsNotNone(m, "no quiver_log_fsyncs_total sample")
            return float(m.group(1))

        self.create(node, "iv", 4)
        rng = random.Random(9)
        before = fsyncs()
        self.upsert(node, "iv", [(i, rand_vec(rng, 4), M.Payload()) for i in range(100)])
        deadline = time.monotonic() + 30
        while fsyncs() == before:
            self.assertLess(time.monotonic(), deadline, "no background fsync after a write")
            time.sleep(0.02)
        time.sleep(0.2)  # the fsync that covers the last write, if one was still due
        idle = fsyncs()
        time.sleep(0.5)  # ten intervals without a write
        self.assertEqual(fsyncs(), idle, "fsyncs while nothing was written")
        self.stop(node)
        node = self.start()
        self.check_points(node, "iv")
        self.stop(node)


    def test_j_training_collection_truncates_its_log(self):
        """A collection below its training size has no index file to snapshot; its applied log is
        still truncated, and a SIGKILL after that loses nothing (the start rebuilds from the
        store and replays what was not applied)."""
        rng = random.Random(10)
        node = self.start(["--snapshot-points", "200"])
        resp = node.colls.Create(C.CreateCollectionRequest(
            name="t", dimension=8, metric=M.METRIC_L2,
            index=M.IndexConfig(type=M.INDEX_TYPE_HNSW_INT8, hnsw=M.HnswParams(m=12))),
            timeout=RPC_TIMEOUT_S)
        self.assertTrue(resp.created)
        self.model["t"] = {}
        for _ in range(12):  # 1,200 changes to 100 points: the same ids over and over
            self.upsert(node, "t", [(i, rand_vec(rng, 8), payload(i, rng)) for i in range(100)],
                        wait=True)
        self.delete(node, "t", [3, 60, 61], wait=True)
        deadline = time.monotonic() + 30
        while "collection t: still training; log truncated" not in node.stderr():
            self.assertLess(time.monotonic(), deadline, "no log truncation\n" + node.tail())
            time.sleep(0.1)
        self.upsert(node, "t", [(i, rand_vec(rng, 8), payload(i, rng)) for i in range(3, 50)])
        self.stop(node, signal.SIGKILL)
        node = self.start()
        self.assertNotRegex(node.stderr(), r"WARN|ERROR", node.tail())
        self.check_points(node, "t", [60, 61])  # deleted; 3 was written again
        info = node.colls.Describe(C.DescribeCollectionRequest(name="t"),
                                   timeout=RPC_TIMEOUT_S).info
        self.assertEqual(info.status, C.COLLECTION_STATUS_TRAINING)
        self.assertEqual(info.points_count, len(self.model["t"]))
        self.stop(node)


def main():
    global ARGS, grpc, C, CG, P, PG, M
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True)
    parser.add_argument("--python-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    ARGS.verbose = "-v" in rest
    st = nodeproc.load_stubs(ARGS.python_dir)
    grpc, C, CG, P, PG, M = st.grpc, st.C, st.CG, st.P, st.PG, st.M
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(RecoveryTest)
    result = unittest.TextTestRunner(verbosity=2 if ARGS.verbose else 1).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()

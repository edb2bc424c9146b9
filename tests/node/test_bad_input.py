#!/usr/bin/python3
"""Bad input against a live quiver-node: every rejected request fails with the status code the
contract (proto/quiver/v1/*.proto) names and a message that names the problem, leaves nothing
half-written, and the node keeps serving.

One node serves the whole class. Its collection 'main' (FLAT, L2, dimension 4) and 'cos' (FLAT,
COSINE) hold a fixed set of points; after every rejected request the test re-reads both in full
(Scroll with vectors and payloads) and compares them with what was written, checks that the
collection list holds no trace of a rejected create, and that a Health check and a normal
Search still succeed.

Usage: test_bad_input.py --node build/bin/quiver-node --python-dir build/python [unittest options]
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodeproc  # noqa: E402

ARGS = None
T = 30  # seconds: deadline of every call

# Filled by load_stubs() once the generated package directory is known.
grpc = C = CG = P = PG = M = H = HG = None


def load_stubs(python_dir):
    global grpc, C, CG, P, PG, M, H, HG
    st = nodeproc.load_stubs(python_dir)
    grpc, C, CG, P, PG, M, H, HG = st.grpc, st.C, st.CG, st.P, st.PG, st.M, st.H, st.HG


def start_node(data_dir, log_path):
    return nodeproc.start_node(ARGS.node, data_dir, log_path)


stop_node = nodeproc.stop_node


# ---- message helpers ---------------------------------------------------------------------------

def pid(x):
    return M.PointId(uuid=x) if isinstance(x, str) else M.PointId(num=x)


def key_of(point_id):
    return point_id.uuid if point_id.WhichOneof("kind") == "uuid" else point_id.num


def value(v):
    if v is None:
        return M.Value(null_value=M.Null())
    if isinstance(v, bool):
        return M.Value(bool_value=v)
    if isinstance(v, int):
        return M.Value(integer_value=v)
    if isinstance(v, float):
        return M.Value(double_value=v)
    if isinstance(v, str):
        return M.Value(string_value=v)
    return M.Value(list_value=M.ListValue(values=[value(e) for e in v]))


def payload(d):
    p = M.Payload()
    for k, v in d.items():
        p.fields[k].CopyFrom(value(v))
    return p


def point(i, vec, pl=None):
    return M.PointStruct(id=pid(i), vector=M.Vector(data=vec),
                         payload=payload(pl) if pl is not None else None)


def cond_match(field, **kw):
    return M.Condition(match=M.FieldMatch(field=field, **kw))


def f32(x):
    """x rounded to float32, as the node stores it."""
    import struct
    return struct.unpack("f", struct.pack("f", x))[0]


class BadInputTest(unittest.TestCase):
    DIM = 4

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="quiver-badinput-")
        cls.proc = None
        cls.channel = None
        try:
            cls.proc, cls.addr, cls.http_port = start_node(
                os.path.join(cls.tmp, "data"), os.path.join(cls.tmp, "node.log"))
            cls.channel = grpc.insecure_channel(cls.addr)
            cls.cs = CG.CollectionsStub(cls.channel)
            cls.ps = PG.PointsStub(cls.channel)
            cls.health = HG.HealthStub(cls.channel)
            flat = M.IndexConfig(type=M.INDEX_TYPE_FLAT)
            cls.cs.Create(C.CreateCollectionRequest(name="main", dimension=cls.DIM,
                                                    metric=M.METRIC_L2, index=flat), timeout=T)
            cls.cs.Create(C.CreateCollectionRequest(name="cos", dimension=cls.DIM,
                                                    metric=M.METRIC_COSINE, index=flat), timeout=T)
            rnd = random.Random(7)
            colors = ["red", "green", "blue"]
            pts = []
            for i in range(60):
                vec = [f32(rnd.uniform(-1, 1)) for _ in range(cls.DIM)]
                pts.append(point(i, vec, {"label": i % 5, "color": colors[i % 3], "price": i * 1.5}))
            pts.append(point("123e4567-e89b-12d3-a456-426614174000", [0.5, 0.5, 0.5, 0.5],
                             {"label": 9}))
            cls.ps.Upsert(P.UpsertPointsRequest(collection="main", points=pts, wait=True), timeout=T)
            cos_pts = [point(i, [f32(rnd.uniform(0.1, 1)) for _ in range(cls.DIM)], {"k": i})
                       for i in range(20)]
            cls.ps.Upsert(P.UpsertPointsRequest(collection="cos", points=cos_pts, wait=True),
                          timeout=T)
            cls.snapshot = {c: cls.read_all(c) for c in ("main", "cos")}
            assert len(cls.snapshot["main"]) == 61 and len(cls.snapshot["cos"]) == 20
            cls.names = list(cls.cs.List(C.ListCollectionsRequest(), timeout=T).names)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.channel is not None:
                cls.channel.close()
            if cls.proc is not None:
                code = stop_node(cls.proc)
                if code != 0:
                    with open(os.path.join(cls.tmp, "node.log"), errors="replace") as f:
                        log = f.read()[-8000:]
                    raise AssertionError(f"quiver-node exited with {code} on SIGTERM:\n{log}")
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def read_all(cls, coll):
        """Every point of coll: id -> (vector, sorted serialised payload fields)."""
        out, cursor = {}, b""
        while True:
            r = cls.ps.Scroll(P.ScrollPointsRequest(
                collection=coll, limit=17, cursor=cursor, with_vectors=True,
                with_payload=M.PayloadSelector(enable=True)), timeout=T)
            for p in r.points:
                k = key_of(p.id)
                assert k not in out, f"scroll repeated {k}"
                out[k] = (tuple(p.vector.data),
                          tuple(sorted((f, v.SerializeToString(deterministic=True))
                                       for f, v in p.payload.fields.items())))
            if not r.next_cursor:
                return out
            cursor = r.next_cursor

    # ---- assertions ------------------------------------------------------------------------

    def assertIntact(self, absent_names=(), extra_names=()):
        """Nothing was written or removed; the node answers health checks and searches.
        extra_names: collections the test itself created and still holds."""
        for coll in ("main", "cos"):
            self.assertEqual(self.ps.Count(P.CountPointsRequest(collection=coll), timeout=T).count,
                             len(self.snapshot[coll]), coll)
            self.assertEqual(self.read_all(coll), self.snapshot[coll], coll)
        names = list(self.cs.List(C.ListCollectionsRequest(), timeout=T).names)
        self.assertEqual(names, sorted(self.names + list(extra_names)))
        for n in absent_names:
            self.assertNotIn(n, names)
        h = self.health.Check(H.HealthCheckRequest(service=""), timeout=T)
        self.assertEqual(h.status, H.HealthCheckResponse.SERVING)
        h = self.health.Check(H.HealthCheckRequest(service="quiver.v1.Points"), timeout=T)
        self.assertEqual(h.status, H.HealthCheckResponse.SERVING)
        q = [0.5, 0.5, 0.5, 0.5]
        r = self.ps.Search(P.SearchRequest(collection="main", vector=M.Vector(data=q), k=5),
                           timeout=T)
        self.assertEqual(len(r.points), 5)
        self.assertEqual(key_of(r.points[0].id), "123e4567-e89b-12d3-a456-426614174000")
        self.assertEqual(r.points[0].distance, 0.0)

    def reject(self, code, call, *needles, absent_names=(), extra_names=()):
        """call() must fail with `code` and a message containing every needle (str, or a compiled
        regex); then everything must be intact. Returns the message."""
        with self.assertRaises(grpc.RpcError) as cm:
            call()
        err = cm.exception
        msg = err.details() or ""
        self.assertEqual(err.code(), code, f"message: {msg!r}")
        for n in needles:
            if isinstance(n, re.Pattern):
                self.assertRegex(msg, n)
            else:
                self.assertIn(n, msg)
        self.assertIntact(absent_names=absent_names, extra_names=extra_names)
        return msg

    # ---- request builders --------------------------------------------------------------------

    def upsert(self, pts, coll="main"):
        return lambda: self.ps.Upsert(P.UpsertPointsRequest(collection=coll, points=pts, wait=True),
                                      timeout=T)

    def search(self, coll="main", vec=(0.1, 0.2, 0.3, 0.4), **kw):
        return lambda: self.ps.Search(P.SearchRequest(collection=coll, vector=M.Vector(data=vec),
                                                      **kw), timeout=T)

    def create(self, **kw):
        kw.setdefault("dimension", 8)
        kw.setdefault("metric", M.METRIC_L2)
        return lambda: self.cs.Create(C.CreateCollectionRequest(**kw), timeout=T)

    def raw(self, method):
        return self.channel.unary_unary(method, request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)

    INVALID = property(lambda self: grpc.StatusCode.INVALID_ARGUMENT)
    NOT_FOUND = property(lambda self: grpc.StatusCode.NOT_FOUND)
    EXHAUSTED = property(lambda self: grpc.StatusCode.RESOURCE_EXHAUSTED)

    # ---- vectors -----------------------------------------------------------------------------

    def test_upsert_wrong_dimension(self):
        self.reject(self.INVALID, self.upsert([point(1000, [1.0, 2.0, 3.0])]),
                    "point 0", "3 dimensions", "has 4")

    def test_search_wrong_dimension(self):
        self.reject(self.INVALID, self.search(vec=[1.0, 2.0, 3.0, 4.0, 5.0]), "5 dimensions",
                    "has 4")

    def test_upsert_nan_component(self):
        self.reject(self.INVALID, self.upsert([point(1000, [1.0, float("nan"), 3.0, 4.0])]),
                    "point 0", "component 1 is not finite")

    def test_upsert_inf_component(self):
        self.reject(self.INVALID, self.upsert([point(1000, [1.0, 2.0, 3.0, float("inf")])]),
                    "point 0", "component 3 is not finite")

    def test_search_nan_component(self):
        self.reject(self.INVALID, self.search(vec=[float("nan"), 0.0, 0.0, 0.0]),
                    "component 0 is not finite")

    def test_search_inf_component(self):
        self.reject(self.INVALID, self.search(vec=[0.0, 0.0, float("inf"), 0.0]),
                    "component 2 is not finite")

    def test_upsert_zero_vector_in_cosine_collection(self):
        self.reject(self.INVALID, self.upsert([point(1000, [0.0] * 4)], coll="cos"),
                    "zero vector", "COSINE")

    def test_search_zero_vector_in_cosine_collection(self):
        self.reject(self.INVALID, self.search(coll="cos", vec=[0.0] * 4), "zero vector", "COSINE")

    # ---- unknown collection, one RPC each ---------------------------------------------------

    def _unknown(self, call):
        self.reject(self.NOT_FOUND, call, "collection 'nope' does not exist")

    def test_unknown_collection_upsert(self):
        self._unknown(self.upsert([point(1, [1.0, 2.0, 3.0, 4.0])], coll="nope"))

    def test_unknown_collection_delete(self):
        self._unknown(lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="nope", ids=M.PointIdList(ids=[pid(1)])), timeout=T))

    def test_unknown_collection_get(self):
        self._unknown(lambda: self.ps.Get(P.GetPointsRequest(collection="nope", ids=[pid(1)]),
                                          timeout=T))

    def test_unknown_collection_search(self):
        self._unknown(self.search(coll="nope"))

    def test_unknown_collection_search_batch(self):
        self._unknown(lambda: self.ps.SearchBatch(P.SearchBatchRequest(
            collection="nope", queries=[P.BatchSearchQuery(vector=M.Vector(data=[1, 2, 3, 4]))]),
            timeout=T))

    def test_unknown_collection_scroll(self):
        self._unknown(lambda: self.ps.Scroll(P.ScrollPointsRequest(collection="nope"), timeout=T))

    def test_unknown_collection_count(self):
        self._unknown(lambda: self.ps.Count(P.CountPointsRequest(collection="nope"), timeout=T))

    def test_unknown_collection_recommend(self):
        self._unknown(lambda: self.ps.Recommend(P.RecommendRequest(
            collection="nope", positive=[pid(1)]), timeout=T))

    def test_unknown_collection_describe(self):
        self._unknown(lambda: self.cs.Describe(C.DescribeCollectionRequest(name="nope"),
                                               timeout=T))

    def test_unknown_collection_drop(self):
        self._unknown(lambda: self.cs.Drop(C.DropCollectionRequest(name="nope"), timeout=T))

    # ---- batches -----------------------------------------------------------------------------

    def test_empty_upsert_batch(self):
        self.reject(self.INVALID, self.upsert([]), "at least one point")

    def test_oversized_upsert_batch(self):
        pts = [point(100000 + i, [1.0, 2.0, 3.0, 4.0]) for i in range(10001)]
        self.reject(self.EXHAUSTED, self.upsert(pts), "10001 points", "at most 10000")

    def test_one_bad_point_among_good_ones_writes_nothing(self):
        pts = [point(2000 + i, [float(i), 1.0, 1.0, 1.0], {"label": 100}) for i in range(10)]
        pts[7] = point(2007, [1.0, 1.0, 1.0])
        self.reject(self.INVALID, self.upsert(pts), "point 7", "3 dimensions")
        r = self.ps.Get(P.GetPointsRequest(collection="main", ids=[pid(2000 + i) for i in range(10)]),
                        timeout=T)
        self.assertEqual(len(r.points), 0)
        # the payload index saw nothing of it either
        c = self.ps.Count(P.CountPointsRequest(collection="main", filter_text="label = 100"),
                          timeout=T)
        self.assertEqual(c.count, 0)

    def test_one_bad_payload_among_good_points_writes_nothing(self):
        pts = [point(2100 + i, [float(i), 1.0, 1.0, 1.0], {"label": 101}) for i in range(10)]
        pts[9] = point(2109, [1.0, 1.0, 1.0, 1.0], {"bad": float("nan")})
        self.reject(self.INVALID, self.upsert(pts), "point 9", "'bad'", "not finite")
        r = self.ps.Get(P.GetPointsRequest(collection="main", ids=[pid(2100 + i) for i in range(10)]),
                        timeout=T)
        self.assertEqual(len(r.points), 0)

    def test_duplicate_ids_in_a_batch_keep_the_last_occurrence(self):
        # Documented behaviour (points.proto, Upsert): a repeated id keeps its last occurrence.
        name = "dups"
        self.cs.Create(C.CreateCollectionRequest(name=name, dimension=4, metric=M.METRIC_L2,
                                                 index=M.IndexConfig(type=M.INDEX_TYPE_FLAT)),
                       timeout=T)
        try:
            pts = [point(5, [1.0, 0.0, 0.0, 0.0], {"v": "first", "only_first": 1}),
                   point(6, [9.0, 9.0, 9.0, 9.0], {"v": "other"}),
                   point(5, [2.0, 0.0, 0.0, 0.0], {"v": "second"}),
                   point(5, [3.0, 0.0, 0.0, 0.0], {"v": "third"})]
            r = self.ps.Upsert(P.UpsertPointsRequest(collection=name, points=pts, wait=True),
                               timeout=T)
            self.assertEqual(r.result.shards[0].points, 2)
            self.assertEqual(self.ps.Count(P.CountPointsRequest(collection=name), timeout=T).count, 2)
            g = self.ps.Get(P.GetPointsRequest(collection=name, ids=[pid(5)], with_vectors=True,
                                               with_payload=M.PayloadSelector(enable=True)),
                            timeout=T)
            self.assertEqual(len(g.points), 1)
            self.assertEqual(list(g.points[0].vector.data), [3.0, 0.0, 0.0, 0.0])
            self.assertEqual(dict(g.points[0].payload.fields), {"v": value("third")})
            # The vector index and the payload index hold the last occurrence only.
            s = self.ps.Search(P.SearchRequest(collection=name, vector=M.Vector(data=[3, 0, 0, 0]),
                                               k=10), timeout=T)
            self.assertEqual([(key_of(p.id), p.distance) for p in s.points][0], (5, 0.0))
            self.assertEqual(len(s.points), 2)
            for text, n in (("v = 'third'", 1), ("v = 'first'", 0), ("v = 'second'", 0),
                            ("v = 'other'", 1)):
                c = self.ps.Count(P.CountPointsRequest(collection=name, filter_text=text),
                                  timeout=T)
                self.assertEqual(c.count, n, text)
            # A key only the overridden occurrence had never reached the payload index.
            with self.assertRaises(grpc.RpcError) as cm:
                self.ps.Count(P.CountPointsRequest(collection=name, filter_text="only_first = 1"),
                              timeout=T)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("unknown field 'only_first'", cm.exception.details())
        finally:
            self.cs.Drop(C.DropCollectionRequest(name=name), timeout=T)
        self.assertIntact()

    # ---- filters -----------------------------------------------------------------------------

    def test_malformed_text_filter_names_the_byte_offset(self):
        # 'label = 3 and and ...': the second 'and' (byte 14) is where a field was expected.
        msg = self.reject(self.INVALID, self.search(k=3, filter_text="label = 3 and and color = 'x'"),
                          "filter_text", "at byte 14", "'and'")
        self.assertRegex(msg, r"at byte 14\b")
        self.reject(self.INVALID, self.search(k=3, filter_text="label = "), "filter_text",
                    re.compile(r"at byte 8\b"), "end of input")
        self.reject(self.INVALID, lambda: self.ps.Count(P.CountPointsRequest(
            collection="main", filter_text="price < 'x'"), timeout=T), "filter_text", "at byte 8")

    def test_malformed_text_filter_in_delete_deletes_nothing(self):
        self.reject(self.INVALID, lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="main", filter_text="label = 1 or (", wait=True), timeout=T),
            "filter_text", re.compile(r"at byte \d+"))

    def test_condition_with_nothing_set(self):
        f = M.Filter(must=[cond_match("label", integer=1), M.Condition()])
        self.reject(self.INVALID, self.search(filter=f), "condition has nothing set")

    def test_match_with_nothing_set(self):
        f = M.Filter(must=[M.Condition(match=M.FieldMatch(field="label"))])
        self.reject(self.INVALID, self.search(filter=f), "match sets no value", "'label'")

    def test_filter_on_unknown_field(self):
        self.reject(self.INVALID, self.search(filter_text="colour = 'red'"), "unknown field",
                    "'colour'")
        f = M.Filter(must=[M.Condition(range=M.FieldRange(field="weight", gt=1.0))])
        self.reject(self.INVALID, self.search(filter=f), "unknown field", "'weight'")
        # also after a condition that matches nothing: validity does not depend on the data
        self.reject(self.INVALID, self.search(filter_text="label = 99 and colour = 'red'"),
                    "unknown field", "'colour'")
        self.reject(self.INVALID, lambda: self.ps.Count(P.CountPointsRequest(
            collection="main", filter_text="label = 99 and not colour = 'red'"), timeout=T),
            "unknown field", "'colour'")

    def test_delete_by_filter_on_unknown_field_deletes_nothing(self):
        self.reject(self.INVALID, lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="main", filter=M.Filter(must=[cond_match("colour", keyword="red")]),
            wait=True), timeout=T), "unknown field", "'colour'")

    def test_nan_range_bound(self):
        f = M.Filter(must=[M.Condition(range=M.FieldRange(field="price", gte=float("nan")))])
        self.reject(self.INVALID, self.search(filter=f), "range bound is not finite", "'price'")
        f = M.Filter(must=[M.Condition(range=M.FieldRange(field="price", lt=float("-inf")))])
        self.reject(self.INVALID, lambda: self.ps.Count(P.CountPointsRequest(
            collection="main", filter=f), timeout=T), "range bound is not finite", "'price'")

    def test_min_should_larger_than_should(self):
        f = M.Filter(should=[cond_match("label", integer=1), cond_match("label", integer=2)],
                     min_should=3)
        self.reject(self.INVALID, self.search(filter=f), "min_should 3", "2 should")

    def test_too_deep_nesting(self):
        f = M.Filter(must=[cond_match("label", integer=1)])
        for _ in range(16):  # 17 Filter levels
            f = M.Filter(must=[M.Condition(nested=f)])
        self.reject(self.INVALID, self.search(filter=f), "nested deeper than 16")
        # 16 levels are allowed
        g = M.Filter(must=[cond_match("label", integer=1)])
        for _ in range(15):
            g = M.Filter(must=[M.Condition(nested=g)])
        r = self.search(filter=g, k=100)()
        self.assertEqual(len(r.points), 12)

    def test_too_many_conditions(self):
        f = M.Filter(should=[cond_match("label", integer=i) for i in range(1025)])
        self.reject(self.INVALID, self.search(filter=f), "more than 1024 conditions")

    def test_filter_field_name_empty(self):
        f = M.Filter(must=[M.Condition(is_null=M.IsNull(field=""))])
        self.reject(self.INVALID, self.search(filter=f), "empty field name")

    # ---- ids, vectors, payloads --------------------------------------------------------------

    def test_bad_uuid_id(self):
        for bad in ("123e4567-e89b-12d3-a456-42661417400", "123e4567e89b12d3a456426614174000",
                    "123e4567-e89b-12d3-a456-42661417400g", "not-a-uuid"):
            with self.subTest(uuid=bad):
                self.reject(self.INVALID, self.upsert([point(bad, [1.0, 2.0, 3.0, 4.0])]),
                            "point 0", "is not a UUID", bad[:20])
        self.reject(self.INVALID, lambda: self.ps.Get(P.GetPointsRequest(
            collection="main", ids=[pid(1), pid("zz")]), timeout=T), "'zz' is not a UUID")

    def test_missing_id(self):
        pts = [point(3000, [1.0, 2.0, 3.0, 4.0]),
               M.PointStruct(vector=M.Vector(data=[1.0, 2.0, 3.0, 4.0]))]
        self.reject(self.INVALID, self.upsert(pts), "point 1", "point id is missing")

    def test_missing_vector(self):
        pts = [point(3000, [1.0, 2.0, 3.0, 4.0]), M.PointStruct(id=pid(3001))]
        self.reject(self.INVALID, self.upsert(pts), "point 1", "vector is missing")

    def test_payload_with_257_keys(self):
        pl = {f"k{i}": i for i in range(257)}
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0], pl)]),
                    "point 0", "257 keys", "at most 256")

    def test_payload_key_longer_than_256_bytes(self):
        pl = {"k" * 257: 1}
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0], pl)]),
                    "point 0", "key of 257 bytes")

    def test_payload_string_not_utf8(self):
        # Python's protobuf refuses invalid UTF-8 in a string field, so the request is built with
        # a marker string and the marker's bytes are swapped for invalid UTF-8 on the wire.
        marker = "MARKERMARKER"
        req = P.UpsertPointsRequest(collection="main", wait=True, points=[
            point(3000, [1.0, 2.0, 3.0, 4.0], {"name": marker})])
        wire = req.SerializeToString()
        self.assertEqual(wire.count(marker.encode()), 1)
        wire = wire.replace(marker.encode(), b"bad\xff\xfe\xc0\x80tail!")
        call = self.raw("/quiver.v1.Points/Upsert")
        self.reject(self.INVALID, lambda: call(wire, timeout=T), "string_value",
                    "not valid UTF-8")

    def test_payload_string_with_nul_byte(self):
        # protobuf-c would hand the node a C string cut at the NUL: checked on the wire instead.
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0],
                                                     {"s": "ab\x00cd"})]),
                    "string_value", "NUL")

    def test_payload_key_with_nul_byte(self):
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0],
                                                     {"ab\x00key": 1})]),
                    "FieldsEntry.key", "NUL")

    def test_collection_name_with_nul_byte(self):
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0])],
                                              coll="main\x00x"),
                    "collection", "NUL")

    def test_payload_nan_double(self):
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0],
                                                     {"x": float("nan")})]),
                    "point 0", "'x'", "double is not finite")

    def test_payload_list_nested_9_deep(self):
        v = [1]
        for _ in range(8):  # 9 lists in all
            v = [v]
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0], {"deep": v})]),
                    "point 0", "'deep'", "nest deeper than 8")

    def test_payload_larger_than_64_kib(self):
        pl = {"blob": "x" * 65536}
        self.reject(self.INVALID, self.upsert([point(3000, [1.0, 2.0, 3.0, 4.0], pl)]),
                    "point 0", re.compile(r"payload of 655\d\d bytes serialised \(at most 65536\)"))

    # ---- search parameters -------------------------------------------------------------------

    def test_k_plus_offset_over_10000(self):
        self.reject(self.INVALID, self.search(k=9000, offset=1001), "k + offset = 10001",
                    "exceeds 10000")
        self.reject(self.INVALID, self.search(k=10001), "10001", "exceeds 10000")
        self.reject(self.INVALID, lambda: self.ps.Recommend(P.RecommendRequest(
            collection="main", positive=[pid(1)], k=10, offset=9991), timeout=T),
            "k + offset = 10001")

    # ---- collections -------------------------------------------------------------------------

    def _bad_name(self, name):
        self.reject(self.INVALID, self.create(name=name), "collection name", "is invalid",
                    "1..64 characters", absent_names=[name])

    def test_collection_name_empty(self):
        self._bad_name("")

    def test_collection_name_65_characters(self):
        self._bad_name("a" * 65)

    def test_collection_name_starting_with_dash(self):
        self._bad_name("-abc")

    def test_collection_name_with_slash(self):
        self._bad_name("a/b")

    def test_dimension_zero(self):
        self.reject(self.INVALID, self.create(name="d0", dimension=0),
                    "dimension 0 out of range 1..65536", absent_names=["d0"])

    def test_dimension_65537(self):
        self.reject(self.INVALID, self.create(name="dbig", dimension=65537),
                    "dimension 65537 out of range 1..65536", absent_names=["dbig"])

    def test_metric_unset(self):
        self.reject(self.INVALID, self.create(name="nometric", metric=M.METRIC_UNSPECIFIED),
                    "metric is required", absent_names=["nometric"])

    def test_hnsw_m_out_of_range(self):
        for m in (3, 129):
            with self.subTest(m=m):
                self.reject(self.INVALID, self.create(
                    name="h", index=M.IndexConfig(type=M.INDEX_TYPE_HNSW, hnsw=M.HnswParams(m=m))),
                    f"hnsw.m {m} out of range 4..128", absent_names=["h"])

    def test_hnsw_ef_construction_out_of_range(self):
        for ef in (8, 4097):  # below m = 16, above 4,096
            with self.subTest(ef=ef):
                self.reject(self.INVALID, self.create(
                    name="h", index=M.IndexConfig(hnsw=M.HnswParams(ef_construction=ef))),
                    f"hnsw.ef_construction {ef} out of range 16..4096", absent_names=["h"])

    def test_hnsw_ef_search_out_of_range(self):
        self.reject(self.INVALID, self.create(
            name="h", index=M.IndexConfig(hnsw=M.HnswParams(ef_search=32769))),
            "hnsw.ef_search 32769 out of range 1..32768", absent_names=["h"])

    def test_ivf_params_on_hnsw(self):
        self.reject(self.INVALID, self.create(
            name="h", index=M.IndexConfig(type=M.INDEX_TYPE_HNSW, ivf=M.IvfParams(nlist=4))),
            "ivf parameters", "non-IVF", absent_names=["h"])

    def test_replication_factor_2_on_a_single_dev_node(self):
        self.reject(grpc.StatusCode.FAILED_PRECONDITION, self.create(name="r2", replication_factor=2),
                    "replication_factor 2", "ALIVE nodes", absent_names=["r2"])

    def test_create_twice_is_already_exists(self):
        req = C.CreateCollectionRequest(name="twice", dimension=8, metric=M.METRIC_DOT)
        self.cs.Create(req, timeout=T)
        try:
            self.reject(grpc.StatusCode.ALREADY_EXISTS, lambda: self.cs.Create(req, timeout=T),
                        "collection 'twice' already exists", extra_names=["twice"])
        finally:
            self.cs.Drop(C.DropCollectionRequest(name="twice"), timeout=T)

    def test_create_twice_with_if_not_exists_and_same_config(self):
        req = C.CreateCollectionRequest(name="twice2", dimension=8, metric=M.METRIC_DOT,
                                        if_not_exists=True)
        first = self.cs.Create(req, timeout=T)
        try:
            self.assertTrue(first.created)
            again = self.cs.Create(req, timeout=T)
            self.assertFalse(again.created)
            self.assertEqual(again.info.config.uid, first.info.config.uid)
            self.assertEqual(again.info.config, first.info.config)
        finally:
            self.cs.Drop(C.DropCollectionRequest(name="twice2"), timeout=T)
        self.assertIntact()

    def test_create_twice_with_if_not_exists_and_different_config(self):
        req = C.CreateCollectionRequest(name="twice3", dimension=8, metric=M.METRIC_DOT,
                                        if_not_exists=True)
        first = self.cs.Create(req, timeout=T)
        try:
            other = C.CreateCollectionRequest(name="twice3", dimension=9, metric=M.METRIC_DOT,
                                              if_not_exists=True)
            self.reject(grpc.StatusCode.ALREADY_EXISTS, lambda: self.cs.Create(other, timeout=T),
                        "collection 'twice3' already exists", "different configuration",
                        extra_names=["twice3"])
            d = self.cs.Describe(C.DescribeCollectionRequest(name="twice3"), timeout=T)
            self.assertEqual(d.info.config.dimension, 8)
            self.assertEqual(d.info.config.uid, first.info.config.uid)
        finally:
            self.cs.Drop(C.DropCollectionRequest(name="twice3"), timeout=T)

    def test_drop_missing_is_not_found(self):
        self.reject(self.NOT_FOUND, lambda: self.cs.Drop(C.DropCollectionRequest(name="ghost"),
                                                         timeout=T),
                    "collection 'ghost' does not exist", absent_names=["ghost"])

    def test_drop_missing_with_if_exists_is_ok(self):
        r = self.cs.Drop(C.DropCollectionRequest(name="ghost", if_exists=True), timeout=T)
        self.assertFalse(r.dropped)
        self.assertIntact(absent_names=["ghost"])

    # ---- delete, scroll, get, recommend ------------------------------------------------------

    def test_delete_with_empty_filter(self):
        self.reject(self.INVALID, lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="main", filter=M.Filter(), wait=True), timeout=T), "empty filter")

    def test_delete_with_blank_filter_text(self):
        self.reject(self.INVALID, lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="main", filter_text="   ", wait=True), timeout=T), "empty filter")

    def test_delete_without_selector(self):
        self.reject(self.INVALID, lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="main", wait=True), timeout=T), "needs ids, filter or filter_text")

    def test_scroll_with_corrupt_cursor(self):
        first = self.ps.Scroll(P.ScrollPointsRequest(collection="main", limit=5), timeout=T)
        self.assertTrue(first.next_cursor)
        cur = bytearray(first.next_cursor)
        cur[len(cur) // 2] ^= 0x01
        for bad in (bytes(cur), b"garbage", first.next_cursor[:-1], b"\x00" * len(cur)):
            with self.subTest(cursor=bad):
                self.reject(self.INVALID, lambda: self.ps.Scroll(P.ScrollPointsRequest(
                    collection="main", limit=5, cursor=bad), timeout=T), "scroll cursor is corrupt")

    def test_scroll_with_cursor_from_another_collection(self):
        other = self.ps.Scroll(P.ScrollPointsRequest(collection="cos", limit=5), timeout=T)
        self.assertTrue(other.next_cursor)
        self.reject(self.INVALID, lambda: self.ps.Scroll(P.ScrollPointsRequest(
            collection="main", limit=5, cursor=other.next_cursor), timeout=T),
            "scroll cursor belongs to another collection")

    def test_scroll_limit_over_10000(self):
        self.reject(self.INVALID, lambda: self.ps.Scroll(P.ScrollPointsRequest(
            collection="main", limit=10001), timeout=T), "limit 10001")

    def test_malformed_protobuf_bytes(self):
        methods = ["/quiver.v1.Collections/Create", "/quiver.v1.Collections/Describe",
                   "/quiver.v1.Collections/List", "/quiver.v1.Collections/Drop",
                   "/quiver.v1.Points/Upsert", "/quiver.v1.Points/Delete", "/quiver.v1.Points/Get",
                   "/quiver.v1.Points/Search", "/quiver.v1.Points/SearchBatch",
                   "/quiver.v1.Points/Scroll", "/quiver.v1.Points/Count",
                   "/quiver.v1.Points/Recommend"]
        # an unterminated varint, and a length-delimited field 1 claiming 16 bytes but holding 3
        for method in methods:
            for wire in (b"\xff\xff\xff\xff\xff", b"\x0a\x10abc"):
                with self.subTest(method=method, wire=wire):
                    call = self.raw(method)
                    self.reject(self.INVALID, lambda: call(wire, timeout=T), "malformed",
                                method.rsplit("/", 1)[1])

    def test_get_with_10001_ids(self):
        ids = [pid(i) for i in range(10001)]
        self.reject(self.EXHAUSTED, lambda: self.ps.Get(P.GetPointsRequest(
            collection="main", ids=ids), timeout=T), "10001 ids", "at most 10000")

    def test_delete_with_10001_ids(self):
        ids = M.PointIdList(ids=[pid(100000 + i) for i in range(10001)])
        self.reject(self.EXHAUSTED, lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="main", ids=ids, wait=True), timeout=T), "10001 ids")

    def test_recommend_without_positives(self):
        self.reject(self.INVALID, lambda: self.ps.Recommend(P.RecommendRequest(
            collection="main", negative=[pid(1)], k=3), timeout=T),
            "at least one positive example")

    def test_recommend_with_missing_example_id(self):
        self.reject(self.NOT_FOUND, lambda: self.ps.Recommend(P.RecommendRequest(
            collection="main", positive=[pid(1), pid(999999)], k=3), timeout=T),
            "positive example point 999999 does not exist")
        self.reject(self.NOT_FOUND, lambda: self.ps.Recommend(P.RecommendRequest(
            collection="main", positive=[pid(1)],
            negative=[pid("00000000-0000-0000-0000-0000000000AB")], k=3), timeout=T),
            "negative example point 00000000-0000-0000-0000-0000000000ab does not exist")

    # ---- found in review ---------------------------------------------------------------------

    def test_delete_with_empty_filter_and_blank_filter_text(self):
        # both parts empty: it would match every point
        self.reject(self.INVALID, lambda: self.ps.Delete(P.DeletePointsRequest(
            collection="main", filter=M.Filter(), filter_text="  ", wait=True), timeout=T),
            "empty filter")

    def test_has_id_filter_with_malformed_ids(self):
        bad_uuid = M.Filter(must=[M.Condition(has_id=M.HasId(ids=[pid("nope")]))])
        self.reject(self.INVALID, lambda: self.ps.Count(P.CountPointsRequest(
            collection="main", filter=bad_uuid), timeout=T), "has_id", "not a UUID")
        unset = M.Filter(must=[M.Condition(nested=M.Filter(must=[M.Condition(
            has_id=M.HasId(ids=[pid(1), M.PointId()]))]))])
        self.reject(self.INVALID, lambda: self.ps.Search(P.SearchRequest(
            collection="main", vector=M.Vector(data=[0.1, 0.2, 0.3, 0.4]), k=3, filter=unset),
            timeout=T), "has_id", "point id is missing")
        # and a valid has_id still matches
        ok = M.Filter(must=[M.Condition(has_id=M.HasId(ids=[pid(1), pid(2)]))])
        self.assertEqual(self.ps.Count(P.CountPointsRequest(collection="main", filter=ok),
                                       timeout=T).count, 2)

    def test_payload_selector_with_257_keys(self):
        sel = M.PayloadSelector(include=M.PayloadFields(fields=[f"k{i}" for i in range(257)]))
        for name, call in (
                ("search", self.search(with_payload=sel, k=3)),
                ("get", lambda: self.ps.Get(P.GetPointsRequest(
                    collection="main", ids=[pid(1)], with_payload=sel), timeout=T)),
                ("scroll", lambda: self.ps.Scroll(P.ScrollPointsRequest(
                    collection="main", limit=5, with_payload=sel), timeout=T))):
            with self.subTest(call=name):
                self.reject(self.INVALID, call, "257 keys", "at most 256")
        ok = M.PayloadSelector(exclude=M.PayloadFields(fields=[f"k{i}" for i in range(256)]))
        self.assertEqual(len(self.search(with_payload=ok, k=3)().points), 3)

    def test_recommend_average_that_overflows_float32(self):
        self.reject(self.INVALID, lambda: self.ps.Recommend(P.RecommendRequest(
            collection="main", positive_vectors=[M.Vector(data=[3e38, 0, 0, 0])],
            negative_vectors=[M.Vector(data=[-3e38, 0, 0, 0])], k=3), timeout=T),
            "overflows float32", "BEST_SCORE")

    def test_subnormal_cosine_vector_is_normalised_not_broken(self):
        # every component subnormal: 1/|v| overflows a float, so the node normalises in double
        tiny = [1e-39, 0.0, 0.0, 0.0]
        r = self.ps.Search(P.SearchRequest(collection="cos", vector=M.Vector(data=tiny), k=3,
                                           with_vectors=True), timeout=T)
        self.assertEqual(len(r.points), 3)
        self.ps.Upsert(P.UpsertPointsRequest(collection="cos", points=[point(900, tiny)],
                                             wait=True), timeout=T)
        try:
            got = self.ps.Get(P.GetPointsRequest(collection="cos", ids=[pid(900)],
                                                 with_vectors=True), timeout=T).points
            self.assertEqual(list(got[0].vector.data), [1.0, 0.0, 0.0, 0.0])
            # the collection still takes writes (it did not stop on an unappliable vector)
            self.ps.Upsert(P.UpsertPointsRequest(collection="cos", points=[point(901, [1, 1, 0, 0])],
                                                 wait=True), timeout=T)
        finally:
            self.ps.Delete(P.DeletePointsRequest(collection="cos", ids=M.PointIdList(
                ids=[pid(900), pid(901)]), wait=True), timeout=T)
        self.assertIntact()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True, help="the quiver-node binary")
    parser.add_argument("--python-dir", required=True, help="the generated Python stubs")
    ARGS, rest = parser.parse_known_args()
    load_stubs(ARGS.python_dir)
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()

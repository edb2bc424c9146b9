#!/usr/bin/python3
"""Functional checks of quiver.v1.Collections and quiver.v1.Points against a live quiver-node.

Results are compared with plain-Python ground truth: filters (structured and filter_text) with a
brute-force evaluation over the payloads the test wrote, FLAT searches with an exact scan in
double precision, and quantised / IVF indexes with exact results while they train and with recall
once trained. One node serves every test; each test works on collections of its own.

Usage: test_points_api.py --node build/bin/quiver-node --python-dir build/python [unittest options]
"""
import argparse
import math
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
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodeproc  # noqa: E402

ARGS = None
T = 60  # seconds: deadline of every call

# Filled by load_stubs() once the generated package directory is known.
grpc = C = CG = P = PG = M = H = HG = None


def load_stubs(python_dir):
    global grpc, C, CG, P, PG, M, H, HG
    st = nodeproc.load_stubs(python_dir)
    grpc, C, CG, P, PG, M, H, HG = st.grpc, st.C, st.CG, st.P, st.PG, st.M, st.H, st.HG


def start_node(data_dir, log_path):
    return nodeproc.start_node(ARGS.node, data_dir, log_path)


stop_node = nodeproc.stop_node


# ---- messages ----------------------------------------------------------------------------------

def f32(x):
    """x rounded to float32, as the node stores it."""
    return struct.unpack("f", struct.pack("f", x))[0]


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


def from_value(v):
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "list_value":
        return [from_value(e) for e in v.list_value.values]
    return getattr(v, kind)


def payload(d):
    p = M.Payload()
    for k, v in d.items():
        p.fields[k].CopyFrom(value(v))
    return p


def payload_dict(p):
    return {k: from_value(v) for k, v in p.fields.items()}


def point(i, vec, pl=None):
    return M.PointStruct(id=pid(i), vector=M.Vector(data=vec),
                         payload=payload(pl) if pl is not None else None)


def order_key(k):
    """Scroll order: numeric ids (ascending) before UUIDs (ascending bytes = lower-case text)."""
    return (1, k) if isinstance(k, str) else (0, k)


# Structured filter builders.
def F(must=(), should=(), must_not=(), min_should=None):
    f = M.Filter(must=list(must), should=list(should), must_not=list(must_not))
    if min_should is not None:
        f.min_should = min_should
    return f


def match(field, **kw):
    for k in ("keywords", "except_keywords"):
        if k in kw:
            kw[k] = M.KeywordList(values=kw[k])
    for k in ("integers", "except_integers"):
        if k in kw:
            kw[k] = M.IntegerList(values=kw[k])
    return M.Condition(match=M.FieldMatch(field=field, **kw))


def rng(field, **kw):
    return M.Condition(range=M.FieldRange(field=field, **kw))


def nested(f):
    return M.Condition(nested=f)


def has_id(*ids):
    return M.Condition(has_id=M.HasId(ids=[pid(i) for i in ids]))


def is_null(field):
    return M.Condition(is_null=M.IsNull(field=field))


def is_empty(field):
    return M.Condition(is_empty=M.IsEmpty(field=field))


# Brute-force evaluation over the payload dicts the test wrote. Payload values are Python values:
# str, int, float, bool, None, list. bool is tested before int (bool is an int in Python).
def elems(pl, field):
    """The scalar values of a field (lists flattened, any depth); [] when missing."""
    out = []

    def walk(v):
        if isinstance(v, list):
            for e in v:
                walk(e)
        else:
            out.append(v)
    if field in pl:
        walk(pl[field])
    return out


def is_str(x):
    return type(x) is str


def is_int(x):
    return type(x) is int


def is_num(x):
    return type(x) in (int, float)


def b_kw(field, *kws):
    return lambda i, pl: any(is_str(x) and x in kws for x in elems(pl, field))


def b_int(field, *ints):
    # an integer match also takes a double holding exactly that integer
    return lambda i, pl: any(is_num(x) and x in ints and float(x).is_integer()
                             for x in elems(pl, field))


def b_bool(field, b):
    return lambda i, pl: any(type(x) is bool and x == b for x in elems(pl, field))


def b_range(field, gt=None, gte=None, lt=None, lte=None):
    def ok(x):
        x = float(x)
        return ((gt is None or x > gt) and (gte is None or x >= gte) and
                (lt is None or x < lt) and (lte is None or x <= lte))
    return lambda i, pl: any(is_num(x) and ok(x) for x in elems(pl, field))


def b_null(field):
    return lambda i, pl: field in pl and pl[field] is None


def b_empty(field):
    return lambda i, pl: field not in pl or pl[field] is None or pl[field] == []


def b_ids(*ids):
    ids = {i.lower() if isinstance(i, str) else i for i in ids}
    return lambda i, pl: i in ids


def b_not(p):
    return lambda i, pl: not p(i, pl)


def b_and(*ps):
    return lambda i, pl: all(p(i, pl) for p in ps)


def b_or(*ps):
    return lambda i, pl: any(p(i, pl) for p in ps)


def b_atleast(n, *ps):
    return lambda i, pl: sum(1 for p in ps if p(i, pl)) >= n


# Exact distances in double precision over the float32 values the node holds.
def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def dist(metric, q, v):
    if metric == "L2":
        return sum((x - y) ** 2 for x, y in zip(q, v))
    if metric == "DOT":
        return -dot(q, v)
    return 1.0 - dot(q, v) / math.sqrt(dot(q, q) * dot(v, v))


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


METRICS = {"L2": None, "COSINE": None, "DOT": None}  # names -> enum, filled after load_stubs


class PointsApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        METRICS.update(L2=M.METRIC_L2, COSINE=M.METRIC_COSINE, DOT=M.METRIC_DOT)
        cls.tmp = tempfile.mkdtemp(prefix="quiver-points-")
        cls.proc = None
        cls.channel = None
        try:
            cls.proc, cls.addr, cls.http_port = start_node(
                os.path.join(cls.tmp, "data"), os.path.join(cls.tmp, "node.log"))
            cls.channel = grpc.insecure_channel(
                cls.addr, options=[("grpc.max_receive_message_length", 64 << 20)])
            cls.cs = CG.CollectionsStub(cls.channel)
            cls.ps = PG.PointsStub(cls.channel)
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

    # ---- helpers -----------------------------------------------------------------------------

    def create(self, name, dim, metric="L2", index=None, **kw):
        idx = index if index is not None else M.IndexConfig(type=M.INDEX_TYPE_FLAT)
        r = self.cs.Create(C.CreateCollectionRequest(name=name, dimension=dim,
                                                     metric=METRICS[metric], index=idx, **kw),
                           timeout=T)
        self.assertTrue(r.created)
        return r

    def upsert(self, coll, pts, batch=2000):
        for s in range(0, len(pts), batch):
            r = self.ps.Upsert(P.UpsertPointsRequest(collection=coll, points=pts[s:s + batch],
                                                     wait=True), timeout=T)
            self.assertEqual(r.result.status, M.UPDATE_STATUS_APPLIED)

    def scroll_all(self, coll, limit=100, **kw):
        out, cursor = [], b""
        while True:
            r = self.ps.Scroll(P.ScrollPointsRequest(collection=coll, limit=limit, cursor=cursor,
                                                     **kw), timeout=T)
            out.extend(r.points)
            if not r.next_cursor:
                return out
            cursor = r.next_cursor

    def count(self, coll, **kw):
        return self.ps.Count(P.CountPointsRequest(collection=coll, **kw), timeout=T).count

    def search(self, coll, q, **kw):
        return self.ps.Search(P.SearchRequest(collection=coll, vector=M.Vector(data=q), **kw),
                              timeout=T).points

    def assertSameRanking(self, got, expected, truth, what=""):
        """got: ScoredPoints; expected: [(id, distance)] ascending; truth: id -> exact distance.
        Ranks must agree up to ties: every returned id's exact distance equals the distance the
        node reports and the distance expected at that rank."""
        g = [(key_of(p.id), p.distance) for p in got]
        self.assertEqual(len(g), len(expected), what)
        self.assertEqual(len({i for i, _ in g}), len(g), f"{what}: repeated id")
        for rank, ((gi, gd), (ei, ed)) in enumerate(zip(g, expected)):
            self.assertTrue(close(gd, ed), f"{what}: rank {rank}: distance {gd} != {ed}")
            if gi != ei:
                self.assertTrue(close(truth[gi], ed),
                                f"{what}: rank {rank}: id {gi} (at {truth[gi]}) != {ei} (at {ed})")
            else:
                self.assertTrue(close(truth[gi], gd), f"{what}: rank {rank}")
        for a, b in zip(g, g[1:]):
            self.assertLessEqual(a[1], b[1], f"{what}: not ascending")

    # ---- filters -----------------------------------------------------------------------------

    UUIDS = ["6f1c2a3b-0000-4000-8000-00000000000%x" % i for i in range(10)] + \
            ["0a0b0c0d-1111-4222-8333-%012x" % (i * 7919) for i in range(30)]

    @classmethod
    def filter_data(cls):
        rnd = random.Random(1234)
        data = {}
        ids = list(range(400)) + cls.UUIDS
        for i in ids:
            d = {}
            r = rnd.random()
            if r < 0.85:
                d["color"] = rnd.choice(["red", "green", "blue", "Red", "yellow"])
            r = rnd.random()
            if r < 0.55:
                d["label"] = rnd.randrange(10)
            elif r < 0.7:
                d["label"] = float(rnd.randrange(10))  # integral double: matches integer 3
            elif r < 0.8:
                d["label"] = rnd.randrange(10) + 0.5
            elif r < 0.88:
                d["label"] = None
            r = rnd.random()
            if r < 0.5:
                d["price"] = round(rnd.uniform(0, 100), 2)
            elif r < 0.85:
                d["price"] = rnd.randrange(101)  # integers take part in double ranges
            r = rnd.random()
            if r < 0.4:
                d["flag"] = True
            elif r < 0.8:
                d["flag"] = False
            elif r < 0.9:
                d["flag"] = None
            r = rnd.random()
            if r < 0.5:
                d["tags"] = rnd.sample(["a", "b", "c", "d", "e"], rnd.randrange(1, 4))
            elif r < 0.6:
                d["tags"] = []
            elif r < 0.7:
                d["tags"] = [["a", "x"], "b", 3]
            elif r < 0.75:
                d["tags"] = "a"  # a scalar, not a list
            r = rnd.random()
            if r < 0.6:
                d["nums"] = [rnd.randrange(20) for _ in range(rnd.randrange(1, 4))]
            elif r < 0.8:
                d["nums"] = [rnd.randrange(20) + 0.25, [rnd.randrange(20)]]
            r = rnd.random()
            if r < 0.3:
                d["maybe"] = None
            elif r < 0.5:
                d["maybe"] = "x"
            elif r < 0.6:
                d["maybe"] = []
            data[i] = d
        return data

    def filter_cases(self):
        """(name, filter_text or None, structured Filter or None, predicate)."""
        u_up = self.UUIDS[3].upper()
        return [
            ("keyword", "color = 'red'", F([match("color", keyword="red")]), b_kw("color", "red")),
            ("keyword double-quoted, case-sensitive", 'color = "Red"',
             F([match("color", keyword="Red")]), b_kw("color", "Red")),
            ("keywords", "color in ['red', \"blue\"]", F([match("color", keywords=["red", "blue"])]),
             b_kw("color", "red", "blue")),
            ("integer (doubles holding it match)", "label = 3", F([match("label", integer=3)]),
             b_int("label", 3)),
            ("integers", "label in [1, 2, 7]", F([match("label", integers=[1, 2, 7])]),
             b_int("label", 1, 2, 7)),
            ("double equality", "label = 2.5", F([rng("label", gte=2.5, lte=2.5)]),
             b_range("label", gte=2.5, lte=2.5)),
            ("range gt", "price > 20.5", F([rng("price", gt=20.5)]), b_range("price", gt=20.5)),
            ("range gte (integers compare as doubles)", "price >= 20", F([rng("price", gte=20)]),
             b_range("price", gte=20)),
            ("range lt", "price < 50", F([rng("price", lt=50)]), b_range("price", lt=50)),
            ("range lte", "price <= 50.25", F([rng("price", lte=50.25)]),
             b_range("price", lte=50.25)),
            ("range two bounds", "price >= 10 and price < 20", F([rng("price", gte=10, lt=20)]),
             b_range("price", gte=10, lt=20)),
            ("range gt and gte on one bound", None, F([rng("price", gt=30, gte=30, lt=40, lte=40)]),
             b_range("price", gt=30, lt=40)),
            ("range over integer labels", "label > 2.5 and label <= 6",
             F([rng("label", gt=2.5, lte=6)]), b_range("label", gt=2.5, lte=6)),
            ("range with no bound: any number", None, F([rng("label")]), b_range("label")),
            ("boolean true", "flag = true", F([match("flag", boolean=True)]), b_bool("flag", True)),
            ("boolean false", "flag = FALSE", F([match("flag", boolean=False)]),
             b_bool("flag", False)),
            ("list: any element (nested lists too)", "tags = 'a'", F([match("tags", keyword="a")]),
             b_kw("tags", "a")),
            ("list: integer element", "tags = 3", F([match("tags", integer=3)]), b_int("tags", 3)),
            ("list: keywords", "tags in ['x', 'e']", F([match("tags", keywords=["x", "e"])]),
             b_kw("tags", "x", "e")),
            ("list: range over elements", "nums > 15.5", F([rng("nums", gt=15.5)]),
             b_range("nums", gt=15.5)),
            ("list: integer match", "nums = 4", F([match("nums", integer=4)]), b_int("nums", 4)),
            ("is null", "maybe is null", F([is_null("maybe")]), b_null("maybe")),
            ("is not null", "maybe is not null", F(must_not=[is_null("maybe")]),
             b_not(b_null("maybe"))),
            ("is empty", "maybe is empty", F([is_empty("maybe")]), b_empty("maybe")),
            ("is empty (lists)", "tags is empty", F([is_empty("tags")]), b_empty("tags")),
            ("is not empty", "tags is not empty", F(must_not=[is_empty("tags")]),
             b_not(b_empty("tags"))),
            ("label is null", "label is null", F([is_null("label")]), b_null("label")),
            ("must_not", "not color = 'red'", F(must_not=[match("color", keyword="red")]),
             b_not(b_kw("color", "red"))),
            ("!= (a point without the field passes)", "color != 'red' and flag = true",
             F([match("flag", boolean=True)], must_not=[match("color", keyword="red")]),
             b_and(b_not(b_kw("color", "red")), b_bool("flag", True))),
            ("should (min_should unset: 1)", "color = 'red' or flag = true",
             F(should=[match("color", keyword="red"), match("flag", boolean=True)]),
             b_or(b_kw("color", "red"), b_bool("flag", True))),
            ("should with min_should 2",
             "(color = 'red' and flag = true) or (color = 'red' and label < 5) or "
             "(flag = true and label < 5)",
             F(should=[match("color", keyword="red"), match("flag", boolean=True),
                       rng("label", lt=5)], min_should=2),
             b_atleast(2, b_kw("color", "red"), b_bool("flag", True), b_range("label", lt=5))),
            ("should with min_should 3 of 4", None,
             F(should=[match("color", keyword="red"), match("flag", boolean=True),
                       rng("label", lt=5), match("tags", keyword="a")], min_should=3),
             b_atleast(3, b_kw("color", "red"), b_bool("flag", True), b_range("label", lt=5),
                       b_kw("tags", "a"))),
            ("min_should 0: should does not constrain", None,
             F([match("flag", boolean=True)], should=[match("color", keyword="nothing")],
               min_should=0),
             b_bool("flag", True)),
            ("nested", "(color = 'red' or color = 'blue') and (label < 3 or flag = false)",
             F([nested(F(should=[match("color", keyword="red"), match("color", keyword="blue")])),
                nested(F(should=[rng("label", lt=3), match("flag", boolean=False)]))]),
             b_and(b_kw("color", "red", "blue"), b_or(b_range("label", lt=3),
                                                      b_bool("flag", False)))),
            ("nested must_not of a nested should", "not (color = 'red' or label = 1) and price < 60",
             F([rng("price", lt=60)],
               must_not=[nested(F(should=[match("color", keyword="red"),
                                          match("label", integer=1)]))]),
             b_and(b_not(b_or(b_kw("color", "red"), b_int("label", 1))),
                   b_range("price", lt=60))),
            ("has_id", f"id in [1, 5, 399, 100000, '{u_up}', '{self.UUIDS[20]}']",
             F([has_id(1, 5, 399, 100000, u_up, self.UUIDS[20])]),
             b_ids(1, 5, 399, 100000, u_up, self.UUIDS[20])),
            ("has_id and a field", "id in [1, 2, 3, 4, 5, 6, 7, 8] and color = 'red'",
             F([has_id(1, 2, 3, 4, 5, 6, 7, 8), match("color", keyword="red")]),
             b_and(b_ids(1, 2, 3, 4, 5, 6, 7, 8), b_kw("color", "red"))),
            ("except_keywords", "color not in ['red', 'green']",
             F([match("color", except_keywords=["red", "green"])]),
             b_not(b_kw("color", "red", "green"))),
            ("except_integers", "label not in [1, 2]", F([match("label", except_integers=[1, 2])]),
             b_not(b_int("label", 1, 2))),
            ("mixed literal list", "label in [1, 2.5, 'x']",
             F([nested(F(should=[match("label", integer=1), rng("label", gte=2.5, lte=2.5),
                                 match("label", keyword="x")]))]),
             b_or(b_int("label", 1), b_range("label", gte=2.5, lte=2.5), b_kw("label", "x"))),
            ("and binds tighter than or", "color = 'red' or flag = true and label = 1",
             F(should=[match("color", keyword="red"),
                       nested(F([match("flag", boolean=True), match("label", integer=1)]))]),
             b_or(b_kw("color", "red"), b_and(b_bool("flag", True), b_int("label", 1)))),
            ("not binds tighter than and", "not color = 'red' and flag = true",
             F([match("flag", boolean=True)], must_not=[match("color", keyword="red")]),
             b_and(b_not(b_kw("color", "red")), b_bool("flag", True))),
            ("not over or, then or", "NOT (color = 'red' OR color = 'blue') Or label = 0",
             F(should=[nested(F(must_not=[match("color", keyword="red"),
                                          match("color", keyword="blue")])),
                       match("label", integer=0)]),
             b_or(b_not(b_kw("color", "red", "blue")), b_int("label", 0))),
            ("double negation", "not not flag = true", F([match("flag", boolean=True)]),
             b_bool("flag", True)),
            ("backquoted field", "`color` = 'blue'", F([match("color", keyword="blue")]),
             b_kw("color", "blue")),
        ]

    def test_filters_match_brute_force_in_both_syntaxes(self):
        coll = "filters"
        self.create(coll, 4)
        data = self.filter_data()
        rnd = random.Random(5)
        vecs = {i: [f32(rnd.uniform(-1, 1)) for _ in range(4)] for i in data}
        self.upsert(coll, [point(i, vecs[i], data[i]) for i in data])
        self.assertEqual(self.count(coll), len(data))
        q = [0.1, 0.2, 0.3, 0.4]
        truth = {i: dist("L2", q, v) for i, v in vecs.items()}
        for name, text, structured, pred in self.filter_cases():
            expected = {i for i, pl in data.items() if pred(i, pl)}
            self.assertTrue(0 < len(expected) < len(data) or name.startswith("has_id"),
                            f"{name}: the data does not exercise it ({len(expected)} points)")
            forms = []
            if text is not None:
                forms.append(("text", dict(filter_text=text)))
            if structured is not None:
                forms.append(("structured", dict(filter=structured)))
            if text is not None and structured is not None:
                forms.append(("both", dict(filter_text=text, filter=structured)))
            for form, kw in forms:
                with self.subTest(case=name, form=form):
                    self.assertEqual(self.count(coll, **kw), len(expected))
                    got = [key_of(p.id) for p in self.scroll_all(coll, limit=37, **kw)]
                    self.assertEqual(got, sorted(expected, key=order_key))
                    # a filtered search returns exactly the passing points, nearest first
                    res = self.search(coll, q, k=max(len(expected), 1), **kw)
                    ranked = sorted(((i, truth[i]) for i in expected), key=lambda t: t[1])
                    self.assertSameRanking(res, ranked, truth, f"{name} ({form})")
        # a structured and a text filter are ANDed
        n = self.count(coll, filter_text="color = 'red'", filter=F([match("flag", boolean=True)]))
        self.assertEqual(n, sum(1 for i, pl in data.items()
                                if b_kw("color", "red")(i, pl) and b_bool("flag", True)(i, pl)))

    # ---- exact search on FLAT collections ----------------------------------------------------

    def _flat_vs_brute_force(self, metric):
        coll = "flat_" + metric.lower()
        dim, n = 16, 300
        self.create(coll, dim, metric)
        rnd = random.Random({"L2": 1, "COSINE": 2, "DOT": 3}[metric])
        vecs = {i: [f32(rnd.gauss(0, 1)) for _ in range(dim)] for i in range(n)}
        self.upsert(coll, [point(i, v, {"i": i, "odd": i % 2 == 1}) for i, v in vecs.items()])
        for qn in range(20):
            q = [f32(rnd.gauss(0, 1)) for _ in range(dim)]
            truth = {i: dist(metric, q, v) for i, v in vecs.items()}
            ranked = sorted(truth.items(), key=lambda t: t[1])
            with self.subTest(metric=metric, query=qn):
                k = 10 if qn % 2 == 0 else 25
                self.assertSameRanking(self.search(coll, q, k=k), ranked[:k], truth, metric)
                if qn < 5:  # with a filter: the odd ids only
                    odd = [t for t in ranked if t[0] % 2 == 1]
                    self.assertSameRanking(self.search(coll, q, k=10, filter_text="odd = true"),
                                           odd[:10], truth, metric + " filtered")
                    self.assertSameRanking(self.search(coll, q, k=10, params=M.SearchParams(
                        exact=True)), ranked[:10], truth, metric + " exact")
        # k = 0 means 10
        self.assertEqual(len(self.search(coll, vecs[0], k=0)), 10)
        # with_vectors returns the stored form: as written for L2 and DOT, unit length for COSINE
        res = self.search(coll, vecs[7], k=3, with_vectors=True)
        if metric != "DOT":  # the largest inner product need not be the point itself
            self.assertEqual(key_of(res[0].id), 7)
        for p in res:
            v = vecs[key_of(p.id)]
            got = list(p.vector.data)
            self.assertEqual(len(got), dim)
            if metric == "COSINE":
                norm = math.sqrt(dot(v, v))
                for a, b in zip(got, v):
                    self.assertAlmostEqual(a, b / norm, places=6)
            else:
                self.assertEqual(got, v)
        self.assertFalse(self.search(coll, vecs[7], k=3)[0].HasField("vector"))

    def test_flat_l2_equals_brute_force(self):
        self._flat_vs_brute_force("L2")

    def test_flat_cosine_equals_brute_force(self):
        self._flat_vs_brute_force("COSINE")

    def test_flat_dot_equals_brute_force(self):
        self._flat_vs_brute_force("DOT")

    def test_offset_pagination_and_max_distance(self):
        coll = "pages"
        dim = 8
        self.create(coll, dim)
        rnd = random.Random(11)
        vecs = {i: [f32(rnd.uniform(-1, 1)) for _ in range(dim)] for i in range(200)}
        self.upsert(coll, [point(i, v) for i, v in vecs.items()])
        q = [f32(rnd.uniform(-1, 1)) for _ in range(dim)]
        truth = {i: dist("L2", q, v) for i, v in vecs.items()}
        ranked = sorted(truth.items(), key=lambda t: t[1])
        whole = self.search(coll, q, k=40)
        self.assertSameRanking(whole, ranked[:40], truth, "k=40")
        pages = []
        for off in range(0, 40, 7):
            page = self.search(coll, q, k=7, offset=off)
            self.assertEqual(len(page), 7)
            pages.extend(page)
        self.assertEqual([(key_of(p.id), p.distance) for p in pages[:40]],
                         [(key_of(p.id), p.distance) for p in whole])
        # offset past the end
        self.assertEqual(len(self.search(coll, q, k=10, offset=195)), 5)
        self.assertEqual(len(self.search(coll, q, k=10, offset=200)), 0)
        # max_distance: a bound between the 12th and 13th distances keeps exactly 12
        bound = (ranked[11][1] + ranked[12][1]) / 2
        res = self.search(coll, q, k=50, max_distance=bound)
        self.assertSameRanking(res, ranked[:12], truth, "max_distance")
        self.assertTrue(all(p.distance <= bound for p in res))
        # with an offset, max_distance applies to the returned page
        res = self.search(coll, q, k=50, offset=5, max_distance=bound)
        self.assertSameRanking(res, ranked[5:12], truth, "max_distance + offset")
        # max_distance 0 keeps only exact matches
        res = self.search(coll, vecs[42], k=5, max_distance=0.0)
        self.assertEqual([key_of(p.id) for p in res], [42])
        # a bound below every distance: nothing
        self.assertEqual(len(self.search(coll, q, k=5, max_distance=ranked[0][1] / 2)), 0)

    def test_payload_selectors(self):
        coll = "selectors"
        self.create(coll, 2)
        pl = {"a": 1, "b": "two", "c": [1.5, None, True], "d": None}
        self.upsert(coll, [point(1, [0.0, 0.0], pl), point(2, [1.0, 1.0])])
        q = [0.0, 0.0]

        def one(sel):
            r = self.search(coll, q, k=2, with_payload=sel)
            g = self.ps.Get(P.GetPointsRequest(collection=coll, ids=[pid(1)], with_payload=sel),
                            timeout=T).points[0]
            s = self.scroll_all(coll, with_payload=sel)[0]
            self.assertEqual(key_of(r[0].id), 1)
            out = [r[0], g, s]
            return out, r[1]

        for sel, want in ((M.PayloadSelector(enable=True), pl),
                          (M.PayloadSelector(include=M.PayloadFields(fields=["a", "c", "zz"])),
                           {"a": 1, "c": [1.5, None, True]}),
                          (M.PayloadSelector(exclude=M.PayloadFields(fields=["a", "d", "zz"])),
                           {"b": "two", "c": [1.5, None, True]})):
            with self.subTest(selector=str(sel)):
                pts, other = one(sel)
                for p in pts:
                    self.assertEqual(payload_dict(p.payload), want)
                self.assertEqual(payload_dict(other.payload), {})  # point 2 has no payload
        for sel in (None, M.PayloadSelector(enable=False), M.PayloadSelector()):
            with self.subTest(selector=str(sel)):
                pts, _ = one(sel)
                for p in pts:
                    self.assertFalse(p.HasField("payload"))

    # ---- ids and scroll ----------------------------------------------------------------------

    def test_uuid_ids_mixed_with_numeric_and_scroll_order(self):
        coll = "ids"
        self.create(coll, 4)
        rnd = random.Random(3)
        nums = [0, 1, 2, 255, 256, 65536, 2 ** 32, 2 ** 53 + 1, 2 ** 63, 2 ** 64 - 1] + \
            rnd.sample(range(3, 10 ** 12), 40)
        uuids = ["%08x-%04x-%04x-%04x-%012x" % (rnd.getrandbits(32), rnd.getrandbits(16),
                                                 rnd.getrandbits(16), rnd.getrandbits(16),
                                                 rnd.getrandbits(48)) for _ in range(35)]
        uuids += ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
        # written in upper case, read back in lower case
        pts = [point(i, [float(n % 7), 1.0, 2.0, 3.0], {"n": n})
               for n, i in enumerate(nums + [u.upper() for u in uuids])]
        rnd.shuffle(pts)
        self.upsert(coll, pts)
        all_ids = nums + uuids
        self.assertEqual(self.count(coll), len(all_ids))
        expected_order = sorted(all_ids, key=order_key)
        got = [key_of(p.id) for p in self.scroll_all(coll)]
        self.assertEqual(got, expected_order)
        for p in self.scroll_all(coll, limit=5):
            if p.id.WhichOneof("kind") == "uuid":
                self.assertEqual(p.id.uuid, p.id.uuid.lower())
        # Get by upper- or lower-case UUID finds the same point, returned in lower case
        g = self.ps.Get(P.GetPointsRequest(collection=coll, ids=[pid(uuids[0].upper()), pid(uuids[0]),
                                                                 pid(nums[3]), pid(12345678912345)]),
                        timeout=T)
        self.assertEqual([key_of(p.id) for p in g.points], [uuids[0], nums[3]])
        # num 0 and the nil UUID are different points
        g = self.ps.Get(P.GetPointsRequest(collection=coll, ids=[
            pid(0), pid("00000000-0000-0000-0000-000000000000")],
            with_payload=M.PayloadSelector(enable=True)), timeout=T)
        self.assertEqual(len(g.points), 2)
        self.assertNotEqual(payload_dict(g.points[0].payload), payload_dict(g.points[1].payload))
        # Search returns UUIDs in lower case
        res = self.search(coll, [0.0, 1.0, 2.0, 3.0], k=len(all_ids))
        self.assertEqual({key_of(p.id) for p in res}, set(all_ids))
        # paging through every page size gives the same order without skips or repeats
        for limit in (1, 7, 86, 87, 1000):
            with self.subTest(limit=limit):
                got = [key_of(p.id) for p in self.scroll_all(coll, limit=limit)]
                self.assertEqual(got, expected_order)

    def test_scroll_while_writing_skips_and_repeats_nothing(self):
        coll = "scroll_live"
        self.create(coll, 2)
        rnd = random.Random(9)
        initial = rnd.sample(range(10 ** 9), 120) + ["%08x-0000-4000-8000-%012x" % (
            rnd.getrandbits(32), rnd.getrandbits(48)) for _ in range(60)]
        self.upsert(coll, [point(i, [1.0, 2.0]) for i in initial])
        volatile = set(rnd.sample(initial, 50))
        stable = set(initial) - volatile
        to_delete = list(volatile)
        seen, cursor, pages = [], b"", 0
        fresh = 0
        while True:
            r = self.ps.Scroll(P.ScrollPointsRequest(collection=coll, limit=7, cursor=cursor),
                               timeout=T)
            seen.extend(key_of(p.id) for p in r.points)
            pages += 1
            # between pages: delete some points, write new ones before and after the cursor
            if to_delete:
                d = to_delete.pop()
                self.ps.Delete(P.DeletePointsRequest(collection=coll, ids=M.PointIdList(
                    ids=[pid(d)]), wait=True), timeout=T)
            new = [rnd.randrange(10 ** 9, 2 ** 64), rnd.randrange(0, 10 ** 9),
                   "%08x-1111-4000-8000-%012x" % (rnd.getrandbits(32), fresh)]
            fresh += 1
            self.upsert(coll, [point(i, [3.0, 4.0]) for i in new])
            if not r.next_cursor:
                break
            cursor = r.next_cursor
            self.assertLess(pages, 1000)
        self.assertGreater(pages, 20)
        self.assertEqual(len(seen), len(set(seen)), "a point was returned twice")
        self.assertEqual(seen, sorted(seen, key=order_key), "scroll order broken")
        missing = stable - set(seen)
        self.assertFalse(missing, f"stable points skipped: {sorted(missing, key=order_key)[:10]}")

    # ---- count, delete ----------------------------------------------------------------------

    def test_count_and_delete_by_filter(self):
        coll = "deletes"
        self.create(coll, 3)
        rnd = random.Random(21)
        data = {i: {"kind": rnd.choice(["a", "b", "c"]), "v": rnd.randrange(100)}
                for i in range(500)}
        self.upsert(coll, [point(i, [float(i), 0.0, 1.0], pl) for i, pl in data.items()])
        self.assertEqual(self.count(coll), 500)
        for kw in ({"filter_text": "kind = 'a'"}, {"filter": F([match("kind", keyword="a")])},
                   {"filter_text": "v >= 50 and kind != 'b'"}, {"filter_text": "v < 0"}):
            with self.subTest(filter=str(kw)):
                n = self.count(coll, **kw)
                exact = self.ps.Count(P.CountPointsRequest(collection=coll, exact=True, **kw),
                                      timeout=T)
                self.assertEqual(exact.count, n)
                self.assertTrue(exact.exact)
        n_a = sum(1 for pl in data.values() if pl["kind"] == "a")
        self.assertEqual(self.count(coll, filter_text="kind = 'a'"), n_a)
        # delete by text filter
        r = self.ps.Delete(P.DeletePointsRequest(collection=coll, filter_text="kind = 'a'",
                                                 wait=True), timeout=T)
        self.assertEqual(r.result.status, M.UPDATE_STATUS_APPLIED)
        self.assertEqual(r.result.shards[0].points, n_a)
        self.assertEqual(self.count(coll), 500 - n_a)
        self.assertEqual(self.count(coll, filter_text="kind = 'a'"), 0)
        left = {key_of(p.id) for p in self.scroll_all(coll)}
        self.assertEqual(left, {i for i, pl in data.items() if pl["kind"] != "a"})
        # delete by structured filter (v < 10 among what is left)
        gone = {i for i in left if data[i]["v"] < 10}
        r = self.ps.Delete(P.DeletePointsRequest(collection=coll, filter=F([rng("v", lt=10)]),
                                                 wait=True), timeout=T)
        self.assertEqual(r.result.shards[0].points, len(gone))
        self.assertEqual(self.count(coll), len(left) - len(gone))
        # deleted points are gone from searches and Get as well
        res = self.search(coll, [0.0, 0.0, 1.0], k=500)
        self.assertEqual({key_of(p.id) for p in res}, left - gone)
        g = self.ps.Get(P.GetPointsRequest(collection=coll, ids=[pid(i) for i in range(500)]),
                        timeout=T)
        self.assertEqual({key_of(p.id) for p in g.points}, left - gone)
        # delete by ids, some missing
        r = self.ps.Delete(P.DeletePointsRequest(collection=coll, ids=M.PointIdList(
            ids=[pid(i) for i in range(0, 600, 50)]), wait=True), timeout=T)
        self.assertEqual(self.count(coll), len((left - gone) - set(range(0, 600, 50))))

    # ---- recommend and batches ---------------------------------------------------------------

    def _recommend_setup(self, coll):
        dim = 8
        self.create(coll, dim)
        rnd = random.Random(31)
        vecs = {i: [f32(rnd.gauss(0, 1)) for _ in range(dim)] for i in range(300)}
        self.upsert(coll, [point(i, v, {"g": i % 3}) for i, v in vecs.items()])
        return coll, vecs

    def test_recommend_strategies_never_return_the_examples(self):
        coll, vecs = self._recommend_setup("rec")
        cases = [([1, 2], [3]), ([10], []), ([5, 6, 7], [8, 9]), ([100], [101])]
        for pos, neg in cases:
            examples = set(pos) | set(neg)
            others = {i: v for i, v in vecs.items() if i not in examples}
            dim = len(vecs[0])
            p = [sum(vecs[i][d] for i in pos) / len(pos) for d in range(dim)]
            if neg:
                n = [sum(vecs[i][d] for i in neg) / len(neg) for d in range(dim)]
                q = [f32(2 * a - b) for a, b in zip(p, n)]
            else:
                q = [f32(a) for a in p]
            truth = {i: dist("L2", q, v) for i, v in others.items()}
            ranked = sorted(truth.items(), key=lambda t: t[1])
            with self.subTest(strategy="AVERAGE_VECTOR", pos=pos, neg=neg):
                for strategy in (P.RECOMMEND_STRATEGY_UNSPECIFIED,
                                 P.RECOMMEND_STRATEGY_AVERAGE_VECTOR):
                    r = self.ps.Recommend(P.RecommendRequest(
                        collection=coll, positive=[pid(i) for i in pos],
                        negative=[pid(i) for i in neg], k=15, strategy=strategy), timeout=T)
                    self.assertFalse({key_of(x.id) for x in r.points} & examples)
                    self.assertSameRanking(r.points, ranked[:15], truth, "average")
                # with offset and a filter
                r = self.ps.Recommend(P.RecommendRequest(
                    collection=coll, positive=[pid(i) for i in pos],
                    negative=[pid(i) for i in neg], k=5, offset=3, filter_text="g = 1"), timeout=T)
                g1 = [t for t in ranked if t[0] % 3 == 1]
                self.assertSameRanking(r.points, g1[3:8], truth, "average, filtered")
            with self.subTest(strategy="BEST_SCORE", pos=pos, neg=neg):
                k = 12
                cands = []
                for i in pos:
                    near = sorted(others, key=lambda j: dist("L2", vecs[i], vecs[j]))[:k]
                    cands.extend(j for j in near if j not in cands)
                scored = []
                for j in cands:
                    dp = min(dist("L2", vecs[j], vecs[i]) for i in pos)
                    dn = min((dist("L2", vecs[j], vecs[i]) for i in neg), default=math.inf)
                    if dn >= dp:
                        scored.append((j, dp))
                scored.sort(key=lambda t: t[1])
                best = {j: min(dist("L2", vecs[j], vecs[i]) for i in pos) for j in others}
                r = self.ps.Recommend(P.RecommendRequest(
                    collection=coll, positive=[pid(i) for i in pos],
                    negative=[pid(i) for i in neg], k=k,
                    strategy=P.RECOMMEND_STRATEGY_BEST_SCORE), timeout=T)
                self.assertFalse({key_of(x.id) for x in r.points} & examples)
                self.assertSameRanking(r.points, scored[:k], best, "best score")
        # the examples stay out even when they are the nearest points to the query vector
        r = self.ps.Recommend(P.RecommendRequest(
            collection=coll, positive=[pid(4)], positive_vectors=[M.Vector(data=vecs[4])], k=300),
            timeout=T)
        self.assertEqual(len(r.points), 299)
        self.assertNotIn(4, {key_of(x.id) for x in r.points})

    def test_best_score_with_examples_that_cancel_out(self):
        # COSINE: p + (p - n) of these is the zero vector, which only AVERAGE_VECTOR needs
        coll = "cancel"
        self.create(coll, 2, "COSINE")
        self.upsert(coll, [point(i, [math.cos(i / 10), math.sin(i / 10)]) for i in range(60)])
        ex = [M.Vector(data=[1, 0]), M.Vector(data=[-1, 0])]
        r = self.ps.Recommend(P.RecommendRequest(collection=coll, positive_vectors=ex, k=5,
                                                 strategy=P.RECOMMEND_STRATEGY_BEST_SCORE),
                              timeout=T)
        self.assertEqual([key_of(x.id) for x in r.points][:1], [0])  # [1, 0] itself
        self.assertEqual(len(r.points), 5)
        with self.assertRaises(grpc.RpcError) as cm:
            self.ps.Recommend(P.RecommendRequest(collection=coll, positive_vectors=ex, k=5),
                              timeout=T)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("cancel out", cm.exception.details())

    def test_nprobe_is_ignored_by_non_ivf_indexes(self):
        coll = "noivf"
        self.create(coll, 2, index=M.IndexConfig(type=M.INDEX_TYPE_HNSW))
        self.upsert(coll, [point(i, [float(i), 0.0]) for i in range(30)])
        got = self.search(coll, [3.2, 0.0], k=3, params=M.SearchParams(nprobe=4, ef=32))
        self.assertEqual([key_of(x.id) for x in got], [3, 4, 2])

    def test_search_batch_equals_individual_searches(self):
        coll, vecs = self._recommend_setup("batch")
        rnd = random.Random(41)
        queries = []
        for n in range(12):
            q = dict(vector=M.Vector(data=[f32(rnd.gauss(0, 1)) for _ in range(8)]),
                     k=rnd.choice([1, 5, 10, 40]), offset=rnd.choice([0, 0, 3]))
            if n % 3 == 1:
                q["filter_text"] = "g = 2"
            if n % 3 == 2:
                q["filter"] = F([match("g", integers=[0, 1])])
            if n % 4 == 3:
                q["with_payload"] = M.PayloadSelector(enable=True)
                q["with_vectors"] = True
            queries.append(q)
        batch = self.ps.SearchBatch(P.SearchBatchRequest(
            collection=coll, queries=[P.BatchSearchQuery(**q) for q in queries]), timeout=T)
        self.assertEqual(len(batch.results), len(queries))
        for n, (q, res) in enumerate(zip(queries, batch.results)):
            with self.subTest(query=n):
                single = self.ps.Search(P.SearchRequest(collection=coll, **q), timeout=T)
                self.assertEqual(list(res.points), list(single.points))
                self.assertEqual(len(res.points), q["k"])
                self.assertEqual(list(res.searched_shards), [0])
                self.assertFalse(res.partial)

    # ---- collections -------------------------------------------------------------------------

    def test_describe_and_list(self):
        coll = "described"
        created = self.create(coll, 5, "COSINE", on_disk_payload=False)
        cfg = created.info.config
        self.assertEqual((cfg.name, cfg.dimension, cfg.metric), (coll, 5, M.METRIC_COSINE))
        self.assertEqual(cfg.index.type, M.INDEX_TYPE_FLAT)
        self.assertEqual((cfg.shard_count, cfg.replication_factor), (1, 1))
        self.assertEqual(cfg.partitioning, M.PARTITIONING_HASH)
        self.assertGreater(cfg.uid, 0)
        self.assertLessEqual(abs(cfg.created_at_unix_ms - time.time() * 1000), 600_000)
        rnd = random.Random(2)
        self.upsert(coll, [point(i, [f32(rnd.uniform(0.1, 1)) for _ in range(5)], {"x": i})
                           for i in range(123)])
        info = self.cs.Describe(C.DescribeCollectionRequest(name=coll), timeout=T).info
        self.assertEqual(info.config, cfg)
        self.assertEqual(info.points_count, 123)
        self.assertEqual(info.indexed_points_count, 123)
        self.assertEqual(info.status, C.COLLECTION_STATUS_READY)
        self.assertEqual(info.status_message, "")
        self.assertGreater(info.memory_bytes, 0)
        self.assertEqual(len(info.shards), 1)
        self.assertEqual(info.shards[0].points_count, 123)
        self.assertTrue(info.shards[0].healthy)
        # defaults are resolved in the returned configuration (HNSW)
        h = self.cs.Create(C.CreateCollectionRequest(name="hnsw-defaults", dimension=3,
                                                     metric=M.METRIC_L2), timeout=T).info.config
        self.assertEqual(h.index.type, M.INDEX_TYPE_HNSW)
        self.assertEqual((h.index.hnsw.m, h.index.hnsw.ef_construction, h.index.hnsw.ef_search),
                         (16, 200, 64))
        # List is sorted by name (byte order) whatever the creation order
        for name in ("zz-last", "B1", "a_1", "9lives", "Zeta", "b-2"):
            self.cs.Create(C.CreateCollectionRequest(name=name, dimension=2, metric=M.METRIC_DOT),
                           timeout=T)
        lst = self.cs.List(C.ListCollectionsRequest(with_info=True), timeout=T)
        names = list(lst.names)
        self.assertEqual(names, sorted(names))
        for name in ("zz-last", "B1", "a_1", "9lives", "Zeta", "b-2", coll, "hnsw-defaults"):
            self.assertIn(name, names)
        self.assertEqual([i.config.name for i in lst.infos], names)
        self.assertEqual(lst.infos[names.index(coll)].points_count, 123)
        self.assertEqual(len(self.cs.List(C.ListCollectionsRequest(), timeout=T).infos), 0)
        # dropping removes it from List; a new incarnation gets a new uid
        self.assertTrue(self.cs.Drop(C.DropCollectionRequest(name="B1"), timeout=T).dropped)
        self.assertNotIn("B1", self.cs.List(C.ListCollectionsRequest(), timeout=T).names)
        again = self.cs.Create(C.CreateCollectionRequest(name="zz-last", dimension=2,
                                                         metric=M.METRIC_DOT, if_not_exists=True),
                               timeout=T)
        self.assertFalse(again.created)

    # ---- observability -----------------------------------------------------------------------

    def http_get(self, path):
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=T) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_metrics_and_health_endpoints(self):
        coll = "observed"
        self.create(coll, 2)
        self.upsert(coll, [point(i, [float(i), 1.0]) for i in range(77)])
        for _ in range(3):
            self.search(coll, [1.0, 1.0], k=2)
        status, body = self.http_get("/metrics")
        self.assertEqual(status, 200)
        rpc = [line for line in body.splitlines()
               if line.startswith("quiver_rpc_requests_total{")
               and 'method="/quiver.v1.Points/Search"' in line]
        self.assertTrue(rpc, "no quiver_rpc_requests_total sample for Points/Search")
        self.assertGreaterEqual(sum(float(line.rsplit(" ", 1)[1]) for line in rpc), 3)
        m = re.search(r'^quiver_collection_points\{collection="observed"\} (\S+)$', body, re.M)
        self.assertIsNotNone(m, "no quiver_collection_points sample for the collection")
        self.assertEqual(float(m.group(1)), 77)
        self.assertRegex(body, r"(?m)^# TYPE quiver_log_write_seconds histogram$")
        self.assertRegex(body, r'(?m)^quiver_log_write_seconds_bucket\{le="\+Inf"\} [1-9]\d*$')
        self.assertRegex(body, r"(?m)^quiver_log_write_seconds_count [1-9]\d*$")
        self.assertRegex(body, r"(?m)^quiver_log_write_seconds_sum \S+$")
        # deleting is reflected at the next scrape
        self.ps.Delete(P.DeletePointsRequest(collection=coll, ids=M.PointIdList(
            ids=[pid(i) for i in range(7)]), wait=True), timeout=T)
        _, body = self.http_get("/metrics")
        m = re.search(r'^quiver_collection_points\{collection="observed"\} (\S+)$', body, re.M)
        self.assertEqual(float(m.group(1)), 70)
        self.assertEqual(self.http_get("/healthz")[0], 200)
        self.assertEqual(self.http_get("/readyz")[0], 200)
        self.assertEqual(self.http_get("/no-such-page")[0], 404)

    # ---- indexes that train ------------------------------------------------------------------

    def _wait_status(self, coll, status, timeout=120):
        deadline = time.time() + timeout
        while True:
            info = self.cs.Describe(C.DescribeCollectionRequest(name=coll), timeout=T).info
            if info.status == status or time.time() > deadline:
                return info
            time.sleep(0.2)

    def _training_index(self, coll, index, train_at, before, after, min_recall):
        dim = 16
        self.create(coll, dim, index=index)
        rnd = random.Random(len(coll))
        centers = [[rnd.gauss(0, 4) for _ in range(dim)] for _ in range(32)]

        def sample():
            c = rnd.choice(centers)
            return [f32(x + rnd.gauss(0, 1)) for x in c]
        vecs = {i: sample() for i in range(after)}
        queries = [sample() for _ in range(30)]

        def ground_truth(n, q):
            truth = {i: dist("L2", q, vecs[i]) for i in range(n)}
            return truth, sorted(truth.items(), key=lambda t: t[1])

        # while training (fewer points than the training size): exact answers
        self.upsert(coll, [point(i, vecs[i]) for i in range(before)])
        info = self.cs.Describe(C.DescribeCollectionRequest(name=coll), timeout=T).info
        self.assertEqual(info.status, C.COLLECTION_STATUS_TRAINING)
        self.assertIn(str(train_at), info.status_message)
        self.assertEqual(info.points_count, before)
        for n, q in enumerate(queries[:10]):
            truth, ranked = ground_truth(before, q)
            self.assertSameRanking(self.search(coll, q, k=10), ranked[:10], truth,
                                   f"training, query {n}")
        # a delete while training
        self.ps.Delete(P.DeletePointsRequest(collection=coll, ids=M.PointIdList(
            ids=[pid(0), pid(1)]), wait=True), timeout=T)
        self.assertEqual(self.count(coll), before - 2)
        self.upsert(coll, [point(i, vecs[i]) for i in (0, 1)])
        # cross the training size
        self.upsert(coll, [point(i, vecs[i]) for i in range(before, after)])
        info = self._wait_status(coll, C.COLLECTION_STATUS_READY)
        self.assertEqual(info.status, C.COLLECTION_STATUS_READY, info.status_message)
        self.assertEqual(info.points_count, after)
        self.assertEqual(info.indexed_points_count, after)
        hits = 0
        for q in queries:
            truth, ranked = ground_truth(after, q)
            res = self.search(coll, q, k=10)
            self.assertEqual(len(res), 10)
            got = {key_of(p.id) for p in res}
            hits += len(got & {i for i, _ in ranked[:10]})
            for p in res:  # distances are full precision (re-ranked)
                self.assertTrue(close(p.distance, truth[key_of(p.id)]))
            # exact on request
            self.assertSameRanking(self.search(coll, q, k=10, params=M.SearchParams(exact=True)),
                                   ranked[:10], truth, "exact after training")
        recall = hits / (10 * len(queries))
        self.assertGreaterEqual(recall, min_recall)
        # filtered searches after training
        truth, ranked = ground_truth(after, queries[0])
        odd = [t for t in ranked if t[0] % 2 == 1][:10]
        self.assertSameRanking(self.search(coll, queries[0], k=10,
                                           filter=F([has_id(*[i for i, _ in odd])])),
                               odd, truth, "has_id filter after training")

    def test_ivf_flat_trains_and_keeps_answering(self):
        self._training_index("ivf", M.IndexConfig(type=M.INDEX_TYPE_IVF_FLAT, ivf=M.IvfParams(
            nlist=16, training_sample=500)), 500, 300, 900, 0.9)

    def test_hnsw_int8_trains_and_keeps_answering(self):
        self._training_index("hnsw8", M.IndexConfig(type=M.INDEX_TYPE_HNSW_INT8, hnsw=M.HnswParams(
            m=12, ef_construction=100)), 10000, 2000, 10500, 0.9)


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

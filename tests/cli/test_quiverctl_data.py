#!/usr/bin/python3
"""quiverctl's data commands against one real `quiver-node --dev` (stdlib only).

The node runs with --grpc 127.0.0.1:0 in a temporary directory; its port comes from the ready
line on stdout. The test writes its own small files in every import format (fvecs, bvecs, .npy,
JSON lines, CSV, HDF5 through the qv_test_make_hdf5 helper, since python3-h5py is not installed)
and reads the IDX files of Debian's dataset-fashion-mnist. The tests run in order:
  a_ collections create / list / describe / drop, tables and --json, and their errors;
  b_..h_ import of each format (progress and summary, --json summary, --create, --start-id,
     --limit, payloads), checked by collection sizes and searches;
  i_ search by --vector, --vector-file --row, --id, with --filter, --with-payload, --json;
  j_ errors: unknown collection, a bad file naming its line, a failed batch naming the count
     already imported, usage errors (exit 2), --help of every command.

Usage: test_quiverctl_data.py --quiverctl build/bin/quiverctl --node build/bin/quiver-node
       [--make-hdf5 build/tests/qv_test_make_hdf5] [-v]
"""
import argparse
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
FASHION = "/usr/share/datasets/fashion-mnist"


def _die_with_parent():
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_for(pred, limit_s, step_s=0.25):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


def table_rows(text):
    """Rows of an aligned table as dicts keyed by the header words; the last column may hold
    spaces (PAYLOAD)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = lines[0].split()
    rows = []
    for ln in lines[1:]:
        cells = ln.split(None, len(head) - 1)
        assert len(cells) == len(head), f"row {ln!r} does not match header {head}"
        rows.append(dict(zip(head, cells)))
    return rows


def kv_table(text):
    """A two-column `key  value` table (status, describe) as a dict."""
    out = {}
    for ln in text.splitlines():
        m = re.match(r"(\S+(?: \S+)*?)\s{2,}(.*)$", ln)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# ---- file writers ---------------------------------------------------------------------------

def vec(i, dim):
    """The vector of row i in the synthetic files: i * 10 + j."""
    return [float(i * 10 + j) for j in range(dim)]


def write_fvecs(path, n, dim):
    with open(path, "wb") as f:
        for i in range(n):
            f.write(struct.pack("<i", dim) + struct.pack(f"<{dim}f", *vec(i, dim)))


def write_bvecs(path, n, dim):
    with open(path, "wb") as f:
        for i in range(n):
            f.write(struct.pack("<i", dim) + bytes((i * 3 + j) % 256 for j in range(dim)))


def write_npy(path, rows, dtype="<f4"):
    """A 2-D .npy array, format 1.0, written by hand (no numpy needed)."""
    n, dim = len(rows), len(rows[0])
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }" % (dtype, n, dim)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    code = {"<f4": "f", "<f8": "d", "|u1": "B", "|i1": "b"}[dtype]
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        for r in rows:
            f.write(struct.pack(f"<{dim}{code}", *r))


class QuiverctlDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="quiver-cli-data-")
        cls.dir = cls.tmp.name
        cls.log_path = os.path.join(cls.dir, "node.log")
        cls.log = open(cls.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        cls.proc = subprocess.Popen(
            [ARGS.node, "--dev", "--data", os.path.join(cls.dir, "data"), "--grpc",
             "127.0.0.1:0", "--log-level", "warn"],
            stdout=subprocess.PIPE, stderr=cls.log, text=True, env=env,
            preexec_fn=_die_with_parent)
        line = cls.proc.stdout.readline()
        m = re.search(r"(?<!\w)port=(\d+)", line)
        if not m:
            cls.tearDownClass()
            raise RuntimeError(f"quiver-node did not start: {line!r}")
        cls.addr = f"127.0.0.1:{m.group(1)}"

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            try:
                cls.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait(timeout=30)
        cls.proc.stdout.close()
        cls.log.close()
        cls.tmp.cleanup()

    # ---- helpers -----------------------------------------------------------------------------

    def ctl(self, *args, timeout=120):
        e = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        return subprocess.run([ARGS.quiverctl, "--addr", self.addr, *args], capture_output=True,
                              text=True, env=e, timeout=timeout)

    def ok(self, *args):
        r = self.ctl(*args)
        self.assertEqual(r.returncode, 0, f"quiverctl {' '.join(args)}: {r.stderr}{r.stdout}")
        return r

    def ok_json(self, *args):
        return json.loads(self.ok("--json", *args).stdout)

    def fails(self, code, *args, stderr=()):
        r = self.ctl(*args)
        self.assertEqual(r.returncode, code,
                         f"quiverctl {' '.join(args)}: want exit {code}\n{r.stderr}{r.stdout}")
        for s in stderr:
            self.assertIn(s, r.stderr)
        return r

    def path(self, name):
        return os.path.join(self.dir, name)

    def create(self, name, dim, metric="l2", *extra):
        self.ok("collections", "create", name, "--dim", str(dim), "--metric", metric, *extra)

    def points(self, name, want):
        """Waits until the collection counts `want` points (sizes may lag a little)."""
        got = [None]

        def check():
            got[0] = self.ok_json("collections", "describe", name)["points_count"]
            return got[0] == want
        self.assertTrue(wait_for(check, 20), f"{name}: {got[0]} points, want {want}")

    def search(self, *args):
        return self.ok_json("search", *args)["results"]

    def summary_line(self, r, n):
        self.assertRegex(r.stdout, rf"^imported {n} points in \d+\.\d s \(\d+ points/s\)\n$")

    # ---- tests -------------------------------------------------------------------------------

    def test_a_collections_create_list_describe_drop(self):
        r = self.ok("collections", "create", "alpha", "--dim", "8", "--metric", "cosine",
                    "--index", "hnsw", "--m", "12", "--ef-construction", "100")
        self.assertIn("created collection alpha: dimension 8, cosine, hnsw", r.stdout)
        doc = self.ok_json("collections", "create", "beta", "--dim", "3", "--metric", "dot",
                           "--index", "flat")
        self.assertTrue(doc["created"])
        self.assertEqual(doc["collection"]["name"], "beta")
        self.assertEqual(doc["collection"]["index"], "flat")
        # The same name again: ALREADY_EXISTS, unless --if-not-exists and identical.
        self.fails(1, "collections", "create", "beta", "--dim", "3", "--metric", "dot",
                   "--index", "flat", stderr=["ALREADY_EXISTS"])
        r = self.ok("collections", "create", "beta", "--dim", "3", "--metric", "dot", "--index",
                    "flat", "--if-not-exists")
        self.assertIn("already exists", r.stdout)
        self.fails(1, "collections", "create", "bad name!", "--dim", "3", "--metric", "l2",
                   stderr=["INVALID_ARGUMENT"])

        rows = {row["NAME"]: row for row in table_rows(self.ok("collections", "list").stdout)}
        self.assertEqual(rows["alpha"]["DIMENSION"], "8")
        self.assertEqual(rows["alpha"]["METRIC"], "cosine")
        self.assertEqual(rows["beta"]["INDEX"], "flat")
        self.assertEqual(rows["beta"]["POINTS"], "0")
        listed = self.ok_json("collections", "list")["collections"]
        names = [c["name"] for c in listed]
        self.assertEqual(names, sorted(names))
        self.assertIn("alpha", names)

        desc = self.ok_json("collections", "describe", "alpha")
        self.assertEqual(desc["dimension"], 8)
        self.assertEqual(desc["metric"], "cosine")
        self.assertEqual(desc["hnsw_m"], 12)
        self.assertEqual(desc["hnsw_ef_construction"], 100)
        self.assertEqual(desc["shard_count"], 1)
        self.assertGreater(desc["uid"], 0)
        kv = kv_table(self.ok("collections", "describe", "alpha").stdout)
        self.assertEqual(kv["name"], "alpha")
        self.assertEqual(kv["dimension"], "8")
        self.assertTrue(kv["index"].startswith("hnsw (m 12, ef_construction 100"), kv["index"])

        self.assertEqual(self.ok_json("collections", "drop", "beta"),
                         {"name": "beta", "dropped": True})
        r = self.fails(1, "collections", "drop", "beta", stderr=["NOT_FOUND"])
        self.assertIn("beta", r.stderr)
        r = self.ok("collections", "drop", "beta", "--if-exists")
        self.assertIn("does not exist (nothing dropped)", r.stdout)
        self.fails(1, "collections", "describe", "beta", stderr=["NOT_FOUND"])
        r = self.ok("collections", "drop", "alpha")
        self.assertIn("dropped collection alpha", r.stdout)
        self.assertNotIn("alpha", [c["name"] for c in
                                   self.ok_json("collections", "list")["collections"]])

    def test_b_import_fvecs_in_batches(self):
        write_fvecs(self.path("a.fvecs"), 2500, 4)
        self.create("fv", 4)
        r = self.ok("import", "--collection", "fv", self.path("a.fvecs"), "--batch", "1000")
        self.summary_line(r, 2500)
        self.points("fv", 2500)
        hits = self.search("--collection", "fv", "--vector-file", self.path("a.fvecs"), "--row",
                           "7", "--k", "3", "--exact")
        self.assertEqual([h["id"] for h in hits][:1], [7])
        self.assertEqual(hits[0]["distance"], 0)
        self.assertEqual([h["rank"] for h in hits], [1, 2, 3])

    def test_c_import_bvecs_with_start_id_and_limit(self):
        write_bvecs(self.path("b.bvecs"), 300, 3)
        self.create("bv", 3)
        doc = self.ok_json("import", "--collection", "bv", self.path("b.bvecs"), "--start-id",
                           "1000", "--limit", "120", "--batch", "50")
        self.assertTrue(doc["ok"])
        self.assertEqual(doc["points"], 120)
        self.assertEqual(doc["batches"], 3)
        self.assertEqual(doc["format"], "bvecs")
        self.assertEqual(doc["dimension"], 3)
        self.points("bv", 120)
        hits = self.search("--collection", "bv", "--id", "1005", "--k", "1", "--exact")
        self.assertEqual(hits[0]["id"], 1005)
        self.fails(1, "search", "--collection", "bv", "--id", "1120", stderr=["not found"])

    def test_d_import_npy_with_create(self):
        rows = [vec(i, 5) for i in range(40)]
        write_npy(self.path("f.npy"), rows, "<f8")
        write_npy(self.path("i.npy"), [[(i * 7 + j) % 256 - 128 for j in range(5)]
                                       for i in range(10)], "|i1")
        doc = self.ok_json("import", "--collection", "np", "--create", "--metric", "l2",
                           "--index", "flat", self.path("f.npy"))
        self.assertTrue(doc["created"])
        self.assertEqual(doc["points"], 40)
        desc = self.ok_json("collections", "describe", "np")
        self.assertEqual((desc["dimension"], desc["index"]), (5, "flat"))
        # int8 rows into the same collection, ids after the first file's.
        r = self.ok("import", "--collection", "np", self.path("i.npy"), "--start-id", "40")
        self.summary_line(r, 10)
        self.points("np", 50)
        hits = self.search("--collection", "np", "--vector", json.dumps(vec(12, 5)), "--k", "2")
        self.assertEqual(hits[0]["id"], 12)

    def test_e_import_hdf5_like_ann_benchmarks(self):
        if not ARGS.make_hdf5:
            self.skipTest("no --make-hdf5 helper (built without HDF5)")
        h5 = self.path("small-8-euclidean.hdf5")
        subprocess.run([ARGS.make_hdf5, h5, "200", "8"], check=True)
        # --create without --metric: the file's "distance" attribute says euclidean -> l2.
        r = self.ok("import", "--collection", "h5", "--create", h5, "--batch", "64")
        self.summary_line(r, 200)
        self.assertEqual(self.ok_json("collections", "describe", "h5")["metric"], "l2")
        self.points("h5", 200)
        # test row q is train row q + 1 shifted by 0.25: its nearest neighbour is id q + 1.
        for q in range(3):
            hits = self.search("--collection", "h5", "--vector-file", h5, "--dataset", "test",
                               "--row", str(q), "--k", "1")
            self.assertEqual(hits[0]["id"], q + 1)
        self.fails(1, "import", "--collection", "h5", h5, "--dataset", "nope",
                   stderr=["no dataset 'nope'", "neighbors, test, train"])

    def test_f_import_jsonl_with_payloads(self):
        lines = []
        for i in range(60):
            line = {"vector": vec(i, 4), "payload": {"label": i % 3, "name": f"p{i}",
                                                     "price": i + 0.5, "tags": ["x", f"t{i}"]}}
            if i % 2 == 0:
                line["id"] = 5000 + i
            lines.append(json.dumps(line))
        lines.insert(10, "")
        uuid = "123e4567-e89b-12d3-a456-426614174000"
        lines.append(json.dumps({"id": uuid.upper(), "vector": vec(99, 4)}))
        with open(self.path("p.jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")
        self.create("js", 4)
        r = self.ok("import", "--collection", "js", self.path("p.jsonl"), "--batch", "25",
                    "--start-id", "7000", "--wait")
        self.summary_line(r, 61)
        self.points("js", 61)
        hits = self.search("--collection", "js", "--vector", json.dumps(vec(4, 4)), "--k", "1",
                           "--with-payload")
        self.assertEqual(hits[0]["id"], 5004)
        self.assertEqual(hits[0]["payload"], {"label": 1, "name": "p4", "price": 4.5,
                                              "tags": ["x", "t4"]})
        # Line 6 (row 5) has no id: start-id + row.
        hits = self.search("--collection", "js", "--vector", json.dumps(vec(5, 4)), "--k", "1")
        self.assertEqual(hits[0]["id"], 7005)
        hits = self.search("--collection", "js", "--vector", json.dumps(vec(99, 4)), "--k", "1")
        self.assertEqual(hits[0]["id"], uuid)

    def test_g_import_csv(self):
        with open(self.path("t.csv"), "w", newline="") as f:
            f.write("id,v0,v1,v2,label,color,on_sale\r\n")
            for i in range(30):
                f.write(f'{20000 + i},{i},{i + 1},{i + 2},{i % 3},"red, ""{i}""",'
                        f'{"true" if i % 2 else "false"}\r\n')
        with open(self.path("vec.csv"), "w") as f:
            f.write("vector,note\n")
            for i in range(5):
                f.write(f'"[{i}, {i}, {i}]",n{i}\n')
        self.create("cs", 3)
        self.summary_line(self.ok("import", "--collection", "cs", self.path("t.csv")), 30)
        self.summary_line(self.ok("import", "--collection", "cs", self.path("vec.csv"),
                                  "--start-id", "90000"), 5)
        self.points("cs", 35)
        hits = self.search("--collection", "cs", "--vector", "7 8 9", "--k", "1",
                           "--with-payload")
        self.assertEqual(hits[0]["id"], 20007)
        self.assertEqual(hits[0]["payload"], {"label": 1, "color": 'red, "7"', "on_sale": True})
        hits = self.search("--collection", "cs", "--vector", "[2, 2, 2]", "--k", "1",
                           "--with-payload")
        self.assertEqual((hits[0]["id"], hits[0]["payload"]), (90002, {"note": "n2"}))

    def test_h_import_fashion_mnist_idx(self):
        images = os.path.join(FASHION, "train-images-idx3-ubyte.gz")
        if not os.access(images, os.R_OK):
            self.skipTest("dataset-fashion-mnist is not installed")
        r = self.ok("import", "--collection", "fm", "--create", "--metric", "l2", images,
                    "--limit", "500")
        self.summary_line(r, 500)
        self.assertIn("created collection fm", r.stderr)
        self.points("fm", 500)
        desc = self.ok_json("collections", "describe", "fm")
        self.assertEqual(desc["dimension"], 784)
        hits = self.search("--collection", "fm", "--id", "0", "--k", "1", "--with-payload")
        self.assertEqual((hits[0]["id"], hits[0]["payload"]), (0, {"label": 9}))
        hits = self.search("--collection", "fm", "--vector-file",
                           os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"), "--row", "3",
                           "--k", "10", "--filter", "label = 3", "--with-payload")
        self.assertEqual(len(hits), 10)
        self.assertTrue(all(h["payload"] == {"label": 3} for h in hits), hits)

    def test_i_search_output(self):
        # Runs after b_: collection fv holds rows i -> (10i, 10i+1, 10i+2, 10i+3).
        r = self.ok("search", "--collection", "fv", "--vector", "[20, 21, 22, 23]", "--k", "3")
        rows = table_rows(r.stdout)
        self.assertEqual(list(rows[0]), ["RANK", "ID", "DISTANCE"])
        self.assertEqual([x["RANK"] for x in rows], ["1", "2", "3"])
        self.assertEqual(rows[0]["ID"], "2")
        self.assertEqual(float(rows[0]["DISTANCE"]), 0.0)
        self.assertEqual(sorted(x["ID"] for x in rows[1:]), ["1", "3"])
        r = self.ok("search", "--collection", "js", "--id", "5010", "--k", "2", "--with-payload",
                    "--filter", "label = 1 and price < 20")
        rows = table_rows(r.stdout)
        self.assertEqual(list(rows[0]), ["RANK", "ID", "DISTANCE", "PAYLOAD"])
        for row in rows:
            p = json.loads(row["PAYLOAD"])
            self.assertEqual(p["label"], 1)
            self.assertLess(p["price"], 20)
        doc = self.ok_json("search", "--collection", "fv", "--vector", "1,1,1,1", "--k", "4",
                           "--ef", "50")
        self.assertEqual(doc["collection"], "fv")
        self.assertIn("took_us", doc)
        self.assertFalse(doc["partial"])
        self.assertEqual(len(doc["results"]), 4)
        self.assertNotIn("payload", doc["results"][0])
        dists = [h["distance"] for h in doc["results"]]
        self.assertEqual(dists, sorted(dists))

    def test_j_errors(self):
        # Unknown collection: exit 1, the name and NOT_FOUND on stderr.
        write_fvecs(self.path("e.fvecs"), 10, 4)
        r = self.fails(1, "import", "--collection", "missing", self.path("e.fvecs"),
                       stderr=["missing", "NOT_FOUND", "--create"])
        self.assertEqual(r.stdout, "")
        self.fails(1, "search", "--collection", "missing", "--vector", "1,2,3,4",
                   stderr=["missing", "NOT_FOUND"])
        self.fails(1, "collections", "describe", "missing", stderr=["NOT_FOUND"])
        # A bad file: the message names the file and the line; nothing of the bad batch is sent.
        with open(self.path("bad.jsonl"), "w") as f:
            f.write('{"vector": [1, 2, 3, 4]}\n{"vector": [1, 2, 3, 4]}\n{"vector": [1, 2, 3]}\n')
        r = self.fails(1, "import", "--collection", "fv", self.path("bad.jsonl"),
                       stderr=["bad.jsonl: line 3", "0 points were imported"])
        with open(self.path("bad.csv"), "w") as f:
            f.write("v0,v1,v2,v3\n1,2,3,4\n1,2,x,4\n")
        self.fails(1, "import", "--collection", "fv", self.path("bad.csv"),
                   stderr=["bad.csv: line 3, column 'v2'"])
        with open(self.path("trunc.fvecs"), "wb") as f:
            f.write(open(self.path("e.fvecs"), "rb").read()[:-3])
        self.fails(1, "import", "--collection", "fv", self.path("trunc.fvecs"),
                   stderr=["trunc.fvecs", "truncated"])
        self.fails(1, "import", "--collection", "fv", self.path("nothing.fvecs"),
                   stderr=["nothing.fvecs", "cannot open"])
        # Dimension (or, with --create, metric) mismatch is found before anything is sent.
        self.fails(1, "import", "--collection", "cs", self.path("e.fvecs"),
                   stderr=["dimension 3", "dimension 4"])
        self.fails(1, "import", "--collection", "fv", "--create", "--metric", "cosine",
                   self.path("e.fvecs"), stderr=["exists with metric l2, not cosine"])
        # A batch the server refuses: rows 2..3 hold a zero vector in a cosine collection; the
        # first batch (2 points) is in, and the message says so.
        with open(self.path("zero.jsonl"), "w") as f:
            for v in ([1, 2], [2, 1], [1, 1], [0, 0], [3, 3]):
                f.write(json.dumps({"vector": v}) + "\n")
        doc = json.loads(self.fails(1, "--json", "import", "--collection", "cz", "--create",
                                    "--metric", "cosine", self.path("zero.jsonl"), "--batch",
                                    "2", stderr=["rows 2..3", "INVALID_ARGUMENT",
                                                 "2 points were imported before it"]).stdout)
        self.assertFalse(doc["ok"])
        self.assertEqual(doc["points"], 2)
        self.assertEqual(doc["code"], "INVALID_ARGUMENT")
        self.points("cz", 2)
        # Usage errors: exit 2.
        self.fails(2, "import", self.path("e.fvecs"), stderr=["--collection is required"])
        self.fails(2, "import", "--collection", "fv", stderr=["missing FILE"])
        self.fails(2, "import", "--collection", "fv", self.path("x.txt"),
                   stderr=["--format"])
        self.fails(2, "import", "--collection", "fv", self.path("e.fvecs"), "--format", "xml")
        self.fails(2, "import", "--collection", "new", "--create", self.path("e.fvecs"),
                   stderr=["--metric"])
        self.fails(2, "search", "--collection", "fv", "--vector", "1,2", "--id", "3",
                   stderr=["exactly one of"])
        self.fails(2, "search", "--collection", "fv", stderr=["exactly one of"])
        self.fails(2, "search", "--collection", "fv", "--vector", "1,x",
                   stderr=["bad vector"])
        self.fails(2, "search", "--collection", "fv", "--id", "not-an-id")
        self.fails(2, "search", "--collection", "fv", "--vector", "1,2,3,4", "--k", "0")
        self.fails(2, "collections", "create", "x", "--metric", "l2", stderr=["--dim"])
        self.fails(2, "collections", "create", "x", "--dim", "4", "--metric", "hamming")
        self.fails(2, "collections", "create", stderr=["missing NAME"])
        self.fails(2, "collections", "frobnicate", stderr=["unknown subcommand"])
        self.fails(2, "collections", stderr=["no subcommand"])
        self.fails(1, "search", "--collection", "fv", "--vector", "1,2,3",
                   stderr=["INVALID_ARGUMENT"])
        self.fails(1, "search", "--collection", "fv", "--vector", "1,2,3,4", "--filter",
                   "label ==", stderr=["INVALID_ARGUMENT"])
        self.fails(1, "search", "--collection", "fv", "--vector-file", self.path("e.fvecs"),
                   "--row", "10", stderr=["past the end"])

    def test_k_help_of_every_command(self):
        for cmd in (["collections", "create"], ["collections", "list"],
                    ["collections", "describe"], ["collections", "drop"], ["import"],
                    ["search"]):
            r = self.ok(*cmd, "--help")
            self.assertIn(f"Usage: quiverctl [global options] {' '.join(cmd)}", r.stdout)
            self.assertIn("Exit codes:", r.stdout)
            self.assertEqual(r.stdout, self.ok("help", *cmd).stdout)
        self.assertIn("Subcommands:", self.ok("collections", "--help").stdout)
        self.assertIn("--vector-file", self.ok("search", "--help").stdout)
        self.assertIn("--dataset", self.ok("import", "--help").stdout)
        top = self.ok("--help").stdout
        for word in ("collections create", "import FILE", "search"):
            self.assertIn(word, top)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--quiverctl", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--make-hdf5", default="")
    p.add_argument("-v", action="store_true")
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + (["-v"] if ARGS.v else []) + rest)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Smoke test of `quiver-bench ann`: JSON lines, recall, export and read-back, bad input.

Usage: test_ann_smoke.py --bench build/bin/quiver-bench [unittest options]
Standard library only (numpy is not needed: .npy files are written by hand here).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

ARGS = None
REQUIRED = ["index", "params", "threads", "build_s", "bytes_per_vector",
            "bytes_per_vector_f32_rerank", "recall_at_10", "qps", "latency_p50_us",
            "latency_p99_us"]


def run(*args, check=True):
    proc = subprocess.run([ARGS.bench, "ann", *args], capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"quiver-bench ann {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stderr}")
    return proc


def read_vecs(path, fmt):
    """Rows of an fvecs ('f') or ivecs ('i') file, checked."""
    with open(path, "rb") as f:
        data = f.read()
    rows, off = [], 0
    while off < len(data):
        (d,) = struct.unpack_from("<i", data, off)
        assert d > 0 and off + 4 + 4 * d <= len(data), f"{path}: bad row at byte {off}"
        rows.append(struct.unpack_from(f"<{d}{fmt}", data, off + 4))
        off += 4 + 4 * d
    return rows


def write_npy(path, rows, descr, pack, version=1):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }" % (
        descr, len(rows), len(rows[0]))
    pre = 10 if version == 1 else 12
    header += " " * ((64 - (pre + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY" + bytes([version, 0]))
        f.write(struct.pack("<H" if version == 1 else "<I", len(header)))
        f.write(header.encode("latin1"))
        for r in rows:
            f.write(struct.pack(f"{pack[0]}{len(r)}{pack[1]}", *r))


class AnnSmoke(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="qv-ann-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_synthetic_flat_and_hnsw_print_json_with_expected_recall(self):
        proc = run("--synthetic", "2000,16,8,1", "--index", "flat,hnsw", "--ef", "32", "--k", "10")
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        by_index = {rec["index"]: rec for rec in lines}
        self.assertEqual(sorted(by_index), ["flat", "hnsw"], proc.stdout)
        for rec in lines:
            for field in REQUIRED:
                self.assertIn(field, rec)
            self.assertEqual(rec["n"], 2000)
            self.assertEqual(rec["dim"], 16)
            self.assertGreater(rec["qps"], 0)
            self.assertGreater(rec["bytes_per_vector"], 0)
        hnsw, flat = by_index["hnsw"], by_index["flat"]
        self.assertEqual(hnsw["ef"], 32)
        self.assertEqual(hnsw["params"]["M"], 16)
        self.assertEqual(hnsw["params"]["ef_construction"], 200)
        self.assertGreaterEqual(hnsw["recall_at_10"], 0.9)
        self.assertGreater(hnsw["latency_p99_us"], 0)
        self.assertGreaterEqual(hnsw["latency_p99_us"], hnsw["latency_p50_us"])
        self.assertEqual(flat["recall_at_10"], 1.0)
        self.assertEqual(flat["mode"], "batch")
        self.assertIn("recall", proc.stderr)  # the human table

    def test_export_writes_files_the_loaders_read_back_identically(self):
        d1, d2 = os.path.join(self.dir, "a"), os.path.join(self.dir, "b")
        run("--synthetic", "1000,12,4,7", "--limit-query", "50", "--k", "10", "--export-dir", d1)
        base = read_vecs(os.path.join(d1, "base.fvecs"), "f")
        query = read_vecs(os.path.join(d1, "query.fvecs"), "f")
        gt = read_vecs(os.path.join(d1, "gt.ivecs"), "i")
        self.assertEqual((len(base), len(base[0])), (1000, 12))
        self.assertEqual((len(query), len(query[0])), (50, 12))
        self.assertEqual((len(gt), len(gt[0])), (50, 10))
        self.assertTrue(all(0 <= i < 1000 for row in gt for i in row))
        # The ground truth really is the exact top-10 (squared L2, ties aside).
        for q, row in zip(query[:5], gt[:5]):
            dist = sorted((sum((a - b) ** 2 for a, b in zip(q, v)), i) for i, v in enumerate(base))
            self.assertEqual(set(row), {i for _, i in dist[:10]})
        # Loaded back and exported again: byte for byte the same.
        run("--base", os.path.join(d1, "base.fvecs"), "--query", os.path.join(d1, "query.fvecs"),
            "--gt", os.path.join(d1, "gt.ivecs"), "--export-dir", d2)
        for name in ("base.fvecs", "query.fvecs", "gt.ivecs"):
            with open(os.path.join(d1, name), "rb") as a, open(os.path.join(d2, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)
        # .npy (float32 v1, float64 v2) read back to the same floats.
        for descr, pack, version in (("<f4", ("<", "f"), 1), ("<f8", ("<", "d"), 2)):
            npy = os.path.join(self.dir, f"base{descr[1:]}.npy")
            write_npy(npy, base, descr, pack, version)
            d3 = os.path.join(self.dir, "c" + descr[1:])
            run("--base", npy, "--query", os.path.join(d1, "query.fvecs"), "--gt",
                os.path.join(d1, "gt.ivecs"), "--export-dir", d3)
            with open(os.path.join(d1, "base.fvecs"), "rb") as a, \
                    open(os.path.join(d3, "base.fvecs"), "rb") as b:
                self.assertEqual(a.read(), b.read(), descr)

    def test_synthetic_data_is_deterministic(self):
        d1, d2 = os.path.join(self.dir, "a"), os.path.join(self.dir, "b")
        run("--synthetic", "500,8,3,42", "--limit-query", "20", "--export-dir", d1)
        run("--synthetic", "500,8,3,42", "--limit-query", "20", "--export-dir", d2)
        for name in ("base.fvecs", "query.fvecs", "gt.ivecs"):
            with open(os.path.join(d1, name), "rb") as a, open(os.path.join(d2, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)

    def test_bad_files_and_options_fail_cleanly(self):
        good = os.path.join(self.dir, "good")
        run("--synthetic", "300,8,3,1", "--limit-query", "10", "--export-dir", good)
        with open(os.path.join(good, "base.fvecs"), "rb") as f:
            data = f.read()
        bad = os.path.join(self.dir, "bad.fvecs")
        with open(bad, "wb") as f:
            f.write(data[:-3])  # truncated last row
        proc = run("--base", bad, "--query", os.path.join(good, "query.fvecs"), check=False)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("truncated", proc.stderr)
        proc = run("--base", os.path.join(self.dir, "missing.fvecs"), "--query", bad, check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("cannot open", proc.stderr)
        proc = run("--synthetic", "10,8", check=False)
        self.assertEqual(proc.returncode, 2)
        proc = run("--synthetic", "300,8,3,1", "--index", "annoy", check=False)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("unknown index", proc.stderr)
        proc = run("--help")
        for opt in ("--base", "--query", "--gt", "--fashion-mnist", "--synthetic", "--metric",
                    "--index", "--M", "--ef-construction", "--nlist", "--nprobe", "--ef",
                    "--threads", "--k", "--limit-base", "--limit-query", "--repeat", "--save-gt",
                    "--export-dir"):
            self.assertIn(opt, proc.stdout)

    def test_save_gt_writes_ivecs(self):
        path = os.path.join(self.dir, "gt.ivecs")
        run("--synthetic", "400,8,3,1", "--limit-query", "7", "--k", "5", "--index", "flat",
            "--save-gt", path)
        gt = read_vecs(path, "i")
        self.assertEqual((len(gt), len(gt[0])), (7, 5))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="path to quiver-bench")
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest])


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Summarises ANN benchmark JSON lines (quiver-bench ann, hnswlib_bench, faiss_bench.py).

usage: ann_report.py FILE.jsonl [FILE.jsonl ...] [--targets 0.9,0.95,0.99] [--markdown]
       ann_report.py --self-test

For every search thread count T and every target recall@10 it prints the QPS each system reaches
at that recall and the ratios Quiver/hnswlib and Quiver/FAISS, then build time, bytes per vector
and flat (exact, batch) QPS side by side. Standard library only.

QPS at a target recall: the points of one curve (one index type, one T, one line per ef or
nprobe) are reduced to their Pareto frontier (no other point is both faster and more accurate),
then QPS is interpolated linearly between the two frontier points whose recalls bracket the
target. "n/a": the curve never reaches the target. ">X": even the fastest point measured is above
the target, so X is a lower bound (add smaller ef values to interpolate); ratios involving a
lower bound are marked "~".
"""
import argparse
import json
import sys
from collections import defaultdict

HNSW_SYSTEMS = ["quiver-hnsw", "quiver-hnsw-int8", "hnswlib", "faiss-hnsw"]
IVF_SYSTEMS = ["quiver-ivf", "faiss-ivf"]
FLAT_SYSTEMS = ["quiver-flat", "faiss-flat"]


def curve_name(rec):
    return "quiver-" + rec["index"] if rec.get("system") == "quiver" else rec["index"]


def recall_of(rec):
    r = rec.get("recall_at_10")
    return rec.get("recall_at_k") if r is None else r


def frontier(points):
    """Pareto frontier of (recall, qps) points, sorted by rising recall (falling QPS)."""
    best = []
    max_recall = -1.0
    for r, q in sorted(points, key=lambda p: (-p[1], -p[0])):
        if r > max_recall:
            best.append((r, q))
            max_recall = r
    return sorted(best)


def qps_at(points, target):
    """(qps, exact) at `target` recall, or (None, False) when the curve never reaches it."""
    front = frontier(points)
    for i, (r, q) in enumerate(front):
        if r >= target:
            if i == 0:
                return q, r == target
            r0, q0 = front[i - 1]
            return q0 + (target - r0) / (r - r0) * (q - q0), True
    return None, False


def fmt_qps(v):
    q, exact = v
    if q is None:
        return "n/a"
    return ("%.0f" if exact else ">%.0f") % q


def fmt_ratio(a, b):
    (qa, ea), (qb, eb) = a, b
    if qa is None or qb is None or qb == 0:
        return "n/a"
    return ("%.2f" if ea and eb else "~%.2f") % (qa / qb)


def plain_ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return "%.2f" % (a / b)


def render(title, header, rows, markdown, out):
    print(file=out)
    print(("### " if markdown else "== ") + title, file=out)
    if markdown:
        print("| " + " | ".join(header) + " |", file=out)
        print("|" + "|".join("---" for _ in header) + "|", file=out)
        for row in rows:
            print("| " + " | ".join(row) + " |", file=out)
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + rows:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths))), file=out)


def load(paths):
    recs = []
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON: {e}")
                if rec.get("bench") == "ann":
                    recs.append(rec)
    return recs


def report(recs, targets, markdown=False, out=sys.stdout):
    if not recs:
        print("no ann records", file=out)
        return
    curves = defaultdict(list)   # (system, threads) -> [(recall, qps)]
    single = {}                  # system -> first record (build time, memory)
    flat = {}                    # (system, threads) -> best qps
    for rec in recs:
        name = curve_name(rec)
        single.setdefault(name, rec)
        if name in FLAT_SYSTEMS:
            flat[(name, rec["threads"])] = max(flat.get((name, rec["threads"]), 0), rec["qps"])
        else:
            curves[(name, rec["threads"])].append((recall_of(rec), rec["qps"]))
    first = recs[0]
    datasets = sorted({r.get("dataset", "?") for r in recs})
    print(("## " if markdown else "") +
          f"ANN comparison on {', '.join(datasets)}: n={first.get('n')}, nq={first.get('nq')}, "
          f"dim={first.get('dim')}, k={first.get('k')}, metric={first.get('metric')}", file=out)
    notes = []
    for name in HNSW_SYSTEMS + IVF_SYSTEMS + FLAT_SYSTEMS:
        if name in single:
            r = single[name]
            extra = ", ".join(f"{key}={r[key]}" for key in ("simd", "version", "blas") if key in r)
            notes.append(f"{name}: {extra}" if extra else name)
    if notes:
        print("systems: " + "; ".join(notes), file=out)
    for r in recs:
        if r.get("dataset") != first.get("dataset") or r.get("n") != first.get("n") or \
                r.get("nq") != first.get("nq"):
            print("WARNING: records come from different data sets or sizes; ratios are "
                  "meaningless", file=out)
            break

    threads = sorted({t for (_, t) in curves} | {t for (_, t) in flat})
    for t in threads:
        header = ["recall@10"] + HNSW_SYSTEMS + ["hnsw/hnswlib", "hnsw/faiss", "int8/hnswlib",
                                                 "int8/faiss"]
        rows = []
        for target in targets:
            v = {s: qps_at(curves.get((s, t), []), target) for s in HNSW_SYSTEMS}
            rows.append([f"{target:.2f}"] + [fmt_qps(v[s]) for s in HNSW_SYSTEMS] + [
                fmt_ratio(v["quiver-hnsw"], v["hnswlib"]),
                fmt_ratio(v["quiver-hnsw"], v["faiss-hnsw"]),
                fmt_ratio(v["quiver-hnsw-int8"], v["hnswlib"]),
                fmt_ratio(v["quiver-hnsw-int8"], v["faiss-hnsw"])])
        render(f"HNSW: QPS at recall@10, {t} search thread(s)", header, rows, markdown, out)
        if any((s, t) in curves for s in IVF_SYSTEMS):
            rows = []
            for target in targets:
                v = {s: qps_at(curves.get((s, t), []), target) for s in IVF_SYSTEMS}
                rows.append([f"{target:.2f}"] + [fmt_qps(v[s]) for s in IVF_SYSTEMS] +
                            [fmt_ratio(v["quiver-ivf"], v["faiss-ivf"])])
            render(f"IVF-Flat: QPS at recall@10, {t} search thread(s)",
                   ["recall@10"] + IVF_SYSTEMS + ["ivf/faiss"], rows, markdown, out)

    def field(name, key):
        r = single.get(name)
        return None if r is None else r.get(key)

    rows = []
    for name in HNSW_SYSTEMS + IVF_SYSTEMS:
        if name not in single:
            continue
        ref = "hnswlib" if name in HNSW_SYSTEMS else "faiss-ivf"
        b = field(name, "build_s")
        bpv = field(name, "bytes_per_vector")
        rerank = field(name, "bytes_per_vector_f32_rerank")
        rows.append([name, json.dumps(single[name].get("params", {}), separators=(",", ":")),
                     "%.2f" % b if b is not None else "n/a",
                     plain_ratio(b, field(ref, "build_s")) if name != ref else "1.00",
                     "%.1f" % bpv if bpv is not None else "n/a",
                     "%.1f" % rerank if rerank is not None else "-",
                     plain_ratio(bpv, field(ref, "bytes_per_vector")) if name != ref else "1.00"])
    if rows:
        render("Build (every core) and memory per vector", [
            "system", "params", "build_s", "build/ref", "bytes/vec", "f32 rerank bytes/vec",
            "bytes/ref"], rows, markdown, out)
        print("(ref: hnswlib for HNSW rows, faiss-ivf for IVF rows; bytes/vec is what the index "
              "keeps in RAM for search; Quiver's INT8 HNSW keeps float32 vectors for re-ranking "
              "separately, mmap-able, shown in the rerank column)", file=out)

    rows = []
    for t in threads:
        q, f = flat.get(("quiver-flat", t)), flat.get(("faiss-flat", t))
        if q is None and f is None:
            continue
        rows.append([str(t), "%.0f" % q if q else "n/a", "%.0f" % f if f else "n/a",
                     plain_ratio(q, f)])
    if rows:
        render("Exact search, batch (whole query set per call): QPS",
               ["threads", "quiver-flat", "faiss-flat", "quiver/faiss"], rows, markdown, out)


def self_test():
    # A curve through (0.80, 1000), (0.90, 800), (0.96, 500), (0.995, 200); one dominated point.
    pts = [(0.80, 1000), (0.90, 800), (0.85, 700), (0.96, 500), (0.995, 200)]
    assert frontier(pts) == [(0.80, 1000), (0.90, 800), (0.96, 500), (0.995, 200)], frontier(pts)
    q, exact = qps_at(pts, 0.90)
    assert exact and abs(q - 800) < 1e-9, q
    q, exact = qps_at(pts, 0.95)
    assert exact and abs(q - 550) < 1e-9, q  # 800 + (0.05 / 0.06) * (500 - 800)
    q, exact = qps_at(pts, 0.99)
    assert exact and abs(q - (500 + (0.03 / 0.035) * (200 - 500))) < 1e-9, q
    assert qps_at(pts, 0.999) == (None, False)
    assert qps_at(pts, 0.5) == (1000, False)
    assert fmt_qps(qps_at(pts, 0.5)) == ">1000" and fmt_qps((None, False)) == "n/a"
    assert fmt_ratio((550.0, True), (275.0, True)) == "2.00"
    assert fmt_ratio((550.0, True), (275.0, False)) == "~2.00"
    recs = [
        {"bench": "ann", "system": "quiver", "index": "hnsw", "threads": 1, "ef": e,
         "recall_at_10": r, "qps": q, "build_s": 2.0, "bytes_per_vector": 100.0,
         "params": {"M": 16}} for e, (r, q) in zip([10, 20, 40, 80], pts)
    ] + [
        {"bench": "ann", "system": "hnswlib", "index": "hnswlib", "threads": 1, "ef": e,
         "recall_at_10": r, "qps": q / 2, "build_s": 1.0, "bytes_per_vector": 200.0,
         "params": {"M": 16}} for e, (r, q) in zip([10, 20, 40, 80], pts)
    ] + [
        {"bench": "ann", "system": "quiver", "index": "flat", "threads": 1, "recall_at_10": 1.0,
         "qps": 300.0},
        {"bench": "ann", "system": "faiss", "index": "faiss-flat", "threads": 1,
         "recall_at_10": 1.0, "qps": 150.0},
    ]
    import io
    buf = io.StringIO()
    report(recs, [0.90, 0.95, 0.99], out=buf)
    text = buf.getvalue()
    row95 = [line for line in text.splitlines() if line.startswith("0.95")][0].split()
    assert row95[1] == "550" and row95[3] == "275" and row95[4] == "n/a" and row95[5] == "2.00", \
        row95
    assert "quiver-flat" in text and "2.00" in text.split("Exact search")[1], text
    print("ann_report self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--targets", default="0.90,0.95,0.99")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables (for RESULTS.md)")
    ap.add_argument("--self-test", action="store_true", help="check the interpolation and exit")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.files:
        ap.error("name at least one .jsonl file")
    targets = [float(x) for x in args.targets.split(",") if x]
    report(load(args.files), targets, args.markdown)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""FAISS anchor of bench/ann_compare.sh (Debian's python3-faiss; run with /usr/bin/python3).

Reads base.fvecs / query.fvecs / gt.ivecs (written by `quiver-bench ann --export-dir`) and measures
FAISS on them with the same fields as `quiver-bench ann`, one JSON line per point on stdout:

  faiss-hnsw  IndexHNSWFlat(d, M), efConstruction, one point per efSearch
  faiss-flat  IndexFlatL2 / IndexFlatIP
  faiss-ivf   IndexIVFFlat(flat quantizer, d, nlist), one point per nprobe

The build runs with every core. Searches are FAISS's batch calls: the whole query set in one
index.search() with faiss.omp_set_num_threads(T) (and OpenBLAS held to T threads too); FAISS
parallelises over queries, each query on one thread, so the throughput compares with
quiver-bench's T threads of single queries. QPS is
nq / wall time of the call (best of --repeat); there is no per-query latency in batch mode, so
latency fields are null.

FAISS's flat and IVF searches call BLAS sgemm through Debian's libblas.so.3 alternative: the script
reports which library the process actually mapped and warns when it is the reference BLAS (see
bench/README.md for selecting OpenBLAS with update-alternatives).
"""
import argparse
import json
import os
import subprocess
import sys
import time

# OpenMP's default wait policy spins on idle threads, which then fight OpenBLAS' own pthreads
# inside FAISS's flat and IVF searches (measured here: 2 threads slower than 1). Passive waiting
# lets the two pools share cores. Read by libgomp when it loads, so set before importing faiss.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

try:
    import faiss  # noqa: E402
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("faiss_bench: python3-faiss is not installed (scripts/bootstrap.sh --with-bench)")


def read_vecs(path, dtype):
    """fvecs (dtype '<f4') or ivecs ('<i4'), validated."""
    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        raise ValueError(f"{path}: empty")
    d = int(raw[0])
    if d <= 0 or d > 65536 or raw.size % (d + 1) != 0:
        raise ValueError(f"{path}: bad dimension {d} or truncated file")
    rows = raw.reshape(-1, d + 1)
    if not np.all(rows[:, 0] == d):
        raise ValueError(f"{path}: rows of different dimensions")
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def blas_in_use():
    """(library path mapped for libblas.so.3, is it OpenBLAS?, update-alternatives' choice)."""
    mapped = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and ("libblas" in parts[5] or "openblas" in parts[5]):
                mapped.add(parts[5])
    blas = sorted(p for p in mapped if "libblas.so" in p)
    lib = blas[0] if blas else (sorted(mapped)[0] if mapped else "none")
    alt = "unknown"
    try:
        out = subprocess.run(
            ["update-alternatives", "--display", "libblas.so.3-x86_64-linux-gnu"],
            capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if "link currently points to" in line:
                alt = line.split("link currently points to", 1)[1].strip()
    except OSError:
        pass
    return lib, "openblas" in lib, alt


def blas_threads_setter(lib):
    """openblas_set_num_threads from the mapped BLAS, or None. OpenBLAS' pthread build keeps its
    own thread pool next to OpenMP's: both must be held to T threads or they oversubscribe."""
    import ctypes
    for name in (lib, "libopenblas.so.0"):
        try:
            fn = ctypes.CDLL(name).openblas_set_num_threads
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int]
        return fn
    return None


def recall(found, gt, k):
    """Mean over queries of |found[:, :k] ∩ gt[:, :k]| / k."""
    hits = 0
    for f, t in zip(found[:, :k], gt[:, :k]):
        hits += len(np.intersect1d(f[f >= 0], t, assume_unique=False))
    return hits / (len(gt) * k)


def timed_search(index, query, k, repeat):
    best, out = 0.0, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, ids = index.search(query, k)
        qps = len(query) / max(time.perf_counter() - t0, 1e-9)
        if qps > best:
            best, out = qps, ids
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--dataset", default="data")
    ap.add_argument("--metric", choices=["l2", "ip", "cosine"], default="l2")
    ap.add_argument("--index", default="hnsw,flat,ivf",
                    help="comma-separated: hnsw, flat, ivf (default: all)")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="16,32,64,128", help="efSearch list")
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--nprobe", default="1,2,4,8,16,32,64")
    ap.add_argument("--threads", default="1", help="search thread counts")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    def ints(s):
        vals = [int(x) for x in s.split(",") if x]
        if not vals or min(vals) < 1:
            ap.error(f"bad list '{s}'")
        return vals

    efs, nprobes, tlist = ints(args.ef), ints(args.nprobe), ints(args.threads)
    kinds = [x for x in args.index.split(",") if x]
    base = read_vecs(args.base, "<f4")
    query = read_vecs(args.query, "<f4")
    gt = read_vecs(args.gt, "<i4")
    if base.shape[1] != query.shape[1] or gt.shape[0] < len(query) or gt.shape[1] < args.k:
        sys.exit("faiss_bench: base/query dimensions differ or the ground truth is too small")
    gt = gt[: len(query)]
    if args.metric == "cosine":
        faiss.normalize_L2(base)
        faiss.normalize_L2(query)
    metric = faiss.METRIC_L2 if args.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    n, d = base.shape
    nq, k = len(query), args.k
    cores = os.cpu_count() or 1

    lib, is_openblas, alt = blas_in_use()
    if not is_openblas:
        print(f"faiss_bench: WARNING: BLAS in use is {lib} (alternative: {alt}), not OpenBLAS; "
              "FAISS flat/IVF numbers will be far too slow. Select OpenBLAS as described in "
              "bench/README.md (update-alternatives --config libblas.so.3-x86_64-linux-gnu).",
              file=sys.stderr)
    set_blas_threads = blas_threads_setter(lib)
    # Debian ships only the generic build (no swigfaiss_avx2 module): distances use SSE.
    simd = "avx2" if "faiss.swigfaiss_avx2" in sys.modules else "generic"

    def set_threads(t):
        faiss.omp_set_num_threads(t)
        if set_blas_threads is not None:
            set_blas_threads(t)

    print(f"faiss {faiss.__version__} {args.dataset}: {n} base, {nq} queries, dim {d}, "
          f"{simd} build, BLAS {lib}", file=sys.stderr)
    print(f"{'index':<11} {'params':<16} {'T':>3} {'search':<11} {'build_s':>8} {'B/vec':>9} "
          f"{'recall':>8} {'qps':>11}", file=sys.stderr)

    def emit(name, params, human, threads, knob, qps, build_s, bpv, ids):
        """One JSON line (stdout) and one table row (stderr); knob: {} or {"ef": 64}."""
        r10 = recall(ids, gt, 10) if k >= 10 else None
        rk = recall(ids, gt, k)
        line = {"bench": "ann", "system": "faiss", "dataset": args.dataset,
                "metric": args.metric, "n": n, "nq": nq, "dim": d, "k": k, "index": name,
                "mode": "batch", "params": params, "threads": threads}
        line.update(knob)
        line.update({"build_s": round(build_s, 3), "build_threads": cores,
                     "bytes_per_vector": round(bpv, 1), "bytes_per_vector_f32_rerank": None,
                     "recall_at_10": None if r10 is None else round(r10, 5),
                     "recall_at_k": round(rk, 5), "qps": round(qps, 1),
                     "latency_p50_us": None, "latency_p99_us": None, "repeat": args.repeat,
                     "version": faiss.__version__, "simd": simd, "blas": lib,
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")})
        print(json.dumps(line, separators=(",", ":")), flush=True)
        knob_txt = ",".join(f"{key}={val}" for key, val in knob.items()) or "-"
        print(f"{name:<11} {human:<16} {threads:>3} {knob_txt:<11} {build_s:>8.2f} {bpv:>9.1f} "
              f"{rk:>8.4f} {qps:>11.0f}", file=sys.stderr)

    if "hnsw" in kinds:
        set_threads(cores)
        index = faiss.IndexHNSWFlat(d, args.M, metric)
        index.hnsw.efConstruction = args.ef_construction
        t0 = time.perf_counter()
        index.add(base)
        build_s = time.perf_counter() - t0
        hnsw = index.hnsw
        links = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        bpv = d * 4 + links / n
        params = {"M": args.M, "ef_construction": args.ef_construction}
        for t in tlist:
            set_threads(t)
            for ef in efs:
                index.hnsw.efSearch = ef
                qps, ids = timed_search(index, query, k, args.repeat)
                emit("faiss-hnsw", params, f"M={args.M} efc={args.ef_construction}", t,
                     {"ef": ef}, qps, build_s, bpv, ids)
        del index

    if "flat" in kinds:
        index = faiss.IndexFlatL2(d) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
        t0 = time.perf_counter()
        index.add(base)
        build_s = time.perf_counter() - t0
        for t in tlist:
            set_threads(t)
            qps, ids = timed_search(index, query, k, args.repeat)
            emit("faiss-flat", {}, "batch", t, {}, qps, build_s, d * 4, ids)
        del index

    if "ivf" in kinds:
        set_threads(cores)
        nlist = max(1, min(args.nlist, n))
        quantizer = faiss.IndexFlatL2(d) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
        t0 = time.perf_counter()
        index.train(base)
        index.add(base)
        build_s = time.perf_counter() - t0
        bpv = d * 4 + 8 + nlist * d * 4 / n
        for t in tlist:
            set_threads(t)
            for nprobe in nprobes:
                if nprobe > nlist:
                    continue
                index.nprobe = nprobe
                qps, ids = timed_search(index, query, k, args.repeat)
                emit("faiss-ivf", {"nlist": nlist}, f"nlist={nlist}", t,
                     {"nprobe": nprobe}, qps, build_s, bpv, ids)


if __name__ == "__main__":
    main()

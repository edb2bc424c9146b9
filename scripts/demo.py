#!/usr/bin/python3
"""Runs a first set of queries against a Quiver node holding Fashion-MNIST and reports quality.

For N test images it searches the collection without a filter and with the filter
`label = <the image's class>`, measures client-side latency of each call, and compares the top k
with the exact answer of the same node (SearchParams.exact: a full scan by the node's own exact
index), printing recall@k and latency percentiles.

Usage: demo.py [--stubs build/python] [--addr 127.0.0.1:7070] [--collection fashion-mnist]
               [--queries FILE.idx3-ubyte.gz] [--labels FILE.idx1-ubyte.gz] [--n 200] [--k 10]
Needs Debian's python3-grpcio (/usr/bin/python3). Exits 1 when the node cannot be reached.
"""
import argparse
import gzip
import os
import struct
import sys
import time

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path, limit):
    """Rows of an IDX file (images: lists of floats; labels: ints), at most `limit`."""
    with gzip.open(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        n = min(dims[0], limit)
        row = 1
        for d in dims[1:]:
            row *= d
        raw = f.read(n * row)
    if ndim == 1:
        return list(raw[:n])
    return [[float(b) for b in raw[i * row:(i + 1) * row]] for i in range(n)]


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stubs", default="build/python")
    ap.add_argument("--addr", default="127.0.0.1:7070")
    ap.add_argument("--collection", default="fashion-mnist")
    ap.add_argument("--queries", default=os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))
    ap.add_argument("--labels", default=os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)
    import grpc
    from quiver.v1 import collections_pb2, collections_pb2_grpc, common_pb2, points_pb2, points_pb2_grpc

    queries = read_idx(args.queries, args.n)
    labels = read_idx(args.labels, args.n)
    ch = grpc.insecure_channel(args.addr)
    pts = points_pb2_grpc.PointsStub(ch)
    try:
        info = collections_pb2_grpc.CollectionsStub(ch).Describe(
            collections_pb2.DescribeCollectionRequest(name=args.collection), timeout=10).info
    except grpc.RpcError as e:
        print(f"{args.addr}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(f"collection {info.config.name}: {info.points_count} points, dimension "
          f"{info.config.dimension}, {common_pb2.IndexType.Name(info.config.index.type)}, "
          f"memory {info.memory_bytes / 2**20:.1f} MiB, disk {info.disk_bytes / 2**20:.1f} MiB")

    def search(vec, flt, exact):
        req = points_pb2.SearchRequest(collection=args.collection, vector=common_pb2.Vector(data=vec),
                                       k=args.k, filter_text=flt,
                                       params=common_pb2.SearchParams(exact=exact))
        t0 = time.perf_counter()
        r = pts.Search(req, timeout=30)
        return [p.id.num for p in r.points], (time.perf_counter() - t0) * 1e3

    rows = []
    for name, flt_of in (("no filter", lambda i: ""), ("label = <class>", lambda i: f"label = {labels[i]}")):
        hits = total = 0
        lat = []
        wrong_label = 0
        for i, q in enumerate(queries):
            flt = flt_of(i)
            got, ms = search(q, flt, False)
            truth, _ = search(q, flt, True)
            lat.append(ms)
            hits += len(set(got) & set(truth))
            total += len(truth)
            if flt:
                # every result must carry the class asked for
                r = pts.Get(points_pb2.GetPointsRequest(
                    collection=args.collection, ids=[common_pb2.PointId(num=x) for x in got],
                    with_payload=common_pb2.PayloadSelector(enable=True)), timeout=30)
                wrong_label += sum(1 for p in r.points if p.payload.fields["label"].integer_value != labels[i])
        rows.append((name, hits / max(total, 1), pct(lat, 50), pct(lat, 95), pct(lat, 99), wrong_label))
    print(f"\n{len(queries)} queries, k={args.k}, sequential over gRPC (latency seen by this client):")
    print(f"{'query':<18}{'recall@' + str(args.k):>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  results off-filter")
    for name, rec, p50, p95, p99, wrong in rows:
        print(f"{name:<18}{rec:>10.4f}{p50:>9.2f}{p95:>9.2f}{p99:>9.2f}  {wrong}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Asks a Quiver node for its health and cluster status and prints both.

Usage: probe.py [--stubs build/python] [--timeout S] HOST:PORT
Exits 0 when the node answers SERVING, 1 otherwise. Needs Debian's python3-grpcio (/usr/bin/python3).
"""
import argparse
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("address")
    ap.add_argument("--stubs", default="build/python", help="folder of the generated Python stubs")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node")
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)
    import grpc
    grpc.__path__.append(os.path.join(args.stubs, "grpc"))
    from grpc.health.v1 import health_pb2, health_pb2_grpc
    from quiver.v1 import cluster_pb2, cluster_pb2_grpc

    deadline = time.monotonic() + args.timeout
    with grpc.insecure_channel(args.address) as ch:
        while True:
            try:
                h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
                break
            except grpc.RpcError as e:
                if time.monotonic() > deadline:
                    print(f"{args.address}: no answer ({e.code().name}: {e.details()})", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        st = cluster_pb2_grpc.ClusterStub(ch).Status(cluster_pb2.ClusterStatusRequest(), timeout=5)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(h.status)
    print(f"health:  {status}")
    print(f"node:    {st.node_id} ({cluster_pb2.NodeMode.Name(st.mode)}, version {st.version})")
    print(f"address: {st.grpc_address}   data: {st.data_dir}   uptime: {st.uptime_ms} ms")
    print(f"members: {st.members_alive}/{st.members_total} alive   collections: {st.collections}")
    return 0 if h.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Python gRPC client (stubs generated from proto/) against a real quiver-node process.

Usage: test_interop.py --node build/bin/quiver-node --stubs build/python [unittest options]
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None


def start_node(data_dir, extra=()):
    """Starts quiver-node --dev on a free port; returns (process, address)."""
    proc = subprocess.Popen(
        [ARGS.node, "--dev", "--data", data_dir, "--grpc", "127.0.0.1:0", "--log-level", "warn", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"port=(\d+)", line)
    if not m:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise RuntimeError(f"node did not start: {line!r} {err!r}")
    return proc, f"127.0.0.1:{m.group(1)}"


def stop_node(proc):
    """SIGTERM, then wait (reading and closing the pipes); returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode


class InteropTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc  # noqa: F401  (Debian's python3-grpcio)
        cls.tmp = tempfile.TemporaryDirectory(prefix="quiver-interop-")
        cls.proc, cls.addr = start_node(os.path.join(cls.tmp.name, "data"))

    @classmethod
    def tearDownClass(cls):
        code = stop_node(cls.proc)
        cls.tmp.cleanup()
        assert code == 0, f"quiver-node exited with {code} on SIGTERM"

    def channel(self):
        import grpc
        return grpc.insecure_channel(self.addr)

    def test_health_check_reports_serving(self):
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        with self.channel() as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)
            resp = stub.Check(health_pb2.HealthCheckRequest(service="quiver.v1.Cluster"), timeout=10)
            self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)

    def test_health_check_of_unknown_service_is_not_found(self):
        import grpc
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        with self.channel() as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            self.assertIn("no.such.Service", cm.exception.details())

    def test_cluster_status_describes_the_dev_node(self):
        from quiver.v1 import cluster_pb2, cluster_pb2_grpc
        with self.channel() as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            st = stub.Status(cluster_pb2.ClusterStatusRequest(), timeout=10)
            self.assertRegex(st.node_id, r"^[0-9a-f]{32}$")
            self.assertEqual(st.mode, cluster_pb2.NODE_MODE_DEV)
            self.assertTrue(st.healthy)
            self.assertEqual(st.grpc_address, self.addr)
            self.assertEqual(st.members_alive, 1)
            self.assertTrue(st.version)
            now_ms = int(time.time() * 1000)
            self.assertLessEqual(st.started_at_unix_ms, now_ms)
            self.assertGreater(st.started_at_unix_ms, now_ms - 600_000)

    def test_unimplemented_method_answers_unimplemented(self):
        import grpc
        with self.channel() as ch:
            call = ch.unary_unary("/quiver.v1.Nothing/Here")
            with self.assertRaises(grpc.RpcError) as cm:
                call(b"", timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_malformed_request_is_invalid_argument_and_node_keeps_serving(self):
        import grpc
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        with self.channel() as ch:
            raw = ch.unary_unary("/quiver.v1.Cluster/Status")
            with self.assertRaises(grpc.RpcError) as cm:
                raw(b"\xff\xff\xff\xff\xff", timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            stub = health_pb2_grpc.HealthStub(ch)
            resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)

    def test_node_id_survives_restart_and_second_node_is_refused(self):
        from quiver.v1 import cluster_pb2, cluster_pb2_grpc
        data = os.path.join(self.tmp.name, "restart")
        proc, addr = start_node(data)
        try:
            import grpc
            with grpc.insecure_channel(addr) as ch:
                first = cluster_pb2_grpc.ClusterStub(ch).Status(
                    cluster_pb2.ClusterStatusRequest(), timeout=10).node_id
            # A second node on the same data directory must refuse to start.
            second = subprocess.run([ARGS.node, "--dev", "--data", data, "--grpc", "127.0.0.1:0"],
                                    capture_output=True, text=True, timeout=30)
            self.assertNotEqual(second.returncode, 0)
            self.assertIn("in use by another quiver-node", second.stderr)
        finally:
            self.assertEqual(stop_node(proc), 0)
        proc, addr = start_node(data)
        try:
            with grpc.insecure_channel(addr) as ch:
                again = cluster_pb2_grpc.ClusterStub(ch).Status(
                    cluster_pb2.ClusterStatusRequest(), timeout=10).node_id
            self.assertEqual(first, again)
        finally:
            self.assertEqual(stop_node(proc), 0)

    def test_corrupt_node_id_is_refused_with_a_clear_error(self):
        data = os.path.join(self.tmp.name, "corrupt")
        proc, _ = start_node(data)
        self.assertEqual(stop_node(proc), 0)
        path = os.path.join(data, "NODE_ID")
        with open(path) as f:
            text = f.read()
        # Flip one hex digit of the id; the stored checksum no longer matches.
        parts = text.split()
        parts[2] = ("0" if parts[2][0] != "0" else "1") + parts[2][1:]
        with open(path, "w") as f:
            f.write(" ".join(parts) + "\n")
        res = subprocess.run([ARGS.node, "--dev", "--data", data, "--grpc", "127.0.0.1:0"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(res.returncode, 1)
        self.assertIn("checksum mismatch", res.stderr)

    def test_sigterm_right_after_the_ready_line_is_a_clean_shutdown(self):
        # A library thread started before main() (OpenBLAS's pool) does not block SIGTERM; a
        # signal sent before the main thread waits for it must still end in a clean shutdown.
        for i in range(15):
            data = os.path.join(self.tmp.name, f"quick-{i}")
            proc, _ = start_node(data)
            self.assertEqual(stop_node(proc), 0, f"round {i}")

    def test_bad_flag_is_rejected_with_usage_hint(self):
        res = subprocess.run([ARGS.node, "--grpc-port", "1"], capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(res.returncode, 2)
        self.assertIn("--grpc-port", res.stderr)
        help_ = subprocess.run([ARGS.node, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(help_.returncode, 0)
        for flag in ("--dev", "--data", "--grpc", "--tls-cert", "QUIVER_GRPC"):
            self.assertIn(flag, help_.stdout)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True)
    parser.add_argument("--stubs", required=True)
    ARGS, rest = parser.parse_known_args()
    # The generated package 'grpc.health.v1' must merge with the installed 'grpc' package.
    sys.path.insert(0, ARGS.stubs)
    import grpc
    grpc.__path__.append(os.path.join(ARGS.stubs, "grpc"))
    unittest.main(argv=[sys.argv[0], *rest])


if __name__ == "__main__":
    main()

"""Shared by the node's Python tests: loading the generated stubs and running quiver-node.

Nodes are started without preexec_fn (a fork() runs gRPC's fork handlers, which can hang while
its threads are up) and through `setpriv --pdeathsig KILL`, so a node dies with the test process
even when that is SIGKILLed (a ctest timeout); every node not yet reaped is killed at exit.
"""
import atexit
import os
import re
import select
import shutil
import signal as _signal
import subprocess
import sys
import time
import types

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 90
LIVE = set()  # node processes not yet reaped
STUBS = None  # filled by load_stubs()


def load_stubs(python_dir):
    """Imports grpc and the generated modules from python_dir; returns a namespace with grpc,
    C/CG (collections), P/PG (points), M (common), H/HG (health)."""
    global STUBS
    if STUBS is not None:
        return STUBS
    sys.path.insert(0, python_dir)
    import grpc
    # The generated package 'grpc.health.v1' must merge with the installed 'grpc' package.
    grpc.__path__.append(os.path.join(python_dir, "grpc"))
    from grpc.health.v1 import health_pb2, health_pb2_grpc
    from quiver.v1 import collections_pb2, collections_pb2_grpc, common_pb2, points_pb2
    from quiver.v1 import points_pb2_grpc
    STUBS = types.SimpleNamespace(grpc=grpc, C=collections_pb2, CG=collections_pb2_grpc,
                                  P=points_pb2, PG=points_pb2_grpc, M=common_pb2, H=health_pb2,
                                  HG=health_pb2_grpc)
    return STUBS


def _kill_live():
    for proc in list(LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


atexit.register(_kill_live)


def node_cmd(node_bin, args):
    setpriv = shutil.which("setpriv")
    return ([setpriv, "--pdeathsig", "KILL"] if setpriv else []) + [node_bin, *args]


class Node:
    """One `quiver-node --dev --gossip off` on `data` with gRPC (and HTTP with http=True) on free
    ports; stderr goes to `log_path`. `port` is None when it did not print its ready line
    (`first_line` says what it printed instead)."""

    def __init__(self, node_bin, data, log_path, extra=(), http=False):
        self.log_path = log_path
        self.channel = None
        self.http_port = None
        args = ["--dev", "--data", data, "--grpc", "127.0.0.1:0", "--gossip", "off", *extra]
        if http:
            args += ["--http", "127.0.0.1:0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(node_cmd(node_bin, args), stdout=subprocess.PIPE,
                                     stderr=self.log, bufsize=0, env=env)
        LIVE.add(self.proc)
        self.first_line = self._read_line(START_TIMEOUT_S)
        m = re.search(r"quiver-node ready: .* port=(\d+) .*http_port=(\d+)", self.first_line)
        self.port = int(m.group(1)) if m else None
        if m:
            self.http_port = int(m.group(2)) if http else None
            s = STUBS
            self.addr = f"127.0.0.1:{self.port}"
            self.channel = s.grpc.insecure_channel(self.addr)
            self.points = s.PG.PointsStub(self.channel)
            self.colls = s.CG.CollectionsStub(self.channel)

    def _read_line(self, timeout):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return buf.decode(errors="replace") + " [timed out]"
            chunk = os.read(fd, 4096)
            if not chunk:
                return buf.decode(errors="replace") + f" [exited {self.proc.wait()}]"
            buf += chunk
        return buf.decode(errors="replace")

    def stderr(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def tail(self, n=40):
        return "".join(self.stderr().splitlines(keepends=True)[-n:])

    def close_channel(self):
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout=STOP_TIMEOUT_S):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=_signal.SIGTERM):
        """Sends sig and returns the exit status (None: still running after the timeout)."""
        self.close_channel()
        self.signal(sig)
        return self.wait()

    def kill(self):
        self.close_channel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        LIVE.discard(self.proc)
        self.proc.stdout.close()
        if not self.log.closed:
            self.log.close()


def start_node(node_bin, data_dir, log_path):
    """A node with HTTP, logging warnings and errors only; returns (node, grpc address, http
    port) or raises with the node's log when it does not come up."""
    node = Node(node_bin, data_dir, log_path, extra=("--log-level", "warn"), http=True)
    if node.port is None:
        line = node.first_line
        node.kill()
        with open(log_path) as f:
            raise RuntimeError(f"node did not start: {line!r}\n{f.read()}")
    return node, node.addr, node.http_port


def stop_node(node):
    """SIGTERM, then SIGKILL if it does not exit; returns the exit code."""
    code = node.stop()
    node.kill()
    return code if code is not None else node.proc.returncode

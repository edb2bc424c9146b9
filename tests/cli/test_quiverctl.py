#!/usr/bin/python3
"""quiverctl against a real three-node cluster (stdlib only: subprocess, json, unittest).

Three quiver-node processes on 127.0.0.1 (gRPC and gossip on port 0) join through --seeds with one
--cluster-key-file. The tests run in order:
  a_ `members` (table and --json) on every node lists all three ALIVE with their addresses,
     incarnations and a small update age;
  b_ `status` (table and --json) shows the node itself and members_alive = 3;
  c_ `health` exit codes: 0 for SERVING, 1 for an unknown service;
  d_ usage and reachability errors: unreachable address -> 1 with a message; bad flag, bad value,
     unknown command, stray argument -> 2 with usage on stderr; --help -> 0;
  e_ one node is SIGKILLed; within the documented detection bound (docs/gossip.md) quiverctl on
     the others shows it DEAD (SUSPECT on the way is fine), and `status` counts 2 alive of 3.

Nodes die with this process (PR_SET_PDEATHSIG) and are killed in tearDownClass.

Usage: test_quiverctl.py --quiverctl build/bin/quiverctl --node build/bin/quiver-node [-v]
"""
import argparse
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
NODES = 3


def _die_with_parent():
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def detection_bound_ms(n, interval=1000, mult=4, max_mult=6, retransmit_mult=4, gossip_ms=200):
    """docs/gossip.md, "The detection bound", with the default settings."""
    scale = max(1.0, math.log10(max(1.0, n)))
    min_susp = mult * int(scale * 1000) * interval // 1000
    retransmits = retransmit_mult * max(1, math.ceil(math.log10(n + 1)))
    return 4 * interval + max_mult * min_susp + retransmits * gossip_ms


class Node:
    def __init__(self, tmp, index, key_file, seeds=None):
        self.name = f"cnode{index}"
        self.dir = os.path.join(tmp, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "stderr.log")
        cmd = [ARGS.node, "--data", os.path.join(self.dir, "data"), "--grpc", "127.0.0.1:0",
               "--gossip", "127.0.0.1:0", "--node-name", self.name, "--log-level", "info",
               "--cluster-key-file", key_file]
        if seeds:
            cmd += ["--seeds", seeds]
        self.log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, preexec_fn=_die_with_parent)
        line = self.proc.stdout.readline()
        m = re.search(r"port=(\d+) node_id=(\S+) gossip=(\S+)", line)
        if not m:
            self.kill()
            raise RuntimeError(f"{self.name} did not start: {line!r}\n{self.logs()}")
        self.grpc = f"127.0.0.1:{m.group(1)}"
        self.node_id = m.group(2)  # Status.node_id; gossip (Members) knows it by self.name
        self.gossip = m.group(3)

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.log.close()


def ctl(*args, env=None, timeout=30):
    """Runs quiverctl; returns CompletedProcess (text)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    if env:
        e.update(env)
    return subprocess.run([ARGS.quiverctl, *args], capture_output=True, text=True, env=e,
                          timeout=timeout)


def ctl_json(addr, *args):
    r = ctl("--addr", addr, "--json", *args)
    if r.returncode != 0:
        raise AssertionError(f"quiverctl {' '.join(args)} at {addr} exited {r.returncode}: "
                             f"{r.stderr}")
    return json.loads(r.stdout)


def members_view(addr):
    """{id: member dict} from `quiverctl --json members`."""
    doc = ctl_json(addr, "members")
    return {m["id"]: m for m in doc["members"]}


def table_rows(text):
    """Rows of an aligned table as dicts keyed by the header words (cells hold no spaces)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = lines[0].split()
    rows = []
    for ln in lines[1:]:
        cells = ln.split()
        assert len(cells) == len(head), f"row {ln!r} does not match header {head}"
        rows.append(dict(zip(head, cells)))
    return rows


def age_seconds(text):
    """Parses quiverctl's durations: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    m = re.fullmatch(r"(\d+)ms", text)
    if m:
        return int(m.group(1)) / 1000
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", text)
    if m:
        return float(m.group(1))
    m = re.fullmatch(r"(\d+)m(\d+)s", text)
    if m:
        return int(m.group(1)) * 60 + int(m.group(2))
    m = re.fullmatch(r"(\d+)h(\d+)m", text)
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60
    m = re.fullmatch(r"(\d+)d(\d+)h", text)
    if m:
        return int(m.group(1)) * 86400 + int(m.group(2)) * 3600
    raise AssertionError(f"not a duration: {text!r}")


def wait_for(pred, limit_s, step_s=0.25):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuiverctlClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="quiver-cli-")
        key_file = os.path.join(cls.tmp.name, "cluster.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        cls.nodes = []
        try:
            cls.nodes.append(Node(cls.tmp.name, 0, key_file))
            for i in range(1, NODES):
                cls.nodes.append(Node(cls.tmp.name, i, key_file, seeds=cls.nodes[0].gossip))
        except Exception:
            cls.tearDownClass()
            raise
        cls.by_name = {n.name: n for n in cls.nodes}

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            n.kill()
        cls.tmp.cleanup()

    def all_alive_everywhere(self, nodes):
        for n in nodes:
            view = members_view(n.grpc)
            if sorted(k for k, m in view.items() if m["state"] == "ALIVE") != \
                    sorted(self.by_name):
                return False
        return True

    def test_a_members_lists_all_three_alive_with_addresses(self):
        ok = wait_for(lambda: self.all_alive_everywhere(self.nodes), 30)
        self.assertTrue(ok, "3 nodes did not converge within 30 s: " +
                        ctl("--addr", self.nodes[0].grpc, "members").stdout)
        for asker in self.nodes:
            # --json: one document with every field.
            r = ctl("--addr", asker.grpc, "--json", "members")
            self.assertEqual(r.returncode, 0, r.stderr)
            doc = json.loads(r.stdout)
            self.assertEqual(doc["self_id"], asker.name)
            self.assertEqual([m["id"] for m in doc["members"]], sorted(self.by_name))
            for m in doc["members"]:
                node = self.by_name[m["id"]]
                self.assertEqual(m["state"], "ALIVE")
                self.assertEqual(m["role"], "node")
                self.assertEqual(m["grpc_address"], node.grpc)
                self.assertEqual(m["gossip_address"], node.gossip)
                self.assertIsInstance(m["incarnation"], int)
                self.assertGreaterEqual(m["incarnation"], 0)
                # Probes and acks refresh a live member at least every few probe periods.
                self.assertLess(m["last_update_age_ms"], 10000, m)
                self.assertEqual(m["is_self"], m["id"] == asker.name)
                self.assertIsInstance(m["load"], dict)
                self.assertTrue(m["version"])

            # The table, with flags after the command this time.
            r = ctl("members", "--addr", asker.grpc)
            self.assertEqual(r.returncode, 0, r.stderr)
            rows = table_rows(r.stdout)
            head = r.stdout.splitlines()[0].split()
            for col in ("NAME", "ROLE", "GRPC-ADDRESS", "GOSSIP-ADDRESS", "STATE", "INCARNATION",
                        "UPDATE-AGE"):
                self.assertIn(col, head)
            self.assertEqual([row["NAME"] for row in rows], sorted(self.by_name))
            for row in rows:
                node = self.by_name[row["NAME"]]
                self.assertEqual(row["STATE"], "ALIVE")
                self.assertEqual(row["GRPC-ADDRESS"], node.grpc)
                self.assertEqual(row["GOSSIP-ADDRESS"], node.gossip)
                self.assertRegex(row["INCARNATION"], r"^\d+$")
                self.assertLess(age_seconds(row["UPDATE-AGE"]), 10.0, row)
                self.assertEqual(row["FLAGS"], "self" if node is asker else "-")
        # Incarnations agree between the JSON of two askers (they are the members' own numbers).
        v0 = members_view(self.nodes[0].grpc)
        v1 = members_view(self.nodes[1].grpc)
        self.assertEqual({k: m["incarnation"] for k, m in v0.items()},
                         {k: m["incarnation"] for k, m in v1.items()})

    def test_b_status_shows_the_node_and_members_alive(self):
        node = self.nodes[1]
        st = ctl_json(node.grpc, "status")
        self.assertEqual(st["node_id"], node.node_id)
        self.assertEqual(st["mode"], "node")
        self.assertEqual(st["grpc_address"], node.grpc)
        self.assertEqual(st["gossip_address"], node.gossip)
        self.assertEqual(st["members_alive"], NODES)
        self.assertEqual(st["members_total"], NODES)
        self.assertIs(st["healthy"], True)
        self.assertTrue(st["version"])
        self.assertGreater(st["started_at_unix_ms"], 0)
        self.assertIsInstance(st["uptime_ms"], int)
        self.assertIn(node.name, st["data_dir"])

        r = ctl("--addr", node.grpc, "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rf"(?m)^node id\s+{node.node_id}$")
        self.assertRegex(r.stdout, r"(?m)^members\s+3 alive / 3 total$")
        self.assertRegex(r.stdout, r"(?m)^healthy\s+yes$")
        self.assertRegex(r.stdout, rf"(?m)^grpc address\s+{re.escape(node.grpc)}$")

        # QUIVER_ADDR is the default address.
        r = ctl("--json", "status", env={"QUIVER_ADDR": node.grpc})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["node_id"], node.node_id)

    def test_c_health_exit_codes(self):
        addr = self.nodes[0].grpc
        r = ctl("--addr", addr, "health")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
        r = ctl("--addr", addr, "health", "quiver.v1.Cluster")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("SERVING", r.stdout)
        r = ctl("--addr", addr, "--json", "health")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout),
                         {"service": "", "status": "SERVING", "serving": True})
        r = ctl("--addr", addr, "health", "no.such.Service")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no.such.Service", r.stderr)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_d_usage_and_reachability_errors(self):
        addr = self.nodes[0].grpc
        dead = f"127.0.0.1:{free_port()}"
        for cmd in ("status", "members", "health"):
            r = ctl("--addr", dead, "--timeout-ms", "5000", cmd)
            self.assertEqual(r.returncode, 1, f"{cmd}: {r.stdout} {r.stderr}")
            self.assertIn(f"cannot reach {dead}", r.stderr)
            self.assertEqual(r.stdout, "")

        usage_cases = [
            ("--bogus", "status"),
            ("--addr", addr, "status", "--bogus"),
            ("--timeout-ms", "abc", "status"),
            ("--timeout-ms", "0", "status"),
            ("--addr", addr, "frobnicate"),
            ("--addr", addr, "members", "extra"),
            ("--addr", addr, "health", "a", "b"),
            ("--addr", "no-port", "status"),
            ("--addr", "127.0.0.1:99999", "status"),
            ("--addr",),
            (),
        ]
        for args in usage_cases:
            r = ctl(*args)
            self.assertEqual(r.returncode, 2, f"{args}: {r.stdout} {r.stderr}")
            self.assertIn("Usage: quiverctl", r.stderr, args)
            self.assertEqual(r.stdout, "", args)

        r = ctl("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ("status", "members", "health", "--addr", "--json", "--timeout-ms",
                     "--tls-ca", "--tls-cert", "--tls-key", "Exit codes"):
            self.assertIn(word, r.stdout)
        for cmd in ("status", "members", "health"):
            for args in ((cmd, "--help"), ("help", cmd), ("--addr", addr, cmd, "-h")):
                r = ctl(*args)
                self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
                self.assertIn(f"quiverctl [global options] {cmd}", r.stdout)
        r = ctl("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^quiverctl \d+\.\d+\.\d+")

    def test_e_killed_node_shows_dead(self):
        victim = self.nodes[2]
        others = [n for n in self.nodes if n is not victim]
        bound_s = detection_bound_ms(NODES) / 1000.0
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        seen = {n.name: [] for n in others}

        def dead_everywhere():
            done = True
            for n in others:
                state = members_view(n.grpc)[victim.name]["state"]
                if not seen[n.name] or seen[n.name][-1] != state:
                    seen[n.name].append(state)
                done = done and state == "DEAD"
            return done

        ok = wait_for(dead_everywhere, bound_s + 5, step_s=0.3)
        took = time.monotonic() - t0
        print(f"\n  SIGKILLed {victim.name}: DEAD in quiverctl on both others after {took:.1f} s "
              f"(bound {bound_s:.1f} s); states seen: {seen}", file=sys.stderr)
        self.assertTrue(ok, f"not DEAD everywhere {bound_s + 5:.0f} s after SIGKILL: {seen}")
        self.assertLessEqual(took, bound_s)
        for states in seen.values():
            self.assertTrue(set(states) <= {"ALIVE", "SUSPECT", "DEAD"}, states)

        for n in others:
            r = ctl("--addr", n.grpc, "members")
            self.assertEqual(r.returncode, 0, r.stderr)
            rows = {row["NAME"]: row for row in table_rows(r.stdout)}
            self.assertEqual(rows[victim.name]["STATE"], "DEAD")
            self.assertEqual(rows[victim.name]["GRPC-ADDRESS"], victim.grpc)
            for o in others:
                self.assertEqual(rows[o.name]["STATE"], "ALIVE")
            st = ctl_json(n.grpc, "status")
            self.assertEqual(st["members_alive"], NODES - 1)
            self.assertEqual(st["members_total"], NODES)

        # The killed node itself is unreachable now.
        r = ctl("--addr", victim.grpc, "--timeout-ms", "5000", "health")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"cannot reach {victim.grpc}", r.stderr)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiverctl", required=True)
    parser.add_argument("--node", required=True)
    ARGS, rest = parser.parse_known_args()
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(QuiverctlClusterTest)
    verbosity = 2 if "-v" in rest else 1
    result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()

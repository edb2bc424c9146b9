#!/usr/bin/python3
"""Gossip between real quiver-node processes.

Default mode (ctest: gossip_cluster): 8 nodes on 127.0.0.1 join through --seeds; Cluster.Members
on every one lists all eight ALIVE; one is SIGSTOPped for 2 s with the default settings and nobody
declares it dead; one is SIGKILLed and every other shows it DEAD within the documented bound.

--netns mode (ctest: gossip_netns_loss): one member lives in its own network namespace behind a
veth pair whose every packet is dropped with probability 0.2 (iptables' statistic match; tc netem
is not available in this kernel); over 40 s nobody is declared dead. Needs root, `ip netns` and
iptables: without them it prints why and exits 77 (ctest reports the test as skipped). The
namespace and the veth pair are always removed, and ones left by a killed earlier run are swept.

Whether anybody was ever declared dead is read from the nodes' logs ("member X is now DEAD"),
so a death followed by a quick rejoin between two polls is still caught.

Usage: test_gossip_cluster.py --node build/bin/quiver-node --stubs build/python [--netns] [-v]
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
SKIP = 77
# Undo actions (namespaces to delete) run by the SIGTERM/SIGINT handler: ctest's timeout and a
# user's ^C must not leave network namespaces behind. Nodes die with this process on their own
# (PR_SET_PDEATHSIG), and a run killed outright is swept by the next one.
CLEANUPS = []


def _die_with_parent():
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _on_signal(signum, frame):
    for fn in reversed(CLEANUPS):
        try:
            fn()
        except Exception:  # noqa: BLE001 (best effort while dying)
            pass
    os._exit(128 + signum)

# The documented detection bound for n members with the default settings (docs/gossip.md):
# 4 probe intervals + max suspicion + retransmits * gossip interval.
def detection_bound_ms(n, interval=1000, mult=4, max_mult=6, retransmit_mult=4, gossip_ms=200):
    import math
    scale = max(1.0, math.log10(max(1.0, n)))
    min_susp = mult * int(scale * 1000) * interval // 1000
    retransmits = retransmit_mult * max(1, math.ceil(math.log10(n + 1)))
    return 4 * interval + max_mult * min_susp + retransmits * gossip_ms


class Node:
    """One quiver-node process with its logs in files."""

    def __init__(self, tmp, index, key_hex, gossip, seeds=None, netns=None):
        self.index = index
        self.name = f"gnode{index}"
        self.dir = os.path.join(tmp, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "stderr.log")
        cmd = [ARGS.node, "--data", os.path.join(self.dir, "data"), "--grpc", "127.0.0.1:0",
               "--gossip", gossip, "--node-name", self.name, "--log-level", "info"]
        if seeds:
            cmd += ["--seeds", seeds]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        env = dict(os.environ, QUIVER_CLUSTER_KEY=key_hex)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, preexec_fn=_die_with_parent)
        line = self.proc.stdout.readline()
        m = re.search(r"port=(\d+) .*gossip=(\S+)", line)
        if not m:
            self.kill()
            raise RuntimeError(f"{self.name} did not start: {line!r}\n{self.logs()}")
        self.grpc = f"127.0.0.1:{m.group(1)}"
        self.gossip = m.group(2)

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

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


def members(node, timeout=5):
    """{name: (state name, incarnation)} from Cluster.Members of node."""
    import grpc
    from quiver.v1 import cluster_pb2, cluster_pb2_grpc
    with grpc.insecure_channel(node.grpc) as ch:
        resp = cluster_pb2_grpc.ClusterStub(ch).Members(cluster_pb2.ClusterMembersRequest(),
                                                       timeout=timeout)
    return {m.id: (cluster_pb2.MemberState.Name(m.state), m.incarnation, m)
            for m in resp.members}, resp


def wait_for(pred, limit_s, step_s=0.25):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


def all_alive(nodes, names):
    for n in nodes:
        view, _ = members(n)
        if sorted(k for k, v in view.items() if v[0] == "MEMBER_STATE_ALIVE") != sorted(names):
            return False
    return True


def describe(nodes, logs_of=()):
    """Each node's view (for failure messages), plus the tail of some nodes' logs."""
    lines = []
    for n in nodes:
        try:
            view, _ = members(n)
            lines.append(f"{n.name}: " + " ".join(
                f"{k}={v[0].replace('MEMBER_STATE_', '')}/{v[1]}" for k, v in sorted(view.items())))
        except Exception as e:  # noqa: BLE001 (a diagnostic must not hide the failure)
            lines.append(f"{n.name}: {e}")
    for n in logs_of:
        lines.append(f"--- {n.name} log tail ---")
        lines.extend(n.logs().splitlines()[-25:])
    return "\n".join(lines)


def deaths_in_logs(nodes, name):
    pat = re.compile(rf"member {re.escape(name)} is now DEAD")
    return [n.name for n in nodes if pat.search(n.logs())]


def start_cluster(tmp, count, key_hex, host="127.0.0.1", netns_last=None):
    first = Node(tmp, 0, key_hex, f"{host}:0")
    nodes = [first]
    try:
        for i in range(1, count):
            if netns_last and i == count - 1:
                ns, ns_host = netns_last
                nodes.append(Node(tmp, i, key_hex, f"{ns_host}:0", seeds=first.gossip, netns=ns))
            else:
                nodes.append(Node(tmp, i, key_hex, f"{host}:0", seeds=first.gossip))
    except Exception:
        for n in nodes:
            n.kill()
        raise
    return nodes


class ClusterTest(unittest.TestCase):
    """Runs in order: a_ (join), b_ (pause), c_ (kill)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="quiver-gossip-")
        cls.key = os.urandom(32).hex()
        cls.nodes = start_cluster(cls.tmp.name, 8, cls.key)
        cls.names = [n.name for n in cls.nodes]

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            n.kill()
        cls.tmp.cleanup()

    def test_a_members_on_every_node_list_all_eight_alive(self):
        ok = wait_for(lambda: all_alive(self.nodes, self.names), 30)
        self.assertTrue(ok, "8 nodes did not converge within 30 s:\n" + describe(self.nodes))
        for n in self.nodes:
            view, resp = members(n)
            self.assertEqual(resp.self_id, n.name)
            self.assertEqual(sorted(view), sorted(self.names))
            me = view[n.name][2]
            self.assertTrue(me.is_self)
            self.assertEqual(me.grpc_address, n.grpc)
            self.assertEqual(me.gossip_address, n.gossip)
            self.assertTrue(me.version)
        # Cluster.Status counts come from gossip too.
        import grpc
        from quiver.v1 import cluster_pb2, cluster_pb2_grpc
        with grpc.insecure_channel(self.nodes[3].grpc) as ch:
            st = cluster_pb2_grpc.ClusterStub(ch).Status(cluster_pb2.ClusterStatusRequest(),
                                                         timeout=5)
        self.assertEqual(st.members_alive, 8)
        self.assertEqual(st.members_total, 8)
        self.assertEqual(st.gossip_address, self.nodes[3].gossip)

    def test_b_node_stopped_for_two_seconds_is_not_declared_dead(self):
        victim = self.nodes[5]
        victim.proc.send_signal(signal.SIGSTOP)
        time.sleep(2.0)
        victim.proc.send_signal(signal.SIGCONT)
        # Long enough for a suspicion raised during the pause to be refuted or to expire.
        ok = wait_for(lambda: all_alive(self.nodes, self.names), 15)
        time.sleep(5)
        dead = deaths_in_logs(self.nodes, victim.name)
        suspected = sum(n.logs().count(f"member {victim.name} is now SUSPECT") for n in self.nodes)
        print(f"\n  paused {victim.name} for 2 s: {suspected} suspicion(s) logged, "
              f"declared dead by {dead or 'nobody'}", file=sys.stderr)
        self.assertEqual(dead, [], f"{victim.name} was declared dead by {dead}")
        self.assertTrue(ok, "members did not all see each other alive after the pause")

    def test_c_killed_node_is_dead_everywhere_within_the_bound(self):
        victim = self.nodes[2]
        others = [n for n in self.nodes if n is not victim]
        bound_s = detection_bound_ms(8) / 1000.0
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()

        def all_dead():
            return all(members(n)[0].get(victim.name, ("?",))[0] == "MEMBER_STATE_DEAD"
                       for n in others)
        ok = wait_for(all_dead, bound_s + 5, step_s=0.2)
        took = time.monotonic() - t0
        print(f"\n  SIGKILLed {victim.name}: dead on all 7 others after {took:.1f} s "
              f"(bound {bound_s:.1f} s)", file=sys.stderr)
        self.assertTrue(ok, f"not DEAD everywhere {bound_s + 5:.0f} s after SIGKILL")
        self.assertLessEqual(took, bound_s)
        # Nobody else died on the way.
        for n in others:
            self.assertEqual(deaths_in_logs(others, n.name), [])


def run(cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def sweep_stale_namespaces():
    """Removes namespaces (and their veth) left by earlier runs that were killed."""
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        m = re.match(r"qvg(\d+)\b", line)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            run(["ip", "netns", "del", f"qvg{m.group(1)}"], check=False)
            run(["ip", "link", "del", f"qvga{m.group(1)}"], check=False)


class NetnsLossTest(unittest.TestCase):
    """One member behind a 20% lossy link; nobody may be declared dead."""

    def setUp(self):
        pid = os.getpid()
        self.ns = f"qvg{pid}"
        self.veth_a = f"qvga{pid}"[:15]
        self.veth_b = f"qvgb{pid}"[:15]
        used = run(["ip", "-o", "addr"], check=False).stdout
        for _ in range(100):
            third = random.randint(0, 255)
            if f"10.213.{third}." not in used:
                break
        self.host_a, self.host_b = f"10.213.{third}.1", f"10.213.{third}.2"
        self.tmp = tempfile.TemporaryDirectory(prefix="quiver-gossip-netns-")
        self.nodes = []
        CLEANUPS.append(self.remove_network)
        run(["ip", "netns", "add", self.ns])
        run(["ip", "link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b])
        run(["ip", "link", "set", self.veth_b, "netns", self.ns])
        run(["ip", "addr", "add", f"{self.host_a}/30", "dev", self.veth_a])
        run(["ip", "link", "set", self.veth_a, "up"])
        nsx = ["ip", "netns", "exec", self.ns]
        run(nsx + ["ip", "addr", "add", f"{self.host_b}/30", "dev", self.veth_b])
        run(nsx + ["ip", "link", "set", self.veth_b, "up"])
        run(nsx + ["ip", "link", "set", "lo", "up"])
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            run(nsx + ["iptables", "-A", chain, flag, self.veth_b, "-m", "statistic", "--mode",
                       "random", "--probability", "0.2", "-j", "DROP"])

    def remove_network(self):
        run(["ip", "netns", "del", self.ns], check=False)
        run(["ip", "link", "del", self.veth_a], check=False)

    def tearDown(self):
        for n in self.nodes:
            n.kill()
        self.remove_network()
        CLEANUPS.remove(self.remove_network)
        self.tmp.cleanup()

    def test_twenty_percent_loss_on_one_link_gives_no_false_positive(self):
        key = os.urandom(32).hex()
        self.nodes = start_cluster(self.tmp.name, 8, key, host=self.host_a,
                                   netns_last=(self.ns, self.host_b))
        lossy = self.nodes[-1]
        names = [n.name for n in self.nodes]
        root_nodes = self.nodes[:-1]
        ok = wait_for(lambda: all_alive(root_nodes, names), 30)
        self.assertTrue(ok, "the cluster did not converge through the lossy link:\n" +
                        describe(root_nodes, logs_of=(lossy, root_nodes[0])))
        time.sleep(40)
        dropped = run(["ip", "netns", "exec", self.ns, "iptables", "-L", "-v", "-n", "-x"],
                      check=False).stdout
        pkts = sum(int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+\d+\s+DROP", dropped, re.M))
        suspected = sum(n.logs().count(f"member {lossy.name} is now SUSPECT") for n in root_nodes)
        dead = {n.name: deaths_in_logs(self.nodes, n.name) for n in self.nodes}
        dead = {k: v for k, v in dead.items() if v}
        print(f"\n  40 s with 20% loss on {lossy.name}'s link: {pkts} packets dropped, "
              f"{suspected} suspicion(s) of it logged, deaths: {dead or 'none'}", file=sys.stderr)
        self.assertGreater(pkts, 0, "iptables dropped nothing: the test did not test")
        self.assertEqual(dead, {}, f"false positives: {dead}")
        self.assertTrue(all_alive(root_nodes, names))


def netns_preconditions():
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (scripts/bootstrap.sh installs iptables)"
    probe = f"qvgprobe{os.getpid()}"
    r = run(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = run(["ip", "netns", "exec", probe, "iptables", "-L", "-n"], check=False)
        if r.returncode != 0:
            return f"iptables does not work in a namespace: {r.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True)
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--netns", action="store_true")
    ARGS, rest = parser.parse_known_args()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sys.path.insert(0, ARGS.stubs)
    import grpc
    grpc.__path__.append(os.path.join(ARGS.stubs, "grpc"))
    if ARGS.netns:
        why = netns_preconditions()
        if why:
            print(f"SKIP gossip_netns_loss: {why}")
            sys.exit(SKIP)
        sweep_stale_namespaces()
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(NetnsLossTest)
    else:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(ClusterTest)
    verbosity = 2 if "-v" in rest else 1
    result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()

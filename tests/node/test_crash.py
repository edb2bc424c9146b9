#!/usr/bin/python3
"""Crash safety of quiver-node: SIGKILL at random moments during concurrent ingest.

One collection (dim 32, L2, HNSW) on one node --dev. Every round:
  1. start the node on the same data directory (the first round creates the collection) and
     check that it comes up cleanly: the ready line, no WARN/ERROR line, no sanitizer report;
  2. verify the state left by the previous round: Points.Get (vectors and payload) of every id
     the writers ever touched. An id whose last write was acknowledged must hold exactly that
     state (vector compared as float32 bit patterns, payload as its deterministic protobuf
     encoding; a deleted id must be absent). An id written by the request in flight at the kill
     may hold its last acknowledged state or the in-flight one, and a request is one log entry,
     so all the ids it changes must agree. Count (exact) must equal the points found, within
     the in-flight slack of the model; Search must answer (k results, present ids, ascending
     distances), an exact search for a stored vector must find that point at distance 0, and
     HNSW self-queries must find nearly all sampled points (the index holds every point);
  3. four writer threads, each with its own id range (thread 3 uses UUID ids), send batches of
     1..200 points with random vectors (now and then -0.0 and subnormals) and varied payloads
     (ints incl. int64 extremes, doubles, strings incl. non-ASCII, bools, nested lists, null);
     some batches overwrite ids written before, some delete ids (existing or not);
  4. after a random 0.1..1.5 s the node gets SIGKILL (two rounds get SIGTERM instead and must
     exit with status 0); its log of the round must hold no WARN/ERROR line either.
Every fourth round (from round 2) first starts a node and SIGKILLs it 0.05..1 s later, mostly
while it recovers, before the start that is verified.
Every third round runs with --snapshot-points 500 and its kill comes 0.1..1.5 s after the
round's first snapshot, so snapshots and log truncation happen between kills (and some kills
land in the middle of the next snapshot); other rounds use --snapshot-interval-s 1 or the
defaults, and a few use --fsync off / interval (documented to survive a process crash) instead of
sync (the default). A final restart verifies the last round. The RNG seed is printed; --seed
replays the same kill times and batch sequences (not the thread interleaving).

Usage: test_crash.py --node build/bin/quiver-node --python-dir build/python [--seed N] [--keep]
                     [--rounds N] [-v]
"""
import argparse
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodeproc  # noqa: E402

ARGS = None
DIM = 32
COLL = "crash"
WRITERS = 4
NEW_IDS_PER_WRITER = 2000  # bounds the collection (and each recovery) at 8,000 points
RPC_TIMEOUT_S = 60
SIGTERM_ROUNDS = (7, 16)
grpc = C = CG = P = PG = M = None  # imported in main() once --python-dir is known


class Node(nodeproc.Node):
    """One quiver-node process on `data`; stderr goes to `log_path`."""

    def __init__(self, data, log_path, extra=()):
        super().__init__(ARGS.node, data, log_path, extra)
        if self.port is None:
            line = self.first_line
            self.kill()
            raise AssertionError(f"node did not start: {line!r}\n{self.tail()}")


def f32(values):
    """The float32 values the server will store, as exact Python floats."""
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def vec_bits(values):
    return struct.pack(f"<{len(values)}f", *values)


def id_msg(key):
    return M.PointId(num=key[1]) if key[0] == "n" else M.PointId(uuid=key[1])


def id_key(pid):
    if pid.WhichOneof("kind") == "num":
        return ("n", pid.num)
    return ("u", str(uuid.UUID(pid.uuid)))


def payload_bytes(p):
    return p.SerializeToString(deterministic=True)


KEYS = ["i", "d", "s", "b", "l", "nul", "label", "ключ", "with space", "k_" + "x" * 60]
# No NUL inside strings or keys: the node's protobuf-c decoding cuts them at the NUL (reported).
STRINGS = ["", "a", "héllo wörld", "✓ 🚀 日本語", "quote ' and \" and \\"]


def rand_value(rng, v, depth=0):
    """Fills the Value v with something random."""
    kind = rng.randrange(6 if depth < 2 else 5)
    if kind == 0:
        v.integer_value = rng.choice([0, 1, -1, 2**63 - 1, -2**63, rng.randrange(-10**12, 10**12)])
    elif kind == 1:
        v.double_value = rng.choice([0.0, -0.0, 1.5, -2.25e-300, 1.7e308, 5e-324,
                                     rng.uniform(-1e6, 1e6)])
    elif kind == 2:
        r = rng.random()
        if r < 0.6:
            v.string_value = rng.choice(STRINGS)
        elif r < 0.9:
            v.string_value = "".join(rng.choice("abcdefé✓") for _ in range(rng.randrange(40)))
        else:
            v.string_value = "x" * rng.randrange(2000)
    elif kind == 3:
        v.bool_value = rng.random() < 0.5
    elif kind == 4:
        v.null_value.SetInParent()
    else:
        v.list_value.SetInParent()
        for _ in range(rng.randrange(5)):
            rand_value(rng, v.list_value.values.add(), depth + 1)


def rand_payload(rng, serial):
    p = M.Payload()
    if rng.random() < 0.05:
        return p  # no fields
    p.fields["serial"].integer_value = serial  # makes every write distinguishable
    for k in rng.sample(KEYS, rng.randrange(len(KEYS))):
        rand_value(rng, p.fields[k])
    return p


def rand_vector(rng):
    vals = [rng.uniform(-1.0, 1.0) for _ in range(DIM)]
    if rng.random() < 0.1:
        vals[rng.randrange(DIM)] = -0.0
        vals[rng.randrange(DIM)] = 1e-40  # a float32 subnormal
    return f32(vals)


class Writer:
    """One writer thread's model: per id the last acknowledged state (None: absent), and the
    states written by the request in flight when the node went away."""

    def __init__(self, tid, seed):
        self.tid = tid
        self.rng = random.Random(seed * 1000 + tid)
        self.acked = {}
        self.inflight = None  # {key: state} of the request without an answer
        self.written = []  # keys upserted at least once (candidates to overwrite / delete)
        self.in_written = set()
        self.new = 0
        self.serial = tid << 40
        self.errors = []  # (monotonic time, code, details)
        self.ops = 0
        self.points = 0

    def new_key(self):
        if self.new >= NEW_IDS_PER_WRITER:
            return self.rng.choice(self.written)
        self.new += 1
        if self.tid == 3:
            return ("u", str(uuid.UUID(int=self.rng.getrandbits(128))))
        return ("n", self.tid * 1_000_000_000 + self.new)

    def old_key(self):
        return self.rng.choice(self.written) if self.written else self.new_key()

    def step(self, stub):
        """Sends one random request; False once the node has gone away."""
        rng = self.rng
        r = rng.random()
        n = rng.randint(1, 200)
        if r < 0.8 or not self.written:
            overwrite = r >= 0.6
            change = {}
            pts = []
            for _ in range(n):
                key = self.old_key() if overwrite or rng.random() < 0.2 else self.new_key()
                self.serial += 1
                vec = rand_vector(rng)
                pl = rand_payload(rng, self.serial)
                pts.append(M.PointStruct(id=id_msg(key), vector=M.Vector(data=vec), payload=pl))
                change[key] = (vec_bits(vec), payload_bytes(pl))
            if rng.random() < 0.05:  # a repeated id: the last occurrence wins
                dup = pts[rng.randrange(len(pts))]
                self.serial += 1
                vec = rand_vector(rng)
                pl = rand_payload(rng, self.serial)
                pts.append(M.PointStruct(id=dup.id, vector=M.Vector(data=vec), payload=pl))
                change[id_key(dup.id)] = (vec_bits(vec), payload_bytes(pl))
            req = P.UpsertPointsRequest(collection=COLL, points=pts, wait=rng.random() < 0.3)
            call = stub.Upsert
        else:
            keys = {self.old_key() for _ in range(n)}
            keys.add(("n", 3_000_000_000 + self.tid * 1000 + rng.randrange(1000)))  # never written
            change = {k: None for k in keys}
            req = P.DeletePointsRequest(collection=COLL, ids=M.PointIdList(
                ids=[id_msg(k) for k in keys]), wait=rng.random() < 0.3)
            call = stub.Delete
        self.inflight = change
        try:
            call(req, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            self.errors.append((time.monotonic(), e.code(), e.details()))
            return False
        self.acked.update(change)
        self.inflight = None
        self.ops += 1
        self.points += len(change)
        for k, st in change.items():
            if st is not None and k not in self.in_written:
                self.in_written.add(k)
                self.written.append(k)
        return True

    def start_round(self):
        self.errors = []
        self.ops = 0
        self.points = 0

    def run(self, stub, stop):
        while not stop.is_set():
            if not self.step(stub):
                return

    def keys(self):
        ks = set(self.acked)
        if self.inflight:
            ks |= set(self.inflight)
        return ks


def fetch(node, keys):
    """{key: (vector bits, payload bytes)} of the keys that exist."""
    out = {}
    keys = list(keys)
    for i in range(0, len(keys), 1000):
        resp = node.points.Get(P.GetPointsRequest(
            collection=COLL, ids=[id_msg(k) for k in keys[i:i + 1000]], with_vectors=True,
            with_payload=M.PayloadSelector(enable=True)), timeout=RPC_TIMEOUT_S)
        for p in resp.points:
            out[id_key(p.id)] = (vec_bits(p.vector.data), payload_bytes(p.payload))
    return out


def describe(st):
    if st is None:
        return "absent"
    vec = struct.unpack(f"<{DIM}f", st[0])
    pl = M.Payload.FromString(st[1])
    serial = pl.fields["serial"].integer_value if "serial" in pl.fields else None
    return f"present(serial={serial}, v[0:3]={vec[:3]})"


def difference(exp, obs):
    """What differs between two present states, for a failure message."""
    if exp is None or obs is None:
        return ""
    out = []
    if exp[0] != obs[0]:
        e = struct.unpack(f"<{DIM}I", exp[0])
        o = struct.unpack(f"<{DIM}I", obs[0])
        out += [f"vector[{i}] bits {e[i]:#010x} != {o[i]:#010x}"
                for i in range(DIM) if e[i] != o[i]]
    if exp[1] != obs[1]:
        pe = M.Payload.FromString(exp[1])
        po = M.Payload.FromString(obs[1])
        for k in sorted(set(pe.fields) | set(po.fields)):
            a = pe.fields[k] if k in pe.fields else None
            b = po.fields[k] if k in po.fields else None
            if a is None or b is None or a.SerializeToString(deterministic=True) != \
                    b.SerializeToString(deterministic=True):
                out.append(f"payload[{k!r}]: sent {a} stored {b}".replace("\n", " "))
    return "\n  " + "\n  ".join(out[:8])


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qv-crash-")
        self.data = os.path.join(self.tmp, "data")
        self.nodes = []
        self.self_found = None

    def tearDown(self):
        for n in self.nodes:
            n.kill()
        if ARGS.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, rnd, extra):
        log = os.path.join(self.tmp, f"node-{rnd:02d}.log")
        node = Node(self.data, log, extra)
        self.nodes.append(node)
        return node

    def kill_during_start(self, rnd, extra, after):
        """Starts a node and SIGKILLs it `after` seconds later, ready or not: recovery may be
        rebuilding the index, replaying the log or applying entries when it dies. Returns
        whether it had come up."""
        log = os.path.join(self.tmp, f"node-{rnd:02d}-killed-starting.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        with open(log, "w") as f:
            proc = subprocess.Popen(nodeproc.node_cmd(ARGS.node, ["--dev", "--data", self.data,
                                                                   "--grpc", "127.0.0.1:0",
                                                                   "--gossip", "off", *extra]),
                                    stdout=subprocess.DEVNULL, stderr=f, env=env)
            nodeproc.LIVE.add(proc)
            time.sleep(after)
            proc.kill()
            proc.wait()
            nodeproc.LIVE.discard(proc)
        with open(log, errors="replace") as f:
            text = f.read()
        bad = [ln for ln in text.splitlines()
               if re.search(r"\b(WARN|ERROR|FATAL)\b|AddressSanitizer|runtime error", ln)]
        self.assertEqual(bad, [], f"seed={self.seed} round={rnd}: node killed while starting\n"
                         f"{text[-4000:]}")
        return "node: quiver-node" in text

    def context(self, rnd, node):
        return f"seed={self.seed} round={rnd}\n--- node stderr (tail) ---\n{node.tail()}"

    def check_log_clean(self, rnd, node):
        text = node.stderr()
        bad = [ln for ln in text.splitlines()
               if re.search(r"\b(WARN|ERROR|FATAL)\b|AddressSanitizer|runtime error|"
                            r"LeakSanitizer", ln)]
        self.assertEqual(bad, [], f"the node logged trouble\n{self.context(rnd, node)}")

    def verify(self, rnd, node, writers):
        ctx = lambda: self.context(rnd, node)  # noqa: E731
        present = set()
        lo = hi = 0
        for w in writers:
            keys = w.keys()
            got = fetch(node, keys)
            torn = {"old": [], "new": []}
            for k in keys:
                old = w.acked.get(k)
                obs = got.get(k)
                if w.inflight and k in w.inflight:
                    new = w.inflight[k]
                    if obs not in (old, new):
                        self.fail(f"writer {w.tid} id {k}: holds {describe(obs)}, expected the "
                                  f"acknowledged {describe(old)} or the in-flight "
                                  f"{describe(new)}\n{ctx()}")
                    if old != new:
                        torn["old" if obs == old else "new"].append(k)
                    lo += old is not None and new is not None
                    hi += old is not None or new is not None
                elif obs != old:
                    self.fail(f"writer {w.tid} id {k}: acknowledged {describe(old)} but holds "
                              f"{describe(obs)}{difference(old, obs)}\n{ctx()}")
                else:
                    lo += old is not None
                    hi += old is not None
                if obs is not None:
                    present.add(k)
            self.assertFalse(torn["old"] and torn["new"],
                             f"writer {w.tid}: the in-flight request was applied in part: "
                             f"{len(torn['new'])} ids new, {len(torn['old'])} ids old "
                             f"(e.g. {torn['old'][:3]})\n{ctx()}")
            # what the node holds now is the acknowledged state from here on
            if w.inflight:
                for k in w.inflight:
                    w.acked[k] = got.get(k)
                w.inflight = None
        count = node.points.Count(P.CountPointsRequest(collection=COLL, exact=True),
                                  timeout=RPC_TIMEOUT_S).count
        self.assertTrue(lo <= count <= hi, f"count {count} outside [{lo}, {hi}]\n{ctx()}")
        self.assertEqual(count, len(present),
                         f"count {count} but Get finds {len(present)} points\n{ctx()}")
        m = re.findall(rf"collection {COLL}: (\d+) points, log index (\d+) \((\d+) entries",
                       node.stderr())
        if m:
            self.assertEqual(int(m[-1][0]), count, f"recovery log line disagrees\n{ctx()}")
        self.check_search(rnd, node, present, writers, ctx)
        return count, (m[-1] if m else None)

    def check_search(self, rnd, node, present, writers, ctx):
        rng = random.Random(self.seed * 7 + rnd)
        q = f32([rng.uniform(-1, 1) for _ in range(DIM)])
        resp = node.points.Search(P.SearchRequest(collection=COLL, vector=M.Vector(data=q), k=10),
                                  timeout=RPC_TIMEOUT_S)
        ids = [id_key(p.id) for p in resp.points]
        self.assertEqual(len(ids), min(10, len(present)), f"search: {ids}\n{ctx()}")
        self.assertTrue(set(ids) <= present, f"search returned absent ids {ids}\n{ctx()}")
        d = [p.distance for p in resp.points]
        self.assertEqual(d, sorted(d), f"search distances not ascending\n{ctx()}")
        if not present:
            return
        vecs = {}
        for w in writers:
            for k in w.acked:
                if k in present:
                    vecs[k] = w.acked[k][0]
        sample = rng.sample(sorted(vecs), min(20, len(vecs)))
        found = 0
        for i, k in enumerate(sample):
            v = struct.unpack(f"<{DIM}f", vecs[k])
            if i < 3:
                r = node.points.Search(P.SearchRequest(
                    collection=COLL, vector=M.Vector(data=v), k=1,
                    params=M.SearchParams(exact=True)), timeout=RPC_TIMEOUT_S)
                self.assertEqual([(id_key(p.id), p.distance) for p in r.points], [(k, 0.0)],
                                 f"exact search for the vector of {k}\n{ctx()}")
            for ef in (128, 2000):  # a miss at 128 may be HNSW recall; at 2000 hardly
                r = node.points.Search(P.SearchRequest(
                    collection=COLL, vector=M.Vector(data=v), k=5, params=M.SearchParams(ef=ef)),
                    timeout=RPC_TIMEOUT_S)
                if k in [id_key(p.id) for p in r.points]:
                    found += 1
                    break
        self.self_found = (found, len(sample))
        self.assertGreaterEqual(found, len(sample) - 1,
                                f"HNSW self-queries found {found} of {len(sample)}: the index "
                                f"lacks points the store holds\n{ctx()}")

    def round_opts(self, rnd):
        extra = []
        if rnd % 3 == 1:
            extra += ["--snapshot-points", "500"]
        elif rnd % 3 == 2:
            extra += ["--snapshot-interval-s", "1"]
        if rnd % 8 == 5:
            extra += ["--fsync", "off"]
        elif rnd % 8 == 3:
            extra += ["--fsync", "interval", "--fsync-interval-ms", "50"]
        return extra

    def test_acknowledged_points_survive_sigkill_during_concurrent_ingest(self):
        self.seed = ARGS.seed if ARGS.seed is not None else random.SystemRandom().randrange(2**32)
        print(f"\ncrash test seed={self.seed} (replay: --seed {self.seed})", file=sys.stderr)
        rng = random.Random(self.seed)
        writers = [Writer(t, self.seed) for t in range(WRITERS)]
        t_start = time.monotonic()
        for rnd in range(ARGS.rounds + 1):
            last = rnd == ARGS.rounds
            extra = self.round_opts(rnd)
            killed_starting = ""
            if rnd % 4 == 2:
                after = rng.uniform(0.05, 1.0)
                up = self.kill_during_start(rnd, extra, after)
                state = "up" if up else "recovering"
                killed_starting = f", SIGKILL {after:.2f}s into a start ({state})"
            t0 = time.monotonic()
            node = self.start(rnd, extra)
            t_up = time.monotonic() - t0
            self.check_log_clean(rnd, node)
            if rnd == 0:
                node.colls.Create(C.CreateCollectionRequest(
                    name=COLL, dimension=DIM, metric=M.METRIC_L2,
                    index=M.IndexConfig(type=M.INDEX_TYPE_HNSW,
                                        hnsw=M.HnswParams(m=12, ef_construction=64))),
                    timeout=RPC_TIMEOUT_S)
            count, rec = self.verify(rnd, node, writers)
            if last:
                node.close_channel()
                node.signal(signal.SIGTERM)
                self.assertEqual(node.wait(), 0, f"final SIGTERM\n{self.context(rnd, node)}")
                self.check_log_clean(rnd, node)
                break

            sig = signal.SIGTERM if rnd in SIGTERM_ROUNDS else signal.SIGKILL
            delay = rng.uniform(0.1, 1.5)
            stop = threading.Event()
            threads = []
            for w in writers:
                w.start_round()
                th = threading.Thread(target=w.run, args=(node.points, stop), daemon=True)
                threads.append(th)
            for th in threads:
                th.start()
            if "--snapshot-points" in extra:
                # the kill comes after a snapshot and its log truncation (perhaps during the next)
                deadline = time.monotonic() + 30
                while "index snapshot at log index" not in node.stderr():
                    self.assertLess(time.monotonic(), deadline,
                                    f"no snapshot in 30 s\n{self.context(rnd, node)}")
                    self.assertTrue(all(th.is_alive() for th in threads),
                                    f"a writer stopped\n{self.context(rnd, node)}")
                    time.sleep(0.05)
            time.sleep(delay)
            t_kill = time.monotonic()
            node.signal(sig)
            if sig == signal.SIGTERM:
                rc = node.wait()
                self.assertEqual(rc, 0, f"SIGTERM exit status\n{self.context(rnd, node)}")
            stop.set()
            for th in threads:
                th.join(RPC_TIMEOUT_S + 10)
                self.assertFalse(th.is_alive(), f"a writer hangs\n{self.context(rnd, node)}")
            node.kill()
            for w in writers:
                early = [e for e in w.errors if e[0] < t_kill]
                if early:
                    self.fail(f"writer {w.tid} failed before the kill: {early[0][1:]}\n"
                              f"{self.context(rnd, node)}")
            self.check_log_clean(rnd, node)
            if ARGS.verbose:
                log = node.stderr()
                how = "rebuilt" if "index rebuilt from the store" in log else "snapshot+log"
                if rec:
                    how += f", {rec[2]} unapplied entries"
                print(f"round {rnd:2d}: {' '.join(extra) or 'defaults'}{killed_starting}: "
                      f"up in {t_up:.1f}s "
                      f"({how}), {count} points verified, self-queries {self.self_found}; "
                      f"{sum(w.ops for w in writers)} requests / "
                      f"{sum(w.points for w in writers)} points acked, "
                      f"{log.count('index snapshot at log index')} snapshots, "
                      f"{'SIGTERM' if sig == signal.SIGTERM else 'SIGKILL'} at {delay:.2f}s with "
                      f"{sum(1 for w in writers if w.inflight)} requests in flight",
                      file=sys.stderr)
        if ARGS.verbose:
            print(f"{ARGS.rounds} rounds ({len(SIGTERM_ROUNDS)} with SIGTERM) in "
                  f"{time.monotonic() - t_start:.0f}s", file=sys.stderr)


def main():
    global ARGS, grpc, C, CG, P, PG, M
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True)
    parser.add_argument("--python-dir", required=True)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--rounds", type=int, default=22)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and node logs")
    ARGS, rest = parser.parse_known_args()
    ARGS.verbose = "-v" in rest
    st = nodeproc.load_stubs(ARGS.python_dir)
    grpc, C, CG, P, PG, M = st.grpc, st.C, st.CG, st.P, st.PG, st.M
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(CrashTest)
    result = unittest.TextTestRunner(verbosity=2 if ARGS.verbose else 1).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()

"""What the real-client Kafka tests share: a check runner around one 3-broker Keel cluster
(tests/cluster/keel_cluster.py), and a few raw Kafka wire requests (no client library).

A test file builds a Suite, declares checks with @suite.check("what it shows"), and ends with
sys.exit(suite.run()). Each check prints PASS/FAIL/SKIP on one line, failures with the
traceback and the tail of every broker's log; the last line is 'N passed, N failed, N skipped'.
KEEL_KEEP_CLUSTER=1 keeps the cluster's data dir (broker-N/broker.log) after a failure.
"""
import os
import socket
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
from keel_cluster import Cluster  # noqa: E402


class Skip(Exception):
    """Raised by a check that cannot run yet; the reason is printed."""


class Suite:
    def __init__(self, bin_dir, brokers=3, shards=2, broker_config=None):
        self.bin_dir = bin_dir
        self.cluster = Cluster(bin_dir, brokers=brokers, shards=shards,
                               broker_config=broker_config)
        self.checks = []
        self.state = {}
        self.notes = []

    def check(self, name):
        def wrap(fn):
            self.checks.append((name, fn))
            return fn
        return wrap

    def note(self, line):
        print(f"  note: {line}", flush=True)
        self.notes.append(line)

    def run(self):
        c = self.cluster
        passed = failed = skipped = 0
        keep = False
        try:
            try:
                c.up()
                for b in range(1, c.brokers + 1):
                    c.wait_for(f"broker {b} answering Metadata on its Kafka listener",
                               lambda b=b: len(metadata(c.kafka(b))[0]) == c.brokers, timeout=60)
            except Exception:
                print(f"FAIL the cluster starts and answers Kafka Metadata\n{traceback.format_exc()}")
                self.print_logs()
                failed = len(self.checks)
                keep = True
                return 1
            for name, fn in self.checks:
                start = time.time()
                try:
                    fn()
                    passed += 1
                    print(f"PASS {name} ({time.time() - start:.1f} s)", flush=True)
                except Skip as e:
                    skipped += 1
                    print(f"SKIP {name}: {e}", flush=True)
                except Exception:
                    failed += 1
                    keep = True
                    print(f"FAIL {name} ({time.time() - start:.1f} s)\n{traceback.format_exc()}",
                          flush=True)
                    self.print_logs()
        finally:
            if keep and os.environ.get("KEEL_KEEP_CLUSTER") == "1":
                print(f"cluster data kept in {c.data_dir}")
                try:
                    c.down()
                except Exception:
                    pass
            else:
                c.cleanup()
            print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
        return 0 if failed == 0 and passed + skipped == len(self.checks) else 1

    def print_logs(self, lines=40):
        for b in range(1, self.cluster.brokers + 1):
            print(f"--- broker {b} log tail ({self.cluster.data_dir}/broker-{b}/broker.log) ---\n"
                  f"{self.cluster.log_tail(b, lines)}", flush=True)


# -- raw Kafka wire ----------------------------------------------------------------------------
def frame(api_key, version, correlation_id, body=b"", client_id=b"keel-test", flexible=False):
    """A request: int32 size, header v1 (v2 when flexible), body."""
    head = struct.pack(">hhi", api_key, version, correlation_id)
    head += struct.pack(">h", len(client_id)) + client_id
    if flexible:
        head += b"\x00"  # empty tagged-field section
    payload = head + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_frame(sock):
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    if size < 4 or size > 64 << 20:
        raise ValueError(f"bad response size {size}")
    return recv_exact(sock, size)


class Reader:
    def __init__(self, data):
        self.d = data
        self.i = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.i)
        self.i += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.d[self.i:self.i + n].decode()
        self.i += n
        return s

    def array(self, item):
        n = self.take(">i")
        return None if n < 0 else [item() for _ in range(n)]


def metadata(addr, timeout=5, with_controller=False):
    """Metadata v1 for all topics over a new connection: ({id: (host, port)}, {topic: [leaders]}),
    and the controller id last when `with_controller`."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(frame(3, 1, 7, struct.pack(">i", -1)))
        r = Reader(read_frame(s))
    assert r.take(">i") == 7, "correlation id"
    brokers = {}
    for node, h, p, _rack in r.array(lambda: (r.take(">i"), r.string(), r.take(">i"), r.string())):
        brokers[node] = (h, p)
    controller = r.take(">i")
    topics = {}

    def partition():
        err, idx, leader = r.take(">h"), r.take(">i"), r.take(">i")
        r.array(lambda: r.take(">i"))
        r.array(lambda: r.take(">i"))
        return idx, leader, err

    def topic():
        err, name = r.take(">h"), r.string()
        r.take(">b")  # is_internal
        parts = r.array(partition)
        topics[name] = (err, [l for _, l, _ in sorted(parts)])
    r.array(topic)
    leaders = {n: leaders for n, (err, leaders) in topics.items() if err == 0}
    return (brokers, leaders, controller) if with_controller else (brokers, leaders)


def wait_for_leaders(cluster, topic, partitions, via=1, timeout=60, balanced=True):
    """Waits until Kafka Metadata names a live leader for each partition of `topic` and, with
    `balanced`, until leader balancing has spread them over the brokers (a leadership moving
    mid-test makes producers retry, and retries may reorder a non-idempotent producer's
    batches)."""
    def ok():
        _, topics = metadata(cluster.kafka(via))
        l = topics.get(topic)
        if not (l and len(l) == partitions and all(x > 0 for x in l)):
            return None
        counts = [l.count(b) for b in range(1, cluster.brokers + 1)]
        return l if not balanced or max(counts) - min(counts) <= 1 else None
    return cluster.wait_for(f"{'balanced ' if balanced else ''}leaders of {topic}", ok,
                            timeout=timeout)

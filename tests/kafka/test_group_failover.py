"""Group coordinator failover with real clients: two python3-confluent-kafka consumer processes
(group_consumer.py) commit continuously while a producer writes; kill -9 of the group's
coordinator (found with AdminClient.list_groups) leaves the group working on a new coordinator
(commits succeed again within a bounded time), and no committed offset ever goes backwards, as
seen by a non-member polling OffsetFetch every 200 ms throughout. The killed broker restarts and
the group answers DescribeGroups as Stable.

Run: /usr/bin/python3 tests/kafka/test_group_failover.py <dir with keel and keel-broker>
"""
import sys
import threading
import time

from confluent_kafka import Producer

import group_wire as w
from group_util import Committed, ConsumerProc, create_topic, describe_group
from kafka_harness import Suite

suite = Suite(sys.argv[1])
c = suite.cluster
TOPIC = "group-failover"
GROUP = "keel-group-failover"
PARTITIONS = 4
RECOVERY_S = 30  # from the kill until the group's commits succeed again


class Poller:
    """Reads the group's committed offsets every 200 ms from a non-member client."""

    def __init__(self, bootstrap):
        self.samples = []  # (time, {partition: offset})
        self.errors = []
        self.stop = threading.Event()
        self.client = Committed(bootstrap, GROUP)
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            start = time.time()
            try:
                self.samples.append((start, self.client.get(TOPIC, PARTITIONS, timeout=5)))
            except Exception as e:  # the coordinator is failing over
                self.errors.append((start, str(e)))
            time.sleep(max(0.0, 0.2 - (time.time() - start)))

    def latest(self):
        return self.samples[-1][1] if self.samples else {}

    def finish(self):
        self.stop.set()
        self.t.join(30)
        self.client.close()


class Load:
    """A producer writing about 400 messages a second round-robin over the partitions."""

    def __init__(self, bootstrap):
        self.stop = threading.Event()
        self.errors = []
        self.sent = 0
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                           "message.timeout.ms": 120000, "retry.backoff.ms": 100,
                           "topic.metadata.refresh.interval.ms": 1000})
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        def on_delivery(err, msg):
            if err is not None:
                self.errors.append(str(err))
        while not self.stop.is_set():
            for _ in range(20):
                try:
                    self.p.produce(TOPIC, value=b"f-%d" % self.sent,
                                   partition=self.sent % PARTITIONS, on_delivery=on_delivery)
                    self.sent += 1
                except BufferError:
                    break
            self.p.poll(0)
            time.sleep(0.05)
        self.left = self.p.flush(60)

    def finish(self):
        self.stop.set()
        self.t.join(90)


def check_monotonic(samples):
    last = {}
    for t, offs in samples:
        for p, o in offs.items():
            if o < 0:
                continue
            assert o >= last.get(p, (-1, 0))[0], \
                f"partition {p}: committed offset went back from {last[p][0]} (seen at " \
                f"{last[p][1]:.2f}) to {o} (at {t:.2f})"
            last[p] = (o, t)


@suite.check("kill -9 of the coordinator while two consumers commit continuously (twice: the "
             "second time the broker that took over): commits succeed again on the new "
             "coordinator within 30 s, committed offsets never go backwards (polled every "
             "200 ms); the broker restarts and the group is Stable")
def _():
    create_topic(c, TOPIC, PARTITIONS)
    load = Load(c.bootstrap())
    procs = [ConsumerProc(f"member-{i}", c.bootstrap(), TOPIC, GROUP, session_ms=10000)
             for i in range(2)]
    poller = None
    try:
        c.wait_for("both members assigned",
                   lambda: all(p.assignment() for p in procs)
                   and set().union(*[p.assignment() for p in procs]) == set(range(PARTITIONS)),
                   timeout=60)
        poller = Poller(c.bootstrap())
        c.wait_for("commits on every partition",
                   lambda: all(o > 0 for o in poller.latest().values())
                   and len(poller.latest()) == PARTITIONS, timeout=60)
        for round_ in (1, 2):  # the second round kills whichever broker took over
            # list_groups and FindCoordinator agree once leadership has settled (leader
            # balancing may still be moving the offsets partition, and a broker's leader table
            # lags a move by up to one report period).
            def settled():
                g = describe_group(c.bootstrap(), GROUP)
                if not g or g.state != "Stable":
                    return None
                return g.broker.id if g.broker.id == w.wait_coordinator(c, GROUP, via=1) else None
            victim = c.wait_for("the group Stable, list_groups and FindCoordinator naming one "
                                "coordinator", settled, timeout=30)
            time.sleep(2)
            before = dict(poller.latest())
            c.kill9(victim)
            killed_at = time.time()
            suite.note(f"round {round_}: killed the coordinator, broker {victim}; "
                       f"committed then {before}")
            survivors = [b for b in (1, 2, 3) if b != victim]

            def recovered():
                # Past every offset a member's commit reported up to 1 s after the kill (a commit in
                # flight at the kill cannot count), in a poll that started after the kill.
                high = {}
                for p in procs:
                    for ev in p.commits():
                        if ev["t"] <= killed_at + 1.0:
                            for part, o in ev["offsets"].items():
                                high[int(part)] = max(high.get(int(part), -1), o)
                if time.time() < killed_at + 1.0:
                    return None
                fresh = [offs for t, offs in list(poller.samples) if t > killed_at + 1.0]
                return fresh and all(fresh[-1].get(p, -1) > high.get(p, -1)
                                     for p in range(PARTITIONS))
            c.wait_for("commits succeeding on the new coordinator", recovered, timeout=RECOVERY_S)
            took = time.time() - killed_at
            new = w.wait_coordinator(c, GROUP, via=survivors[0])
            assert new != victim, new
            gaps = [t for t, _ in poller.errors if t >= killed_at]
            suite.note(f"commits succeed again {took:.1f} s after the kill; new coordinator broker "
                       f"{new}; {len(gaps)} failed polls meanwhile")
            time.sleep(3)

            c.restart(victim)
            g = c.wait_for("the group Stable after the restart",
                           lambda: (lambda g: g if g.state == "Stable" else None)(
                               describe_group(c.bootstrap(), GROUP)), timeout=60)
            assert len(g.members) == 2, [m.id for m in g.members]
            mid = dict(poller.latest())
            c.wait_for("commits continuing after the restart",
                       lambda: all(poller.latest().get(p, -1) > mid[p] for p in range(PARTITIONS)),
                       timeout=30)
            # Leader balancing may hand the offsets partition back to the restarted broker: the
            # group goes on through that move too.
            time.sleep(5)
            g = c.wait_for("the group Stable at the end",
                           lambda: (lambda g: g if g.state == "Stable" else None)(
                               describe_group(c.bootstrap(), GROUP)), timeout=60)
            assert len(g.members) == 2, [m.id for m in g.members]
            suite.note(f"round {round_}: after the restart: coordinator broker {g.broker.id}, "
                       f"state {g.state}")
    finally:
        load.finish()
        for p in procs:
            if p.proc.poll() is None:
                p.stop()
        if poller:
            time.sleep(1)
            poller.finish()
    assert not load.errors, load.errors[:3]
    assert getattr(load, "left", 1) == 0
    suite.note(f"{len(poller.samples)} polls, {len(poller.errors)} failed; {load.sent} produced")
    check_monotonic(poller.samples)
    # The last poll equals the members' last commits.
    final = poller.latest()
    last = {}
    for p in procs:
        for ev in p.commits():
            for part, o in ev["offsets"].items():
                if ev["t"] >= last.get(int(part), (0, 0))[0]:
                    last[int(part)] = (ev["t"], o)
    assert final == {p: o for p, (_, o) in last.items()}, (final, last)
    for p in procs:
        if p.errors():
            suite.note(f"{p}: {len(p.errors())} errors, e.g. {p.errors()[:2]}")


if __name__ == "__main__":
    sys.exit(suite.run())

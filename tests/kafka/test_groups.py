"""Consumer groups with real clients against a 3-broker Keel cluster (issue 6's acceptance).

1. python3-confluent-kafka: three consumers, each its own process (group_consumer.py), in one
   group on a 6-partition RF 3 topic: every partition is owned by exactly one member; kill -9 of
   one member, mid-stream (a producer is writing), moves its partitions to the other two within
   session.timeout.ms (6 s) plus a margin; the survivors read everything produced and stop (a
   last synchronous commit); more is produced while the group is down, and a new set of three
   begins exactly at the committed offsets; across the runs every produced message was consumed
   at least once. Once with the default (eager range) assignor, once with cooperative-sticky.
2. kafkajs and kafka-python: two consumers of one group read a produced stream to the end with
   commits; the group's committed offsets (each client's own admin OffsetFetch) equal the end
   offsets.

Run: /usr/bin/python3 tests/kafka/test_groups.py <dir with keel and keel-broker>
"""
import json
import os
import subprocess
import sys
import threading
import time

from group_util import (HERE, Committed, ConsumerProc, Trickle, create_topic,
                        decode_assignment, describe_group, produce, watermarks)
from kafka_harness import Suite

suite = Suite(sys.argv[1])
c = suite.cluster
PARTITIONS = 6
PER_PARTITION = 200
SESSION_MS = 6000
MARGIN_S = 10  # on top of the session timeout: the survivors' heartbeat, rejoin and sync


def wait_assigned(procs, what, timeout):
    """Waits until the members' last reported assignments are disjoint, cover every partition,
    and give each member something, the same for two looks 0.5 s apart. Returns them."""
    def look():
        a = [p.assignment() for p in procs]
        if any(x is None or not x for x in a):
            return None
        if sum(len(x) for x in a) != PARTITIONS or set().union(*a) != set(range(PARTITIONS)):
            return None
        return a
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        a = look()
        if a:
            time.sleep(0.5)
            if look() == a:
                return a
        last = [p.assignment() for p in procs]
        time.sleep(0.2)
    raise AssertionError(f"{what}: no complete disjoint assignment within {timeout} s; last "
                         f"reported {dict(zip(map(repr, procs), last))}")


def group_scenario(strategy):
    topic = f"groups-{strategy}"
    group = f"keel-group-{strategy}"
    create_topic(c, topic, PARTITIONS)
    produced = produce(c, topic, PARTITIONS, PER_PARTITION, strategy)

    first = [ConsumerProc(f"run1-{i}", c.bootstrap(), topic, group, strategy, SESSION_MS)
             for i in range(3)]
    second = []
    trickle = None
    try:
        a = wait_assigned(first, "three members", 60)
        suite.note(f"{strategy}: assignments {[sorted(x) for x in a]}")
        # The coordinator's view (DescribeGroups) agrees: three members, disjoint and complete.
        g = describe_group(c.bootstrap(), group)
        assert g.state == "Stable", g.state
        owned = [decode_assignment(m.assignment).get(topic, []) for m in g.members]
        assert len(owned) == 3 and sorted(sum(owned, [])) == list(range(PARTITIONS)), owned

        # A producer keeps every partition busy: the victim dies mid-stream.
        trickle = Trickle(c, topic, PARTITIONS, f"{strategy}-live", produced)
        time.sleep(2)
        victim, survivors = first[0], first[1:]
        moved = victim.assignment()
        victim.kill9()
        killed_at = time.time()
        a = wait_assigned(survivors, "the two survivors", SESSION_MS / 1000 + MARGIN_S)
        took = time.time() - killed_at
        suite.note(f"{strategy}: kill -9 of {victim} (partitions {sorted(moved)}): the survivors "
                   f"own {[sorted(x) for x in a]} {took:.1f} s later")

        # The coordinator agrees: two members, the six partitions split between them.
        def two_members():
            g = describe_group(c.bootstrap(), group)
            owned = [decode_assignment(m.assignment).get(topic, []) for m in g.members]
            return g.state == "Stable" and len(owned) == 2 and \
                sorted(sum(owned, [])) == list(range(PARTITIONS))
        c.wait_for("DescribeGroups: Stable, two members owning the six partitions", two_members,
                   timeout=30)
        # The survivors consume from the moved partitions, then everything produced.
        c.wait_for("the survivors consuming the victim's partitions",
                   lambda: {p for s in survivors for p, *_ in s.consumed(killed_at)} >= moved,
                   timeout=30)
        time.sleep(1)
        trickle.stop()
        def unconsumed():
            missing = set(produced) - {(p, o) for s in first for p, o, *_ in s.consumed()}
            return {p: (min(o for pp, o in missing if pp == p), len([1 for pp, _ in missing
                                                                     if pp == p]))
                    for p in {p for p, _ in missing}}
        deadline = time.time() + 60
        while unconsumed() and time.time() < deadline:
            time.sleep(0.2)
        assert not unconsumed(), f"the first run left unconsumed {{partition: (first offset, " \
                                 f"count)}}: {unconsumed()}"
        for s in survivors:
            s.stop()
        stopped = Committed(c.bootstrap(), group)
        try:
            committed = stopped.get(topic, PARTITIONS)
        finally:
            stopped.close()
        suite.note(f"{strategy}: committed after the first run {committed}")
        # More while nobody consumes: the second run must begin exactly at the commits.
        produced.update(produce(c, topic, PARTITIONS, 100, f"{strategy}-later"))
        by_part = {p: sorted(o for (pp, o) in produced if pp == p) for p in range(PARTITIONS)}

        # The first run: every produced offset below the committed one was consumed, and each
        # committed offset is one past what the partition's last owner consumed and committed.
        run1 = [m for p in first for m in p.consumed()]
        for p, o, v, _ in run1:
            assert produced.get((p, o)) == v, ("consumed something not produced there", p, o, v)
        seen1 = {(p, o) for p, o, *_ in run1}
        for p in range(PARTITIONS):
            if committed[p] < 0:  # nothing committed: the second run reads it from the start
                suite.note(f"partition {p}: nothing committed in the first run")
                committed[p] = 0
                continue
            below = [o for o in by_part[p] if o < committed[p]]
            assert below, f"partition {p}: committed {committed[p]} before anything consumed"
            missing = [o for o in below if (p, o) not in seen1]
            assert not missing, f"partition {p}: {len(missing)} offsets below the commit never " \
                                f"consumed, e.g. {missing[:5]}"
            last_commit = max((ev["t"], ev["offsets"][str(p)]) for s in first
                              for ev in s.commits() if str(p) in ev["offsets"])
            assert last_commit[1] == committed[p], (p, last_commit, committed[p])

        # The second run starts from the committed offsets and reads everything after them.
        second = [ConsumerProc(f"run2-{i}", c.bootstrap(), topic, group, strategy, SESSION_MS)
                  for i in range(3)]
        rest = {(p, o) for (p, o) in produced if o >= committed[p]}

        def read_rest():
            seen = {(p, o) for s in second for p, o, *_ in s.consumed()}
            return rest <= seen
        c.wait_for(f"the second run consuming the {len(rest)} messages after the commits",
                   read_rest, timeout=90)
        wait_assigned(second, "the second run", 30)
        for s in second:
            s.stop()
        run2 = [m for s in second for m in s.consumed()]
        for p, o, v, _ in run2:
            assert produced.get((p, o)) == v, ("consumed something not produced there", p, o, v)
        for p in range(PARTITIONS):
            offs = sorted(o for pp, o, *_ in run2 if pp == p)
            expect = min((o for o in by_part[p] if o >= committed[p]), default=None)
            if expect is None:
                assert not offs, (p, offs[:5])
                continue
            assert offs and offs[0] == expect, \
                f"partition {p}: the second run began at {offs[:1]}, committed {committed[p]}"
            if expect != committed[p]:
                suite.note(f"partition {p}: committed {committed[p]}, the next record is at "
                           f"{expect}")
        seen = seen1 | {(p, o) for p, o, *_ in run2}
        missing = set(produced) - seen
        assert not missing, f"{len(missing)} produced messages never consumed: " \
                            f"{sorted(missing)[:5]}"
        dups = len(run1) + len(run2) - len(produced)
        suite.note(f"{strategy}: {len(run1)} + {len(run2)} consumed for {len(produced)} produced "
                   f"({dups} redelivered)")
        for s in first + second:
            if s.errors():
                suite.note(f"{s}: {len(s.errors())} errors reported, first {s.errors()[0]}")
    except Exception:
        if os.environ.get("KEEL_GROUP_EVENTS"):
            with open(os.environ["KEEL_GROUP_EVENTS"], "w") as f:
                json.dump({s.name: {"events": s.snapshot(), "stderr": s.stderr}
                           for s in first + second}, f)
        for s in first + second:
            evs = [e for e in s.snapshot() if e["ev"] != "msgs"]
            print(f"--- {s}: {len(evs)} events besides messages, the last 12:\n"
                  + "\n".join(json.dumps(e) for e in evs[-12:])
                  + f"\nstderr: {''.join(s.stderr)[-1500:]}", flush=True)
        raise
    finally:
        if trickle and not trickle.stop_.is_set():
            trickle.stop_.set()
        for s in first + second:
            if s.proc.poll() is None:
                s.proc.kill()


@suite.check("confluent-kafka, eager range: 3 consumer processes own 6 partitions exclusively; "
             "kill -9 of one moves its partitions within the session timeout; a restart "
             "resumes exactly at the committed offsets, nothing skipped")
def _():
    group_scenario("default")


@suite.check("confluent-kafka, cooperative-sticky: the same")
def _():
    group_scenario("cooperative-sticky")


# -- 2: kafkajs and kafka-python -----------------------------------------------------------------
P2 = 4
N2 = 1500  # per partition


@suite.check("kafkajs: two consumers of one group read the stream to the end with commits; "
             "admin.fetchOffsets equals the end offsets")
def _():
    topic, group = "groups-kafkajs", "keel-group-kafkajs"
    create_topic(c, topic, P2)
    produced = produce(c, topic, P2, N2, "js")
    p = subprocess.run(["node", os.path.join(HERE, "kafkajs_group.js"), c.bootstrap(), topic,
                        group, str(len(produced))], capture_output=True, text=True, timeout=240,
                       env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})
    assert p.returncode == 0, f"node exited {p.returncode}:\n{p.stderr[-4000:]}\n{p.stdout[-2000:]}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    seen = set()
    for member in out["members"]:
        for part, offs in member["records"].items():
            seen |= {(int(part), o) for o in offs}
    assert seen == set(produced), f"{len(set(produced) - seen)} missing, " \
                                  f"{len(seen - set(produced))} unexpected"
    assigned = [set(m["assigned"]) for m in out["members"]]
    assert all(assigned), f"a member never got partitions: {assigned}"
    ends = {int(o["partition"]): int(o["high"]) for o in out["ends"]}
    fetched = {int(o["partition"]): int(o["offset"]) for o in out["committed"]}
    assert fetched == ends, f"committed {fetched}, end offsets {ends}"
    assert ends == watermarks(c.bootstrap(), topic, P2)
    suite.note(f"kafkajs: members were assigned {[sorted(a) for a in assigned]}; committed "
               f"{fetched}")


@suite.check("kafka-python: two consumers of one group read the stream to the end with "
             "commits; KafkaAdminClient.list_consumer_group_offsets equals the end offsets")
def _():
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition as KTP

    topic, group = "groups-kafka-python", "keel-group-kafka-python"
    create_topic(c, topic, P2)
    produced = produce(c, topic, P2, N2, "kp")
    common = {"bootstrap_servers": c.bootstrap().split(","), "request_timeout_ms": 60000}
    seen, lock, stop, errors = set(), threading.Lock(), threading.Event(), []
    assigned = [set(), set()]

    def member(i):
        try:
            cons = KafkaConsumer(topic, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", session_timeout_ms=10000,
                                 heartbeat_interval_ms=1000, max_poll_records=200, **common)
            try:
                while not stop.is_set():
                    batch = cons.poll(timeout_ms=200)
                    assigned[i] |= {tp.partition for tp in cons.assignment()}
                    if not batch:
                        continue
                    with lock:
                        for tp, msgs in batch.items():
                            for m in msgs:
                                assert produced[(m.partition, m.offset)] == m.value.decode()
                                seen.add((m.partition, m.offset))
                    cons.commit()  # synchronous: the positions of every assigned partition
            finally:
                cons.close()
        except Exception as e:  # reported by the check
            errors.append(repr(e))
            stop.set()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        c.wait_for("both members consuming everything", lambda: errors or seen >= set(produced),
                   timeout=120)
        time.sleep(1)  # a last poll and commit after the final batch
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert seen == set(produced)
    assert all(assigned), f"a member never got partitions: {assigned}"
    admin = KafkaAdminClient(**common)
    try:
        got = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    fetched = {tp.partition: om.offset for tp, om in got.items() if tp.topic == topic}
    ends = watermarks(c.bootstrap(), topic, P2)
    assert fetched == ends, f"committed {fetched}, end offsets {ends}"
    suite.note(f"kafka-python: members were assigned {[sorted(a) for a in assigned]}; committed "
               f"{fetched}")


if __name__ == "__main__":
    sys.exit(suite.run())

"""Bad input for consumer groups, over raw sockets (group_wire.py): each request gets its Kafka
error code, no broker stops, and a real group (a python3-confluent-kafka consumer process that
committed everything it read) keeps its committed offsets, its generation and its member.

Run: /usr/bin/python3 tests/kafka/test_group_bad_input.py <dir with keel and keel-broker>
"""
import sys
import time

from confluent_kafka import Consumer

import group_wire as w
from group_util import (Committed, ConsumerProc, create_topic, produce,
                        wait_for_preferred_leaders)
from kafka_harness import Suite, metadata

suite = Suite(sys.argv[1])
c = suite.cluster
S = suite.state
TOPIC = "bad-groups"
PARTITIONS = 3
REAL = "keel-bad-real"  # the real group
RAW = "keel-bad-raw"    # a group with one raw-wire member

UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_METADATA_TOO_LARGE = 12
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26


def coord(group):
    return c.kafka(w.wait_coordinator(c, group, via=1))


def all_alive():
    for b in (1, 2, 3):
        assert c.alive(b), f"broker {b} died"
        brokers, _ = metadata(c.kafka(b))
        assert sorted(brokers) == [1, 2, 3], (b, brokers)


@suite.check("setup: a real group (one confluent-kafka consumer process) read and committed "
             "everything; a raw-wire member forms a second group")
def _():
    # __consumer_offsets (created by the first FindCoordinator) settles on its preferred
    # leaders first: a coordinator moving mid-check would answer NOT_COORDINATOR.
    w.wait_coordinator(c, REAL, via=1)
    wait_for_preferred_leaders(c, "__consumer_offsets", 8)
    create_topic(c, TOPIC, PARTITIONS)
    produced = produce(c, TOPIC, PARTITIONS, 200, "bad")
    ends = {}
    for (p, o) in produced:
        ends[p] = max(ends.get(p, 0), o + 1)
    proc = S["proc"] = ConsumerProc("real", c.bootstrap(), TOPIC, REAL, session_ms=30000)

    def committed_all():
        got = Committed(c.bootstrap(), REAL)
        try:
            return got.get(TOPIC, PARTITIONS) == ends
        finally:
            got.close()
    c.wait_for("the real group committing every offset", committed_all, timeout=90)
    at = coord(REAL)
    d = w.describe_group(at, REAL)
    assert d["error"] == 0 and d["state"] == "Stable" and len(d["members"]) == 1, d
    S["real"] = {"ends": ends, "describe": d, "fetch": w.offset_fetch(at, REAL, TOPIC,
                                                                      range(PARTITIONS))}
    assert {p: o for p, (o, e) in S["real"]["fetch"].items()} == ends, S["real"]["fetch"]
    assert proc.proc.poll() is None

    # The raw group: one member, v1 (no member id round trip), leader of generation G.
    at = coord(RAW)
    j = w.join_group(at, RAW, 30000)
    assert j["error"] == 0 and j["leader"] == j["member_id"] and len(j["members"]) == 1, j
    err, _ = w.sync_group(at, RAW, j["generation"], j["member_id"],
                          [(j["member_id"], w.consumer_assignment({TOPIC: [0, 1, 2]}))])
    assert err == 0, err
    assert w.heartbeat(at, RAW, j["generation"], j["member_id"]) == 0
    S["raw"] = j
    ok = w.offset_commit(at, RAW, j["generation"], j["member_id"], {(TOPIC, 0): 5})
    assert ok == {(TOPIC, 0): 0}, ok
    suite.note(f"real group at broker {at}; raw group generation {j['generation']}")


def expect(name, got, want):
    assert got == want, f"{name}: got {got}, want {want}"
    all_alive()


@suite.check("JoinGroup with session timeout 1 ms and 10^9 ms: INVALID_SESSION_TIMEOUT (26), "
             "for a new group and for the real one")
def _():
    for group in ("keel-bad-new", REAL):
        at = coord(group)
        for ms in (1, 10 ** 9):
            j = w.join_group(at, group, ms)
            expect(f"{group} session {ms}", j if j == "closed" else j["error"],
                   INVALID_SESSION_TIMEOUT)
        j = w.join_group(at, group, -1)
        expect(f"{group} session -1", j if j == "closed" else j["error"],
               INVALID_SESSION_TIMEOUT)


@suite.check("a long rebalance timeout is not a bad session timeout (Kafka bounds only the "
             "session timeout): raw JoinGroup with rebalance timeout 10^9 ms joins, and a "
             "confluent-kafka consumer with max.poll.interval.ms of 1 hour gets its partitions")
def _():
    group = "keel-bad-long-rebalance"
    at = coord(group)
    problems = []
    j = w.retry(lambda: w.join_group(coord(group), group, 10000, rebalance_ms=10 ** 9),
                "JoinGroup", ok=lambda j: j == "closed" or j["error"] not in (14, 15, 16))
    if j == "closed" or j["error"] != 0:
        problems.append(f"raw JoinGroup: {j}")
    else:
        assert w.leave_group(coord(group), group, j["member_id"]) == 0
    cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": group + "-client",
                     "session.timeout.ms": 10000, "max.poll.interval.ms": 3600000,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    errors = []
    try:
        cons.subscribe([TOPIC])
        deadline = time.time() + 20
        while time.time() < deadline and not cons.assignment():
            m = cons.poll(0.5)
            if m is not None and m.error():
                errors.append(str(m.error()))
        if not cons.assignment():
            problems.append(f"confluent consumer: no assignment within 20 s; errors {errors[:3]}")
    finally:
        cons.close()
    all_alive()
    assert not problems, problems


@suite.check("JoinGroup into the real group with another protocol type, or with no protocol in "
             "common: INCONSISTENT_GROUP_PROTOCOL (23)")
def _():
    at = coord(REAL)
    j = w.join_group(at, REAL, 10000, protocol_type="not-consumer")
    expect("protocol type", j if j == "closed" else j["error"], INCONSISTENT_GROUP_PROTOCOL)
    j = w.join_group(at, REAL, 10000, protocols=[("no-such-assignor", b"\x00\x00")])
    expect("protocol name", j if j == "closed" else j["error"], INCONSISTENT_GROUP_PROTOCOL)
    j = w.join_group(at, REAL, 10000, protocols=[])
    expect("no protocols", j if j == "closed" else j["error"], INCONSISTENT_GROUP_PROTOCOL)
    at = coord(RAW)
    j = w.join_group(at, RAW, 10000, protocol_type="connect")
    expect("raw group, protocol type", j if j == "closed" else j["error"],
           INCONSISTENT_GROUP_PROTOCOL)


@suite.check("JoinGroup with 1 MiB of protocol metadata: an error (or a close), no crash; "
             "for a new group and for the real one")
def _():
    big = b"\x00\x00" + b"x" * (1 << 20)
    for group in ("keel-bad-big", REAL):
        at = coord(group)
        j = w.join_group(at, group, 10000, protocols=[("range", big)])
        got = j if j == "closed" else j["error"]
        assert got == "closed" or got != 0, f"{group}: accepted 1 MiB of metadata: {j}"
        all_alive()
        suite.note(f"{group}: 1 MiB metadata -> {got}")
    # 300 protocols of 4 KiB each (1.2 MiB in all).
    at = coord("keel-bad-big")
    j = w.join_group(at, "keel-bad-big", 10000,
                     protocols=[(f"p{i}", b"y" * 4096) for i in range(300)])
    got = j if j == "closed" else j["error"]
    assert got == "closed" or got != 0, j
    all_alive()


@suite.check("OffsetCommit for an unknown topic / partition: UNKNOWN_TOPIC_OR_PARTITION (3), "
             "the known partition in the same request commits")
def _():
    j = S["raw"]
    at = coord(RAW)
    got = w.offset_commit(at, RAW, j["generation"], j["member_id"],
                          {("no-such-topic", 0): 1, (TOPIC, 99): 1, (TOPIC, -1): 1,
                           (TOPIC, 1): 7})
    expect("unknown topic", got, {("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION,
                                  (TOPIC, 99): UNKNOWN_TOPIC_OR_PARTITION,
                                  (TOPIC, -1): UNKNOWN_TOPIC_OR_PARTITION,
                                  (TOPIC, 1): 0})
    # A simple (member-less) commit for an unknown topic, to a group nobody uses.
    at2 = coord("keel-bad-simple")
    got = w.offset_commit(at2, "keel-bad-simple", -1, "", {("no-such-topic", 3): 1})
    expect("simple commit, unknown topic", got,
           {("no-such-topic", 3): UNKNOWN_TOPIC_OR_PARTITION})
    fetched = w.offset_fetch(at, RAW, TOPIC, [0, 1])
    assert fetched == {0: (5, 0), 1: (7, 0)}, fetched


@suite.check("OffsetCommit with a stale (and a future) generation: ILLEGAL_GENERATION (22); "
             "with an unknown member: UNKNOWN_MEMBER_ID (25); into the real group too")
def _():
    j = S["raw"]
    at = coord(RAW)
    for gen in (j["generation"] - 1, j["generation"] + 1, -5):
        got = w.offset_commit(at, RAW, gen, j["member_id"], {(TOPIC, 0): 1000})
        expect(f"generation {gen}", got, {(TOPIC, 0): ILLEGAL_GENERATION})
    got = w.offset_commit(at, RAW, j["generation"], "nobody", {(TOPIC, 0): 1000})
    expect("unknown member", got, {(TOPIC, 0): UNKNOWN_MEMBER_ID})
    assert w.offset_fetch(at, RAW, TOPIC, [0]) == {0: (5, 0)}

    # The real group: its member's id with a wrong generation, a made-up member, and a
    # member-less commit while it has a member.
    at = coord(REAL)
    d = S["real"]["describe"]
    member = d["members"][0]
    for gen in (0, 10 ** 6):
        got = w.offset_commit(at, REAL, gen, member, {(TOPIC, 0): 0})
        expect(f"real group, generation {gen}", got, {(TOPIC, 0): ILLEGAL_GENERATION})
    got = w.offset_commit(at, REAL, 1, "nobody", {(TOPIC, 0): 0})
    expect("real group, unknown member", got, {(TOPIC, 0): UNKNOWN_MEMBER_ID})
    got = w.offset_commit(at, REAL, -1, "", {(TOPIC, 0): 0})
    assert got[(TOPIC, 0)] != 0, f"a member-less commit into a group with a member: {got}"
    suite.note(f"member-less commit into the real group -> {got[(TOPIC, 0)]}")


@suite.check("Heartbeat with an unknown member: UNKNOWN_MEMBER_ID (25); a wrong generation: "
             "ILLEGAL_GENERATION (22)")
def _():
    j = S["raw"]
    at = coord(RAW)
    expect("unknown member", w.heartbeat(at, RAW, j["generation"], "nobody"), UNKNOWN_MEMBER_ID)
    expect("unknown group", w.heartbeat(coord("keel-bad-nogroup"), "keel-bad-nogroup", 1, "x"),
           UNKNOWN_MEMBER_ID)
    expect("wrong generation", w.heartbeat(at, RAW, j["generation"] + 7, j["member_id"]),
           ILLEGAL_GENERATION)
    at = coord(REAL)
    expect("real group, unknown member", w.heartbeat(at, REAL, 1, "nobody"), UNKNOWN_MEMBER_ID)
    assert w.heartbeat(coord(RAW), RAW, j["generation"], j["member_id"]) == 0


@suite.check("SyncGroup with a wrong generation: ILLEGAL_GENERATION (22); an unknown member: "
             "UNKNOWN_MEMBER_ID (25); the raw group stays Stable")
def _():
    j = S["raw"]
    at = coord(RAW)
    for gen in (j["generation"] + 1, j["generation"] - 1):
        got = w.sync_group(at, RAW, gen, j["member_id"],
                           [(j["member_id"], w.consumer_assignment({TOPIC: [0]}))])
        expect(f"generation {gen}", got if got == "closed" else got[0], ILLEGAL_GENERATION)
    got = w.sync_group(at, RAW, j["generation"], "nobody")
    expect("unknown member", got if got == "closed" else got[0], UNKNOWN_MEMBER_ID)
    at2 = coord(REAL)
    got = w.sync_group(at2, REAL, 10 ** 6, S["real"]["describe"]["members"][0])
    expect("real group, wrong generation", got if got == "closed" else got[0],
           ILLEGAL_GENERATION)
    d = w.describe_group(at, RAW)
    assert d["state"] == "Stable" and d["members"] == [j["member_id"]], d
    # The member still gets its assignment at its generation.
    err, a = w.sync_group(at, RAW, j["generation"], j["member_id"])
    assert err == 0 and a == w.consumer_assignment({TOPIC: [0, 1, 2]}), (err, a)


@suite.check("JoinGroup with an empty group id: INVALID_GROUP_ID (24); OffsetCommit with 8 KiB "
             "of metadata: OFFSET_METADATA_TOO_LARGE (12), nothing stored")
def _():
    at = coord("")
    j = w.join_group(at, "", 10000)
    expect("empty group id", j if j == "closed" else j["error"], INVALID_GROUP_ID)
    j = S["raw"]
    at = coord(RAW)
    got = w.offset_commit(at, RAW, j["generation"], j["member_id"], {(TOPIC, 2): 9},
                          metadata="m" * 8192)
    expect("8 KiB metadata", got, {(TOPIC, 2): OFFSET_METADATA_TOO_LARGE})
    assert w.offset_fetch(at, RAW, TOPIC, [2]) == {2: (-1, 0)}, w.offset_fetch(at, RAW, TOPIC, [2])


@suite.check("SyncGroup from a leader with 3 MiB of assignments: an error, not a crash; the group "
             "still answers and its member can join again")
def _():
    group = "keel-bad-big-sync"
    j = w.retry(lambda: w.join_group(coord(group), group, 10000), "JoinGroup",
                ok=lambda j: j != "closed" and j["error"] == 0)
    at = coord(group)
    got = w.sync_group(at, group, j["generation"], j["member_id"],
                       [(j["member_id"], b"z" * (3 << 20))])
    err = got if got == "closed" else got[0]
    assert err != 0, f"a 3 MiB assignment was accepted: {err}"
    suite.note(f"SyncGroup with 3 MiB of assignments -> {err}")
    all_alive()
    d = w.describe_group(at, group)
    assert d["error"] == 0, d
    j2 = w.join_group(at, group, 10000, member_id=j["member_id"])
    assert j2 != "closed" and j2["error"] == 0, j2
    got = w.sync_group(at, group, j2["generation"], j["member_id"],
                       [(j["member_id"], w.consumer_assignment({TOPIC: [0]}))])
    assert got != "closed" and got[0] == 0, got
    assert w.describe_group(at, group)["state"] == "Stable"
    assert w.leave_group(at, group, j["member_id"]) == 0


@suite.check("afterwards: every broker serves, the real group is Stable with the same member and "
             "its committed offsets are unchanged; the raw member leaves")
def _():
    all_alive()
    at = coord(REAL)
    d = w.describe_group(at, REAL)
    before = S["real"]["describe"]
    assert (d["error"], d["state"], d["members"], d["protocol"]) == \
        (0, "Stable", before["members"], before["protocol"]), (d, before)
    assert w.offset_fetch(at, REAL, TOPIC, range(PARTITIONS)) == S["real"]["fetch"]
    got = Committed(c.bootstrap(), REAL)
    try:
        assert got.get(TOPIC, PARTITIONS) == S["real"]["ends"]
    finally:
        got.close()
    proc = S["proc"]
    assert proc.proc.poll() is None, "the real consumer exited"
    assert not proc.errors(), proc.errors()[:3]
    proc.stop()
    j = S["raw"]
    assert w.leave_group(coord(RAW), RAW, j["member_id"]) == 0
    d = w.describe_group(coord(RAW), RAW)
    assert d["state"] == "Empty" and not d["members"], d
    all_alive()


if __name__ == "__main__":
    try:
        sys.exit(suite.run())
    finally:
        if "proc" in S and S["proc"].proc.poll() is None:
            S["proc"].proc.kill()

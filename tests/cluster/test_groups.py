"""The keel tool's consumer-group commands against a real 3-broker cluster, with a
confluent_kafka (librdkafka) consumer group as the workload (issue 6).

Run: /usr/bin/python3 tests/cluster/test_groups.py <dir with keel and keel-broker>
Each check prints one line; the last line is 'N passed, N failed'.
"""
import json
import subprocess
import sys
import time

from confluent_kafka import Consumer, TopicPartition

from keel_cluster import Cluster, check_list, run_checks

BIN = sys.argv[1]
TOPIC = "grouped"
GROUP = "tools-test"
PARTITIONS = 3
PER_PARTITION = 10


def consumer(c, client_id):
    return Consumer({
        "bootstrap.servers": ",".join(c.kafka(b) for b in (1, 2, 3)),
        "group.id": GROUP,
        "client.id": client_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
    })


def consume_all(consumers, want, timeout=60):
    """Polls the consumers in turn until `want` records arrived; returns [(partition, offset)]."""
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        for k in consumers:
            m = k.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise AssertionError(f"consumer error: {m.error()}")
            got.append((m.partition(), m.offset()))
    assert len(got) >= want, f"consumed {len(got)} of {want} records"
    return got


def main():
    c = Cluster(BIN, brokers=3, shards=2)
    kafka = c.kafka(1) + "," + c.kafka(2)
    passed = failed = 0
    results, check = check_list()

    def keel(*args, check=True):
        return c.run(*args, "--bootstrap", kafka, check=check, timeout=120)

    def keel_fail(*args):
        p = subprocess.run([c.keel, *args, "--bootstrap", kafka], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode != 0, f"keel {' '.join(args)} succeeded: {p.stdout}"
        return p.stderr + p.stdout

    def describe():
        return json.loads(keel("group", "describe", GROUP, "--json"))

    state = {}
    try:
        c.up()
        c.create_topic(TOPIC, PARTITIONS, 3)
        c.wait_for("leaders", lambda: (lambda l: l and -1 not in l)(c.leaders(TOPIC, 1)))

        @check("a confluent_kafka group of 2 consumers shares the topic, reads it all, commits")
        def _():
            ks = [consumer(c, "tools-test-a"), consumer(c, "tools-test-b")]
            state["consumers"] = ks
            for k in ks:
                k.subscribe([TOPIC])
            # Both members assigned before any record exists, so what each reads is its own.
            deadline = time.time() + 60
            while not (all(k.assignment() for k in ks) and
                       sum(len(k.assignment()) for k in ks) == PARTITIONS):
                assert time.time() < deadline, [k.assignment() for k in ks]
                for k in ks:
                    k.poll(0.1)
            for p in range(PARTITIONS):
                c.produce(TOPIC, p, [f"p{p}-r{i}" for i in range(PER_PARTITION)], via=1 + p % 3)
            got = consume_all(ks, PARTITIONS * PER_PARTITION)
            first, last = {}, {}
            for p, o in got:
                first.setdefault(p, o)
                last[p] = o
            assert sorted(got) == sorted((p, first[p] + i) for p in range(PARTITIONS)
                                         for i in range(PER_PARTITION)), got
            state["first"], state["end"] = first, {p: last[p] + 1 for p in last}
            for k in ks:
                offsets = [TopicPartition(TOPIC, tp.partition, state["end"][tp.partition])
                           for tp in k.assignment()]
                k.commit(offsets=offsets, asynchronous=False)

        @check("group list shows the group (consumer, Stable) with its coordinator")
        def _():
            def listed():
                out = json.loads(keel("group", "list", "--json"))
                g = [x for x in out["groups"] if x["group"] == GROUP]
                return g and g[0]["state"] == "Stable" and g[0]
            g = c.wait_for("the group listed as Stable", listed, timeout=30)
            assert g["protocol_type"] == "consumer" and g["coordinator"] in (1, 2, 3), g
            text = keel("group", "list")
            assert GROUP in text and "Stable" in text, text

        @check("group describe: members, client ids, hosts, assignments, offsets and lag")
        def _():
            # Five more records in partition 0: lag 5 there, 0 elsewhere.
            c.produce(TOPIC, 0, [f"late-{i}" for i in range(5)], via=2)
            d = c.wait_for("2 members, Stable", lambda: (lambda d: d["state"] == "Stable" and
                                                        len(d["members"]) == 2 and d)(describe()))
            assert d["protocol_type"] == "consumer" and d["protocol"] in ("range", "roundrobin",
                                                                          "cooperative-sticky"), d
            assert sorted(m["client_id"] for m in d["members"]) == ["tools-test-a",
                                                                   "tools-test-b"], d
            assert all(m["host"].startswith("/127.0.0.1") for m in d["members"]), d
            assigned = sorted(p for m in d["members"] for a in m["assignment"]
                              if a["topic"] == TOPIC for p in a["partitions"])
            assert assigned == list(range(PARTITIONS)), d
            offsets = {o["partition"]: o for o in d["offsets"] if o["topic"] == TOPIC}
            assert sorted(offsets) == list(range(PARTITIONS)), d
            end = state["end"]
            state["hw"] = {p: end[p] + (5 if p == 0 else 0) for p in end}
            for p, o in offsets.items():
                assert o["committed"] == end[p], o
                assert o["high_watermark"] == state["hw"][p], o
                assert o["lag"] == (5 if p == 0 else 0), o
                assert o["member"] in [m["member_id"] for m in d["members"]], o
            text = keel("group", "describe", GROUP)
            assert "Stable" in text and "tools-test-a" in text and f"{TOPIC}[" in text, text

        @check("reset-offsets and delete refuse while the group has active members")
        def _():
            err = keel_fail("group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest",
                            "--execute")
            assert "active member" in err, err
            err = keel_fail("group", "delete", GROUP)
            assert "active members" in err, err
            assert all(o["committed"] == state["end"][o["partition"]]
                       for o in describe()["offsets"])

        @check("after the consumers stop: reset-offsets --to-earliest plans, then --execute commits 0")
        def _():
            for k in state.pop("consumers"):
                k.close()
            c.wait_for("the group to be Empty", lambda: describe()["state"] == "Empty",
                       timeout=30)
            plan = keel("group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest")
            assert "dry run" in plan, plan
            rows = [l.split() for l in plan.splitlines() if l.startswith(TOPIC)]
            assert [(int(r[1]), r[2], int(r[3])) for r in rows] == \
                [(p, str(state["end"][p]), 0) for p in range(PARTITIONS)], plan
            assert all(o["committed"] == state["end"][o["partition"]]
                       for o in describe()["offsets"])
            # --to-offset clamps into the partition's range; --to-latest goes to the end.
            plan = keel("group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-offset", "12")
            rows = [l.split() for l in plan.splitlines() if l.startswith(TOPIC)]
            assert [int(r[3]) for r in rows] == [min(12, state["hw"][p])
                                                 for p in range(PARTITIONS)], plan
            out = keel("group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest",
                       "--execute")
            assert "committed" in out, out
            d = describe()
            assert {o["partition"]: o["committed"] for o in d["offsets"]} == \
                {p: 0 for p in range(PARTITIONS)}, d
            assert {o["partition"]: o["lag"] for o in d["offsets"]} == state["hw"], d

        @check("a restarted consumer re-reads every partition from the start")
        def _():
            k = consumer(c, "tools-test-c")
            k.subscribe([TOPIC])
            try:
                got = consume_all([k], PARTITIONS * PER_PARTITION + 5)
                firsts = {}
                for p, o in got:
                    firsts.setdefault(p, o)
                assert firsts == state["first"], (firsts, state["first"])
                k.commit(asynchronous=False)
            finally:
                k.close()
            d = c.wait_for("Empty again", lambda: (lambda d: d["state"] == "Empty" and d)(
                describe()), timeout=30)
            assert all(o["lag"] == 0 for o in d["offsets"]), d

        @check("group delete removes the group and its offsets")
        def _():
            out = keel("group", "delete", GROUP)
            assert f"deleted group {GROUP}" in out, out
            listed = json.loads(keel("group", "list", "--json"))
            assert GROUP not in [g["group"] for g in listed["groups"]], listed
            d = describe()
            assert d["members"] == [] and d["offsets"] == [], d
            assert d["state"] in ("Dead", "Empty"), d
            err = keel_fail("group", "delete", GROUP)
            assert "does not exist" in err or "GROUP_ID_NOT_FOUND" in err, err

        passed, failed = run_checks(c, results)
    finally:
        for k in state.get("consumers", []):
            try:
                k.close()
            except Exception:
                pass
        c.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Broker liveness held in the replicated controller metadata (KIP-631 heartbeats and fencing),
with real keel-broker processes on loopback.

Every broker heartbeats to the controller leader; the leader fences a broker silent for the
session timeout (3 s by default) and unfences it when it heartbeats again. These checks ask every
surviving broker, through both `keel cluster status` (admin RPC) and Kafka Metadata v5 (broker
list, leaders, offline replicas), and demand that all of them agree.

Run: /usr/bin/python3 tests/cluster/test_liveness.py <dir with keel and keel-broker>
Each check prints one line; the last line is 'N passed, N failed'.
"""
import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kafka"))
from keel_cluster import Cluster, check_list, run_checks  # noqa: E402
from kafka_harness import Reader, frame, read_frame  # noqa: E402

BIN = sys.argv[1]
# Session timeout plus a generous margin for a loaded 2-core machine: a deadline to wait for a
# state, never a claim about speed.
FENCE_DEADLINE_S = 45
results, check = check_list()


def metadata_v5(addr, timeout=5):
    """Kafka Metadata v5 for all topics: (broker ids, {topic: [(partition, leader, replicas,
    offline replicas, error)]})."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        # topics: null (all), allow_auto_topic_creation: false
        s.sendall(frame(3, 5, 11, struct.pack(">ib", -1, 0)))
        r = Reader(read_frame(s))
    assert r.take(">i") == 11, "correlation id"
    r.take(">i")  # throttle time
    brokers = [b for b, _h, _p, _rack in
               r.array(lambda: (r.take(">i"), r.string(), r.take(">i"), r.string()))]
    r.string()  # cluster id
    r.take(">i")  # controller id
    topics = {}

    def partition():
        err, idx, leader = r.take(">h"), r.take(">i"), r.take(">i")
        replicas = r.array(lambda: r.take(">i"))
        r.array(lambda: r.take(">i"))  # isr
        offline = r.array(lambda: r.take(">i"))
        return idx, leader, replicas, offline, err

    def topic():
        _err, name = r.take(">h"), r.string()
        r.take(">b")  # is_internal
        topics[name] = sorted(r.array(partition))
    r.array(topic)
    return sorted(brokers), topics


def view(c, broker):
    """What `broker` says about liveness: fenced ids from cluster status, the Metadata broker
    list, and the offline replicas and leaders of every partition."""
    st = c.status(broker)
    fenced = sorted(b["id"] for b in st["brokers"] if not b["alive"])
    assert all(b["fenced"] == (not b["alive"]) for b in st["brokers"]), st
    listed, topics = metadata_v5(c.kafka(broker))
    return fenced, listed, topics


def all_agree_fenced(c, survivors, dead):
    """True when every survivor reports exactly `dead` fenced, lists the others in Metadata, and
    names `dead` offline wherever it holds a replica (and never as a leader)."""
    everyone = list(range(1, c.brokers + 1))
    for b in survivors:
        fenced, listed, topics = view(c, b)
        if fenced != sorted(dead):
            return False
        if listed != sorted(set(everyone) - set(dead)):
            return False
        for name, parts in topics.items():
            for _idx, leader, replicas, offline, _err in parts:
                if sorted(offline) != sorted(set(replicas) & set(dead)):
                    return False
                if leader in dead:
                    return False
    return True


def logged(c, line):
    """Whether any broker's log holds `line` (the controller may have moved)."""
    return any(line in c.log_tail(b, 100000) for b in range(1, c.brokers + 1))


def main():
    c = Cluster(BIN, brokers=3, shards=2)
    passed = failed = 0
    state = {}
    try:
        c.up()

        @check("every broker reports all three brokers alive and listed in Metadata")
        def _():
            c.create_topic("base", 3, 3, via=1)
            c.wait_for("all three agree nobody is fenced",
                       lambda: all_agree_fenced(c, [1, 2, 3], []), timeout=FENCE_DEADLINE_S)

        @check("kill -9 a broker: every survivor reports it fenced and offline, all alike")
        def _():
            controller = c.status(1)["controller"]
            victim = next(b for b in (3, 2, 1) if b != controller)
            state["victim"] = victim
            survivors = [b for b in (1, 2, 3) if b != victim]
            c.kill9(victim)
            c.wait_for(f"every survivor to report broker {victim} fenced",
                       lambda: all_agree_fenced(c, survivors, [victim]), timeout=FENCE_DEADLINE_S)
            assert logged(c, f"fencing broker {victim}: no heartbeat for a session"), \
                c.log_tail(controller)

        @check("a topic created while it is down is placed only on live brokers")
        def _():
            victim = state["victim"]
            survivors = [b for b in (1, 2, 3) if b != victim]
            out = c.create_topic("while-down", 4, 2, via=survivors[0])
            assert "created" in out, out
            for b in survivors:
                # The controller answers once the command applied there; the others apply it
                # as their replica of the metadata log catches up.
                t = c.wait_for(f"topic while-down in broker {b}'s metadata",
                               lambda: next((t for t in c.status(b)["topics"]
                                             if t["name"] == "while-down"), None), timeout=30)
                assert len(t["partitions"]) == 4, (b, t)
                for p in t["partitions"]:
                    assert victim not in p["replicas"], (b, p)
            # Replication factor 3 needs three live brokers: refused, not placed on the dead one.
            p = c.run("topic", "create", "too-wide", "--partitions", "1",
                      "--replication-factor", "3", "--bootstrap", c.rpc(survivors[0]),
                      check=False)
            assert "created" not in p, p

        @check("the broker restarts and is unfenced on every broker")
        def _():
            victim = state["victim"]
            c.up()  # starts only the missing broker; waits until every broker says all alive
            c.wait_for(f"every broker to report broker {victim} unfenced",
                       lambda: all_agree_fenced(c, [1, 2, 3], []), timeout=FENCE_DEADLINE_S)
            assert logged(c, f"unfencing broker {victim}: it heartbeats again")

        @check("kill -9 the controller leader: the new leader fences it, and no live broker")
        def _():
            old = c.status(1)["controller"]
            survivors = [b for b in (1, 2, 3) if b != old]
            c.kill9(old)
            c.wait_for("a new controller",
                       lambda: c.status(survivors[0])["controller"] not in (-1, old), timeout=30)

            # Poll until the dead one is fenced everywhere; at no poll may a live broker be fenced
            # (the new leader gives every broker a session of grace before fencing anyone).
            wrongly_fenced = []

            def settled():
                for b in survivors:
                    fenced, _listed, _topics = view(c, b)
                    if set(fenced) & set(survivors):
                        wrongly_fenced.append((b, fenced))
                return all_agree_fenced(c, survivors, [old])
            c.wait_for(f"every survivor to report the old controller {old} fenced", settled,
                       timeout=FENCE_DEADLINE_S)
            assert not wrongly_fenced, wrongly_fenced
            # And it stays that way: the live brokers keep heartbeating to the new leader.
            end = time.time() + 5
            while time.time() < end:
                assert all_agree_fenced(c, survivors, [old])
                time.sleep(0.5)
            state["old_controller"] = old

        @check("the old controller restarts and is unfenced everywhere")
        def _():
            c.up()
            c.wait_for("every broker to report nobody fenced",
                       lambda: all_agree_fenced(c, [1, 2, 3], []), timeout=FENCE_DEADLINE_S)

        @check("SIGTERM: a controlled shutdown fences the broker itself; a restart unfences it")
        def _():
            controller = c.status(1)["controller"]
            leaving = next(b for b in (1, 2, 3) if b != controller)
            survivors = [b for b in (1, 2, 3) if b != leaving]
            pid = c.pid(leaving)
            os.kill(pid, signal.SIGTERM)
            c.wait_for(f"broker {leaving} to exit", lambda: not c.alive(leaving), timeout=60)
            c.wait_for(f"every survivor to report broker {leaving} fenced",
                       lambda: all_agree_fenced(c, survivors, [leaving]),
                       timeout=FENCE_DEADLINE_S)
            assert logged(c, f"fencing broker {leaving}: shutting down"), c.log_tail(controller)
            c.up()
            c.wait_for("every broker to report nobody fenced",
                       lambda: all_agree_fenced(c, [1, 2, 3], []), timeout=FENCE_DEADLINE_S)

        passed, failed = run_checks(c, results)
    finally:
        c.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

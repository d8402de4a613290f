"""A fenced broker leads nothing (as in Kafka's KRaft), with real keel-broker processes.

One broker stops heartbeating to the controller leader while it keeps running and keeps its
links to its peers (the fault-injection hook `fault-injection-pause-heartbeats`: no heartbeats
while <data-dir>/fault-injection.pause-heartbeats exists). The controller fences it a session
timeout later, and the broker itself counts as fenced (fenced in the metadata it follows, and no
heartbeat acknowledged for a session): it hands each partition it leads to a caught-up, unfenced
replica. Writes go on; once it heartbeats again it is unfenced and leader balancing gives it its
preferred leaderships back.

Run: /usr/bin/python3 tests/cluster/test_fenced_leadership.py <dir with keel and keel-broker>
Each check prints one line; the last line is 'N passed, N failed'.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keel_cluster import Cluster, check_list, run_checks  # noqa: E402

BIN = sys.argv[1]
TOPIC = "fenced-leadership"
PARTITIONS = 6
# Deadlines for a state to be reached (a session is 3 s, balancing runs every 2 s), generous for
# a loaded 2-core machine: never a claim about speed.
DEADLINE_S = 30
results, check = check_list()


def partitions(c, via):
    st = c.status(via)
    t = next((t for t in st["topics"] if t["name"] == TOPIC), None)
    return st, (t["partitions"] if t else None)


def fenced_ids(st):
    return sorted(b["id"] for b in st["brokers"] if not b["alive"])


def main():
    c = Cluster(BIN, brokers=3, shards=2,
                broker_config={"fault-injection-pause-heartbeats": "true"})
    passed = failed = 0
    state = {}
    try:
        c.up()

        @check("every partition is led by its preferred replica, the victim's too")
        def _():
            c.create_topic(TOPIC, PARTITIONS, 3, via=1)

            def balanced():
                st, parts = partitions(c, 1)
                return parts and all(p["leader"] == p["replicas"][0] for p in parts) and parts
            parts = c.wait_for("preferred leaders", balanced, timeout=DEADLINE_S)
            controller = c.status(1)["controller"]
            victim = next(b for b in (3, 2, 1) if b != controller)
            led = [p["partition"] for p in parts if p["leader"] == victim]
            assert led, (victim, parts)
            state["victim"], state["led"] = victim, led
            state["others"] = [b for b in (1, 2, 3) if b != victim]

        @check("heartbeats paused: the broker is fenced and its leaderships move to others")
        def _():
            victim, others = state["victim"], state["others"]
            c.pause_heartbeats(victim)

            def moved(via):
                def pred():
                    st, parts = partitions(c, via)
                    leaders = [p["leader"] for p in parts]
                    if fenced_ids(st) != [victim]:
                        return False
                    return all(l in others for l in leaders) and leaders
                return pred
            for b in others:
                c.wait_for(f"broker {b} to see broker {victim} fenced and leading nothing",
                           moved(b), timeout=DEADLINE_S)
            # The broker itself knows: its leader table shows the others leading.
            c.wait_for(f"broker {victim}'s own view", moved(victim), timeout=DEADLINE_S)
            log = c.log_tail(victim, 100000)
            assert "this broker is fenced" in log, log[-3000:]
            assert "handing leadership to broker" in log, log[-3000:]

        @check("writes continue while it is fenced, and stay put (no balancing back)")
        def _():
            victim, others = state["victim"], state["others"]
            for p in state["led"]:
                lines = [f"fenced-{p}-{i}" for i in range(20)]
                c.produce(TOPIC, p, lines, via=others[0])
                got = c.consume(TOPIC, p, via=others[1])
                assert got[-20:] == lines, (p, got[-25:])
            # Several balancing rounds later, still nothing on the fenced broker.
            st, parts = partitions(c, others[0])
            assert all(p["leader"] in others for p in parts), parts

        @check("heartbeats resume: unfenced, and it leads its preferred partitions again")
        def _():
            victim = state["victim"]
            c.pause_heartbeats(victim, False)

            def back():
                for b in (1, 2, 3):
                    st, parts = partitions(c, b)
                    if fenced_ids(st) or not all(p["leader"] == p["replicas"][0] for p in parts):
                        return False
                return True
            c.wait_for(f"broker {victim} unfenced and leading its preferred partitions again",
                       back, timeout=DEADLINE_S)
            for p in state["led"]:
                c.produce(TOPIC, p, [f"back-{p}"], via=victim)
                assert c.consume(TOPIC, p, via=victim)[-1] == f"back-{p}"

        passed, failed = run_checks(c, results)
    finally:
        c.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

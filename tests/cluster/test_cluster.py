"""Multi-process tests of a real 3-broker Keel cluster on loopback (issue: the broker process).

Run: /usr/bin/python3 tests/cluster/test_cluster.py <dir with keel and keel-broker>
Each check prints one line; the last line is 'N passed, N failed'.
"""
import sys
import time

from keel_cluster import Cluster, check_list, run_checks

BIN = sys.argv[1]
results, check = check_list()


def spread(leaders):
    counts = {}
    for l in leaders:
        counts[l] = counts.get(l, 0) + 1
    return counts


def main():
    c = Cluster(BIN, brokers=3, shards=2)
    passed = failed = 0
    state = {}
    try:
        c.up()

        @check("a 3-broker cluster forms with one controller")
        def _():
            st = c.status(1)
            assert st["controller"] in (1, 2, 3), st
            assert sorted(b["id"] for b in st["brokers"]) == [1, 2, 3], st
            assert all(b["alive"] for b in st["brokers"]), st

        @check("6 partitions x RF 3: every partition gets a leader, spread over the brokers")
        def _():
            c.create_topic("orders", 6, 3, via=2)
            # Leader balancing moves leaderships to the preferred replicas within seconds.
            c.wait_for("balanced leaders", lambda: (lambda l: l and -1 not in l and
                                                    sorted(spread(l).values()) == [2, 2, 2])(
                c.leaders("orders", 1)), timeout=30)

        @check("records produced to every partition are consumed back in order")
        def _():
            for p in range(6):
                c.produce("orders", p, [f"p{p}-r{i}" for i in range(20)], via=1 + p % 3)
            for p in range(6):
                got = c.consume("orders", p, via=3)
                assert got == [f"p{p}-r{i}" for i in range(20)], (p, got)

        @check("kill -9 a broker: its leaderships move within a few election timeouts, writes go on")
        def _():
            victim = 2
            start = time.time()
            c.kill9(victim)
            c.wait_for("leaders without the victim",
                       lambda: (lambda l: l and all(x not in (-1, victim) for x in l))(
                           c.leaders("orders", 1)), timeout=20)
            state["failover_s"] = time.time() - start
            for p in range(6):
                c.produce("orders", p, [f"p{p}-after-kill-{i}" for i in range(10)], via=1)

        @check("the killed broker restarts, catches up and rejoins every group")
        def _():
            c.up()  # starts only the missing broker
            c.wait_for("broker 2 alive", lambda: all(b["alive"] for b in c.status(1)["brokers"]))
            time.sleep(3)
            # With broker 3 gone too, every partition needs broker 2 for a majority: it must
            # hold every committed record.
            c.kill9(3)
            c.wait_for("leaders on 1 and 2", lambda: (lambda l: l and all(x in (1, 2) for x in l))(
                c.leaders("orders", 1)), timeout=30)
            for p in range(6):
                got = c.consume("orders", p, via=1)
                want = [f"p{p}-r{i}" for i in range(20)] + [f"p{p}-after-kill-{i}" for i in range(10)]
                assert got == want, (p, len(got), got[-3:])
            c.up()
            c.wait_for("all alive", lambda: all(b["alive"] for b in c.status(1)["brokers"]))

        @check("kill -9 the controller leader: metadata operations go on")
        def _():
            controller = c.status(1)["controller"]
            c.kill9(controller)
            other = 1 if controller != 1 else 2
            c.wait_for("a topic created after the controller died",
                       lambda: "created" in c.create_topic("after-failover", 3, 2, via=other),
                       timeout=30)
            c.wait_for("a new controller", lambda: c.status(other)["controller"] not in (-1, controller))
            c.up()

        @check("keel-broker refuses bad settings, naming them, and a data dir of another node")
        def _():
            import os
            import subprocess
            broker = os.path.join(BIN, "keel-broker")
            cases = [
                (["--node-id", "1", "--data-dir", c.data_dir + "/x", "--seeds", "1@127.0.0.1:1",
                  "--flush", "sometimes"], "flush:"),
                (["--node-id", "1", "--data-dir", c.data_dir + "/x"], "seeds:"),
                (["--node-id", "7", "--data-dir", c.data_dir + "/broker-1", "--seeds",
                  "7@127.0.0.1:1", "--rpc-listen", "127.0.0.1:1", "--kafka-listen", "127.0.0.1:2"],
                 "belongs to node 1"),
                # Broker 1's data dir holds logs on shard 1: one shard would lose them.
                (["--node-id", "1", "--data-dir", c.data_dir + "/broker-1", "--seeds",
                  "1@127.0.0.1:1", "--rpc-listen", "127.0.0.1:1", "--kafka-listen", "127.0.0.1:2",
                  "--shards", "1"], "--shards 2 or more"),
            ]
            for args, expect in cases:
                p = subprocess.run([broker, *args], capture_output=True, text=True, timeout=30)
                assert p.returncode != 0 and expect in p.stderr, (args, p.returncode, p.stderr)

        @check("cluster down stops every broker gracefully")
        def _():
            out = c.down()
            assert out.count("stopped") == 3, out
            for b in (1, 2, 3):
                assert "stopped cleanly" in c.log_tail(b, 5), c.log_tail(b)

        @check("the whole cluster started again on its data dir serves every record, and each "
               "broker's sweep of unassigned logs took none of them")
        def _():
            def sweeps(b):
                return c.log_tail(b, 10 ** 6).count("metadata barrier applied")

            before = {b: sweeps(b) for b in (1, 2, 3)}
            c.up()
            c.wait_for("all alive", lambda: all(b["alive"] for b in c.status(1)["brokers"]))
            c.wait_for("every broker's sweep", lambda: all(sweeps(b) > before[b] for b in (1, 2, 3)),
                       timeout=30)
            for b in (1, 2, 3):
                assert "is no replica of this broker" not in c.log_tail(b, 10 ** 6), c.log_tail(b)
            for p in range(6):
                got = c.consume("orders", p, via=1)
                want = [f"p{p}-r{i}" for i in range(20)] + [f"p{p}-after-kill-{i}" for i in range(10)]
                assert got == want, (p, len(got), got[-3:])
            out = c.down()
            assert out.count("stopped") == 3, out

        passed, failed = run_checks(c, results)
    finally:
        c.cleanup()
    if "failover_s" in state:
        print(f"leaderships moved {state['failover_s']:.2f} s after kill -9")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

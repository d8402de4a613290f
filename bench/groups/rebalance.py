"""bench/run groups, part (c): the time from a group member's death to the group's new stable
generation, with confluent_kafka (librdkafka) consumers.

  rebalance.py BOOTSTRAP TOPIC PARTITIONS   3 member processes in one group (session timeout
      6000 ms, heartbeats every 500 ms); once their assignments cover the topic, kill -9 one and
      time until the survivors' on_assign callbacks together cover every partition again.
      Prints `rebalance_after_kill_ms = <ms>` (plus progress on stderr).
  rebalance.py --member BOOTSTRAP TOPIC GROUP NAME   one member: prints a JSON line per
      assignment ({"t": wall-clock seconds, "partitions": [...]}) and polls forever.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time

SESSION_TIMEOUT_MS = 6000


def member(bootstrap, topic, group, name):
    from confluent_kafka import Consumer

    def on_assign(consumer, partitions):
        print(json.dumps({"t": time.time(), "name": name,
                          "partitions": sorted(p.partition for p in partitions)}), flush=True)

    def on_revoke(consumer, partitions):
        print(json.dumps({"t": time.time(), "name": name, "revoked": True}), flush=True)

    k = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                  "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 500,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    k.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while True:
        k.poll(0.05)


def main(bootstrap, topic, partitions):
    group = f"bench-rebalance-{os.getpid()}"
    names = ["member-1", "member-2", "member-3"]
    procs = {n: subprocess.Popen([sys.executable, __file__, "--member", bootstrap, topic, group, n],
                                 stdout=subprocess.PIPE) for n in names}
    latest = {}  # name -> (t, partitions) of its last assignment
    by_fd = {p.stdout.fileno(): n for n, p in procs.items()}

    pending = {fd: b"" for fd in by_fd}

    def pump(timeout):
        # Raw reads split into lines here (a buffered readline could sit on a second line that
        # select() no longer reports).
        ready, _, _ = select.select(list(by_fd), [], [], timeout)
        for fd in ready:
            n = by_fd[fd]
            chunk = os.read(fd, 65536)
            if not chunk:
                del by_fd[fd]
                continue
            pending[fd] += chunk
            *lines, pending[fd] = pending[fd].split(b"\n")
            for line in lines:
                ev = json.loads(line)
                latest[n] = (ev["t"], ev.get("partitions", []))

    def covered(members, since):
        got = []
        for n in members:
            if n not in latest or latest[n][0] < since:
                return False
            got += latest[n][1]
        return sorted(got) == list(range(partitions))

    try:
        deadline = time.time() + 120
        while not (covered(names, 0) and all(latest[n][1] for n in names)):
            if time.time() > deadline:
                raise SystemExit(f"rebalance: the 3 members never shared the topic: {latest}")
            pump(0.2)
        print(f"rebalance: 3 members stable: {({n: latest[n][1] for n in names})}",
              file=sys.stderr)
        # Let the generation settle (heartbeats flowing) before the kill.
        settle = time.time() + 3
        while time.time() < settle:
            pump(0.1)
        victim = names[0]
        t0 = time.time()
        procs[victim].send_signal(signal.SIGKILL)
        survivors = names[1:]
        deadline = t0 + 120
        while not covered(survivors, t0):
            if time.time() > deadline:
                raise SystemExit(f"rebalance: no new assignment 120 s after the kill: {latest}")
            pump(0.05)
        t1 = max(latest[n][0] for n in survivors)
        print(f"rebalance: survivors {({n: latest[n][1] for n in survivors})}", file=sys.stderr)
        print(f"rebalance_after_kill_ms = {(t1 - t0) * 1000:.0f}")
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


if __name__ == "__main__":
    if sys.argv[1] == "--member":
        member(*sys.argv[2:6])
    else:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

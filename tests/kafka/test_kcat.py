"""kcat (librdkafka's command-line client) against a 3-broker Keel cluster.

Run: /usr/bin/python3 tests/kafka/test_kcat.py <dir with keel and keel-broker>
"""
import json
import os
import subprocess
import sys
import tempfile

from kafka_harness import Suite, wait_for_leaders

suite = Suite(sys.argv[1])
c = suite.cluster
TOPIC = "kcat-lines"
PARTITIONS = 3


def kcat(*args, stdin=None, timeout=120):
    p = subprocess.run(["kcat", "-b", c.bootstrap(), *args], input=stdin, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, f"kcat {' '.join(args)} exited {p.returncode}: {p.stderr[-3000:]}"
    return p.stdout


@suite.check("kcat -L lists the 3 brokers at their Kafka listeners and the topic's partitions")
def _():
    c.create_topic(TOPIC, PARTITIONS, 3)
    wait_for_leaders(c, TOPIC, PARTITIONS)
    md = json.loads(kcat("-L", "-J", "-t", TOPIC))
    brokers = sorted((b["id"], b["name"]) for b in md["brokers"])
    assert brokers == [(b, c.kafka(b)) for b in (1, 2, 3)], md["brokers"]
    topics = {t["topic"]: t for t in md["topics"]}
    assert TOPIC in topics, md["topics"]
    t = topics[TOPIC]
    assert "error" not in t, t
    parts = sorted(t["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == list(range(PARTITIONS)), parts
    for p in parts:
        assert p["leader"] in (1, 2, 3), p
        assert sorted(r["id"] for r in p["replicas"]) == [1, 2, 3], p
    # The plain listing too, as a person reads it.
    text = kcat("-L", "-t", TOPIC)
    assert " 3 brokers:" in text and f'topic "{TOPIC}" with {PARTITIONS} partitions' in text, text


@suite.check("kcat -P -l FILE to one partition, kcat -C -o beginning -e reads the same lines back")
def _():
    lines = [f"line {i} " + "x" * (i % 50) for i in range(5000)] + ["", "last line: ünïcödé"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    try:
        kcat("-P", "-t", TOPIC, "-p", "1", "-l", path)
    finally:
        os.unlink(path)
    got = kcat("-C", "-t", TOPIC, "-p", "1", "-o", "beginning", "-e", "-q")
    # kcat -l skips empty lines, as it does for stdin.
    want = [l for l in lines if l]
    assert got.split("\n")[:-1] == want, (len(got.split("\n")), got[:300], got[-300:])
    offsets = kcat("-C", "-t", TOPIC, "-p", "1", "-o", "beginning", "-e", "-q", "-f", "%o\n")
    offs = [int(o) for o in offsets.split()]
    # Offsets increase; they need not be dense (a Raft entry of no records takes an offset too).
    assert len(offs) == len(want) and offs == sorted(set(offs)), offsets[:200]
    if offs[-1] - offs[0] + 1 != len(offs):
        suite.note(f"partition 1 offsets {offs[0]}..{offs[-1]} for {len(offs)} records")


@suite.check("kcat keyed produce over all partitions (-K:) reads back every key:value")
def _():
    lines = [f"key{i % 37}:value-{i}" for i in range(3000)]
    kcat("-P", "-t", TOPIC, "-K", ":", stdin="\n".join(lines) + "\n")
    got = []
    for p in range(PARTITIONS):
        out = kcat("-C", "-t", TOPIC, "-p", str(p), "-o", "beginning", "-e", "-q",
                   "-f", "%k:%s\n")
        got += [l for l in out.split("\n") if l.startswith("key")]
    assert sorted(got) == sorted(lines), (len(got), len(lines))


if __name__ == "__main__":
    sys.exit(suite.run())

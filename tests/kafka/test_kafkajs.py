"""kafkajs 2.2.4 (node, tests/kafka/node_modules from scripts/install-deps) against a 3-broker
Keel cluster: admin createTopics/fetchTopicMetadata/describeCluster, producer send with acks -1
(plain and gzip batches), fetchTopicOffsets (ListOffsets), and a group-less read-back through
kafkajs's own Fetch request and decoder (kafkajs_roundtrip.js); then a kafkajs consumer in a
consumer group reads it all back (kafkajs_consume.js).

Run: /usr/bin/python3 tests/kafka/test_kafkajs.py <dir with keel and keel-broker>
"""
import json
import os
import subprocess
import sys

from kafka.partitioner.default import murmur2  # kafkajs's default partitioner is Java's murmur2

from kafka_harness import Suite

suite = Suite(sys.argv[1])
c = suite.cluster
HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC = "kafkajs-roundtrip"
PARTITIONS = 3
COUNT = 3000
BATCH = 500  # messages per producer.send in kafkajs_roundtrip.js


@suite.check("kafkajs: createTopics, send acks -1 (none + gzip), fetchTopicOffsets, and every "
             "message read back by kafkajs's Fetch at the offset its send reported")
def _():
    if not os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")):
        raise AssertionError("tests/kafka/node_modules/kafkajs missing: run scripts/install-deps")
    p = subprocess.run(["node", os.path.join(HERE, "kafkajs_roundtrip.js"), c.bootstrap(), TOPIC,
                        str(PARTITIONS), str(COUNT)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})
    assert p.returncode == 0, f"node exited {p.returncode}:\n{p.stderr[-4000:]}\n{p.stdout[-2000:]}"
    if p.stderr.strip():
        suite.note("kafkajs logged:\n" + p.stderr[-2000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])

    assert out["created"] is True, out["created"]
    assert sorted(b["nodeId"] for b in out["cluster"]["brokers"]) == [1, 2, 3], out["cluster"]
    assert len(out["metadata"]) == PARTITIONS, out["metadata"]
    for m in out["metadata"]:
        assert sorted(m["replicas"]) == [1, 2, 3] and m["leader"] in (1, 2, 3), m

    # Where each message must be: its send's base offset on its partition, plus its index among
    # that send's messages for the partition.
    base = {(a["send"], a["partition"]): int(a["baseOffset"]) for a in out["acked"]}
    want = {}
    for send in range(COUNT // BATCH):
        seen = {}
        for i in range(send * BATCH, (send + 1) * BATCH):
            key = b"k%d" % (i % 50)
            part = (murmur2(key) & 0x7fffffff) % PARTITIONS
            off = base[(send, part)] + seen.get(part, 0)
            seen[part] = seen.get(part, 0) + 1
            want[(part, off)] = (key.decode(), f"v-{i}")

    # Offsets increase but need not be dense: a Raft entry without records (a new leader's
    # first entry) takes an offset too. So the high watermark is past the last record, and the
    # offset for timestamp 0 at or before the first.
    highs = {int(o["partition"]): int(o["high"]) for o in out["offsets"]}
    lows = {int(o["partition"]): int(o["offset"]) for o in out["offsetsEarliest"]}
    got = {}
    for p, recs in out["records"].items():
        p = int(p)
        offs = [r[0] for r in recs]
        assert offs == sorted(set(offs)), f"partition {p}: offsets not increasing"
        assert offs and highs[p] > offs[-1], ("high watermark", p, highs[p], offs[-1])
        assert lows[p] <= offs[0], ("offset for timestamp 0", p, lows[p], offs[0])
        if (lows[p], highs[p]) != (offs[0], offs[-1] + 1) or offs[0] != 0:
            suite.note(f"partition {p}: records at {offs[0]}..{offs[-1]}, high watermark "
                       f"{highs[p]}, offset for timestamp 0: {lows[p]}")
        for off, key, value in recs:
            got[(p, off)] = (key, value)
    missing = set(want.items()) - set(got.items())
    assert not missing, f"{len(missing)} acknowledged messages not at their offsets"
    # Without idempotence a send retried after a leader change may also have landed the first
    # time (at-least-once, as in Kafka): extra records must be copies of sent messages.
    sent = set(want.values())
    extra = {k: v for k, v in got.items() if k not in want}
    assert all(v in sent for v in extra.values()), "records nobody sent"
    if extra:
        suite.note(f"{len(extra)} records duplicated by retries after a leader change")
    suite.state["want"] = got  # what the consumer half must read: the log, duplicates included


@suite.check("kafkajs consumer (consumer group, subscribe fromBeginning) reads every message "
             "back at the same offsets")
def _():
    want = suite.state.get("want")
    if want is None:
        raise AssertionError("the produce half did not pass")
    p = subprocess.run(["node", os.path.join(HERE, "kafkajs_consume.js"), c.bootstrap(), TOPIC,
                        str(len(want)), "keel-kafkajs-group"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})
    assert p.returncode == 0, f"node exited {p.returncode}:\n{p.stderr[-4000:]}\n{p.stdout[-2000:]}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    got = {}
    for part, recs in out["records"].items():
        offs = [r[0] for r in recs]
        assert offs == sorted(set(offs)), f"partition {part}: offsets not increasing"
        for off, key, value in recs:
            got[(int(part), off)] = (key, value)
    assert got == want, (f"{out['count']} consumed; {len(set(want.items()) - set(got.items()))} "
                         f"missing, {len(set(got.items()) - set(want.items()))} unexpected;\n"
                         f"{p.stderr[-2000:]}")


if __name__ == "__main__":
    sys.exit(suite.run())

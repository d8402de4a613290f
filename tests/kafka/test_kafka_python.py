"""python3-kafka (kafka-python 2.0.2) against a 3-broker Keel cluster: admin create/delete,
a keyed acks='all' round trip, assign() + seek_to_beginning (no consumer groups).

kafka-python infers the broker version from its ApiVersions v0 reply. KAFKA_PYTHON_API_VERSION
(e.g. "2.5.0") pins it instead, if inference misbehaves.

Run: /usr/bin/python3 tests/kafka/test_kafka_python.py <dir with keel and keel-broker>
"""
import os
import pathlib
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from kafka_harness import Suite, metadata, wait_for_leaders

suite = Suite(sys.argv[1])
c = suite.cluster
TOPIC = "kp-roundtrip"
PARTITIONS = 4
COUNT = 2000

pinned = os.environ.get("KAFKA_PYTHON_API_VERSION")
common = {"bootstrap_servers": c.bootstrap().split(","), "request_timeout_ms": 60000}
if pinned:
    common["api_version"] = tuple(int(x) for x in pinned.split("."))


def admin():
    return KafkaAdminClient(**common)


@suite.check("kafka-python infers a broker version from ApiVersions (2.4+: Produce v8 in range)")
def _():
    a = admin()
    try:
        version = a.config["api_version"]
    finally:
        a.close()
    suite.note(f"kafka-python sees broker version {version}"
               + (" (pinned)" if pinned else " (inferred)"))
    assert version >= (2, 4), version


@suite.check("KafkaAdminClient.create_topics: 4 partitions x RF 3 appears in metadata; "
             "a second create is TopicAlreadyExistsError")
def _():
    a = admin()
    try:
        a.create_topics([NewTopic(TOPIC, PARTITIONS, 3)], timeout_ms=30000)
        wait_for_leaders(c, TOPIC, PARTITIONS)
        assert TOPIC in a.list_topics(), a.list_topics()
        try:
            a.create_topics([NewTopic(TOPIC, PARTITIONS, 3)], timeout_ms=30000)
            raise AssertionError("a second create_topics of the same name succeeded")
        except TopicAlreadyExistsError:
            pass
    finally:
        a.close()


for compression in (None, "gzip"):
    def roundtrip(compression=compression):
        # One request in flight per connection: retries then cannot reorder batches.
        p = KafkaProducer(acks="all", compression_type=compression, linger_ms=10, retries=5,
                          max_in_flight_requests_per_connection=1, **common)
        label = compression or "none"
        futures = []
        for i in range(COUNT):
            key = b"k%d" % (i % 100)
            futures.append((key, b"%s-%d" % (label.encode(), i),
                            p.send(TOPIC, key=key, value=b"%s-%d" % (label.encode(), i))))
        p.flush(timeout=120)
        acked = {}
        for key, value, f in futures:
            md = f.get(timeout=120)
            acked[value] = (key, md.partition, md.offset)
            # kafka-python's DefaultPartitioner: murmur2 of the key.
            assert md.partition == (murmur2(key) & 0x7fffffff) % PARTITIONS, (key, md.partition)
        p.close()

        cons = KafkaConsumer(enable_auto_commit=False, group_id=None, consumer_timeout_ms=5000,
                             **common)
        try:
            tps = [TopicPartition(TOPIC, i) for i in range(PARTITIONS)]
            cons.assign(tps)
            cons.seek_to_beginning()
            ends = cons.end_offsets(tps)
            stored = {}
            last = {}
            deadline = time.time() + 120
            while time.time() < deadline and any(cons.position(tp) < ends[tp] for tp in tps):
                for tp, msgs in cons.poll(timeout_ms=1000, max_records=5000).items():
                    for m in msgs:
                        assert m.offset > last.get(tp.partition, -1), ("offsets went back", m)
                        last[tp.partition] = m.offset
                        stored[m.value] = (m.key, m.partition, m.offset)
        finally:
            cons.close()
        missing = [v for v in acked if v not in stored]
        assert not missing, f"{len(missing)} acknowledged messages not read back: {missing[:3]}"
        wrong = [(v, acked[v], stored[v]) for v in acked if stored[v] != acked[v]]
        assert not wrong, f"{len(wrong)} not at their acknowledged place: {wrong[:3]}"
        for part in range(PARTITIONS):
            seq = [int(v.rsplit(b"-", 1)[1]) for v, (_, p_, o) in
                   sorted(stored.items(), key=lambda kv: kv[1][2])
                   if p_ == part and v.startswith(label.encode() + b"-")]
            assert seq == sorted(seq), f"partition {part}: out of produce order"

    suite.check(f"KafkaProducer(acks='all', compression {compression}) {COUNT} keyed records; "
                f"KafkaConsumer assign() + seek_to_beginning() reads each at its offset")(roundtrip)


@suite.check("KafkaAdminClient.delete_topics: the topic is gone from metadata and from every broker's disk")
def _():
    def leftovers():
        return sorted(str(p) for p in pathlib.Path(c.data_dir).glob("broker-*/shard-*/*")
                      if p.name.startswith(f"{TOPIC}-"))
    assert len(leftovers()) == 3 * PARTITIONS, f"replica directories before: {leftovers()}"
    a = admin()
    try:
        a.delete_topics([TOPIC], timeout_ms=30000)
    finally:
        a.close()
    c.wait_for("topic gone from every broker's metadata",
               lambda: all(TOPIC not in metadata(c.kafka(b))[1] for b in (1, 2, 3)), timeout=30)
    a = admin()
    try:
        c.wait_for("topic gone from list_topics", lambda: TOPIC not in a.list_topics(), timeout=30)
    finally:
        a.close()

    # Each replica's directory is moved aside at once and its files deleted in the background;
    # nothing of the topic may stay on any broker's disk.
    c.wait_for("the topic's files gone from every broker", lambda: not leftovers(), timeout=30)


if __name__ == "__main__":
    sys.exit(suite.run())

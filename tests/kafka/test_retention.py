"""Retention in a running cluster, with librdkafka (python3-confluent-kafka): a topic's
retention.bytes, and retention.ms against the records' own timestamps, delete its oldest
segments on every replica, through each partition's Raft group; the log start offset Kafka
clients see moves up; reading from the beginning starts there; a replica killed with -9 comes
back with its start and serves; writes go on throughout.

Run: /usr/bin/python3 tests/kafka/test_retention.py <dir with keel and keel-broker>
"""
import glob
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, OFFSET_BEGINNING, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_harness import Suite, wait_for_leaders

suite = Suite(sys.argv[1], broker_config={"retention-check-interval-ms": "300"})
c = suite.cluster
MiB = 1 << 20
VALUE = 8 * 1024


def create(topic, configs):
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    fs = admin.create_topics([NewTopic(topic, 1, 3, config=configs)], operation_timeout=30)
    fs[topic].result(timeout=60)
    wait_for_leaders(c, topic, 1, balanced=False)


def produce(topic, count, timestamp_ms=None, tag="v"):
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True})
    acked, errors = [], []

    def report(err, msg):
        (errors if err else acked).append(err or msg.offset())
    for i in range(count):
        value = f"{tag}-{i}-".encode().ljust(VALUE, b"x")
        kwargs = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        while True:
            try:
                p.produce(topic, value=value, partition=0, on_delivery=report, **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(60) == 0, "messages left unacknowledged"
    assert not errors, f"delivery errors: {errors[:3]}"
    return acked


def watermarks(topic, via=None):
    cons = Consumer({"bootstrap.servers": via or c.bootstrap(), "group.id": "keel-tests-no-group",
                     "enable.auto.commit": False})
    try:
        return cons.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        cons.close()


def segments_on_disk(topic, broker):
    """The segment data files of partition 0 on `broker` (spares made ahead not counted)."""
    pattern = os.path.join(c.data_dir, f"broker-{broker}", "shard-*", f"{topic}-0", "*.log")
    return sorted(p for p in glob.glob(pattern) if len(os.path.basename(p)) == 24)


def first_offsets(topic):
    """Each broker's first segment base offset on disk."""
    out = {}
    for b in range(1, c.brokers + 1):
        segs = segments_on_disk(topic, b)
        out[b] = int(os.path.basename(segs[0])[:20]) if segs else None
    return out


def read_from_beginning(topic, expect_last, timeout=60):
    cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "keel-tests-no-group",
                     "enable.auto.commit": False, "enable.partition.eof": True})
    offsets = []
    try:
        cons.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = cons.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF and offsets and \
                        offsets[-1] >= expect_last:
                    break
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consumer error: {m.error()}")
                continue
            offsets.append(m.offset())
    finally:
        cons.close()
    return offsets


@suite.check("retention.bytes: the oldest segments go on every replica, the log start moves up, "
             "and a read from the beginning starts there")
def _():
    topic = "retained-by-bytes"
    create(topic, {"segment.bytes": str(MiB), "retention.bytes": str(2 * MiB)})
    acked = produce(topic, 1000)  # about 8 MiB: eight segments
    last = max(acked)

    def trimmed():
        low, high = watermarks(topic)
        firsts = first_offsets(topic)
        counts = [len(segments_on_disk(topic, b)) for b in range(1, c.brokers + 1)]
        ok = low > 0 and all(f is not None and f > 0 for f in firsts.values()) and \
            all(n <= 4 for n in counts)
        return (low, high, firsts, counts) if ok else None
    low, high, firsts, counts = c.wait_for("retention by bytes on every replica", trimmed,
                                           timeout=60)
    suite.note(f"log start {low}, high watermark {high}, first segment per broker {firsts}, "
               f"segments per broker {counts}")
    assert high > last, (high, last)
    offsets = read_from_beginning(topic, last)
    assert offsets and offsets[0] >= low, (offsets[:3], low)
    assert offsets[-1] == last, (offsets[-1], last)
    assert offsets == sorted(set(offsets)), "offsets out of order or repeated"
    # What was kept is whole: every acknowledged offset at or after the first read is there.
    kept = set(offsets)
    missing = [o for o in acked if o >= offsets[0] and o not in kept]
    assert not missing, f"acknowledged offsets missing after retention: {missing[:5]}"
    suite.state["bytes_low"] = low


@suite.check("retention.ms: segments whose newest record is older than retention.ms go, "
             "by the records' own timestamps")
def _():
    topic = "retained-by-age"
    create(topic, {"segment.bytes": str(MiB), "retention.ms": str(3600 * 1000)})
    two_days_ago = int(time.time() * 1000) - 2 * 24 * 3600 * 1000
    old = produce(topic, 400, timestamp_ms=two_days_ago, tag="old")  # about 3 MiB
    new = produce(topic, 200, tag="new")  # rolls past the old segments

    def trimmed():
        low, high = watermarks(topic)
        return (low, high) if low > max(old) - 200 else None
    low, high = c.wait_for("retention by age", trimmed, timeout=60)
    suite.note(f"log start {low} (last old record {max(old)}), high watermark {high}")
    offsets = read_from_beginning(topic, max(new))
    assert all(o in set(offsets) for o in new), "a new record went with the old ones"


@suite.check("a replica killed with -9 and restarted keeps its log start, catches up, and the "
             "partition keeps taking writes and trimming")
def _():
    topic = "retained-by-bytes"
    victim = 3
    before = first_offsets(topic)[victim]
    c.kill9(victim)
    produce(topic, 300, tag="while-down")
    c.restart(victim)
    wait_for_leaders(c, topic, 1, balanced=False)
    acked = produce(topic, 300, tag="after")

    def caught_up():
        firsts = first_offsets(topic)
        counts = [len(segments_on_disk(topic, b)) for b in range(1, c.brokers + 1)]
        # The victim's own log reached the last acknowledged record (its newest segment begins
        # within a segment's worth of it) and trimmed what it held before the kill.
        segs = segments_on_disk(topic, victim)
        newest = int(os.path.basename(segs[-1])[:20]) if segs else -1
        ok = firsts[victim] is not None and firsts[victim] > before and \
            newest > max(acked) - 200 and all(n <= 4 for n in counts)
        seen["last"] = (firsts, counts, newest, max(acked))
        return (firsts, counts, newest) if ok else None
    seen = {}
    try:
        firsts, counts, newest = c.wait_for("the restarted replica caught up and trimmed",
                                            caught_up, timeout=90)
    except AssertionError:
        raise AssertionError(f"(first segments, segment counts, the restarted replica's newest "
                             f"segment, last acknowledged) = {seen.get('last')}")
    low, high = watermarks(topic, via=c.kafka(victim))
    suite.note(f"first segment per broker {firsts}, segments {counts}, the restarted replica's "
               f"newest segment at {newest}, log start {low}")
    offsets = read_from_beginning(topic, max(acked))
    assert offsets[-1] == max(acked)
    log = open(os.path.join(c.data_dir, f"broker-{victim}", "broker.log")).read()
    assert "stopped:" not in log, "a raft group stopped on the restarted broker"


sys.exit(suite.run())

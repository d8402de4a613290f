"""python3-confluent-kafka (librdkafka) against a 3-broker Keel cluster: admin, a keyed acks=all
round trip under every compression codec, and no consumer groups (assign() only).

Run: /usr/bin/python3 tests/kafka/test_confluent.py <dir with keel and keel-broker>
"""
import sys
import time
import zlib

from confluent_kafka import Consumer, KafkaError, OFFSET_BEGINNING, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_harness import Suite, wait_for_leaders

suite = Suite(sys.argv[1])
c = suite.cluster
PARTITIONS = 6
COUNT = 20000
KEYS = 1000
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


_admin = []


def admin():
    # One client for the whole run: the futures it returns fail with _DESTROY once it is gone.
    if not _admin:
        _admin.append(AdminClient({"bootstrap.servers": c.bootstrap()}))
    return _admin[0]


def create_topics(names, partitions=PARTITIONS, rf=3):
    futures = admin().create_topics([NewTopic(n, partitions, rf) for n in names],
                                    operation_timeout=30, request_timeout=60)
    for name, f in futures.items():
        f.result(timeout=90)  # raises KafkaException on a per-topic error
    for name in names:
        wait_for_leaders(c, name, partitions)


def expected_partition(key, partitions):
    """librdkafka's default partitioner (consistent_random): CRC-32 of the key."""
    return zlib.crc32(key) % partitions


def produce(topic, codec, count=COUNT):
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "compression.type": codec,
                  "linger.ms": 20, "message.timeout.ms": 120000,
                  "queue.buffering.max.messages": count + 1000})
    acked, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append((msg.value(), str(err)))
        else:
            acked[msg.value()] = (msg.key(), msg.partition(), msg.offset())
    for i in range(count):
        p.produce(topic, key=b"key-%d" % (i % KEYS), value=b"%s-%d" % (codec.encode(), i),
                  on_delivery=on_delivery)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(180)
    assert left == 0, f"{left} messages not delivered after 180 s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    assert len(acked) == count, (len(acked), count)
    return acked


def consume_all(topic, partitions, want_count, timeout=120):
    """Every message of every partition from the beginning, by assign(): {partition: [msg]}."""
    cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "keel-tests-no-group",
                     "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = {p: [] for p in range(partitions)}
        eof = set()
        n = 0
        deadline = time.time() + timeout
        while (len(eof) < partitions or n < want_count) and time.time() < deadline:
            for m in cons.consume(num_messages=5000, timeout=1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                got[m.partition()].append((m.offset(), m.key(), m.value()))
                n += 1
        assert n >= want_count, f"consumed {n} of {want_count} in {timeout} s (eof on {sorted(eof)})"
        return got
    finally:
        cons.close()


def verify(acked, got, partitions):
    # Every key on the partition librdkafka's partitioner chose, and only there.
    key_parts = {}
    for value, (key, part, off) in acked.items():
        key_parts.setdefault(key, set()).add(part)
        assert part == expected_partition(key, partitions), (key, part)
    assert all(len(s) == 1 for s in key_parts.values()), "a key on several partitions"
    # Every acknowledged message is stored at its acknowledged (partition, offset), and nothing else.
    stored = {}
    for part, msgs in got.items():
        offs = [o for o, _, _ in msgs]
        assert offs == sorted(set(offs)), f"partition {part}: offsets not strictly increasing"
        for off, key, value in msgs:
            stored[value] = (key, part, off)
    missing = [v for v in acked if v not in stored]
    assert not missing, f"{len(missing)} acknowledged messages not read back, e.g. {missing[:3]}"
    wrong = [(v, acked[v], stored[v]) for v in acked if stored[v] != acked[v]]
    assert not wrong, f"{len(wrong)} messages not at their acknowledged place, e.g. {wrong[:3]}"
    extra = [v for v in stored if v not in acked]
    assert not extra, f"{len(extra)} messages stored that were never produced: {extra[:3]}"
    # Produce order kept within each partition.
    for part, msgs in got.items():
        seq = [int(v.rsplit(b"-", 1)[1]) for _, _, v in msgs]
        assert seq == sorted(seq), f"partition {part}: values out of produce order"


@suite.check("AdminClient.create_topics: 6 partitions x RF 3, one topic per codec; "
             "list_topics shows 3 brokers and every partition's 3 replicas")
def _():
    names = [f"cf-{codec}" for codec in CODECS]
    create_topics(names)
    md = admin().list_topics(timeout=30)
    assert sorted(md.brokers) == [1, 2, 3], md.brokers
    for b in md.brokers.values():
        assert (b.host, b.port) == ("127.0.0.1", c.kafka_port(b.id)), b
    for name in names:
        t = md.topics[name]
        assert t.error is None, t.error
        assert sorted(t.partitions) == list(range(PARTITIONS)), t.partitions
        for p in t.partitions.values():
            assert sorted(p.replicas) == [1, 2, 3] and p.leader in (1, 2, 3), (name, p)
    # Creating one again is refused with TOPIC_ALREADY_EXISTS.
    f = admin().create_topics([NewTopic(names[0], PARTITIONS, 3)])[names[0]]
    try:
        f.result(timeout=60)
        raise AssertionError("a second create_topics of the same name succeeded")
    except Exception as e:  # KafkaException
        assert "TOPIC_ALREADY_EXISTS" in str(e) or "already exists" in str(e), e


def codec_check(codec):
    def fn():
        topic = f"cf-{codec}"
        t0 = time.time()
        acked = produce(topic, codec)
        t1 = time.time()
        got = consume_all(topic, PARTITIONS, COUNT)
        t2 = time.time()
        verify(acked, got, PARTITIONS)
        suite.state[codec] = {p: (msgs[0][0], msgs[-1][0]) for p, msgs in got.items() if msgs}
        suite.note(f"{codec}: produced {COUNT} in {t1 - t0:.1f} s, consumed in {t2 - t1:.1f} s")
    return fn


for codec in CODECS:
    suite.check(f"compression {codec}: {COUNT} keyed messages, acks=all, every delivery report's "
                f"(partition, offset) read back by assign(), key -> CRC-32 partition, order kept"
                )(codec_check(codec))


@suite.check("get_watermark_offsets (ListOffsets) agrees with what was produced")
def _():
    cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "keel-tests-no-group",
                     "enable.auto.commit": False})
    gaps = []
    try:
        for codec in CODECS:
            consumed = suite.state.get(codec)
            if consumed is None:
                raise AssertionError(f"the {codec} round trip did not pass")
            for p in range(PARTITIONS):
                low, high = cons.get_watermark_offsets(TopicPartition(f"cf-{codec}", p),
                                                       timeout=30)
                first, last = consumed[p]
                # The high watermark is past the last record, not necessarily right after it:
                # a Raft entry without records (a new leader's first entry) takes an offset too.
                assert low <= first and high > last, (codec, p, low, high, first, last)
                if (first, high) != (0, last + 1):
                    gaps.append(f"{codec}/{p}: records {first}..{last}, watermarks {low}..{high}")
        if gaps:
            suite.note("offsets without records: " + "; ".join(gaps[:6]))
    finally:
        cons.close()


if __name__ == "__main__":
    sys.exit(suite.run())

"""Fault case with librdkafka (python3-confluent-kafka): kill -9 a partition leader while a
producer writes with acks=all; nothing acknowledged is lost or moved, and the killed broker
comes back and serves again. Then: a deleted topic's replica that a crash left on a broker's
disk is not taken for the replica of a new topic of the same name, and a topic deleted while
a broker is down loses that broker's replica once it is back.

Run: /usr/bin/python3 tests/kafka/test_fault.py <dir with keel and keel-broker>
"""
import pathlib
import shutil
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaError, OFFSET_BEGINNING, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_harness import Suite, metadata, wait_for_leaders

# Metadata snapshots every few offsets: a broker that is down while a topic is deleted comes
# back to a snapshot without the topic (the log before it gone), not to the deletion's entry.
suite = Suite(sys.argv[1], broker_config={"metadata-snapshot-every": "4"})
c = suite.cluster
TOPIC = "fault"
PARTITIONS = 3
S = suite.state


def leaders(bootstrap):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(TOPIC, timeout=20)
    return {p: pm.leader for p, pm in md.topics[TOPIC].partitions.items()}


def read_all(bootstrap, timeout=120):
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "keel-tests-no-group",
                     "enable.auto.commit": False, "enable.partition.eof": True})
    got = {p: {} for p in range(PARTITIONS)}
    try:
        cons.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        eof = set()
        deadline = time.time() + timeout
        while len(eof) < PARTITIONS and time.time() < deadline:
            for m in cons.consume(num_messages=5000, timeout=1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                eof.discard(m.partition())
                got[m.partition()][m.offset()] = m.value()
        assert len(eof) == PARTITIONS, f"reached the end of partitions {sorted(eof)} only"
    finally:
        cons.close()
    return got


@suite.check("a producer with acks=all keeps going through kill -9 of a partition leader; "
             "acknowledged offsets never go backwards per partition")
def _():
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})  # alive until its futures resolve
    fs = admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)], operation_timeout=30)
    fs[TOPIC].result(timeout=60)
    wait_for_leaders(c, TOPIC, PARTITIONS)

    acked = S["acked"] = []  # (partition, offset, value) in delivery-report order
    errors = []
    stop = threading.Event()

    def on_delivery(err, msg):
        if err is not None:
            errors.append((msg.value(), str(err)))
        else:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    def produce():
        p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5,
                      "message.timeout.ms": 120000, "retries": 1000000,
                      "retry.backoff.ms": 100, "max.in.flight.requests.per.connection": 1,
                      "topic.metadata.refresh.interval.ms": 1000})
        i = 0
        while not stop.is_set():
            try:
                p.produce(TOPIC, value=b"m-%d" % i, partition=i % PARTITIONS,
                          on_delivery=on_delivery)
                i += 1
            except BufferError:
                p.poll(0.05)
                continue
            if i % 100 == 0:
                p.poll(0)
                time.sleep(0.01)  # ~a few thousand messages a second
        S["left"] = p.flush(150)
        S["sent"] = i

    t = threading.Thread(target=produce)
    t.start()
    try:
        c.wait_for("1000 acknowledged messages", lambda: len(acked) >= 1000, timeout=60)
        victim = leaders(c.bootstrap())[0]
        S["victim"] = victim
        before = len(acked)
        c.kill9(victim)
        S["killed_at"] = time.time()
        suite.note(f"killed broker {victim}, leader of partition 0, after {before} acks")
        c.wait_for("1000 more acknowledged messages after the kill",
                   lambda: len(acked) >= before + 1000, timeout=90)
        c.wait_for("a new leader for partition 0",
                   lambda: leaders(c.bootstrap([b for b in (1, 2, 3) if b != victim]))[0]
                   not in (victim, -1), timeout=30)
        time.sleep(2)
    finally:
        stop.set()
        t.join(200)
    assert S.get("left") == 0, f"{S.get('left')} messages still undelivered after 150 s"
    assert not errors, f"{len(errors)} delivery errors, first {errors[:3]}"
    assert len(acked) == S["sent"], (len(acked), S["sent"])
    suite.note(f"{len(acked)} messages acknowledged")
    last = {}
    for part, off, value in acked:
        assert off > last.get(part, -1), f"partition {part}: acknowledged offset {off} after {last[part]}"
        last[part] = off


@suite.check("every acknowledged message is read back exactly at its acknowledged offset "
             "(from the surviving brokers)")
def _():
    victim = S["victim"]
    got = read_all(c.bootstrap([b for b in (1, 2, 3) if b != victim]))
    acked = {}
    wrong = []
    for part, off, value in S["acked"]:
        if got[part].get(off) != value:
            wrong.append((part, off, value, got[part].get(off)))
        acked[value] = (part, off)
    assert not wrong, f"{len(wrong)} acknowledged messages not at their offset, e.g. {wrong[:5]}"
    stored = sum(len(v) for v in got.values())
    suite.note(f"{stored} messages stored for {len(acked)} acknowledged "
               f"({stored - len(acked)} retried duplicates)")


@suite.check("the killed broker restarts, answers Metadata, and leads again after balancing")
def _():
    victim = S["victim"]
    c.restart(victim)
    assert c.alive(victim)
    brokers, topics = metadata(c.kafka(victim))
    assert sorted(brokers) == [1, 2, 3], brokers
    md = AdminClient({"bootstrap.servers": c.kafka(victim)}).list_topics(TOPIC, timeout=20)
    assert sorted(md.brokers) == [1, 2, 3], md.brokers
    c.wait_for(f"broker {victim} leading a partition again",
               lambda: victim in leaders(c.kafka(victim)).values(), timeout=60)
    # And it serves reads and writes of the partitions it leads.
    p = Producer({"bootstrap.servers": c.kafka(victim), "acks": "all"})
    part = [pp for pp, l in leaders(c.kafka(victim)).items() if l == victim][0]
    res = []
    p.produce(TOPIC, value=b"after-restart", partition=part,
              on_delivery=lambda err, msg: res.append((err, msg.offset())))
    assert p.flush(60) == 0 and res and res[0][0] is None, res
    got = read_all(c.kafka(victim))
    assert got[part][res[0][1]] == b"after-restart"


RECREATED = "recreated"


def produce_values(bootstrap, topic, values):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 60000})
    res = []
    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=lambda err, msg: res.append(err))
    assert p.flush(60) == 0 and len(res) == len(values), (len(res), len(values))
    assert all(e is None for e in res), [e for e in res if e is not None][:3]


def replica_dir(broker, topic):
    dirs = list(pathlib.Path(c.data_dir, f"broker-{broker}").glob(f"shard-*/{topic}-0"))
    return dirs[0] if len(dirs) == 1 else None


def segment_bytes(path):
    return b"".join(f.read_bytes() for f in sorted(path.glob("*.log")))


def topic_with_records_on(admin, topic, broker, prefix, count):
    """A 1-partition RF-3 topic holding `count` records `<prefix>-<i>`, until `broker`'s replica
    has all of them in its segment files."""
    admin.create_topics([NewTopic(topic, 1, 3)], operation_timeout=30)[topic].result(60)
    wait_for_leaders(c, topic, 1, balanced=False)
    produce_values(c.bootstrap(), topic, [b"%s-%d" % (prefix, i) for i in range(count)])
    last = b"%s-%d" % (prefix, count - 1)
    c.wait_for(f"broker {broker}'s replica of {topic} holding {last.decode()}",
               lambda: replica_dir(broker, topic) is not None
               and last in segment_bytes(replica_dir(broker, topic)), timeout=30)


@suite.check("a deleted topic's replica left on a broker's disk by a crash is not taken for the "
             "replica of a new topic of the same name: it is deleted and the replica catches up")
def _():
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    victim = 3
    topic_with_records_on(admin, RECREATED, victim, b"old", 300)
    c.kill9(victim)
    saved = pathlib.Path(tempfile.mkdtemp(prefix="keel-old-replica-")) / "replica"
    shutil.copytree(replica_dir(victim, RECREATED), saved)
    try:
        c.restart(victim)
        admin.delete_topics([RECREATED], operation_timeout=30)[RECREATED].result(60)
        c.wait_for("the topic's replicas deleted on every broker",
                   lambda: all(replica_dir(b, RECREATED) is None for b in (1, 2, 3)), timeout=60)
        admin.create_topics([NewTopic(RECREATED, 1, 3)], operation_timeout=30)[RECREATED].result(60)
        wait_for_leaders(c, RECREATED, 1, balanced=False)
        new_values = [b"new-%d" % i for i in range(100)]
        produce_values(c.bootstrap(), RECREATED, new_values)
        c.wait_for(f"broker {victim}'s new replica holding the new records",
                   lambda: replica_dir(victim, RECREATED) is not None
                   and b"new-99" in segment_bytes(replica_dir(victim, RECREATED)), timeout=30)
        # A crash after the metadata named the new topic but before the old replica went leaves
        # the old one under the new one's name.
        c.kill9(victim)
        new_dir = replica_dir(victim, RECREATED)
        shutil.rmtree(new_dir)
        shutil.copytree(saved, new_dir)
        c.restart(victim)
    finally:
        shutil.rmtree(saved.parent, ignore_errors=True)
    log = pathlib.Path(c.data_dir, f"broker-{victim}", "broker.log")
    c.wait_for(f"broker {victim} deleting the old replica",
               lambda: "(a deleted topic)" in log.read_text(errors="replace"), timeout=60)
    c.wait_for(f"broker {victim}'s replica caught up with the new records only",
               lambda: replica_dir(victim, RECREATED) is not None
               and b"new-99" in segment_bytes(replica_dir(victim, RECREATED))
               and b"old-" not in segment_bytes(replica_dir(victim, RECREATED)), timeout=60)
    cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "keel-tests-no-group",
                     "enable.auto.commit": False, "enable.partition.eof": True})
    got = []
    try:
        cons.assign([TopicPartition(RECREATED, 0, OFFSET_BEGINNING)])
        deadline = time.time() + 60
        while time.time() < deadline:
            m = cons.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise AssertionError(f"consumer error: {m.error()}")
            got.append(m.value())
    finally:
        cons.close()
    assert got == new_values, f"read {len(got)} records, first {got[:3]}"


GONE = "gone-while-down"


@suite.check("a topic deleted while one of its brokers is down loses that broker's replica too, "
             "once the restarted broker's metadata has caught up; its live replicas stay")
def _():
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    victim = 2
    topic_with_records_on(admin, GONE, victim, b"gone", 100)
    kept = {b: replica_dir(b, RECREATED) for b in (1, 2, 3)}
    assert all(kept.values()), kept
    c.kill9(victim)
    # Admin requests go to the controller the client last heard of; every broker takes them and
    # forwards them, so each names itself (as KRaft brokers do), never the broker just killed.
    for b in (1, 3):
        assert metadata(c.kafka(b), with_controller=True)[2] == b
    # Metadata operations go on once a controller is elected (the victim may have been it; a
    # request forwarded to it before then fails after a bound, see docs/architecture.md).
    c.wait_for("a controller among the live brokers",
               lambda: c.status(1)["controller"] in (1, 3), timeout=30)
    admin.delete_topics([GONE], operation_timeout=30)[GONE].result(60)
    c.wait_for("the topic's replicas deleted on the running brokers",
               lambda: all(replica_dir(b, GONE) is None for b in (1, 3)), timeout=60)
    # More metadata entries than a snapshot interval, so the controller's log no longer holds
    # the deletion when the victim comes back.
    for i in range(3):
        scratch = f"scratch-{i}"
        admin.create_topics([NewTopic(scratch, 1, 2)], operation_timeout=30)[scratch].result(60)
        admin.delete_topics([scratch], operation_timeout=30)[scratch].result(60)
    # And a replica the metadata no longer names at all on this broker, as a crash leaves one
    # when it comes between the metadata's deletion and the replica's removal (its copy here).
    planted = replica_dir(victim, GONE).parent / "planted-0"
    shutil.copytree(replica_dir(victim, GONE), planted)
    c.restart(victim)
    shard_dirs = list(pathlib.Path(c.data_dir, f"broker-{victim}").glob("shard-*"))

    def leftovers():
        return [p for d in shard_dirs for n in (GONE, "planted") for p in d.glob(f"{n}-0*")]

    c.wait_for(f"broker {victim}'s replicas of the deleted topic gone", lambda: not leftovers(),
               timeout=60)
    log = pathlib.Path(c.data_dir, f"broker-{victim}", "broker.log").read_text(errors="replace")
    assert "log planted-0 on shard" in log, "no word of the deletion in the broker's log"
    # The sweep took nothing else: the other topic's replica on the restarted broker is the
    # same directory, still holding what the earlier check wrote.
    assert replica_dir(victim, RECREATED) == kept[victim]
    assert b"new-99" in segment_bytes(replica_dir(victim, RECREATED))


if __name__ == "__main__":
    sys.exit(suite.run())

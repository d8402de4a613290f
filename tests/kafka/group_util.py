"""What the consumer-group tests share: group_consumer.py processes, a producer that records
where each message landed, committed offsets read by a non-member, and the consumer protocol's
Assignment decoded from DescribeGroups."""
import json
import os
import struct
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_harness import wait_for_leaders

HERE = os.path.dirname(os.path.abspath(__file__))


class ConsumerProc:
    """A group_consumer.py process; its JSON events are collected by a reader thread."""

    def __init__(self, name, bootstrap, topic, group, strategy="default", session_ms=6000,
                 rate=0):
        self.name = name
        self.events = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "group_consumer.py"), bootstrap, topic, group,
             strategy, str(session_ms), str(rate)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ev)

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def assignment(self):
        """The last reported assignment (a set of partitions), or None before the first."""
        for ev in reversed(self.snapshot()):
            if ev["ev"] == "assignment":
                return set(ev["parts"])
        return None

    def consumed(self, since=0.0):
        """[(partition, offset, value, time)] of every message it consumed after `since`."""
        out = []
        for ev in self.snapshot():
            if ev["ev"] == "msgs" and ev["t"] >= since:
                out.extend((p, o, v, ev["t"]) for p, o, v in ev["m"])
        return out

    def commits(self, since=0.0):
        return [ev for ev in self.snapshot() if ev["ev"] == "commit" and ev["t"] >= since]

    def errors(self):
        return [ev for ev in self.snapshot() if ev["ev"] in ("commit_error", "consume_error")]

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout=60):
        """SIGTERM: the consumer commits once more, closes (leaving the group), and exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"consumer {self.name} did not exit within {timeout} s of SIGTERM;"
                                 f" stderr: {''.join(self.stderr)[-2000:]}")
        time.sleep(0.2)  # the reader thread drains stdout
        evs = self.snapshot()
        assert evs and evs[-1]["ev"] == "closed", (
            f"consumer {self.name} exited {self.proc.returncode} without closing; last events "
            f"{evs[-3:]}; stderr: {''.join(self.stderr)[-2000:]}")

    def __repr__(self):
        return f"<{self.name} pid {self.proc.pid}>"


def create_topic(cluster, name, partitions, rf=3):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    fs = admin.create_topics([NewTopic(name, partitions, rf)], operation_timeout=30,
                             request_timeout=60)
    fs[name].result(timeout=90)
    wait_for_leaders(cluster, name, partitions)
    wait_for_preferred_leaders(cluster, name, partitions)


def wait_for_preferred_leaders(cluster, topic, partitions, timeout=60):
    """Waits until every partition is led by its preferred replica (the first listed), where
    the brokers' leader balancing leaves it: a leadership change after a test produced would
    append the new leader's record-less Raft entry behind the data, and the end offset would be
    one past what a consumer can commit."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})

    def ok():
        md = admin.list_topics(topic, timeout=10).topics[topic]
        parts = md.partitions
        return len(parts) == partitions and all(
            pm.replicas and pm.leader == pm.replicas[0] for pm in parts.values())
    cluster.wait_for(f"preferred leaders of {topic}", ok, timeout=timeout)


def produce(cluster, topic, partitions, per_partition, prefix):
    """Produces per_partition messages to each partition (acks=all, one in flight, so no
    reordering); returns {(partition, offset): value} from the delivery reports."""
    # Small batches: a throttled consumer's fetches then return a few messages per partition.
    p = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "linger.ms": 10,
                  "batch.num.messages": 20,
                  "max.in.flight.requests.per.connection": 1, "message.timeout.ms": 120000,
                  "queue.buffering.max.messages": partitions * per_partition + 1000})
    acked, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[(msg.partition(), msg.offset())] = msg.value().decode()
    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"{prefix}-{part}-{i}".encode(), partition=part,
                      on_delivery=on_delivery)
    assert p.flush(120) == 0, "messages left undelivered after 120 s"
    assert not errors, errors[:3]
    assert len(acked) == partitions * per_partition, len(acked)
    return acked


class Committed:
    """A non-member client of the group (same group.id, never subscribes) that reads the
    group's committed offsets with OffsetFetch."""

    def __init__(self, bootstrap, group):
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                           "enable.auto.commit": False})

    def get(self, topic, partitions, timeout=10):
        """{partition: committed offset} (negative: none)."""
        tps = self.c.committed([TopicPartition(topic, p) for p in range(partitions)],
                               timeout=timeout)
        for tp in tps:
            if tp.error is not None:
                raise AssertionError(f"committed(): partition {tp.partition}: {tp.error}")
        return {tp.partition: tp.offset for tp in tps}

    def close(self):
        self.c.close()


def watermarks(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "keel-tests-watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        c.close()


def decode_assignment(data):
    """The consumer protocol's Assignment: {topic: [partitions]}."""
    if not data:
        return {}
    off = 2  # version
    (n,) = struct.unpack_from(">i", data, off)
    off += 4
    out = {}
    for _ in range(n):
        (ln,) = struct.unpack_from(">h", data, off)
        off += 2
        topic = data[off:off + ln].decode()
        off += ln
        (np,) = struct.unpack_from(">i", data, off)
        off += 4
        out[topic] = list(struct.unpack_from(f">{np}i", data, off))
        off += 4 * np
    return out


def describe_group(bootstrap, group, timeout=15):
    """confluent's list_groups(group): ListGroups to every broker, then DescribeGroups at the
    group's coordinator. The GroupMetadata (state, broker = coordinator, members)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    groups = admin.list_groups(group, timeout=timeout)
    assert len(groups) == 1, [g.id for g in groups]
    return groups[0]


class Trickle:
    """A background producer: one message per partition every `interval` seconds, each
    delivery recorded into `produced` {(partition, offset): value} (under `lock`)."""

    def __init__(self, cluster, topic, partitions, prefix, produced, interval=0.05):
        self.produced = produced
        self.lock = threading.Lock()
        self.errors = []
        self.stop_ = threading.Event()
        self.p = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all",
                           "linger.ms": 5, "max.in.flight.requests.per.connection": 1,
                           "message.timeout.ms": 120000})
        self.topic, self.partitions, self.prefix, self.interval = topic, partitions, prefix, \
            interval
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        def on_delivery(err, msg):
            if err is not None:
                self.errors.append(str(err))
            else:
                with self.lock:
                    self.produced[(msg.partition(), msg.offset())] = msg.value().decode()
        i = 0
        while not self.stop_.is_set():
            for part in range(self.partitions):
                self.p.produce(self.topic, value=f"{self.prefix}-{part}-{i}".encode(),
                               partition=part, on_delivery=on_delivery)
            i += 1
            self.p.poll(0)
            time.sleep(self.interval)
        self.left = self.p.flush(120)

    def stop(self):
        self.stop_.set()
        self.t.join(150)
        assert getattr(self, "left", 1) == 0, "the trickle producer left messages undelivered"
        assert not self.errors, self.errors[:3]

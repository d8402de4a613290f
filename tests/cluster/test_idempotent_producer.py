"""Idempotent producers across a leader's kill -9 (issue 6): a real 3-broker Keel cluster on
loopback and librdkafka (python3-confluent-kafka) with enable.idempotence=true and acks=all.

A producer writes unique values continuously while the partition's leader is killed with kill -9
and later restarted. Afterwards the partition holds no duplicate, every acknowledged value is read
back exactly once at the offset its delivery report named, and the producer's values are in order.

Run: /usr/bin/python3 tests/cluster/test_idempotent_producer.py <dir with keel and keel-broker>
The last line is 'N passed, N failed'.
"""
import collections
import socket
import struct
import sys
import time
import traceback

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from keel_cluster import Cluster

BIN = sys.argv[1]
TOPIC = "idem"


def produce_for(p, seconds, state):
    """Produces unique values for `seconds`, about 2000 a second."""
    end = time.time() + seconds
    while time.time() < end:
        for _ in range(20):
            value = f"m-{state['next']:08d}"
            try:
                p.produce(TOPIC, value=value, partition=0)
                state["next"] += 1
            except BufferError:
                p.poll(0.05)
        p.poll(0.01)
        if state["fatal"]:
            raise AssertionError(f"fatal producer error: {state['fatal']}")


def init_producer_id(port, version, transactional_id=None, producer_id=-1, epoch=-1):
    """One raw InitProducerId request (v1 classic or v3 flexible): (error, producer id, epoch)."""
    client = b"idem-test"
    head = struct.pack(">hhih", 22, version, 7, len(client)) + client
    if version >= 2:
        head += b"\x00"  # tagged fields
        tid = b"\x00" if transactional_id is None else \
            bytes([len(transactional_id) + 1]) + transactional_id.encode()
        body = tid + struct.pack(">iqh", 60000, producer_id, epoch) + b"\x00"
    else:
        tid = struct.pack(">h", -1) if transactional_id is None else \
            struct.pack(">h", len(transactional_id)) + transactional_id.encode()
        body = tid + struct.pack(">i", 60000)
    frame = head + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        data = s.recv(size, socket.MSG_WAITALL)
    at = 4 + (1 if version >= 2 else 0)  # correlation id, header tags
    _, error, pid, ep = struct.unpack(">ihqh", data[at:at + 16])
    return error, pid, ep


def read_partition(bootstrap, until):
    """Every (offset, value) of partition 0 below `until`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "idem-verify",
                  "enable.auto.commit": False, "enable.partition.eof": False,
                  "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
    out = []
    deadline = time.time() + 60
    last = -1
    while last + 1 < until and time.time() < deadline:
        for m in c.consume(1000, timeout=1.0):
            if m.error():
                continue
            out.append((m.offset(), m.value().decode()))
            last = max(last, m.offset())
    c.close()
    return out


def main():
    c = Cluster(BIN, brokers=3, shards=2)
    passed = failed = 0
    try:
        c.up()
        c.create_topic(TOPIC, 1, 3, via=1)
        c.wait_for("a leader", lambda: (lambda l: l and l[0] > 0 and l[0])(c.leaders(TOPIC, 1)))
        bootstrap = ",".join(f"127.0.0.1:{c.kafka_base + i}" for i in range(c.brokers))

        checks = []

        def check(name, ok, detail=""):
            checks.append((name, ok, detail))

        # InitProducerId on every broker: ids come from each broker's block (the controller's
        # answer crosses brokers for two of them), a re-init bumps the epoch, and a
        # transactional id is refused.
        got = [init_producer_id(c.kafka_base + i, 1) for i in range(c.brokers)]
        again = init_producer_id(c.kafka_base, 1)
        check("InitProducerId hands out distinct ids at epoch 0 on every broker",
              all(e == 0 and pid >= 0 and ep == 0 for e, pid, ep in got + [again]) and
              len({pid for _, pid, _ in got + [again]}) == len(got) + 1, f"{got} {again}")
        bumped = init_producer_id(c.kafka_base + 1, 3, producer_id=got[0][1], epoch=4)
        check("InitProducerId v3 with an id and epoch bumps the epoch",
              bumped == (0, got[0][1], 5), f"{bumped}")
        txn = init_producer_id(c.kafka_base, 3, transactional_id="txn-1")
        check("InitProducerId with a transactional id is refused (53)", txn[0] == 53, f"{txn}")

        acked = {}  # value -> offset
        errors = []
        state = {"next": 0, "fatal": None}

        def delivered(err, msg):
            if err is not None:
                errors.append((msg.value().decode(), str(err)))
                if err.fatal():
                    state["fatal"] = str(err)
            else:
                acked[msg.value().decode()] = msg.offset()

        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                      "linger.ms": 5, "message.timeout.ms": 120000, "request.timeout.ms": 5000,
                      "retry.backoff.ms": 100, "topic.metadata.refresh.interval.ms": 2000,
                      "on_delivery": delivered,
                      "error_cb": lambda e: state.update(fatal=str(e)) if e.fatal() else None})
        produce_for(p, 3, state)
        leader = c.leaders(TOPIC, 1)[0]
        other = 1 if leader != 1 else 2
        c.kill9(leader)
        print(f"killed the leader, broker {leader}, after {state['next']} values", flush=True)
        produce_for(p, 8, state)
        c.wait_for("a new leader", lambda: (lambda l: l and l[0] not in (-1, leader))(
            c.leaders(TOPIC, other)), timeout=30)
        c.up()  # restarts the killed broker
        print(f"restarted broker {leader} after {state['next']} values", flush=True)
        produce_for(p, 5, state)
        left = p.flush(150)
        produced = state["next"]
        print(f"produced {produced}, acknowledged {len(acked)}, failed {len(errors)}, "
              f"unflushed {left}", flush=True)

        hw = max(acked.values()) + 1 if acked else 0
        log = read_partition(bootstrap, hw)
        counts = collections.Counter(v for _, v in log)

        check("the producer finished: nothing unflushed, no fatal error",
              left == 0 and not state["fatal"], f"left {left}, fatal {state['fatal']}")
        check("most values were acknowledged", len(acked) >= produced * 0.9 and len(acked) > 1000,
              f"{len(acked)} of {produced}; errors {errors[:3]}")
        dups = [v for v, n in counts.items() if n > 1]
        check("no value is stored twice", not dups, f"{len(dups)} duplicates, e.g. {dups[:5]}")
        at = {v: o for o, v in log}
        missing = [v for v in acked if v not in at]
        check("every acknowledged value is read back", not missing,
              f"{len(missing)} missing, e.g. {sorted(missing)[:5]}")
        moved = [(v, o, at[v]) for v, o in acked.items() if v in at and at[v] != o]
        check("acknowledged values sit at the offsets their delivery reports named", not moved,
              f"{len(moved)} moved, e.g. {moved[:5]}")
        values = [v for _, v in sorted(log)]
        check("the producer's values are stored in order", values == sorted(values),
              next((f"{a} before {b}" for a, b in zip(values, values[1:]) if a > b), ""))
        logs = "".join(c.log_tail(b, 400) for b in range(1, c.brokers + 1))
        check("the new leader rebuilt the producer state", "producer state of term" in logs,
              "no 'producer state of term' line in the brokers' logs")
        print(f"duplicates answered (logged, at most 5 per broker): "
              f"{logs.count('answered as a duplicate')}", flush=True)
        for name, ok, detail in checks:
            if ok:
                passed += 1
                print(f"PASS {name}", flush=True)
            else:
                failed += 1
                print(f"FAIL {name}: {detail}", flush=True)
        if failed:
            for b in range(1, c.brokers + 1):
                print(f"--- broker {b} log tail ---\n{c.log_tail(b)}")
    except Exception:
        failed += 1
        print(f"FAIL {traceback.format_exc()}", flush=True)
        for b in range(1, c.brokers + 1):
            print(f"--- broker {b} log tail ---\n{c.log_tail(b)}")
    finally:
        c.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

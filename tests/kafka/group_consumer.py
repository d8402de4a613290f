"""One python3-confluent-kafka group consumer as its own process, driven by test_groups.py and
test_group_failover.py (a process, so that kill -9 of a member is real).

Usage: /usr/bin/python3 group_consumer.py <bootstrap> <topic> <group> <strategy> <session ms>
                                          <max messages per second, 0 = unlimited>

Subscribes to <topic>, polls, and after every poll that returned messages commits the positions
of its assigned partitions synchronously. Writes one JSON object per line to stdout, each with
the time "t":
  {"ev": "assignment", "parts": [...]}        whenever consumer.assignment() changes
  {"ev": "msgs", "m": [[partition, offset, value], ...]}
  {"ev": "commit", "offsets": {partition: offset}}   after a successful synchronous commit
  {"ev": "commit_error", "error": "..."}
  {"ev": "closed"}                            after SIGTERM: a last commit, then close()
"""
import json
import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


def main():
    bootstrap, topic, group, strategy, session_ms, rate = sys.argv[1:7]
    rate = float(rate)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def emit(**kw):
        kw["t"] = time.time()
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": int(session_ms),
            "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 2000,
            "enable.partition.eof": False}
    if rate > 0:
        # Throttled: keep little prefetched per partition, so that what consume() returns
        # interleaves the assigned partitions instead of draining one partition's backlog first.
        conf.update({"queued.min.messages": 20, "max.partition.fetch.bytes": 2048})
    if os.environ.get("KEEL_RDKAFKA_DEBUG"):  # e.g. "fetch,cgrp" (librdkafka logs to stderr)
        conf["debug"] = os.environ["KEEL_RDKAFKA_DEBUG"]
    if strategy != "default":
        conf["partition.assignment.strategy"] = strategy
    cons = Consumer(conf)
    cooperative = strategy == "cooperative-sticky"
    # The offset after the last message handed to this process, per partition it still owns.
    next_offset = {}

    def on_assign(c, parts):
        if not cooperative:
            c.assign(parts)
            return
        c.incremental_assign(parts)
        # librdkafka 1.7 pauses every owned partition during an incremental rebalance, drops
        # what it had fetched ahead, and resumes at its *fetch* position: the messages that sat
        # in its queue are skipped (seen here: 2 per retained partition). Unless
        # KEEL_NO_RDKAFKA_WORKAROUND is set, retained partitions seek back to the offset after
        # the last message this process consumed.
        if os.environ.get("KEEL_NO_RDKAFKA_WORKAROUND"):
            return
        added = {tp.partition for tp in parts}
        for p, off in next_offset.items():
            if p not in added:
                c.seek(TopicPartition(topic, p, off))

    def on_revoke(c, parts):
        for tp in parts:
            next_offset.pop(tp.partition, None)
        if cooperative:
            c.incremental_unassign(parts)
        else:
            c.unassign()

    cons.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)

    def commit():
        try:
            done = cons.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                emit(ev="commit_error", error=str(e))
            return
        # Partitions without a position yet come back with OFFSET_INVALID (-1001): not commits.
        offsets = {tp.partition: tp.offset for tp in done or []
                   if tp.error is None and tp.offset >= 0}
        errors = [str(tp.error) for tp in done or [] if tp.error is not None]
        if errors:
            emit(ev="commit_error", error="; ".join(errors))
        if offsets:
            emit(ev="commit", offsets=offsets)

    last_assignment = None
    batch = max(1, int(rate / 10)) if rate > 0 else 1000
    while not stop:
        start = time.time()
        msgs = cons.consume(num_messages=batch, timeout=0.1)
        assignment = sorted(tp.partition for tp in cons.assignment())
        if assignment != last_assignment:
            last_assignment = assignment
            emit(ev="assignment", parts=assignment)
        got = []
        for m in msgs:
            if m.error():
                emit(ev="consume_error", error=str(m.error()))
                continue
            got.append([m.partition(), m.offset(), m.value().decode()])
            next_offset[m.partition()] = m.offset() + 1
        if got:
            emit(ev="msgs", m=got)
            commit()
        if rate > 0:
            time.sleep(max(0.0, 0.1 - (time.time() - start)))
    commit()
    cons.close()
    emit(ev="closed")


if __name__ == "__main__":
    main()

"""Raw Kafka wire requests of the consumer-group APIs (no client library), for the tests that
send what clients never would. Old, non-flexible versions: JoinGroup v1 (no KIP-394 member id
round trip), SyncGroup v1, Heartbeat v1, OffsetCommit v2, OffsetFetch v1, DescribeGroups v0,
LeaveGroup v0, FindCoordinator v0."""
import socket
import struct
import time

from kafka_harness import Reader, frame, read_frame

_corr = [1000]


def s16(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def b32(b):
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def arr(items):
    return struct.pack(">i", len(items)) + b"".join(items)


def call(addr, api_key, version, body, timeout=30):
    """One request on a new connection; a Reader past the correlation id, or 'closed'."""
    _corr[0] += 1
    corr = _corr[0]
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(frame(api_key, version, corr, body))
        try:
            data = read_frame(s)
        except ConnectionError:
            return "closed"
    r = Reader(data)
    assert r.take(">i") == corr, "correlation id"
    return r


def bytes_(r):
    n = r.take(">i")
    if n < 0:
        return None
    b = r.d[r.i:r.i + n]
    r.i += n
    return b


def find_coordinator(addr, group):
    """(error, node id)."""
    r = call(addr, 10, 0, s16(group))
    err, node = r.take(">h"), r.take(">i")
    return err, node


def wait_coordinator(cluster, group, via, timeout=60):
    """The coordinator's broker id (FindCoordinator creates __consumer_offsets on first use)."""
    def ok():
        err, node = find_coordinator(cluster.kafka(via), group)
        return node if err == 0 and node > 0 else None
    return cluster.wait_for(f"a coordinator for {group}", ok, timeout=timeout)


def consumer_subscription(topics):
    return struct.pack(">h", 0) + arr([s16(t) for t in topics]) + b32(b"")


def consumer_assignment(parts_by_topic):
    return struct.pack(">h", 0) + arr(
        [s16(t) + arr([struct.pack(">i", p) for p in ps]) for t, ps in parts_by_topic.items()]
    ) + b32(b"")


def join_group(addr, group, session_ms, protocol_type="consumer", protocols=None,
               member_id="", rebalance_ms=None, timeout=30):
    """JoinGroup v1: {'error', 'generation', 'protocol', 'leader', 'member_id', 'members'}."""
    if protocols is None:
        protocols = [("range", consumer_subscription(["keel-none"]))]
    body = (s16(group) + struct.pack(">ii", session_ms,
                                     session_ms if rebalance_ms is None else rebalance_ms)
            + s16(member_id) + s16(protocol_type)
            + arr([s16(n) + b32(m) for n, m in protocols]))
    r = call(addr, 11, 1, body, timeout=timeout)
    if r == "closed":
        return r
    out = {"error": r.take(">h"), "generation": r.take(">i"), "protocol": r.string(),
           "leader": r.string(), "member_id": r.string()}
    out["members"] = r.array(lambda: (r.string(), bytes_(r)))
    return out


def sync_group(addr, group, generation, member_id, assignments=()):
    """SyncGroup v1: (error, assignment bytes)."""
    body = (s16(group) + struct.pack(">i", generation) + s16(member_id)
            + arr([s16(m) + b32(a) for m, a in assignments]))
    r = call(addr, 14, 1, body)
    if r == "closed":
        return r
    r.take(">i")  # throttle
    return r.take(">h"), bytes_(r)


def heartbeat(addr, group, generation, member_id):
    """Heartbeat v1: the error code."""
    r = call(addr, 12, 1, s16(group) + struct.pack(">i", generation) + s16(member_id))
    if r == "closed":
        return r
    r.take(">i")
    return r.take(">h")


def leave_group(addr, group, member_id):
    r = call(addr, 13, 0, s16(group) + s16(member_id))
    return r if r == "closed" else r.take(">h")


def offset_commit(addr, group, generation, member_id, offsets, metadata=""):
    """OffsetCommit v2; offsets {(topic, partition): offset}: {(topic, partition): error}."""
    by_topic = {}
    for (t, p), o in offsets.items():
        by_topic.setdefault(t, []).append(struct.pack(">iq", p, o) + s16(metadata))
    body = (s16(group) + struct.pack(">i", generation) + s16(member_id)
            + struct.pack(">q", -1) + arr([s16(t) + arr(ps) for t, ps in by_topic.items()]))
    r = call(addr, 8, 2, body)
    if r == "closed":
        return r
    out = {}

    def topic():
        name = r.string()
        for p, err in r.array(lambda: (r.take(">i"), r.take(">h"))):
            out[(name, p)] = err
    r.array(topic)
    return out


def offset_fetch(addr, group, topic, partitions):
    """OffsetFetch v1: {partition: (offset, error)}."""
    body = s16(group) + arr([s16(topic) + arr([struct.pack(">i", p) for p in partitions])])
    r = call(addr, 9, 1, body)
    out = {}

    def topic_():
        r.string()
        for p, o, _meta, err in r.array(
                lambda: (r.take(">i"), r.take(">q"), r.string(), r.take(">h"))):
            out[p] = (o, err)
    r.array(topic_)
    return out


def describe_group(addr, group):
    """DescribeGroups v0: {'error', 'state', 'protocol_type', 'protocol', 'members': [id...]}."""
    r = call(addr, 15, 0, arr([s16(group)]))

    def member():
        mid, _client, _host = r.string(), r.string(), r.string()
        bytes_(r)
        bytes_(r)
        return mid

    def group_():
        return {"error": r.take(">h"), "id": r.string(), "state": r.string(),
                "protocol_type": r.string(), "protocol": r.string(), "members": r.array(member)}
    groups = r.array(group_)
    assert len(groups) == 1, groups
    return groups[0]


def retry(fn, what, timeout=30, ok=lambda x: True):
    """Calls fn until it returns without raising and ok(result) (a failover in progress may
    close connections or answer NOT_COORDINATOR)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if ok(last):
                return last
        except (OSError, ConnectionError, AssertionError, ValueError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: no good answer within {timeout} s; last {last}")

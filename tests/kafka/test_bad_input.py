"""Bad input on a broker's Kafka listener, over raw sockets (no client library): every case gets
an error response or a closed connection, and afterwards the broker process is alive and answers
a normal Metadata request on a new connection.

Run: /usr/bin/python3 tests/kafka/test_bad_input.py <dir with keel and keel-broker>
"""
import random
import socket
import struct
import sys
import time

from kafka_harness import Reader, Suite, frame, metadata, read_frame

suite = Suite(sys.argv[1])
c = suite.cluster
TARGET = 1


def connect():
    return socket.create_connection(("127.0.0.1", c.kafka_port(TARGET)), timeout=10)


def outcome(sock, timeout=10):
    """'closed', or ('response', bytes) for a whole response frame; fails on silence."""
    sock.settimeout(timeout)
    try:
        return ("response", read_frame(sock))
    except ConnectionError:  # EOF or reset, possibly after part of a frame
        return "closed"
    except socket.timeout:
        raise AssertionError(f"neither a response nor a close within {timeout} s")


def healthy():
    assert c.alive(TARGET), f"broker {TARGET} died"
    brokers, _ = metadata(c.kafka(TARGET))
    assert sorted(brokers) == [1, 2, 3], brokers


def expect_close_or_error(data, half_close=False, allow_response=True):
    with connect() as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
        got = outcome(s)
    if got != "closed":
        assert allow_response, f"expected the connection closed, got a response {got[1][:40]!r}"
    healthy()
    return got if got == "closed" else "response"


def case(name, **kw):
    def wrap(make):
        @suite.check(name)
        def _():
            got = expect_close_or_error(make(), **kw)
            suite.note(f"{name}: {got}")
        return make
    return wrap


@suite.check("a well-formed Metadata v1 and ApiVersions v0 are answered (the baseline)")
def _():
    healthy()
    with connect() as s:
        s.sendall(frame(18, 0, 41))
        r = Reader(read_frame(s))
        assert r.take(">i") == 41
        assert r.take(">h") == 0
        keys = {k: (lo, hi) for k, lo, hi in r.array(lambda: r.take(">hhh"))}
        assert 18 in keys and 3 in keys and 0 in keys, keys


@case("a frame shorter than a request header (3 bytes)", allow_response=False)
def _():
    return struct.pack(">i", 3) + b"\x00\x03\x00"


@case("a zero-length frame")
def _():
    return struct.pack(">i", 0)


@case("a truncated frame (size 100, 20 bytes sent, then EOF)", half_close=True)
def _():
    return struct.pack(">i", 100) + frame(3, 1, 1, struct.pack(">i", -1))[4:20]


@case("a truncated body (Metadata v1 says 5 topics, carries 1)")
def _():
    return frame(3, 1, 2, struct.pack(">i", 5) + struct.pack(">h", 3) + b"abc")


@case("a truncated request header (client_id length past the frame's end)")
def _():
    payload = struct.pack(">hhih", 3, 1, 3, 200) + b"short"
    return struct.pack(">i", len(payload)) + payload


@case("a size prefix of 2 GB (0x7fffffff)", allow_response=False)
def _():
    return struct.pack(">I", 0x7FFFFFFF) + b"\x00\x03\x00\x01" + b"\x00" * 100


@case("a negative size prefix (-1)", allow_response=False)
def _():
    return struct.pack(">i", -1) + frame(3, 1, 4, struct.pack(">i", -1))[4:]


@case("a negative size prefix (INT32_MIN)", allow_response=False)
def _():
    return struct.pack(">I", 0x80000000) + b"\x00" * 16


@case("an unknown API key (999)", allow_response=False)
def _():
    return frame(999, 0, 5, b"\x00" * 8)


@case("a negative API key (-1)", allow_response=False)
def _():
    return frame(-1, 0, 6, b"")


@case("an unsupported version of Metadata (v99)", allow_response=False)
def _():
    return frame(3, 99, 7, struct.pack(">i", -1))


@case("an unsupported version of Produce (v42)", allow_response=False)
def _():
    return frame(0, 42, 8, b"\x00" * 32)


@case("garbage bytes: an HTTP request", allow_response=False)
def _():
    return b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


@case("garbage bytes: random content behind a plausible size prefix")
def _():
    rnd = random.Random(1234)
    body = bytes(rnd.randrange(256) for _ in range(512))
    return struct.pack(">i", len(body)) + body


@case("garbage bytes: 64 KiB of random bytes")
def _():
    rnd = random.Random(99)
    return bytes(rnd.randrange(256) for _ in range(65536))


@suite.check("ApiVersions v9 gets a v0-format reply: error 35 and only ApiVersions' own range; "
             "the connection stays usable")
def _():
    with connect() as s:
        s.sendall(frame(18, 9, 77, b"\x05junk\x00\x07\x01\x02\x03", flexible=True))
        r = Reader(read_frame(s))
        assert r.take(">i") == 77, "correlation id (response header v0)"
        err = r.take(">h")
        assert err == 35, f"error {err}"
        keys = r.array(lambda: r.take(">hhh"))
        assert len(keys) == 1 and keys[0][0] == 18 and keys[0][1] == 0 and keys[0][2] >= 3, keys
        assert r.i == len(r.d), f"{len(r.d) - r.i} bytes after the v0 body"
        # As clients do on error 35: retry at the advertised max.
        s.sendall(frame(18, keys[0][2], 78, b"\x0ckeel-client\x060.0.1\x00", flexible=True))
        r = Reader(read_frame(s))
        assert r.take(">i") == 78
        assert r.take(">h") == 0
    healthy()


@suite.check("ApiVersions v3 with an invalid client_software_name gets error 42 INVALID_REQUEST")
def _():
    with connect() as s:
        s.sendall(frame(18, 3, 79, b"\x0a-bad name\x060.0.1\x00", flexible=True))
        r = Reader(read_frame(s))
        assert r.take(">i") == 79
        err = r.take(">h")
        assert err == 42, f"error {err}"
    healthy()


@suite.check("100 connections that send half a request and vanish leave the broker serving")
def _():
    socks = []
    for i in range(100):
        s = connect()
        s.sendall(frame(3, 1, i, struct.pack(">i", -1))[:7])
        socks.append(s)
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()
    time.sleep(0.5)
    healthy()


@suite.check("every broker is still alive and answers Metadata at the end")
def _():
    for b in (1, 2, 3):
        assert c.alive(b), f"broker {b} died"
        brokers, _ = metadata(c.kafka(b))
        assert sorted(brokers) == [1, 2, 3], (b, brokers)


if __name__ == "__main__":
    sys.exit(suite.run())

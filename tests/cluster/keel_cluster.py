"""A local Keel cluster of real keel-broker processes, driven through the keel tool.

Shared by the multi-process tests: starts `keel cluster up --detach` in a temporary data
directory on free ports, and offers the operations the tests need (topics, produce, consume,
kill -9, restart, status).
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback


def free_port_base(count):
    """A base port with `count` consecutive free ports for Kafka and `count` more for RPC, all
    below the kernel's ephemeral range (32768 and up here): a port in it can be taken by any
    outgoing connection while its broker is down for a restart (seen: "bind: Address already in
    use" on restart)."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        base = random.randint(10000, max(10001, low - 1000 - count - 1))
        ok = True
        for p in list(range(base, base + count)) + list(range(base + 1000, base + 1000 + count)):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no free ports")


class Cluster:
    def __init__(self, bin_dir, brokers=3, shards=2, broker_config=None):
        """`broker_config`: {setting: value} written to a keel-broker config file that every
        broker reads (`keel cluster up --broker-config`)."""
        self.keel = os.path.join(bin_dir, "keel")
        self.brokers = brokers
        self.shards = shards
        self.data_dir = tempfile.mkdtemp(prefix="keel-cluster-")
        self.kafka_base = free_port_base(brokers)
        self.rpc_base = self.kafka_base + 1000
        self.broker_config = None
        if broker_config:
            self.broker_config = os.path.join(self.data_dir, "broker.conf")
            with open(self.broker_config, "w") as f:
                f.writelines(f"{k} = {v}\n" for k, v in broker_config.items())

    # -- processes -----------------------------------------------------------------------------
    def up(self, timeout=90):
        out = self.run("cluster", "up", "--detach", "--brokers", str(self.brokers),
                       "--data-dir", self.data_dir, "--kafka-port", str(self.kafka_base),
                       "--rpc-port", str(self.rpc_base), "--shards", str(self.shards),
                       *(["--broker-config", self.broker_config] if self.broker_config else []),
                       timeout=timeout)
        assert "ready" in out, out
        return out

    def down(self):
        return self.run("cluster", "down", "--data-dir", self.data_dir, timeout=120)

    def pid(self, broker):
        with open(os.path.join(self.data_dir, f"broker-{broker}", "broker.pid")) as f:
            return int(f.read().strip())

    def kill9(self, broker):
        pid = self.pid(broker)
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def restart(self, broker, timeout=90):
        """Starts `broker` again after kill9 (`cluster up` starts only the missing brokers) and
        waits until its Kafka listener accepts connections."""
        self.up(timeout=timeout)
        self.wait_for(f"broker {broker}'s Kafka listener", lambda: self.kafka_listening(broker),
                      timeout=timeout)

    def alive(self, broker):
        try:
            os.kill(self.pid(broker), 0)
            return True
        except (ProcessLookupError, OSError, ValueError):
            return False

    def pause_heartbeats(self, broker, paused=True):
        """Fault injection (brokers started with fault-injection-pause-heartbeats = true): the
        broker sends no heartbeats to the controller while its pause file exists."""
        path = os.path.join(self.data_dir, f"broker-{broker}", "fault-injection.pause-heartbeats")
        if paused:
            open(path, "w").close()
        elif os.path.exists(path):
            os.remove(path)

    def rpc(self, broker):
        return f"127.0.0.1:{self.rpc_base + broker - 1}"

    # -- the Kafka listeners -------------------------------------------------------------------
    def kafka_port(self, broker):
        return self.kafka_base + broker - 1

    def kafka(self, broker):
        return f"127.0.0.1:{self.kafka_port(broker)}"

    def bootstrap(self, brokers=None):
        """A Kafka bootstrap.servers list: every broker, or the given ones."""
        return ",".join(self.kafka(b) for b in (brokers or range(1, self.brokers + 1)))

    def kafka_listening(self, broker):
        try:
            socket.create_connection(("127.0.0.1", self.kafka_port(broker)), timeout=1).close()
            return True
        except OSError:
            return False

    def cleanup(self):
        try:
            self.down()
        finally:
            for b in range(1, self.brokers + 1):
                try:
                    os.kill(self.pid(b), signal.SIGKILL)
                except Exception:
                    pass
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, broker, lines=30):
        path = os.path.join(self.data_dir, f"broker-{broker}", "broker.log")
        try:
            with open(path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # -- the keel tool -------------------------------------------------------------------------
    def run(self, *args, stdin=None, timeout=60, check=True):
        p = subprocess.run([self.keel, *args], input=stdin, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"keel {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
        return p.stdout

    def status(self, via):
        return json.loads(self.run("cluster", "status", "--json", "--bootstrap", self.rpc(via)))

    def create_topic(self, name, partitions, rf, via=1):
        return self.run("topic", "create", name, "--partitions", str(partitions),
                        "--replication-factor", str(rf), "--bootstrap", self.rpc(via))

    def produce(self, topic, partition, lines, via=1):
        return self.run("produce", topic, "--partition", str(partition), "--bootstrap",
                        self.kafka(via), stdin="".join(l + "\n" for l in lines), timeout=120)

    def consume(self, topic, partition, via=1):
        out = self.run("consume", topic, "--partition", str(partition), "--bootstrap",
                       self.kafka(via), timeout=120)
        return out.splitlines()

    def leaders(self, topic, via):
        st = self.status(via)
        for t in st["topics"]:
            if t["name"] == topic:
                return [p["leader"] for p in t["partitions"]]
        return None

    def wait_for(self, what, predicate, timeout=30):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except Exception as e:  # a broker may be restarting
                last = e
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last: {last}")


def check_list():
    """A list of checks and the decorator that adds one: `results, check = check_list()`, then
    `@check("name")` on each function, in the order they run."""
    results = []

    def check(name):
        def wrap(fn):
            results.append((name, fn))
            return fn
        return wrap
    return results, check


def run_checks(c, results, brokers=(1, 2, 3)):
    """Runs each (name, fn) of `results` in order: a PASS or FAIL line each, with the traceback
    and the brokers' log tails after a failure. Returns (passed, failed)."""
    passed = failed = 0
    for name, fn in results:
        try:
            fn()
            passed += 1
            print(f"PASS {name}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
            for b in brokers:
                print(f"--- broker {b} log tail ---\n{c.log_tail(b)}", flush=True)
    return passed, failed

// keel produce | consume | topic describe | bench produce | bench consume: the Kafka-protocol
// commands, all on keel::net::kafka::client (one io_context, one thread).
#include "keel_kafka.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "keel/net/kafka/client.h"
#include "keel/net/kafka/record_batch.h"
#include "keel/server/latency_histogram.h"

namespace keel::cli {

namespace asio = boost::asio;
namespace kafka = net::kafka;
using asio::awaitable;
using asio::use_awaitable;
using clock_type = std::chrono::steady_clock;

namespace {
const char* default_kafka_bootstrap = "127.0.0.1:9092";

}  // namespace

kafka::client_config config_from(const flags& f) {
  kafka::client_config c;
  const std::string list = f.get("bootstrap", default_kafka_bootstrap);
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = std::min(list.find(',', at), list.size());
    if (comma > at) c.bootstrap.push_back(list.substr(at, comma - at));
    at = comma + 1;
  }
  c.client_id = "keel-cli";
  c.connections_per_broker = static_cast<int>(f.get_int("connections", 1));
  return c;
}

// Runs one coroutine to completion on a fresh io_context and returns its exit code.
int run(std::function<awaitable<int>(asio::io_context&)> body) {
  asio::io_context io;
  int code = 1;
  asio::co_spawn(io, body(io), [&](std::exception_ptr e, int c) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "keel: %s\n", x.what());
      }
      code = 1;
      return;
    }
    code = c;
  });
  io.run();
  return code;
}

namespace {

std::string describe(const kafka::error& e) {
  return e.message;
}

awaitable<void> sleep_for(asio::io_context& io, clock_type::duration d) {
  asio::steady_timer t(io);
  t.expires_after(d);
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
}
awaitable<void> sleep_until(asio::io_context& io, clock_type::time_point when) {
  asio::steady_timer t(io);
  t.expires_at(when);
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
}

// Waits until the topic exists with a leader for every partition; false after `timeout`.
awaitable<bool> await_leaders(asio::io_context& io, kafka::client& c, const std::string& topic,
                              std::chrono::seconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  // (A named vector: GCC 12 rejects a braced list inside a co_await expression.)
  const std::vector<std::string> topics(1, topic);
  while (clock_type::now() < deadline) {
    auto m = co_await c.metadata(topics);
    if (!m.err) {
      for (const auto& t : m.cluster.topics) {
        if (t.name != topic || t.error_code != 0 || t.partitions.empty()) continue;
        bool all = true;
        for (const auto& p : t.partitions)
          all = all && p.leader >= 0 && p.error_code == 0;
        if (all) co_return true;
      }
    }
    co_await sleep_for(io, std::chrono::milliseconds(200));
  }
  co_return false;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids)
    out += (out.empty() ? "" : ",") + std::to_string(id);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// keel produce TOPIC: one record per line of standard input, batched while input is buffered.

int kafka_produce(const flags& f) {
  if (f.positional.size() < 2) die("produce: expected a topic", 2);
  const std::string topic = f.positional[1];
  const auto partition = static_cast<int32_t>(f.get_int("partition", 0));
  const auto acks = static_cast<int16_t>(f.get_int("acks", -1));
  const bool keyed = f.has("key-separator");
  const std::string separator = f.get("key-separator", "");
  if (keyed && separator.empty()) die("--key-separator: expected a non-empty separator", 2);
  std::ios::sync_with_stdio(false);
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(describe(e));
    long long produced = 0;
    std::string line;
    bool more = true;
    while (more) {
      kafka::record_batch_builder b;
      size_t bytes = 0;
      const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      // Take the lines already buffered (a pipe), but never wait for more than one: an
      // interactive line goes out at once.
      while (b.records() < 10000 && bytes < (512u << 10)) {
        if (!std::getline(std::cin, line)) {
          more = false;
          break;
        }
        kafka::record r;
        r.timestamp = now_ms;
        if (keyed) {
          const auto at = line.find(separator);
          if (at == std::string::npos) {
            r.value = line;
          } else {
            r.key = line.substr(0, at);
            r.value = line.substr(at + separator.size());
          }
        } else {
          r.value = line;
        }
        bytes += line.size() + 16;
        b.add(std::move(r));
        if (std::cin.rdbuf()->in_avail() <= 0) break;
      }
      if (b.records() == 0) break;
      const auto batch = b.build();
      auto r = co_await c.produce(topic, partition, batch, acks);
      if (r.err)
        die("produce to " + topic + "/" + std::to_string(partition) + ": " + r.err.message);
      produced += static_cast<long long>(b.records());
    }
    std::fprintf(stderr, "produced %lld records\n", produced);
    co_return 0;
  });
}

// ---------------------------------------------------------------------------------------------
// keel consume TOPIC: values (with keys when --key-separator is given) to standard output.

int kafka_consume(const flags& f) {
  if (f.positional.size() < 2) die("consume: expected a topic", 2);
  const std::string topic = f.positional[1];
  const auto partition = static_cast<int32_t>(f.get_int("partition", 0));
  const std::string from = f.get("from", "earliest");
  const long long want = f.get_int("count", -1);
  const bool keyed = f.has("key-separator");
  const std::string separator = f.get("key-separator", "");
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(describe(e));
    int64_t offset = 0;
    if (from == "earliest" || from == "latest") {
      auto o = co_await c.list_offsets(
          topic, partition,
          from == "earliest" ? kafka::offset_spec::earliest : kafka::offset_spec::latest);
      if (o.err) die("list offsets of " + topic + ": " + o.err.message);
      offset = o.offset;
    } else {
      try {
        offset = std::stoll(from);
      } catch (...) {
        die("--from: expected earliest, latest or an offset", 2);
      }
    }
    long long got = 0;
    for (;;) {
      // Without --count, stop once caught up; with it, long-poll for more.
      auto r = co_await c.fetch(topic, partition, offset, 1 << 20,
                                std::chrono::milliseconds(want >= 0 ? 500 : 0));
      if (r.err) die("fetch " + topic + "/" + std::to_string(partition) + ": " + r.err.message);
      kafka::record_reader records(r.records, offset);
      kafka::record_view rec;
      while (records.next(rec)) {
        if (keyed) {
          const auto k = rec.key_string();
          std::fwrite(k.data(), 1, k.size(), stdout);
          std::fwrite(separator.data(), 1, separator.size(), stdout);
        }
        const auto v = rec.value_string();
        std::fwrite(v.data(), 1, v.size(), stdout);
        std::fputc('\n', stdout);
        ++got;
        if (want >= 0 && got >= want) {
          std::fflush(stdout);
          co_return 0;
        }
      }
      if (!records.ok()) die("fetch " + topic + ": " + records.failure());
      offset = records.next_offset();
      if (want < 0 && offset >= r.high_watermark) break;
    }
    std::fflush(stdout);
    co_return 0;
  });
}

// ---------------------------------------------------------------------------------------------
// keel topic describe NAME

int kafka_topic_describe(const flags& f) {
  if (f.positional.size() < 3) die("topic describe: expected a topic name", 2);
  const std::string topic = f.positional[2];
  const bool json = f.has("json");
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(describe(e));
    const std::vector<std::string> topics(1, topic);
    auto m = co_await c.metadata(topics);
    if (m.err) die(m.err.message);
    for (const auto& t : m.cluster.topics) {
      if (t.name != topic) continue;
      if (t.error_code != 0)
        die("topic " + topic + ": " + std::string(kafka::error_name(t.error_code)));
      if (json) {
        std::printf("{\"name\": \"%s\", \"partitions\": [", topic.c_str());
        for (size_t i = 0; i < t.partitions.size(); ++i) {
          const auto& p = t.partitions[i];
          std::printf(
              "%s{\"partition\": %d, \"leader\": %d, \"leader_epoch\": %d, \"replicas\": [%s], "
              "\"isr\": [%s]}",
              i ? ", " : "", p.partition, p.leader, p.leader_epoch, join_ids(p.replicas).c_str(),
              join_ids(p.isr).c_str());
        }
        std::printf("]}\n");
      } else {
        std::printf("topic %s  partitions %zu  replication factor %zu\n", topic.c_str(),
                    t.partitions.size(),
                    t.partitions.empty() ? size_t{0} : t.partitions.front().replicas.size());
        for (const auto& p : t.partitions)
          std::printf("  partition %d  leader %d  epoch %d  replicas %s  isr %s\n", p.partition,
                      p.leader, p.leader_epoch, join_ids(p.replicas).c_str(),
                      join_ids(p.isr).c_str());
      }
      co_return 0;
    }
    die("topic " + topic + ": not found");
  });
}

// ---------------------------------------------------------------------------------------------
// keel bench produce | consume

namespace {

struct bench_stats {
  server::latency_histogram total;
  server::latency_histogram interval;
  uint64_t records = 0;
  uint64_t bytes = 0;  // record value bytes
  uint64_t interval_records = 0;
  uint64_t interval_bytes = 0;
  uint64_t errors = 0;
  std::map<std::string, uint64_t> errors_by_name;

  void ok(uint64_t n_records, uint64_t n_bytes, clock_type::duration latency) {
    const auto ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count());
    total.record(ns);
    interval.record(ns);
    records += n_records;
    bytes += n_bytes;
    interval_records += n_records;
    interval_bytes += n_bytes;
  }
  void failed(const kafka::error& e) {
    ++errors;
    ++errors_by_name[std::string(kafka::error_name(e.code))];
  }
};

double ms(uint64_t ns) {
  return static_cast<double>(ns) / 1e6;
}

// One report: `at` is the time since the start (shown), `over` the span the counts cover.
void print_line(const char* what, bool json, bool final, double at, double over, uint64_t records,
                uint64_t bytes, const server::latency_histogram& h, uint64_t errors) {
  const double seconds = over;
  const double rps = seconds > 0 ? static_cast<double>(records) / seconds : 0;
  const double mbps = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0;
  if (json) {
    std::printf(
        "{\"bench\": \"%s\", \"final\": %s, \"seconds\": %.3f, \"records\": %llu, "
        "\"bytes\": %llu, \"records_per_s\": %.1f, \"mb_per_s\": %.2f, \"requests\": %llu, "
        "\"latency_ms\": {\"p50\": %.3f, \"p99\": %.3f, \"p99.9\": %.3f, \"max\": %.3f, "
        "\"mean\": %.3f}, \"errors\": %llu}\n",
        what, final ? "true" : "false", at, static_cast<unsigned long long>(records),
        static_cast<unsigned long long>(bytes), rps, mbps,
        static_cast<unsigned long long>(h.count()), ms(h.percentile(50)), ms(h.percentile(99)),
        ms(h.percentile(99.9)), ms(h.max()), h.mean() / 1e6,
        static_cast<unsigned long long>(errors));
  } else {
    std::printf(
        "%s%s %7.1fs  %10.0f records/s  %8.2f MB/s  p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms"
        "  max %7.2f ms  errors %llu%s\n",
        final ? "== " : "", what, at, rps, mbps, ms(h.percentile(50)), ms(h.percentile(99)),
        ms(h.percentile(99.9)), ms(h.max()), static_cast<unsigned long long>(errors),
        final ? ("  (" + std::to_string(records) + " records, " + std::to_string(h.count()) +
                 " requests)")
                    .c_str()
              : "");
  }
  std::fflush(stdout);
}

// Prints one line a second until *done.
awaitable<void> reporter(asio::io_context& io, const char* what, bool json, bench_stats& s,
                         const bool& done, clock_type::time_point start) {
  auto last = start;
  auto next = start + std::chrono::seconds(1);
  while (!done) {
    co_await sleep_until(io, next);
    if (done) break;
    const auto now = clock_type::now();
    const double dt = std::chrono::duration<double>(now - last).count();
    print_line(what, json, false, std::chrono::duration<double>(now - start).count(), dt,
               s.interval_records, s.interval_bytes, s.interval, s.errors);
    s.interval.reset();
    s.interval_records = s.interval_bytes = 0;
    last = now;
    next += std::chrono::seconds(1);
  }
}

void print_errors(const bench_stats& s) {
  for (const auto& [name, n] : s.errors_by_name)
    std::fprintf(stderr, "keel bench: %llu errors %s\n", static_cast<unsigned long long>(n),
                 name.c_str());
}

}  // namespace

int bench_produce(const flags& f) {
  const std::string topic = f.get("topic", "");
  if (topic.empty()) die("bench produce: --topic is required", 2);
  const auto partitions_to_create = static_cast<int32_t>(f.get_int("partitions", -1));
  const auto replication = static_cast<int16_t>(f.get_int("replication-factor", 3));
  const auto record_bytes = static_cast<size_t>(f.get_int("record-bytes", 1024));
  const auto batch_records = static_cast<size_t>(f.get_int("batch-records", 64));
  const long long records_target = f.get_int("records", -1);
  const double seconds = std::stod(f.get("seconds", records_target < 0 ? "10" : "0"));
  const auto acks = static_cast<int16_t>(f.get_int("acks", -1));
  const int in_flight = static_cast<int>(f.get_int("in-flight", 4));
  const double rate = std::stod(f.get("rate", "0"));
  const bool json = f.has("json");
  if (batch_records < 1 || in_flight < 1) die("--batch-records and --in-flight must be >= 1", 2);
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(describe(e));
    if (partitions_to_create > 0) {
      auto e = co_await c.create_topic(topic, partitions_to_create, replication);
      if (e && e.code != 36) die("create topic " + topic + ": " + e.message);
    }
    if (!co_await await_leaders(io, c, topic, std::chrono::seconds(30)))
      die("topic " + topic + " has no leader for every partition after 30 s");
    const int32_t partitions = c.partition_count(topic);
    // One batch per partition, built once and sent again and again (the broker stamps offsets
    // into its own copy).
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    kafka::record_batch_builder b;
    for (size_t i = 0; i < batch_records; ++i) {
      kafka::record r;
      r.timestamp = now_ms;
      std::string value(record_bytes, 'x');
      for (size_t j = 0; j < value.size(); ++j)
        value[j] = static_cast<char>('a' + (i + j) % 26);
      r.value = std::move(value);
      b.add(std::move(r));
    }
    const std::vector<std::byte> batch = b.build();
    if (!json)
      std::printf(
          "bench produce: topic %s, %d partitions, %zu-byte records in batches of %zu (%zu "
          "bytes), acks %d, %d in flight per partition, %d connection(s) per broker%s\n",
          topic.c_str(), partitions, record_bytes, batch_records, batch.size(), acks, in_flight,
          std::max(1, static_cast<int>(f.get_int("connections", 1))),
          rate > 0
              ? (", rate " + std::to_string(static_cast<long long>(rate)) + " records/s").c_str()
              : "");

    bench_stats s;
    bool done = false;
    const auto start = clock_type::now();
    const auto deadline = seconds > 0 ? start + std::chrono::duration_cast<clock_type::duration>(
                                                    std::chrono::duration<double>(seconds))
                                      : clock_type::time_point::max();
    // With a rate, batches are due on a fixed schedule; a worker that is late still measures
    // from the due time, so a stall shows in the latencies (no coordinated omission).
    const auto interval =
        rate > 0 ? std::chrono::duration_cast<clock_type::duration>(
                       std::chrono::duration<double>(static_cast<double>(batch_records) / rate))
                 : clock_type::duration::zero();
    auto next_due = start;
    long long claimed = 0;
    int workers = partitions * in_flight;
    auto last_done = start;
    for (int32_t p = 0; p < partitions; ++p) {
      for (int k = 0; k < in_flight; ++k) {
        asio::co_spawn(
            io,
            [&, p]() -> awaitable<void> {
              for (;;) {
                if (records_target >= 0 && claimed >= records_target) break;
                clock_type::time_point intended = clock_type::now();
                if (rate > 0) {
                  intended = next_due;
                  next_due += interval;
                  if (intended >= deadline) break;
                  if (intended > clock_type::now()) co_await sleep_until(io, intended);
                } else if (intended >= deadline) {
                  break;
                }
                claimed += static_cast<long long>(batch_records);
                auto r = co_await c.produce(topic, p, batch, acks);
                const auto now = clock_type::now();
                if (r.err) {
                  s.failed(r.err);
                  claimed -= static_cast<long long>(batch_records);
                  if (s.errors > 1000) die("too many produce errors: " + r.err.message);
                  co_await sleep_for(io, std::chrono::milliseconds(50));
                  continue;
                }
                s.ok(batch_records, batch_records * record_bytes, now - intended);
                last_done = now;
              }
              if (--workers == 0) done = true;
            },
            asio::detached);
      }
    }
    co_await reporter(io, "produce", json, s, done, start);
    while (!done)
      co_await sleep_for(io, std::chrono::milliseconds(10));
    const double elapsed = std::chrono::duration<double>(last_done - start).count();
    print_line("produce", json, true, elapsed, elapsed, s.records, s.bytes, s.total, s.errors);
    print_errors(s);
    co_return s.records > 0 ? 0 : 1;
  });
}

int bench_consume(const flags& f) {
  const std::string topic = f.get("topic", "");
  if (topic.empty()) die("bench consume: --topic is required", 2);
  const auto max_bytes = static_cast<int32_t>(f.get_int("max-bytes", 4 << 20));
  const long long records_target = f.get_int("records", -1);
  const bool json = f.has("json");
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(describe(e));
    if (!co_await await_leaders(io, c, topic, std::chrono::seconds(30)))
      die("topic " + topic + " has no leader for every partition after 30 s");
    const int32_t partitions = c.partition_count(topic);
    // Read every partition from its start to its end as of now.
    std::vector<int64_t> begin(static_cast<size_t>(partitions)), end(begin.size());
    for (int32_t p = 0; p < partitions; ++p) {
      auto b = co_await c.list_offsets(topic, p, kafka::offset_spec::earliest);
      auto e = co_await c.list_offsets(topic, p, kafka::offset_spec::latest);
      if (b.err || e.err) die("list offsets: " + (b.err ? b.err : e.err).message);
      begin[static_cast<size_t>(p)] = b.offset;
      end[static_cast<size_t>(p)] = e.offset;
    }
    if (!json)
      std::printf("bench consume: topic %s, %d partitions, up to %d bytes per fetch\n",
                  topic.c_str(), partitions, max_bytes);
    bench_stats s;
    bool done = false;
    int workers = partitions;
    uint64_t fetch_bytes = 0;
    const auto start = clock_type::now();
    auto last_done = start;
    for (int32_t p = 0; p < partitions; ++p) {
      asio::co_spawn(
          io,
          [&, p]() -> awaitable<void> {
            int64_t offset = begin[static_cast<size_t>(p)];
            const int64_t stop = end[static_cast<size_t>(p)];
            while (offset < stop &&
                   (records_target < 0 || static_cast<long long>(s.records) < records_target)) {
              const auto sent = clock_type::now();
              auto r =
                  co_await c.fetch(topic, p, offset, max_bytes, std::chrono::milliseconds(500));
              const auto now = clock_type::now();
              if (r.err) {
                s.failed(r.err);
                if (s.errors > 1000) die("too many fetch errors: " + r.err.message);
                co_await sleep_for(io, std::chrono::milliseconds(50));
                continue;
              }
              kafka::record_reader records(r.records, offset);
              kafka::record_view rec;
              uint64_t n = 0, bytes = 0;
              while (records.next(rec)) {
                ++n;
                bytes += rec.value ? rec.value->size() : 0;
              }
              if (!records.ok()) die("fetch " + topic + ": " + records.failure());
              fetch_bytes += r.records.size();
              offset = records.next_offset();
              s.ok(n, bytes, now - sent);
              last_done = now;
            }
            if (--workers == 0) done = true;
          },
          asio::detached);
    }
    co_await reporter(io, "consume", json, s, done, start);
    const double elapsed = std::chrono::duration<double>(last_done - start).count();
    print_line("consume", json, true, elapsed, elapsed, s.records, s.bytes, s.total, s.errors);
    print_errors(s);
    co_return s.records > 0 ? 0 : 1;
  });
}

// keel bench commit: simple (generation -1, empty member id) OffsetCommits of one partition
// each, --concurrency outstanding at a time, all to one group (so through one coordinator).
int bench_commit(const flags& f) {
  const std::string topic = f.get("topic", "");
  if (topic.empty()) die("bench commit: --topic is required", 2);
  const std::string group = f.get("group", "keel-bench-commit");
  const int concurrency = static_cast<int>(f.get_int("concurrency", 64));
  const long long commits_target = f.get_int("commits", -1);
  const double seconds = std::stod(f.get("seconds", commits_target < 0 ? "10" : "0"));
  const bool json = f.has("json");
  if (concurrency < 1) die("--concurrency must be >= 1", 2);
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(describe(e));
    if (!co_await await_leaders(io, c, topic, std::chrono::seconds(30)))
      die("topic " + topic + " has no leader for every partition after 30 s");
    const int32_t partitions = c.partition_count(topic);
    auto coordinator = co_await c.find_coordinator(group);
    if (coordinator.err) die("find coordinator of " + group + ": " + coordinator.err.message);
    if (!json)
      std::printf(
          "bench commit: group %s (coordinator broker %d), topic %s (%d partitions), one "
          "partition per commit, %d in flight\n",
          group.c_str(), coordinator.coordinator.id, topic.c_str(), partitions, concurrency);
    bench_stats s;
    bool done = false;
    const auto start = clock_type::now();
    const auto deadline = seconds > 0 ? start + std::chrono::duration_cast<clock_type::duration>(
                                                    std::chrono::duration<double>(seconds))
                                      : clock_type::time_point::max();
    long long claimed = 0;
    int64_t next_offset = 0;
    int workers = concurrency;
    auto last_done = start;
    for (int k = 0; k < concurrency; ++k) {
      asio::co_spawn(
          io,
          [&, k]() -> awaitable<void> {
            for (;;) {
              if (commits_target >= 0 && claimed >= commits_target) break;
              const auto sent = clock_type::now();
              if (sent >= deadline) break;
              ++claimed;
              std::vector<kafka::partition_offset> offsets(1);
              offsets[0].topic = topic;
              offsets[0].partition = k % partitions;
              offsets[0].offset = ++next_offset;
              auto r = co_await c.offset_commit(group, std::move(offsets));
              const auto now = clock_type::now();
              if (r.err) {
                s.failed(r.err);
                --claimed;
                if (s.errors > 1000) die("too many commit errors: " + r.err.message);
                co_await sleep_for(io, std::chrono::milliseconds(50));
                continue;
              }
              s.ok(1, 0, now - sent);
              last_done = now;
            }
            if (--workers == 0) done = true;
          },
          asio::detached);
    }
    co_await reporter(io, "commit", json, s, done, start);
    while (!done)
      co_await sleep_for(io, std::chrono::milliseconds(10));
    const double elapsed = std::chrono::duration<double>(last_done - start).count();
    print_line("commit", json, true, elapsed, elapsed, s.records, s.bytes, s.total, s.errors);
    print_errors(s);
    co_return s.records > 0 ? 0 : 1;
  });
}

}  // namespace keel::cli

// keel-cluster-load: appends 64 KiB batches through the partition leaders' public append path
// (the produce path the Kafka front end calls), with many requests in flight per partition, and
// reports committed throughput and latency. Usage:
//   keel-cluster-load --bootstrap HOST:PORT --topic T [--seconds S] [--batch-bytes B]
//                     [--in-flight N]
// Prints `committed_mb_per_s=<v> batches=<n> errors=<n> leader_moves=<n> p50_ms=<v> p99_ms=<v>`
// on its last line.
#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "keel/net/admin.h"
#include "keel/net/admin_client.h"
#include "keel/net/frame.h"

namespace asio = boost::asio;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace keel;

namespace {

struct options {
  std::string host = "127.0.0.1";
  uint16_t port = 19092;
  std::string topic = "bench";
  double seconds = 10;
  size_t batch_bytes = 64 << 10;
  int in_flight = 8;
};

struct stats {
  std::map<int, uint64_t> errors_by_code;
  uint64_t batches = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  uint64_t leader_moves = 0;  // connections moved after a not_leader answer
  std::vector<double> latencies_ms;
};

// One partition: a connection to its leader with `in_flight` produce requests outstanding. A
// leadership change (not_leader) is followed as a client would: the requests in flight drain,
// then the connection moves to the hinted leader (or retries the same one after a pause).
asio::awaitable<void> drive(std::map<int32_t, tcp::endpoint> rpc, int32_t leader, std::string topic,
                            int32_t partition, const options& o, clock_type::time_point end,
                            stats& s) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<std::byte> payload(o.batch_bytes, std::byte{'k'});
  uint64_t next = 1;
  while (clock_type::now() < end) {
    tcp::socket sock(ex);
    co_await sock.async_connect(rpc.at(leader), asio::use_awaitable);
    sock.set_option(tcp::no_delay(true));
    const int32_t client = -1;
    std::vector<std::byte> out;
    net::encode_frame(out, 1, std::as_bytes(std::span(&client, 1)));
    std::map<uint64_t, clock_type::time_point> sent;
    auto send_one = [&]() {
      net::produce_request r;
      r.correlation = next++;
      r.topic = topic;
      r.partition = partition;
      r.acks = -1;
      r.payload = payload;
      net::encode_frame(out, static_cast<uint16_t>(net::admin_type::produce_request),
                        net::encode(r));
      sent[r.correlation] = clock_type::now();
    };
    for (int i = 0; i < o.in_flight; ++i)
      send_one();
    co_await asio::async_write(sock, asio::buffer(out), asio::use_awaitable);
    net::frame_decoder decoder;
    std::vector<std::byte> buf(64 << 10);
    bool moved = false;
    while (!sent.empty()) {
      const size_t n = co_await sock.async_read_some(asio::buffer(buf), asio::use_awaitable);
      decoder.feed(std::span(buf.data(), n));
      net::frame_decoder::frame_view f;
      out.clear();
      while (decoder.next(f) == net::frame_decoder::status::frame) {
        auto r = net::decode_produce_response(f.payload);
        if (!r) continue;
        auto it = sent.find(r->correlation);
        if (it == sent.end()) continue;
        const auto now = clock_type::now();
        if (r->error == net::admin_error::none) {
          ++s.batches;
          s.bytes += o.batch_bytes;
          s.latencies_ms.push_back(
              std::chrono::duration<double, std::milli>(now - it->second).count());
        } else {
          ++s.errors;
          ++s.errors_by_code[static_cast<int>(r->error)];
          if (r->error == net::admin_error::not_leader) {
            moved = true;
            if (r->leader_hint >= 0 && rpc.count(r->leader_hint)) leader = r->leader_hint;
          }
        }
        sent.erase(it);
        if (now < end && !moved) send_one();
      }
      if (!out.empty()) co_await asio::async_write(sock, asio::buffer(out), asio::use_awaitable);
    }
    if (moved) {
      ++s.leader_moves;
      asio::steady_timer pause(ex, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::use_awaitable);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--bootstrap") {
      o.host = v.substr(0, v.rfind(':'));
      o.port = static_cast<uint16_t>(std::stoi(v.substr(v.rfind(':') + 1)));
    } else if (k == "--topic")
      o.topic = v;
    else if (k == "--seconds")
      o.seconds = std::stod(v);
    else if (k == "--batch-bytes")
      o.batch_bytes = std::stoul(v);
    else if (k == "--in-flight")
      o.in_flight = std::stoi(v);
    else {
      std::fprintf(stderr, "keel-cluster-load: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  net::admin_client admin;
  if (!admin.connect(o.host, o.port)) {
    std::fprintf(stderr, "keel-cluster-load: %s\n", admin.error().c_str());
    return 1;
  }
  auto d = admin.describe_cluster();
  if (!d) {
    std::fprintf(stderr, "keel-cluster-load: %s\n", admin.error().c_str());
    return 1;
  }
  std::map<int32_t, tcp::endpoint> rpc;
  for (const auto& b : d->brokers)
    rpc[b.id] = tcp::endpoint(asio::ip::make_address(b.rpc_host), b.rpc_port);
  const net::topic_status* topic = nullptr;
  for (const auto& t : d->topics)
    if (t.name == o.topic) topic = &t;
  if (!topic) {
    std::fprintf(stderr, "keel-cluster-load: no topic %s\n", o.topic.c_str());
    return 1;
  }
  asio::io_context io;
  stats s;
  const auto start = clock_type::now();
  const auto end = start + std::chrono::duration_cast<clock_type::duration>(
                               std::chrono::duration<double>(o.seconds));
  for (const auto& p : topic->partitions) {
    if (p.leader < 0 || !rpc.count(p.leader)) {
      std::fprintf(stderr, "keel-cluster-load: partition %d has no known leader\n", p.partition);
      return 1;
    }
    asio::co_spawn(io, drive(rpc, p.leader, o.topic, p.partition, o, end, s),
                   [](std::exception_ptr e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& x) {
                         std::fprintf(stderr, "keel-cluster-load: %s\n", x.what());
                       }
                     }
                   });
  }
  io.run();
  const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
  std::sort(s.latencies_ms.begin(), s.latencies_ms.end());
  auto pct = [&](double q) {
    return s.latencies_ms.empty()
               ? 0.0
               : s.latencies_ms[static_cast<size_t>(q * (s.latencies_ms.size() - 1))];
  };
  for (auto& [code, n] : s.errors_by_code)
    std::fprintf(stderr, "errors %s: %llu\n", net::to_string(static_cast<net::admin_error>(code)),
                 static_cast<unsigned long long>(n));
  std::printf(
      "committed_mb_per_s=%.1f batches=%llu errors=%llu leader_moves=%llu p50_ms=%.2f "
      "p99_ms=%.2f\n",
      s.bytes / elapsed / 1e6, static_cast<unsigned long long>(s.batches),
      static_cast<unsigned long long>(s.errors), static_cast<unsigned long long>(s.leader_moves),
      pct(0.5), pct(0.99));
  return s.batches > 0 ? 0 : 1;
}

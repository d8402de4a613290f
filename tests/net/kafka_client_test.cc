// The Kafka client without a real broker: record iteration over record_batch_builder output
// (offsets, keys, values, timestamps, cut and empty batches, compressed ones refused), request
// framing, host:port parsing, and the client against an in-process fake broker that checks
// pipelining, correlation ids and the metadata refresh + retry after NOT_LEADER_OR_FOLLOWER.
#include "keel/net/kafka/client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <string>
#include <vector>

#include "keel/net/kafka/errors.h"
#include "keel/net/kafka/record_batch.h"

namespace keel::net::kafka {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using bytes = std::vector<std::byte>;

bytes batch_of(std::vector<record> records, int64_t base_offset) {
  record_batch_builder b;
  for (auto& r : records)
    b.add(std::move(r));
  auto out = b.build();
  stamp(out, base_offset, 7);
  return out;
}

record rec(std::optional<std::string> key, std::optional<std::string> value, int64_t ts) {
  record r;
  r.key = std::move(key);
  r.value = std::move(value);
  r.timestamp = ts;
  return r;
}

struct seen {
  int64_t offset;
  int64_t timestamp;
  std::optional<std::string> key, value;
};

std::vector<seen> read_all(record_reader& r) {
  std::vector<seen> out;
  record_view v;
  while (r.next(v))
    out.push_back({v.offset, v.timestamp,
                   v.key ? std::optional<std::string>(v.key_string()) : std::nullopt,
                   v.value ? std::optional<std::string>(v.value_string()) : std::nullopt});
  return out;
}

bytes two_batches() {
  auto a = batch_of(
      {rec("k0", "v0", 1000), rec(std::nullopt, "v1", 1005), rec("k2", std::nullopt, 1002)}, 10);
  auto b = batch_of({rec("k3", "v3", 2000), rec("k4", std::string(3000, 'z'), 2001)}, 13);
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(KafkaRecordReader, WalksRecordsOfSeveralBatches) {
  const auto data = two_batches();
  record_reader r(data, 10);
  const auto got = read_all(r);
  ASSERT_TRUE(r.ok()) << r.failure();
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i].offset, 10 + static_cast<int64_t>(i));
  EXPECT_EQ(got[0].key, "k0");
  EXPECT_EQ(got[0].value, "v0");
  EXPECT_EQ(got[0].timestamp, 1000);
  EXPECT_EQ(got[1].key, std::nullopt);
  EXPECT_EQ(got[1].timestamp, 1005);
  EXPECT_EQ(got[2].value, std::nullopt);
  EXPECT_EQ(got[4].value, std::string(3000, 'z'));
  EXPECT_EQ(got[4].timestamp, 2001);
  EXPECT_EQ(r.next_offset(), 15);
  EXPECT_EQ(r.batches_seen(), 2u);
}

TEST(KafkaRecordReader, SkipsRecordsBeforeTheStartOffset) {
  const auto data = two_batches();
  record_reader r(data, 12);
  const auto got = read_all(r);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].offset, 12);
  EXPECT_EQ(r.next_offset(), 15);
}

TEST(KafkaRecordReader, ACutLastBatchEndsTheWalkQuietly) {
  const auto data = two_batches();
  const auto first = parse_header(data);
  ASSERT_TRUE(first);
  for (size_t cut : {size_t{0}, size_t{5}, size_t{61}, size_t{100}}) {
    std::span<const std::byte> view(data.data(), static_cast<size_t>(first->size()) + cut);
    record_reader r(view, 10);
    const auto got = read_all(r);
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(got.size(), 3u) << cut;
    EXPECT_EQ(r.next_offset(), 13) << cut;
  }
}

TEST(KafkaRecordReader, EmptyBatchesAdvanceThePosition) {
  auto data = batch_of({rec("k", "v", 1)}, 0);
  std::array<std::byte, batch_header_size> empty{};
  write_empty_batch(empty, 1, 4, 2, 5);
  data.insert(data.end(), empty.begin(), empty.end());
  record_reader r(data, 0);
  const auto got = read_all(r);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(r.next_offset(), 5);
}

TEST(KafkaRecordReader, RefusesCompressedBatches) {
  record_batch_builder b;
  b.add(rec("k", "v", 1)).set_attributes(1);  // gzip flag on uncompressed bytes
  const auto data = b.build();
  record_reader r(data, 0);
  record_view v;
  EXPECT_FALSE(r.next(v));
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.failure().find("compressed"), std::string::npos);
}

TEST(KafkaRecordReader, MalformedRecordFails) {
  auto data = batch_of({rec("key", "value", 1)}, 0);
  data[batch_header_size] = std::byte{0x7f};  // record length far past the end
  record_reader r(data, 0);
  record_view v;
  EXPECT_FALSE(r.next(v));
  EXPECT_FALSE(r.ok());
}

TEST(KafkaClientFraming, ProduceRequestFramesWithoutCopyingTheBatch) {
  const auto batch = batch_of({rec("k", "v", 1)}, 0);
  produce_request rq;
  rq.acks = -1;
  rq.timeout_ms = 1000;
  produce_request::partition_produce_data pd;
  pd.index = 3;
  pd.records.pieces.push_back(batch);
  rq.topic_data.push_back({"orders", {pd}});
  for (int16_t version : {int16_t{7}, int16_t{9}}) {
    writer w;
    write_request(w, rq, version, 42, "test-client");
    bool external = false;
    for (const auto& p : w.pieces())
      external = external || p.data == batch.data();
    EXPECT_TRUE(external) << "the batch is sent from the caller's buffer";
    const auto flat = w.flatten();
    reader in(flat);
    EXPECT_EQ(in.get_int32(), static_cast<int32_t>(flat.size() - 4));
    request_header h;
    ASSERT_TRUE(h.decode(in, request_header_version(produce_request::api_key, version)));
    EXPECT_EQ(h.request_api_key, 0);
    EXPECT_EQ(h.request_api_version, version);
    EXPECT_EQ(h.correlation_id, 42);
    EXPECT_EQ(h.client_id, "test-client");
    produce_request back;
    ASSERT_TRUE(back.decode(in, version));
    EXPECT_TRUE(in.at_end());
    EXPECT_EQ(back, rq);
  }
}

TEST(KafkaClientFraming, SplitsHostPort) {
  EXPECT_EQ(split_host_port("127.0.0.1:9092"),
            (std::pair<std::string, uint16_t>{"127.0.0.1", 9092}));
  EXPECT_EQ(split_host_port("::1:9092"), (std::pair<std::string, uint16_t>{"::1", 9092}));
  EXPECT_FALSE(split_host_port("localhost"));
  EXPECT_FALSE(split_host_port(":9092"));
  EXPECT_FALSE(split_host_port("h:"));
  EXPECT_FALSE(split_host_port("h:70000"));
  EXPECT_FALSE(split_host_port("h:9x"));
}

// A fake broker on one connection at a time: ApiVersions, Metadata (one topic "t", one partition
// led by broker 1 = itself) and Produce (NOT_LEADER_OR_FOLLOWER for the first `refuse` batches,
// then base offsets 0, n, 2n, ...). It reads every request already buffered before answering any,
// and records the most requests it saw outstanding at once.
struct fake_broker {
  asio::io_context& io;
  tcp::acceptor acceptor;
  int refuse = 1;
  int metadata_requests = 0;
  int produce_requests = 0;
  size_t most_outstanding = 0;
  int64_t next_offset = 0;

  explicit fake_broker(asio::io_context& io)
      : io(io), acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
  uint16_t port() const { return acceptor.local_endpoint().port(); }

  asio::awaitable<void> serve() {
    for (;;) {
      auto sock = co_await acceptor.async_accept(asio::use_awaitable);
      asio::co_spawn(io, session(std::move(sock)), asio::detached);
    }
  }

  asio::awaitable<void> session(tcp::socket sock) {
    std::vector<std::byte> in;
    std::vector<std::byte> buf(1 << 16);
    for (;;) {
      const size_t n = co_await sock.async_read_some(asio::buffer(buf), asio::use_awaitable);
      in.insert(in.end(), buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n));
      std::vector<std::vector<std::byte>> frames;
      size_t at = 0;
      while (in.size() - at >= 4) {
        reader sz(std::span<const std::byte>(in).subspan(at, 4));
        const auto size = static_cast<size_t>(sz.get_int32());
        if (in.size() - at - 4 < size) break;
        frames.emplace_back(in.begin() + static_cast<ptrdiff_t>(at + 4),
                            in.begin() + static_cast<ptrdiff_t>(at + 4 + size));
        at += 4 + size;
      }
      in.erase(in.begin(), in.begin() + static_cast<ptrdiff_t>(at));
      most_outstanding = std::max(most_outstanding, frames.size());
      writer out;
      for (const auto& f : frames)
        answer(f, out);
      const auto flat = out.flatten();
      co_await asio::async_write(sock, asio::buffer(flat), asio::use_awaitable);
    }
  }

  template <class Response>
  void respond(writer& out, int32_t correlation, int16_t key, int16_t version, const Response& r) {
    const size_t start = out.size();
    out.put_int32(0);
    response_header h;
    h.correlation_id = correlation;
    h.encode(out, response_header_version(key, version));
    r.encode(out, version);
    out.patch_int32(start, static_cast<int32_t>(out.size() - start - 4));
  }

  void answer(const std::vector<std::byte>& frame, writer& out) {
    reader peek(frame);
    const int16_t key = peek.get_int16();
    const int16_t version = peek.get_int16();
    reader in(frame);
    request_header h;
    ASSERT_TRUE(h.decode(in, request_header_version(key, version)));
    if (key == api_versions_request::api_key) {
      api_versions_response r;
      r.api_keys = {{0, 0, 9}, {1, 4, 12}, {2, 1, 7}, {3, 0, 12}, {18, 0, 4}, {19, 2, 7}};
      respond(out, h.correlation_id, key, version, r);  // header v0 at every version
    } else if (key == metadata_request::api_key) {
      ++metadata_requests;
      metadata_response r;
      r.brokers.push_back({1, "127.0.0.1", port(), std::nullopt});
      r.controller_id = 1;
      metadata_response::metadata_response_topic t;
      t.name = "t";
      metadata_response::metadata_response_partition p;
      p.leader_id = 1;
      p.replica_nodes = p.isr_nodes = {1};
      t.partitions.push_back(p);
      r.topics.push_back(t);
      respond(out, h.correlation_id, key, version, r);
    } else if (key == produce_request::api_key) {
      ++produce_requests;
      produce_request rq;
      ASSERT_TRUE(rq.decode(in, version));
      const auto batch = rq.topic_data.at(0).partition_data.at(0).records.flatten();
      const auto v = validate_batch(batch, batch_limits{});
      ASSERT_TRUE(v.ok()) << v.reason;
      produce_response r;
      produce_response::topic_produce_response t;
      t.name = "t";
      produce_response::partition_produce_response p;
      if (refuse > 0) {
        --refuse;
        p.error_code = error_code::not_leader_or_follower;
      } else {
        p.base_offset = next_offset;
        next_offset += v.header.records_count;
      }
      t.partition_responses.push_back(p);
      r.responses.push_back(t);
      respond(out, h.correlation_id, key, version, r);
    } else {
      FAIL() << "unexpected api key " << key;
    }
  }
};

TEST(KafkaClientFakeBroker, PipelinesAndRetriesAfterNotLeader) {
  asio::io_context io;
  fake_broker broker(io);
  asio::co_spawn(io, broker.serve(), asio::detached);
  client_config config;
  config.bootstrap = {"127.0.0.1:" + std::to_string(broker.port())};
  config.retry_backoff = std::chrono::milliseconds(1);
  client c(io, config);
  const auto batch = batch_of({rec("k", "v", 1), rec("k", "v", 2)}, 0);
  constexpr int calls = 40;
  std::vector<int64_t> offsets;
  int failures = 0;
  int done = 0;  // outlives the coroutine that spawns the calls
  bool connected = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const auto e = co_await c.connect();
        connected = e.ok();
        EXPECT_TRUE(e.ok()) << e.message;
        EXPECT_EQ(c.partition_count("t"), 1);
        for (int i = 0; i < calls; ++i)
          asio::co_spawn(
              io,
              [&]() -> asio::awaitable<void> {
                auto r = co_await c.produce("t", 0, batch, -1);
                if (r.err)
                  ++failures;
                else
                  offsets.push_back(r.base_offset);
                if (++done == calls) {
                  c.close();
                  io.stop();
                }
              },
              asio::detached);
      },
      asio::detached);
  io.run_for(std::chrono::seconds(20));
  ASSERT_TRUE(connected);
  EXPECT_EQ(failures, 0);
  ASSERT_EQ(offsets.size(), static_cast<size_t>(calls));
  std::sort(offsets.begin(), offsets.end());
  for (int i = 0; i < calls; ++i)
    EXPECT_EQ(offsets[static_cast<size_t>(i)], 2 * i);
  EXPECT_EQ(broker.produce_requests, calls + 1);  // one refused, then retried
  EXPECT_GE(broker.metadata_requests, 2);         // bootstrap + the refresh after the refusal
  EXPECT_GT(broker.most_outstanding, 1u) << "requests were pipelined";
}

TEST(KafkaClientFakeBroker, UnreachableBootstrapIsAnErrorValue) {
  asio::io_context io;
  tcp::acceptor probe(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = probe.local_endpoint().port();
  probe.close();  // nothing listens there now
  client_config config;
  config.bootstrap = {"127.0.0.1:" + std::to_string(port), "not-a-host-port"};
  client c(io, config);
  error got;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { got = co_await c.connect(); }, asio::detached);
  io.run_for(std::chrono::seconds(10));
  EXPECT_FALSE(got.ok());
  EXPECT_EQ(got.code, client_error::bad_argument) << got.message;
}

}  // namespace
}  // namespace keel::net::kafka

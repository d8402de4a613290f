#include "keel/net/admin.h"

#include "keel/net/wire.h"

namespace keel::net {
namespace {

constexpr size_t name_max = 249;
constexpr size_t host_max = 255;
constexpr size_t payload_max = 64u << 20;

template <class T, class F>
std::optional<T> finish(wire_reader& r, T value, F&&) {
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return value;
}

}  // namespace

const char* to_string(admin_error e) {
  switch (e) {
    case admin_error::none:
      return "none";
    case admin_error::not_leader:
      return "not_leader";
    case admin_error::unknown_topic:
      return "unknown_topic";
    case admin_error::invalid_request:
      return "invalid_request";
    case admin_error::topic_exists:
      return "topic_exists";
    case admin_error::not_controller:
      return "not_controller";
    case admin_error::timed_out:
      return "timed_out";
    case admin_error::storage_error:
      return "storage_error";
    case admin_error::offset_out_of_range:
      return "offset_out_of_range";
    case admin_error::not_enough_brokers:
      return "not_enough_brokers";
    case admin_error::busy:
      return "busy";
  }
  return "unknown";
}

std::vector<std::byte> encode(uint64_t correlation) {
  std::vector<std::byte> out;
  wire_writer(out).put<uint64_t>(correlation);
  return out;
}

std::optional<uint64_t> decode_correlation(std::span<const std::byte> bytes) {
  wire_reader r(bytes);
  const auto c = r.get<uint64_t>();
  if (!r.ok()) return std::nullopt;
  return c;
}

std::vector<std::byte> encode(const describe_cluster_response& m) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(m.correlation);
  w.put<int32_t>(m.controller);
  w.put<uint32_t>(static_cast<uint32_t>(m.brokers.size()));
  for (const auto& b : m.brokers) {
    w.put<int32_t>(b.id);
    w.put_string(b.kafka_host);
    w.put<uint16_t>(b.kafka_port);
    w.put_string(b.rpc_host);
    w.put<uint16_t>(b.rpc_port);
    w.put<uint8_t>(b.alive);
  }
  w.put<uint32_t>(static_cast<uint32_t>(m.topics.size()));
  for (const auto& t : m.topics) {
    w.put_string(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(t.partitions.size()));
    for (const auto& p : t.partitions) {
      w.put<int32_t>(p.partition);
      w.put<uint64_t>(p.group);
      w.put<uint32_t>(static_cast<uint32_t>(p.replicas.size()));
      for (int32_t r : p.replicas)
        w.put<int32_t>(r);
      w.put<int32_t>(p.leader);
      w.put<int64_t>(p.leader_term);
      w.put<int64_t>(p.high_watermark);
    }
  }
  return out;
}

std::optional<describe_cluster_response> decode_describe_cluster_response(
    std::span<const std::byte> b) {
  wire_reader r(b);
  describe_cluster_response m;
  m.correlation = r.get<uint64_t>();
  m.controller = r.get<int32_t>();
  m.brokers.resize(r.get_count(17));
  for (auto& x : m.brokers) {
    x.id = r.get<int32_t>();
    x.kafka_host = r.get_string(host_max);
    x.kafka_port = r.get<uint16_t>();
    x.rpc_host = r.get_string(host_max);
    x.rpc_port = r.get<uint16_t>();
    x.alive = r.get<uint8_t>() != 0;
  }
  m.topics.resize(r.get_count(8));
  for (auto& t : m.topics) {
    t.name = r.get_string(name_max);
    t.partitions.resize(r.get_count(36));
    for (auto& p : t.partitions) {
      p.partition = r.get<int32_t>();
      p.group = r.get<uint64_t>();
      p.replicas.resize(r.get_count(4));
      for (auto& x : p.replicas)
        x = r.get<int32_t>();
      p.leader = r.get<int32_t>();
      p.leader_term = r.get<int64_t>();
      p.high_watermark = r.get<int64_t>();
    }
  }
  return finish(r, std::move(m), 0);
}

std::vector<std::byte> encode(const create_topic_request& m) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(m.correlation);
  w.put_string(m.name);
  w.put<int32_t>(m.partitions);
  w.put<int16_t>(m.replication_factor);
  return out;
}

std::optional<create_topic_request> decode_create_topic_request(std::span<const std::byte> b) {
  wire_reader r(b);
  create_topic_request m;
  m.correlation = r.get<uint64_t>();
  m.name = r.get_string(name_max);
  m.partitions = r.get<int32_t>();
  m.replication_factor = r.get<int16_t>();
  return finish(r, std::move(m), 0);
}

std::vector<std::byte> encode_delete_topic(uint64_t correlation, const std::string& name) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(correlation);
  w.put_string(name);
  return out;
}

std::optional<std::pair<uint64_t, std::string>> decode_delete_topic_request(
    std::span<const std::byte> b) {
  wire_reader r(b);
  const auto c = r.get<uint64_t>();
  auto name = r.get_string(name_max);
  return finish(r, std::make_pair(c, std::move(name)), 0);
}

std::vector<std::byte> encode(const topic_response& m) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(m.correlation);
  w.put<int16_t>(static_cast<int16_t>(m.error));
  w.put_string(m.message);
  return out;
}

std::optional<topic_response> decode_topic_response(std::span<const std::byte> b) {
  wire_reader r(b);
  topic_response m;
  m.correlation = r.get<uint64_t>();
  m.error = static_cast<admin_error>(r.get<int16_t>());
  m.message = r.get_string(1 << 16);
  return finish(r, std::move(m), 0);
}

std::vector<std::byte> encode(const produce_request& m) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(m.correlation);
  w.put_string(m.topic);
  w.put<int32_t>(m.partition);
  w.put<int16_t>(m.acks);
  w.put<uint32_t>(m.offset_count);
  w.put_bytes(m.payload);
  return out;
}

std::optional<produce_request> decode_produce_request(std::span<const std::byte> b) {
  wire_reader r(b);
  produce_request m;
  m.correlation = r.get<uint64_t>();
  m.topic = r.get_string(name_max);
  m.partition = r.get<int32_t>();
  m.acks = r.get<int16_t>();
  m.offset_count = r.get<uint32_t>();
  auto p = r.get_bytes(payload_max);
  m.payload.assign(p.begin(), p.end());
  if (m.offset_count == 0 || (m.acks != -1 && m.acks != 0 && m.acks != 1)) r.fail();
  return finish(r, std::move(m), 0);
}

std::vector<std::byte> encode(const produce_response& m) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(m.correlation);
  w.put<int16_t>(static_cast<int16_t>(m.error));
  w.put<int32_t>(m.leader_hint);
  w.put<int64_t>(m.base_offset);
  return out;
}

std::optional<produce_response> decode_produce_response(std::span<const std::byte> b) {
  wire_reader r(b);
  produce_response m;
  m.correlation = r.get<uint64_t>();
  m.error = static_cast<admin_error>(r.get<int16_t>());
  m.leader_hint = r.get<int32_t>();
  m.base_offset = r.get<int64_t>();
  return finish(r, std::move(m), 0);
}

std::vector<std::byte> encode(const fetch_request& m) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(m.correlation);
  w.put_string(m.topic);
  w.put<int32_t>(m.partition);
  w.put<int64_t>(m.offset);
  w.put<uint32_t>(m.max_bytes);
  return out;
}

std::optional<fetch_request> decode_fetch_request(std::span<const std::byte> b) {
  wire_reader r(b);
  fetch_request m;
  m.correlation = r.get<uint64_t>();
  m.topic = r.get_string(name_max);
  m.partition = r.get<int32_t>();
  m.offset = r.get<int64_t>();
  m.max_bytes = r.get<uint32_t>();
  return finish(r, std::move(m), 0);
}

std::vector<std::byte> encode(const fetch_response& m) {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint64_t>(m.correlation);
  w.put<int16_t>(static_cast<int16_t>(m.error));
  w.put<int32_t>(m.leader_hint);
  w.put<int64_t>(m.high_watermark);
  w.put<int64_t>(m.log_start);
  w.put<uint32_t>(static_cast<uint32_t>(m.batches.size()));
  for (const auto& x : m.batches) {
    w.put<int64_t>(x.base_offset);
    w.put<int64_t>(x.last_offset);
    w.put<int64_t>(x.term);
    w.put<uint8_t>(x.type);
    w.put_bytes(x.payload);
  }
  return out;
}

std::optional<fetch_response> decode_fetch_response(std::span<const std::byte> b) {
  wire_reader r(b);
  fetch_response m;
  m.correlation = r.get<uint64_t>();
  m.error = static_cast<admin_error>(r.get<int16_t>());
  m.leader_hint = r.get<int32_t>();
  m.high_watermark = r.get<int64_t>();
  m.log_start = r.get<int64_t>();
  m.batches.resize(r.get_count(29));
  for (auto& x : m.batches) {
    x.base_offset = r.get<int64_t>();
    x.last_offset = r.get<int64_t>();
    x.term = r.get<int64_t>();
    x.type = r.get<uint8_t>();
    auto p = r.get_bytes(payload_max);
    x.payload.assign(p.begin(), p.end());
  }
  return finish(r, std::move(m), 0);
}

}  // namespace keel::net

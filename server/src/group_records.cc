#include "keel/server/group_records.h"

#include "keel/net/kafka/protocol.h"

namespace keel::server {

namespace kafka = net::kafka;

namespace {

std::string to_string(const kafka::writer& w) {
  auto bytes = w.flatten();
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

kafka::writer key_writer(group_record_kind kind, const std::string& group) {
  kafka::writer w;
  w.put_int16(static_cast<int16_t>(kind));
  w.put_string(group, false);
  return w;
}

std::vector<std::byte> get_bytes(kafka::reader& r) {
  return r.get_bytes(false);
}

}  // namespace

std::string encode_offset_key(const std::string& group, const topic_partition_key& tp) {
  auto w = key_writer(group_record_kind::offset, group);
  w.put_string(tp.topic, false);
  w.put_int32(tp.partition);
  return to_string(w);
}

std::string encode_offset_value(const committed_offset& o) {
  kafka::writer w;
  w.put_int16(0);
  w.put_int64(o.offset);
  w.put_int32(o.leader_epoch);
  w.put_nullable_string(o.metadata, false);
  w.put_int64(o.commit_time_ms);
  return to_string(w);
}

std::string encode_group_key(const std::string& group) {
  return to_string(key_writer(group_record_kind::group, group));
}

std::string encode_group_value(const stored_group& g) {
  kafka::writer w;
  w.put_int16(0);
  w.put_string(g.protocol_type, false);
  w.put_int32(g.generation);
  w.put_nullable_string(g.protocol, false);
  w.put_string(g.leader, false);
  w.put_int64(g.state_time_ms);
  w.put_int32(static_cast<int32_t>(g.members.size()));
  for (const stored_member& m : g.members) {
    w.put_string(m.id, false);
    w.put_nullable_string(m.instance_id, false);
    w.put_string(m.client_id, false);
    w.put_string(m.client_host, false);
    w.put_int32(m.session_timeout_ms);
    w.put_int32(m.rebalance_timeout_ms);
    w.put_bytes(m.subscription, false);
    w.put_bytes(m.assignment, false);
  }
  return to_string(w);
}

std::string encode_checkpoint_key(group_record_kind kind) {
  return to_string(key_writer(kind, ""));
}

std::string encode_checkpoint_end_value(int64_t begin) {
  kafka::writer w;
  w.put_int16(0);
  w.put_int64(begin);
  return to_string(w);
}

std::optional<group_record> decode_group_record(std::optional<std::span<const std::byte>> key,
                                                std::optional<std::span<const std::byte>> value) {
  if (!key) return std::nullopt;
  kafka::reader k(*key);
  group_record out;
  const int16_t kind = k.get_int16();
  if (kind < 0 || kind > static_cast<int16_t>(group_record_kind::checkpoint_end))
    return std::nullopt;
  out.kind = static_cast<group_record_kind>(kind);
  out.group = k.get_string(false);
  if (out.kind == group_record_kind::offset) {
    out.partition.topic = k.get_string(false);
    out.partition.partition = k.get_int32();
  }
  if (!k.ok() || !k.at_end()) return std::nullopt;
  if (!value) return out;  // a tombstone
  kafka::reader v(*value);
  if (v.get_int16() != 0) return std::nullopt;
  switch (out.kind) {
    case group_record_kind::offset: {
      committed_offset o;
      o.offset = v.get_int64();
      o.leader_epoch = v.get_int32();
      o.metadata = v.get_nullable_string(false);
      o.commit_time_ms = v.get_int64();
      out.offset = std::move(o);
      break;
    }
    case group_record_kind::group: {
      stored_group g;
      g.protocol_type = v.get_string(false);
      g.generation = v.get_int32();
      g.protocol = v.get_nullable_string(false);
      g.leader = v.get_string(false);
      g.state_time_ms = v.get_int64();
      const int32_t n = v.get_int32();
      if (n < 0 || static_cast<size_t>(n) > v.remaining()) return std::nullopt;
      for (int32_t i = 0; i < n && v.ok(); ++i) {
        stored_member m;
        m.id = v.get_string(false);
        m.instance_id = v.get_nullable_string(false);
        m.client_id = v.get_string(false);
        m.client_host = v.get_string(false);
        m.session_timeout_ms = v.get_int32();
        m.rebalance_timeout_ms = v.get_int32();
        m.subscription = get_bytes(v);
        m.assignment = get_bytes(v);
        g.members.push_back(std::move(m));
      }
      out.group_value = std::move(g);
      break;
    }
    case group_record_kind::checkpoint_begin:
      break;
    case group_record_kind::checkpoint_end:
      out.checkpoint_begin = v.get_int64();
      break;
  }
  if (!v.ok() || !v.at_end()) return std::nullopt;
  return out;
}

}  // namespace keel::server

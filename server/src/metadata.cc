#include "keel/server/metadata.h"

#include <algorithm>
#include <set>

#include "keel/engine/assert.h"
#include "keel/net/wire.h"

namespace keel::server {
namespace {

using net::wire_reader;
using net::wire_writer;

constexpr size_t name_max = 249;
constexpr size_t host_max = 255;
constexpr size_t config_max = 1 << 16;
// Version 3 added the metadata barriers, version 2 each broker's fenced flag; versions 1 and 2
// are still read.
constexpr uint32_t snapshot_version = 3;
constexpr uint32_t snapshot_version_unfenced = 1;

void put_broker(wire_writer& w, const broker_info& b) {
  w.put<int32_t>(b.id);
  w.put_string(b.kafka.host);
  w.put<uint16_t>(b.kafka.port);
  w.put_string(b.rpc.host);
  w.put<uint16_t>(b.rpc.port);
  w.put<uint32_t>(b.shards);
}

broker_info get_broker(wire_reader& r) {
  broker_info b;
  b.id = r.get<int32_t>();
  b.kafka.host = r.get_string(host_max);
  b.kafka.port = r.get<uint16_t>();
  b.rpc.host = r.get_string(host_max);
  b.rpc.port = r.get<uint16_t>();
  b.shards = r.get<uint32_t>();
  if (b.shards == 0 || b.shards > 1024 || b.id < 0) r.fail();
  return b;
}

void put_partitions(wire_writer& w, const std::vector<std::vector<replica>>& parts) {
  w.put<uint32_t>(static_cast<uint32_t>(parts.size()));
  for (const auto& reps : parts) {
    w.put<uint32_t>(static_cast<uint32_t>(reps.size()));
    for (const replica& rp : reps) {
      w.put<int32_t>(rp.broker);
      w.put<uint32_t>(rp.shard);
    }
  }
}

std::vector<std::vector<replica>> get_partitions(wire_reader& r) {
  std::vector<std::vector<replica>> parts(r.get_count(4));
  for (auto& reps : parts) {
    reps.resize(r.get_count(8));
    for (replica& rp : reps) {
      rp.broker = r.get<int32_t>();
      rp.shard = r.get<uint32_t>();
    }
    if (reps.empty()) r.fail();
  }
  return parts;
}

void put_topic(wire_writer& w, const topic_info& t) {
  w.put_string(t.name);
  for (uint8_t b : t.id)
    w.put<uint8_t>(b);
  w.put<int16_t>(t.replication_factor);
  w.put<uint32_t>(static_cast<uint32_t>(t.configs.size()));
  for (const auto& [k, v] : t.configs) {
    w.put_string(k);
    w.put_string(v);
  }
  put_partitions(w, t.partitions);
}

topic_info get_topic(wire_reader& r) {
  topic_info t;
  t.name = r.get_string(name_max);
  for (auto& b : t.id)
    b = r.get<uint8_t>();
  t.replication_factor = r.get<int16_t>();
  const uint32_t configs = r.get_count(8);
  for (uint32_t i = 0; i < configs && r.ok(); ++i) {
    std::string k = r.get_string(config_max);
    t.configs[k] = r.get_string(config_max);
  }
  t.partitions = get_partitions(r);
  return t;
}

std::vector<std::byte> with_type(command_type type) {
  std::vector<std::byte> out;
  wire_writer(out).put<uint8_t>(static_cast<uint8_t>(type));
  return out;
}

apply_result rejected(std::string why) {
  return apply_result{false, std::move(why), {}};
}

}  // namespace

bool valid_topic_name(const std::string& name) {
  if (name.empty() || name.size() > name_max || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::vector<std::byte> encode_register_broker(const broker_info& b) {
  auto out = with_type(command_type::register_broker);
  wire_writer w(out);
  put_broker(w, b);
  return out;
}

std::vector<std::byte> encode_create_topic(const topic_info& t) {
  auto out = with_type(command_type::create_topic);
  wire_writer w(out);
  put_topic(w, t);
  return out;
}

std::vector<std::byte> encode_delete_topic(const std::string& name) {
  auto out = with_type(command_type::delete_topic);
  wire_writer(out).put_string(name);
  return out;
}

std::vector<std::byte> encode_create_partitions(const std::string& name,
                                                const std::vector<std::vector<replica>>& added) {
  auto out = with_type(command_type::create_partitions);
  wire_writer w(out);
  w.put_string(name);
  put_partitions(w, added);
  return out;
}

std::vector<std::byte> encode_set_topic_config(const std::string& name, const std::string& key,
                                               const std::string& value) {
  auto out = with_type(command_type::set_topic_config);
  wire_writer w(out);
  w.put_string(name);
  w.put_string(key);
  w.put_string(value);
  return out;
}

std::vector<std::byte> encode_allocate_producer_ids(int32_t broker, int64_t block_size) {
  auto out = with_type(command_type::allocate_producer_ids);
  wire_writer w(out);
  w.put<int32_t>(broker);
  w.put<int64_t>(block_size);
  return out;
}

std::vector<std::byte> encode_fence_broker(int32_t id) {
  auto out = with_type(command_type::fence_broker);
  wire_writer(out).put<int32_t>(id);
  return out;
}

std::vector<std::byte> encode_unfence_broker(int32_t id) {
  auto out = with_type(command_type::unfence_broker);
  wire_writer(out).put<int32_t>(id);
  return out;
}

std::vector<std::byte> encode_metadata_barrier(int32_t id, uint64_t nonce) {
  KEEL_ASSERT(nonce != 0, "a barrier's nonce is never 0 (0 means none)");
  auto out = with_type(command_type::metadata_barrier);
  wire_writer w(out);
  w.put<int32_t>(id);
  w.put<uint64_t>(nonce);
  return out;
}

uint64_t metadata_state::barrier_of(int32_t id) const {
  auto it = barriers_.find(id);
  return it == barriers_.end() ? 0 : it->second;
}

bool metadata_state::broker_unfenced(int32_t id) const {
  auto it = brokers_.find(id);
  return it != brokers_.end() && !it->second.fenced;
}

std::vector<int32_t> metadata_state::unfenced_brokers() const {
  std::vector<int32_t> out;
  for (const auto& [id, b] : brokers_)
    if (!b.fenced) out.push_back(id);
  return out;
}

const topic_info* metadata_state::topic(const std::string& name) const {
  auto it = topics_.find(name);
  return it == topics_.end() ? nullptr : &it->second;
}

apply_result metadata_state::apply(std::span<const std::byte> command) {
  wire_reader r(command);
  const auto type = static_cast<command_type>(r.get<uint8_t>());
  auto replicas_known = [&](const std::vector<std::vector<replica>>& parts) -> std::string {
    for (const auto& reps : parts) {
      for (size_t i = 0; i < reps.size(); ++i) {
        auto b = brokers_.find(reps[i].broker);
        if (b == brokers_.end()) return "unknown broker " + std::to_string(reps[i].broker);
        if (reps[i].shard >= b->second.shards) return "shard out of range";
        for (size_t j = 0; j < i; ++j)
          if (reps[j].broker == reps[i].broker) return "a broker holds two replicas";
      }
    }
    return {};
  };
  switch (type) {
    case command_type::register_broker: {
      broker_info b = get_broker(r);
      if (!r.ok() || !r.at_end()) return rejected("malformed register_broker");
      // A re-registration updates addresses and shards but keeps the liveness flag: a fenced
      // broker is unfenced by the controller once it heartbeats, not by registering.
      if (auto it = brokers_.find(b.id); it != brokers_.end()) b.fenced = it->second.fenced;
      KEEL_ASSERT(b.id >= 0, "get_broker refuses negative ids");
      brokers_[b.id] = std::move(b);
      return {};
    }
    case command_type::fence_broker:
    case command_type::unfence_broker: {
      const int32_t id = r.get<int32_t>();
      if (!r.ok() || !r.at_end()) return rejected("malformed broker fencing command");
      auto it = brokers_.find(id);
      if (it == brokers_.end()) return rejected("unknown broker " + std::to_string(id));
      // Idempotent: a second fence (two proposals racing a leader change) changes nothing.
      it->second.fenced = type == command_type::fence_broker;
      return {};
    }
    case command_type::metadata_barrier: {
      const int32_t id = r.get<int32_t>();
      const uint64_t nonce = r.get<uint64_t>();
      if (!r.ok() || !r.at_end() || id < 0 || nonce == 0)
        return rejected("malformed metadata_barrier");
      // Any broker id: a broker that is not registered yet may need its metadata caught up too.
      barriers_[id] = nonce;
      return {};
    }
    case command_type::create_topic: {
      topic_info t = get_topic(r);
      if (!r.ok() || !r.at_end()) return rejected("malformed create_topic");
      if (!valid_topic_name(t.name)) return rejected("invalid topic name");
      if (topics_.count(t.name)) return rejected("topic " + t.name + " already exists");
      if (t.partitions.empty() || t.replication_factor < 1) return rejected("no partitions");
      for (const auto& reps : t.partitions)
        if (reps.size() != static_cast<size_t>(t.replication_factor))
          return rejected("a partition's replicas differ from the replication factor");
      if (auto e = replicas_known(t.partitions); !e.empty()) return rejected(e);
      t.groups.clear();
      for (size_t p = 0; p < t.partitions.size(); ++p)
        t.groups.push_back(next_group_id_++);
      topics_[t.name] = std::move(t);
      return {};
    }
    case command_type::delete_topic: {
      const std::string name = r.get_string(name_max);
      if (!r.ok() || !r.at_end()) return rejected("malformed delete_topic");
      if (!topics_.erase(name)) return rejected("no topic " + name);
      return {};
    }
    case command_type::create_partitions: {
      const std::string name = r.get_string(name_max);
      auto added = get_partitions(r);
      if (!r.ok() || !r.at_end()) return rejected("malformed create_partitions");
      auto it = topics_.find(name);
      if (it == topics_.end()) return rejected("no topic " + name);
      if (added.empty()) return rejected("no partitions added");
      for (const auto& reps : added)
        if (reps.size() != static_cast<size_t>(it->second.replication_factor))
          return rejected("a partition's replicas differ from the replication factor");
      if (auto e = replicas_known(added); !e.empty()) return rejected(e);
      for (auto& reps : added) {
        it->second.partitions.push_back(std::move(reps));
        it->second.groups.push_back(next_group_id_++);
      }
      return {};
    }
    case command_type::set_topic_config: {
      const std::string name = r.get_string(name_max);
      const std::string key = r.get_string(config_max);
      const std::string value = r.get_string(config_max);
      if (!r.ok() || !r.at_end() || key.empty()) return rejected("malformed set_topic_config");
      auto it = topics_.find(name);
      if (it == topics_.end()) return rejected("no topic " + name);
      if (value.empty())
        it->second.configs.erase(key);
      else
        it->second.configs[key] = value;
      return {};
    }
    case command_type::allocate_producer_ids: {
      const int32_t broker = r.get<int32_t>();
      const int64_t size = r.get<int64_t>();
      if (!r.ok() || !r.at_end() || size <= 0 || size > (1 << 20))
        return rejected("malformed allocate_producer_ids");
      if (!brokers_.count(broker)) return rejected("unknown broker " + std::to_string(broker));
      apply_result out;
      out.allocated = producer_id_block{next_producer_id_, size};
      next_producer_id_ += size;
      return out;
    }
  }
  return rejected("unknown command type " + std::to_string(static_cast<int>(type)));
}

std::vector<std::byte> metadata_state::snapshot() const {
  std::vector<std::byte> out;
  wire_writer w(out);
  w.put<uint32_t>(snapshot_version);
  w.put<int64_t>(next_producer_id_);
  w.put<uint64_t>(next_group_id_);
  w.put<uint32_t>(static_cast<uint32_t>(brokers_.size()));
  for (const auto& [id, b] : brokers_) {
    put_broker(w, b);
    w.put<uint8_t>(b.fenced ? 1 : 0);
  }
  w.put<uint32_t>(static_cast<uint32_t>(topics_.size()));
  for (const auto& [name, t] : topics_) {
    put_topic(w, t);
    for (uint64_t g : t.groups)
      w.put<uint64_t>(g);
  }
  w.put<uint32_t>(static_cast<uint32_t>(barriers_.size()));
  for (const auto& [id, nonce] : barriers_) {
    w.put<int32_t>(id);
    w.put<uint64_t>(nonce);
  }
  return out;
}

bool metadata_state::restore(std::span<const std::byte> snapshot) {
  wire_reader r(snapshot);
  const uint32_t version = r.get<uint32_t>();
  if (version < snapshot_version_unfenced || version > snapshot_version) return false;
  const bool has_fenced = version >= 2;
  const bool has_barriers = version >= 3;
  metadata_state next;
  next.next_producer_id_ = r.get<int64_t>();
  next.next_group_id_ = r.get<uint64_t>();
  const uint32_t brokers = r.get_count(has_fenced ? 21 : 20);
  for (uint32_t i = 0; i < brokers && r.ok(); ++i) {
    broker_info b = get_broker(r);
    if (has_fenced) {
      const uint8_t fenced = r.get<uint8_t>();
      if (fenced > 1) r.fail();
      b.fenced = fenced == 1;
    }
    next.brokers_[b.id] = std::move(b);
  }
  const uint32_t topics = r.get_count(24);
  for (uint32_t i = 0; i < topics && r.ok(); ++i) {
    topic_info t = get_topic(r);
    if (t.partitions.size() * 8 > r.remaining()) r.fail();
    for (size_t p = 0; p < t.partitions.size() && r.ok(); ++p)
      t.groups.push_back(r.get<uint64_t>());
    next.topics_[t.name] = std::move(t);
  }
  const uint32_t barriers = has_barriers ? r.get_count(12) : 0;
  for (uint32_t i = 0; i < barriers && r.ok(); ++i) {
    const int32_t id = r.get<int32_t>();
    const uint64_t nonce = r.get<uint64_t>();
    if (id < 0 || nonce == 0) r.fail();
    next.barriers_[id] = nonce;
  }
  if (!r.ok() || !r.at_end()) return false;
  *this = std::move(next);
  return true;
}

int16_t metadata_state::default_replication_factor(int16_t configured) const {
  const auto registered = static_cast<int16_t>(std::min<size_t>(brokers_.size(), INT16_MAX));
  return std::max<int16_t>(1, std::min(configured, registered));
}

std::string metadata_state::check_replication_factor(int16_t replication_factor,
                                                     const std::vector<int32_t>& alive) const {
  if (replication_factor < 1)
    return "replication factor " + std::to_string(replication_factor) + " is less than 1";
  std::set<int32_t> up;
  for (int32_t b : alive)
    if (brokers_.count(b)) up.insert(b);
  if (static_cast<size_t>(replication_factor) <= up.size()) return {};
  std::string fenced;
  for (const auto& [id, b] : brokers_)
    if (!up.count(id)) fenced += (fenced.empty() ? "" : ", ") + std::to_string(id);
  return "replication factor " + std::to_string(replication_factor) + " is more than the " +
         std::to_string(up.size()) + " alive brokers (" + std::to_string(brokers_.size()) +
         " registered" + (fenced.empty() ? "" : "; fenced: " + fenced) + ")";
}

std::optional<std::vector<std::vector<replica>>> metadata_state::plan_partitions(
    int32_t partitions, int16_t replication_factor, const std::vector<int32_t>& brokers,
    std::string& error) const {
  std::vector<int32_t> candidates;
  for (int32_t b : brokers)
    if (brokers_.count(b)) candidates.push_back(b);
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  if (partitions < 1) {
    error = "the partition count must be at least 1";
    return std::nullopt;
  }
  if (auto e = check_replication_factor(replication_factor, brokers); !e.empty()) {
    error = std::move(e);
    return std::nullopt;
  }
  // Current load, so new partitions go where there is least: leaders per broker, replicas per
  // (broker, shard).
  std::map<int32_t, int64_t> leaders;
  std::map<std::pair<int32_t, uint32_t>, int64_t> per_shard;
  for (const auto& [name, t] : topics_) {
    for (const auto& reps : t.partitions) {
      ++leaders[reps.front().broker];
      for (const replica& rp : reps)
        ++per_shard[{rp.broker, rp.shard}];
    }
  }
  std::vector<std::vector<replica>> out;
  const size_t n = candidates.size();
  for (int32_t p = 0; p < partitions; ++p) {
    // The preferred leader: the broker with the fewest leaderships; followers after it in ring
    // order, so replica sets rotate too.
    size_t first = 0;
    for (size_t i = 1; i < n; ++i)
      if (leaders[candidates[i]] < leaders[candidates[first]]) first = i;
    std::vector<replica> reps;
    for (int16_t k = 0; k < replication_factor; ++k) {
      const int32_t b = candidates[(first + static_cast<size_t>(k)) % n];
      const uint32_t shards = brokers_.at(b).shards;
      uint32_t best = 0;
      for (uint32_t s = 1; s < shards; ++s)
        if (per_shard[{b, s}] < per_shard[{b, best}]) best = s;
      ++per_shard[{b, best}];
      reps.push_back({b, best});
    }
    ++leaders[reps.front().broker];
    out.push_back(std::move(reps));
  }
  return out;
}

}  // namespace keel::server

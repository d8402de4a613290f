// group_records: what the group coordinator writes into its __consumer_offsets partition. Every
// change is a Kafka record (key, value) in an ordinary uncompressed record batch, so the topic is
// readable with any Kafka client and replicated by Raft like any other partition.
//
// Key:   int16 kind, string group, then for an offset: string topic, int32 partition.
// Value: null is a tombstone (the key's state is gone). Otherwise, by kind:
//   offset:            int16 version (0), int64 offset, int32 leader epoch, nullable string
//                      metadata, int64 commit time (ms since the epoch)
//   group:             int16 version (0), string protocol type, int32 generation, nullable
//                      string protocol, string leader, int64 state time, int32 member count, then
//                      per member: string id, nullable string instance id, string client id,
//                      string client host, int32 session timeout, int32 rebalance timeout,
//                      bytes subscription, bytes assignment
//   checkpoint_begin:  int16 version (0)
//   checkpoint_end:    int16 version (0), int64 the offset of its checkpoint_begin
// Strings and bytes use Kafka's classic encodings (int16 / int32 lengths, big-endian).
//
// A checkpoint is the whole state written between a begin and an end record; once the end is
// committed, everything before the begin is superseded and the log is compacted up to it, so a
// replica rebuilds from at most one checkpoint and what followed it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace keel::server {

enum class group_record_kind : int16_t {
  offset = 0,
  group = 1,
  checkpoint_begin = 2,
  checkpoint_end = 3,
};

struct committed_offset {
  int64_t offset = -1;
  int32_t leader_epoch = -1;
  std::optional<std::string> metadata;
  int64_t commit_time_ms = 0;
  bool operator==(const committed_offset&) const = default;
};

struct stored_member {
  std::string id;
  std::optional<std::string> instance_id;
  std::string client_id;
  std::string client_host;
  int32_t session_timeout_ms = 0;
  int32_t rebalance_timeout_ms = 0;
  std::vector<std::byte> subscription;  // the metadata of the group's chosen protocol
  std::vector<std::byte> assignment;
  bool operator==(const stored_member&) const = default;
};

// A group as persisted: its membership after the last completed rebalance.
struct stored_group {
  std::string protocol_type;
  int32_t generation = 0;
  std::optional<std::string> protocol;
  std::string leader;
  int64_t state_time_ms = 0;  // when it last changed (empty groups expire from it)
  std::vector<stored_member> members;
  bool operator==(const stored_group&) const = default;
};

struct topic_partition_key {
  std::string topic;
  int32_t partition = 0;
  auto operator<=>(const topic_partition_key&) const = default;
};

// A decoded record.
struct group_record {
  group_record_kind kind = group_record_kind::offset;
  std::string group;
  topic_partition_key partition;            // offset records
  std::optional<committed_offset> offset;   // offset records; nullopt = tombstone
  std::optional<stored_group> group_value;  // group records; nullopt = tombstone
  int64_t checkpoint_begin = -1;            // checkpoint_end records
};

std::string encode_offset_key(const std::string& group, const topic_partition_key& tp);
std::string encode_offset_value(const committed_offset& o);
std::string encode_group_key(const std::string& group);
std::string encode_group_value(const stored_group& g);
std::string encode_checkpoint_key(group_record_kind kind);
std::string encode_checkpoint_end_value(int64_t begin);

// nullopt when the key or value does not parse (a record of another writer): skipped, logged.
std::optional<group_record> decode_group_record(std::optional<std::span<const std::byte>> key,
                                                std::optional<std::span<const std::byte>> value);

}  // namespace keel::server

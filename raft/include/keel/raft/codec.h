// Binary codec for Raft messages and configuration payloads.
//
// Frame layout (all integers little-endian):
//   u16 magic 0x524B ("KR") | u8 version (1) | u8 kind | u64 group | u64 from | u64 to | i64 term
//   | body (per kind, see codec.cc)
// Every count and length is bounded (limits below) and checked before anything is allocated, so
// a hostile or corrupt frame costs at most its own size. Decoding never asserts: any malformed
// input is an errc::malformed (or unsupported_version) error. Decoded messages also pass
// validate(), the structural rules the core relies on (contiguous batches, sane offsets, terms).
//
// Heartbeat frame: all heartbeats (or heartbeat responses) between two nodes, for many groups:
//   u16 magic 0x4248 ("HB") | u8 version (1) | u8 kind | u64 from | u64 to | u32 count
//   | count x (u64 group | i64 term | body)
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "keel/raft/config.h"
#include "keel/raft/message.h"
#include "keel/raft/types.h"

namespace keel::raft::codec {

inline constexpr uint8_t version = 1;
inline constexpr size_t max_batches_per_message = 16384;
inline constexpr uint64_t max_payload_bytes = 64ull << 20;
inline constexpr uint64_t max_message_bytes = 256ull << 20;
inline constexpr size_t max_members = 1024;
inline constexpr size_t max_heartbeats_per_frame = 1 << 20;

std::vector<std::byte> encode(const message& m);
// The same, appended to `out` (a transport frame built in place: no second copy).
void encode_into(std::vector<std::byte>& out, const message& m);
result<message> decode(std::span<const std::byte> bytes);

// Structural rules of a message (independent of any node's state).
status validate(const message& m);

shared_bytes encode_membership(const membership& config);
result<membership> decode_membership(std::span<const std::byte> bytes);

// Heartbeats (or heartbeat responses, not mixed) from one node to another, any groups.
// Invariant: every message has the same from/to and a heartbeat body of the same kind.
std::vector<std::byte> encode_heartbeat_frame(const std::vector<message>& heartbeats);
result<std::vector<message>> decode_heartbeat_frame(std::span<const std::byte> bytes);

}  // namespace keel::raft::codec

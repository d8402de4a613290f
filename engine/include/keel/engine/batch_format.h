// The stored batch: the unit the engine appends, indexes and reads.
//
// On-disk layout of one stored batch, little-endian, no padding (56-byte header, then payload):
//
//   offset size field
//        0    4 magic           0x4C45454B ("KEEL" read as bytes K E E L)
//        4    1 version         1
//        5    1 type            opaque to the engine (Kafka data, Raft config, no-op, ...)
//        6    2 flags           reserved, 0
//        8    4 payload_length  bytes of payload that follow the header
//       12    4 reserved        0
//       16    8 base_offset     first offset the batch spans
//       24    8 last_offset     last offset the batch spans (>= base_offset)
//       32    8 term            the Raft term that wrote the batch (>= 0)
//       40    8 max_timestamp   largest record timestamp in ms, or -1 for none
//       48    8 checksum        XXH3-64 of bytes [0, 48) followed by the payload
//       56    n payload
//
// A batch is valid when its magic and version match, the lengths fit, base <= last and the
// checksum matches. Recovery additionally requires offsets to follow on from the previous batch
// and terms never to decrease.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "keel/engine/assert.h"
#include "keel/engine/types.h"

namespace keel::engine {

inline constexpr uint32_t batch_magic = 0x4C45454B;
inline constexpr uint8_t batch_version = 1;
inline constexpr size_t batch_header_size = 56;
// A bound on any single payload: larger claims in a header are treated as corruption.
inline constexpr uint32_t batch_payload_max_bytes = 1u << 30;

struct batch_header {
  uint8_t type = 0;
  uint32_t payload_length = 0;
  offset base_offset;
  offset last_offset;
  term_id term;
  timestamp_ms max_timestamp = timestamp_ms::none();
  uint64_t checksum = 0;

  size_t stored_size() const { return batch_header_size + payload_length; }
};

// Writes the header for `payload` into out[0, 56) with the checksum computed; returns the header.
batch_header encode_batch_header(std::span<std::byte, batch_header_size> out, uint8_t type,
                                 offset base, offset last, term_id term, timestamp_ms max_ts,
                                 std::span<const std::byte> payload);

enum class header_check {
  ok,
  zero,        // the magic is zero: the preallocated, never-written tail
  bad_magic,   // non-zero bytes that are not a batch header
  bad_fields,  // version, lengths or offsets out of their ranges
};

namespace detail {
template <class T>
T load_le(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // x86-64 and aarch64 Linux are little-endian
  return v;
}
}  // namespace detail

// Decodes the fixed fields of a header without verifying the checksum; `out` is meaningful only
// when the answer is ok. Inline, and every field is loaded before any is checked (so a caller's
// header needs no initialization): readers decode one header per batch they return.
inline header_check decode_batch_header(std::span<const std::byte> bytes, batch_header& out) {
  using detail::load_le;
  if (bytes.size() < batch_header_size) return header_check::bad_fields;
  const std::byte* p = bytes.data();
  const auto magic = load_le<uint32_t>(p);
  const auto version = load_le<uint8_t>(p + 4);
  out.type = load_le<uint8_t>(p + 5);
  out.payload_length = load_le<uint32_t>(p + 8);
  out.base_offset = offset(load_le<int64_t>(p + 16));
  out.last_offset = offset(load_le<int64_t>(p + 24));
  out.term = term_id(load_le<int64_t>(p + 32));
  out.max_timestamp = timestamp_ms(load_le<int64_t>(p + 40));
  out.checksum = load_le<uint64_t>(p + 48);
  if (magic == 0) return header_check::zero;
  if (magic != batch_magic) return header_check::bad_magic;
  if (version != batch_version || out.payload_length > batch_payload_max_bytes ||
      out.base_offset.value() < 0 || out.last_offset < out.base_offset || out.term.value() < 0) {
    return header_check::bad_fields;
  }
  return header_check::ok;
}

// XXH3-64 over the header's first 48 bytes and the payload.
uint64_t batch_checksum(std::span<const std::byte> header48, std::span<const std::byte> payload);

// True when `stored` (header + payload) holds a batch whose checksum matches.
bool verify_batch(std::span<const std::byte> stored, const batch_header& header);

}  // namespace keel::engine

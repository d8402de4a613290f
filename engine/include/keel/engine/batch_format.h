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

// Decodes the fixed fields of a header without verifying the checksum.
header_check decode_batch_header(std::span<const std::byte> bytes, batch_header& out);

// XXH3-64 over the header's first 48 bytes and the payload.
uint64_t batch_checksum(std::span<const std::byte> header48, std::span<const std::byte> payload);

// True when `stored` (header + payload) holds a batch whose checksum matches.
bool verify_batch(std::span<const std::byte> stored, const batch_header& header);

}  // namespace keel::engine

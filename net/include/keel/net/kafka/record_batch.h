// Kafka RecordBatch v2 (magic 2): CRC-32C, header parsing, validation of a producer's batch,
// offset/epoch stamping, the empty batches that stand in for Raft's own log entries, and a small
// builder of uncompressed batches (tests and Keel's own client).
//
// Layout (all big-endian), 61-byte header then the records:
//   0 BaseOffset int64 | 8 Length int32 | 12 PartitionLeaderEpoch int32 | 16 Magic int8 |
//   17 CRC uint32 | 21 Attributes int16 | 23 LastOffsetDelta int32 | 27 BaseTimestamp int64 |
//   35 MaxTimestamp int64 | 43 ProducerId int64 | 51 ProducerEpoch int16 | 53 BaseSequence int32 |
//   57 RecordsCount int32 | 61 Records
// Length counts the bytes after itself (batch size = Length + 12). The CRC-32C covers
// [Attributes, end), so BaseOffset, Length and PartitionLeaderEpoch can change without it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::net::kafka {

inline constexpr size_t batch_header_size = 61;
inline constexpr int8_t batch_magic_v2 = 2;
// Bytes before the CRC-covered region (BaseOffset .. CRC) and where the CRC field sits.
inline constexpr size_t batch_crc_offset = 17;
inline constexpr size_t batch_crc_covered_from = 21;
// Kafka's default max.message.bytes: the largest batch a topic accepts.
inline constexpr size_t default_max_message_bytes = 1048588;

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78). `seed` is the CRC of the bytes before
// `data`, so crc32c(b, crc32c(a)) == crc32c(a ++ b); the CRC of nothing is 0.
// Uses the SSE4.2 crc32 instruction when the CPU has it, else a table.
uint32_t crc32c(std::span<const std::byte> data, uint32_t seed = 0);

namespace detail {
uint32_t crc32c_table(std::span<const std::byte> data, uint32_t seed);
// Only valid when crc32c_hardware_available(); exposed so tests can compare the two paths.
uint32_t crc32c_hardware(std::span<const std::byte> data, uint32_t seed);
bool crc32c_hardware_available();
}  // namespace detail

// Kafka error codes (int16 on the wire) that batch validation can answer with.
enum class kafka_error : int16_t {
  none = 0,
  corrupt_message = 2,                // CRC mismatch, truncated or malformed header, unknown codec
  message_too_large = 10,             // batch larger than max.message.bytes
  invalid_request = 42,               // not produced by validate_batch; for the caller's use
  unsupported_compression_type = 76,  // zstd in a Produce request older than v7
  invalid_record = 87,                // well-formed CRC but records/fields that break the rules
};

enum class compression_codec : uint8_t { none = 0, gzip = 1, snappy = 2, lz4 = 3, zstd = 4 };
enum class timestamp_kind : uint8_t { create_time = 0, log_append_time = 1 };

struct batch_header {
  int64_t base_offset = 0;
  int32_t length = 0;  // bytes after this field: batch size = length + 12
  int32_t partition_leader_epoch = -1;
  int8_t magic = batch_magic_v2;
  uint32_t crc = 0;
  int16_t attributes = 0;
  int32_t last_offset_delta = 0;
  int64_t base_timestamp = 0;
  int64_t max_timestamp = 0;
  int64_t producer_id = -1;
  int16_t producer_epoch = -1;
  int32_t base_sequence = -1;
  int32_t records_count = 0;

  // Attribute bits 0-2: 0..4 are the known codecs; 5..7 are possible on the wire (invalid).
  compression_codec compression() const {
    return static_cast<compression_codec>(static_cast<uint16_t>(attributes) & 0x7);
  }
  timestamp_kind timestamp_type() const {
    return (attributes & 0x8) != 0 ? timestamp_kind::log_append_time : timestamp_kind::create_time;
  }
  bool is_transactional() const { return (attributes & 0x10) != 0; }
  bool is_control() const { return (attributes & 0x20) != 0; }
  bool has_delete_horizon() const { return (attributes & 0x40) != 0; }
  bool has_producer_id() const { return producer_id >= 0; }
  int64_t size() const { return int64_t{length} + 12; }
  int64_t last_offset() const { return base_offset + last_offset_delta; }
};

// Parses the 61-byte header at the front of `bytes` (more may follow). nullopt when fewer than
// 61 bytes are given; no field is checked (see validate_batch).
std::optional<batch_header> parse_header(std::span<const std::byte> bytes);

struct batch_limits {
  size_t max_message_bytes = default_max_message_bytes;  // largest batch accepted, in bytes
  bool zstd_allowed = true;                              // false for Produce requests older than v7
  // Rules that apply only to a producer's input (Kafka's client-origin checks): BaseOffset 0,
  // no control batches, at least one record, a BaseSequence when there is a ProducerId.
  // Turn off to validate batches Keel itself wrote (e.g. the empty batches below).
  bool from_producer = true;
};

struct batch_validation {
  kafka_error error = kafka_error::none;
  std::string_view reason;    // static text saying what is wrong; empty when ok
  int32_t record_index = -1;  // the failing record for per-record errors, else -1
  // The parsed header whenever the bytes held one (error or not): the broker takes the record
  // count, offsets, timestamps and producer id/epoch/base sequence from it.
  batch_header header;
  // Largest record timestamp (base + delta) found walking an uncompressed batch; -1 when the
  // batch is compressed or empty. Kafka rewrites MaxTimestamp to this for CreateTime batches.
  int64_t records_max_timestamp = -1;

  bool ok() const { return error == kafka_error::none; }
};

// Validates `bytes` as exactly one v2 batch (Produce v3+ carries exactly one per partition).
// Uncompressed batches have every record walked; compressed ones get header checks only.
batch_validation validate_batch(std::span<const std::byte> bytes, const batch_limits& limits);

// Rewrites BaseOffset and PartitionLeaderEpoch in place. Both lie outside the CRC, so a valid
// batch stays valid. `batch` must hold at least the 61-byte header.
void stamp(std::span<std::byte> batch, int64_t base_offset, int32_t leader_epoch);

// Recomputes the CRC over [Attributes, end) and stores it. `batch` must be exactly one batch.
void rewrite_crc(std::span<std::byte> batch);

// Writes a valid v2 batch with no records spanning offsets [base_offset, last_offset]
// (LastOffsetDelta = last - base; requires 0 <= last - base <= INT32_MAX), producer -1/-1/-1,
// both timestamps = `timestamp`. Serves Raft's own entries so a Kafka client's position moves
// past them. Returns batch_header_size.
size_t write_empty_batch(std::span<std::byte, batch_header_size> out, int64_t base_offset,
                         int64_t last_offset, int32_t leader_epoch, int64_t timestamp);

struct record_header {
  std::string key;
  std::optional<std::string> value;  // nullopt = null
};

struct record {
  std::optional<std::string> key;    // nullopt = null
  std::optional<std::string> value;  // nullopt = null
  int64_t timestamp = 0;
  std::vector<record_header> headers;
};

// Builds one uncompressed v2 batch. BaseTimestamp is the first record's timestamp, MaxTimestamp
// the largest; offset deltas are 0..n-1. Defaults are a non-idempotent producer's: BaseOffset 0,
// leader epoch -1, producer -1/-1/-1, attributes 0.
class record_batch_builder {
 public:
  record_batch_builder& add(record r);
  record_batch_builder& set_producer(int64_t producer_id, int16_t producer_epoch,
                                     int32_t base_sequence);
  // Raw attributes, written as given (records are never compressed by the builder).
  record_batch_builder& set_attributes(int16_t attributes);
  record_batch_builder& set_base_offset(int64_t base_offset);
  record_batch_builder& set_leader_epoch(int32_t leader_epoch);
  size_t records() const { return records_.size(); }

  std::vector<std::byte> build() const;

 private:
  std::vector<record> records_;
  int64_t base_offset_ = 0;
  int32_t leader_epoch_ = -1;
  int16_t attributes_ = 0;
  int64_t producer_id_ = -1;
  int16_t producer_epoch_ = -1;
  int32_t base_sequence_ = -1;
};

// A record of an uncompressed v2 batch, as views into the batch bytes.
struct record_view {
  int64_t offset = 0;
  int64_t timestamp = 0;
  std::optional<std::span<const std::byte>> key;    // nullopt = null key
  std::optional<std::span<const std::byte>> value;  // nullopt = null value
  std::string_view key_string() const;
  std::string_view value_string() const;
};

// Walks the records of fetched batch bytes (batches back to back). Control batches and batches
// without data records are skipped; a truncated last batch ends the walk quietly (Kafka may cut
// the last batch of a fetch). Records below start_offset are skipped (a fetch returns the whole
// batch holding the fetch offset). A compressed batch or malformed record stops the walk with ok()
// false. next_offset() is the offset after the last whole batch seen: where the next fetch starts.
class record_reader {
 public:
  explicit record_reader(std::span<const std::byte> batches, int64_t start_offset = 0);
  bool next(record_view& out);
  bool ok() const { return ok_; }
  const std::string& failure() const { return failure_; }
  int64_t next_offset() const { return next_offset_; }
  size_t batches_seen() const { return batches_seen_; }

 private:
  bool open_next_batch();

  std::span<const std::byte> rest_;
  std::span<const std::byte> records_;  // the current batch's unread record bytes
  int32_t left_in_batch_ = 0;
  int64_t base_offset_ = 0;
  int64_t base_timestamp_ = 0;
  int64_t start_offset_ = 0;
  int64_t next_offset_ = 0;
  size_t batches_seen_ = 0;
  bool ok_ = true;
  std::string failure_;
};

}  // namespace keel::net::kafka

#include "keel/net/kafka/record_batch.h"

#include "keel/net/kafka/protocol.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace keel::net::kafka {
namespace {

// A broken precondition of this API is a programming error: say what, then abort.
[[noreturn]] void contract_failed(const char* what) {
  std::fprintf(stderr, "keel: record_batch: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

// ---- CRC-32C ----------------------------------------------------------------------------------

constexpr uint32_t crc32c_poly = 0x82F63B78u;  // Castagnoli, bit-reflected

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit)
      c = (c & 1u) != 0 ? (c >> 1) ^ crc32c_poly : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> crc_table = make_crc_table();

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const std::byte* p, size_t n,
                                                        uint32_t state) {
  // Byte steps until p is 8-aligned, then 8 bytes per instruction, then the tail.
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7u) != 0) {
    state = _mm_crc32_u8(state, static_cast<uint8_t>(*p));
    ++p;
    --n;
  }
  uint64_t wide = state;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    wide = _mm_crc32_u64(wide, word);
    p += 8;
    n -= 8;
  }
  state = static_cast<uint32_t>(wide);
  while (n > 0) {
    state = _mm_crc32_u8(state, static_cast<uint8_t>(*p));
    ++p;
    --n;
  }
  return state;
}
#endif

// ---- big-endian fields ------------------------------------------------------------------------

template <class T>
T load_be(const std::byte* p) {
  using U = std::make_unsigned_t<T>;
  U v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v = static_cast<U>((v << 8) | static_cast<uint8_t>(p[i]));
  return static_cast<T>(v);
}

template <class T>
void store_be(std::byte* p, T value) {
  using U = std::make_unsigned_t<T>;
  U v = static_cast<U>(value);
  for (size_t i = sizeof(T); i-- > 0;) {
    p[i] = static_cast<std::byte>(v & 0xFFu);
    v = static_cast<U>(v >> 8);
  }
}

// Field offsets in the 61-byte header.
constexpr size_t off_base_offset = 0;
constexpr size_t off_length = 8;
constexpr size_t off_leader_epoch = 12;
constexpr size_t off_magic = 16;
constexpr size_t off_crc = batch_crc_offset;
constexpr size_t off_attributes = batch_crc_covered_from;
constexpr size_t off_last_offset_delta = 23;
constexpr size_t off_base_timestamp = 27;
constexpr size_t off_max_timestamp = 35;
constexpr size_t off_producer_id = 43;
constexpr size_t off_producer_epoch = 51;
constexpr size_t off_base_sequence = 53;
constexpr size_t off_records_count = 57;
static_assert(off_records_count + 4 == batch_header_size);

void write_header(std::byte* p, const batch_header& h) {
  store_be<int64_t>(p + off_base_offset, h.base_offset);
  store_be<int32_t>(p + off_length, h.length);
  store_be<int32_t>(p + off_leader_epoch, h.partition_leader_epoch);
  store_be<int8_t>(p + off_magic, h.magic);
  store_be<uint32_t>(p + off_crc, h.crc);
  store_be<int16_t>(p + off_attributes, h.attributes);
  store_be<int32_t>(p + off_last_offset_delta, h.last_offset_delta);
  store_be<int64_t>(p + off_base_timestamp, h.base_timestamp);
  store_be<int64_t>(p + off_max_timestamp, h.max_timestamp);
  store_be<int64_t>(p + off_producer_id, h.producer_id);
  store_be<int16_t>(p + off_producer_epoch, h.producer_epoch);
  store_be<int32_t>(p + off_base_sequence, h.base_sequence);
  store_be<int32_t>(p + off_records_count, h.records_count);
}

uint32_t batch_crc(std::span<const std::byte> batch) {
  return crc32c(batch.subspan(batch_crc_covered_from));
}

// ---- zigzag varints (records) -----------------------------------------------------------------

// Reads record fields from [p, end). Every read fails (returns false) rather than run past end.
struct record_cursor {
  const std::byte* p;
  const std::byte* end;

  size_t remaining() const { return static_cast<size_t>(end - p); }

  // Zigzag LEB128, at most 5 bytes, with no bits beyond 32.
  bool varint(int32_t& out) {
    uint32_t raw = 0;
    for (int i = 0; i < 5; ++i) {
      if (p == end) return false;
      const auto b = static_cast<uint8_t>(*p++);
      if (i == 4 && (b & 0xF0u) != 0) return false;
      raw |= static_cast<uint32_t>(b & 0x7Fu) << (7 * i);
      if ((b & 0x80u) == 0) {
        out = static_cast<int32_t>((raw >> 1) ^ (0u - (raw & 1u)));
        return true;
      }
    }
    return false;
  }

  // Zigzag LEB128, at most 10 bytes, with no bits beyond 64.
  bool varlong(int64_t& out) {
    uint64_t raw = 0;
    for (int i = 0; i < 10; ++i) {
      if (p == end) return false;
      const auto b = static_cast<uint8_t>(*p++);
      if (i == 9 && (b & 0xFEu) != 0) return false;
      raw |= static_cast<uint64_t>(b & 0x7Fu) << (7 * i);
      if ((b & 0x80u) == 0) {
        out = static_cast<int64_t>((raw >> 1) ^ (0ull - (raw & 1u)));
        return true;
      }
    }
    return false;
  }

  bool skip(size_t n) {
    if (n > remaining()) return false;
    p += n;
    return true;
  }

  // A length-prefixed field: -1 (null) when nullable, else 0..remaining bytes, skipped.
  bool bytes_field(bool nullable) {
    int32_t len;
    if (!varint(len)) return false;
    if (len == -1) return nullable;
    if (len < 0) return false;
    return skip(static_cast<size_t>(len));
  }
};

void put_varint(std::vector<std::byte>& out, int64_t value) {
  auto raw = (static_cast<uint64_t>(value) << 1) ^ static_cast<uint64_t>(value >> 63);
  while (raw >= 0x80u) {
    out.push_back(static_cast<std::byte>((raw & 0x7Fu) | 0x80u));
    raw >>= 7;
  }
  out.push_back(static_cast<std::byte>(raw));
}

void put_bytes_field(std::vector<std::byte>& out, const std::optional<std::string>& field) {
  if (!field) {
    put_varint(out, -1);
    return;
  }
  put_varint(out, static_cast<int64_t>(field->size()));
  const auto* b = reinterpret_cast<const std::byte*>(field->data());
  out.insert(out.end(), b, b + field->size());
}

batch_validation fail(batch_validation v, kafka_error e, std::string_view reason,
                      int32_t record_index = -1) {
  v.error = e;
  v.reason = reason;
  v.record_index = record_index;
  return v;
}

}  // namespace

namespace detail {

uint32_t crc32c_table(std::span<const std::byte> data, uint32_t seed) {
  uint32_t state = ~seed;
  for (const std::byte b : data)
    state = (state >> 8) ^ crc_table[(state ^ static_cast<uint8_t>(b)) & 0xFFu];
  return ~state;
}

bool crc32c_hardware_available() {
#if defined(__x86_64__)
  static const bool available = __builtin_cpu_supports("sse4.2");
  return available;
#else
  return false;
#endif
}

uint32_t crc32c_hardware(std::span<const std::byte> data, uint32_t seed) {
#if defined(__x86_64__)
  if (!crc32c_hardware_available()) contract_failed("crc32c_hardware without SSE4.2");
  return ~crc32c_sse42(data.data(), data.size(), ~seed);
#else
  (void)data;
  (void)seed;
  contract_failed("crc32c_hardware on a non-x86-64 build");
#endif
}

}  // namespace detail

uint32_t crc32c(std::span<const std::byte> data, uint32_t seed) {
  if (detail::crc32c_hardware_available()) return detail::crc32c_hardware(data, seed);
  return detail::crc32c_table(data, seed);
}

std::optional<batch_header> parse_header(std::span<const std::byte> bytes) {
  if (bytes.size() < batch_header_size) return std::nullopt;
  const std::byte* p = bytes.data();
  batch_header h;
  h.base_offset = load_be<int64_t>(p + off_base_offset);
  h.length = load_be<int32_t>(p + off_length);
  h.partition_leader_epoch = load_be<int32_t>(p + off_leader_epoch);
  h.magic = load_be<int8_t>(p + off_magic);
  h.crc = load_be<uint32_t>(p + off_crc);
  h.attributes = load_be<int16_t>(p + off_attributes);
  h.last_offset_delta = load_be<int32_t>(p + off_last_offset_delta);
  h.base_timestamp = load_be<int64_t>(p + off_base_timestamp);
  h.max_timestamp = load_be<int64_t>(p + off_max_timestamp);
  h.producer_id = load_be<int64_t>(p + off_producer_id);
  h.producer_epoch = load_be<int16_t>(p + off_producer_epoch);
  h.base_sequence = load_be<int32_t>(p + off_base_sequence);
  h.records_count = load_be<int32_t>(p + off_records_count);
  return h;
}

batch_validation validate_batch(std::span<const std::byte> bytes, const batch_limits& limits) {
  batch_validation v;
  const auto parsed = parse_header(bytes);
  if (!parsed) return fail(v, kafka_error::corrupt_message, "shorter than the 61-byte header");
  v.header = *parsed;
  const batch_header& h = v.header;

  if (h.length < static_cast<int32_t>(batch_header_size - 12))
    return fail(v, kafka_error::corrupt_message, "Length is smaller than the header");
  if (static_cast<uint64_t>(h.size()) > bytes.size())
    return fail(v, kafka_error::corrupt_message, "batch truncated: Length runs past the bytes");
  if (static_cast<uint64_t>(h.size()) < bytes.size())
    return fail(v, kafka_error::invalid_record, "bytes follow the batch: not exactly one batch");
  if (h.magic != batch_magic_v2)
    return fail(v, kafka_error::invalid_record, "magic is not 2 (only v2 batches are accepted)");
  if (bytes.size() > limits.max_message_bytes)
    return fail(v, kafka_error::message_too_large, "batch larger than max.message.bytes");
  if (batch_crc(bytes) != h.crc) return fail(v, kafka_error::corrupt_message, "CRC-32C mismatch");

  if ((static_cast<uint16_t>(h.attributes) & 0x7) > 4)
    return fail(v, kafka_error::corrupt_message, "unknown compression codec");
  if (h.compression() == compression_codec::zstd && !limits.zstd_allowed)
    return fail(v, kafka_error::unsupported_compression_type, "zstd needs Produce v7 or later");
  if (h.records_count < 0) return fail(v, kafka_error::invalid_record, "negative RecordsCount");
  if (h.records_count > 0 && h.last_offset_delta != h.records_count - 1)
    return fail(v, kafka_error::invalid_record, "LastOffsetDelta is not RecordsCount - 1");
  if (h.records_count == 0 && h.last_offset_delta < 0)
    return fail(v, kafka_error::invalid_record, "negative LastOffsetDelta");
  if (limits.from_producer) {
    if (h.is_control())
      return fail(v, kafka_error::invalid_record, "control batches may not come from producers");
    if (h.base_offset != 0)
      return fail(v, kafka_error::invalid_record, "a producer's BaseOffset must be 0");
    if (h.records_count == 0)
      return fail(v, kafka_error::invalid_record, "a producer's batch must hold records");
    if (h.has_producer_id() && h.base_sequence < 0)
      return fail(v, kafka_error::invalid_record, "ProducerId set without a BaseSequence");
  }

  if (h.compression() != compression_codec::none) return v;  // passed through, not decompressed

  record_cursor in{bytes.data() + batch_header_size, bytes.data() + bytes.size()};
  int32_t index = 0;
  uint64_t max_ts = 0;
  bool any = false;
  while (in.remaining() > 0) {
    if (index >= h.records_count)
      return fail(v, kafka_error::invalid_record, "more records than RecordsCount", index);
    int32_t length;
    if (!in.varint(length))
      return fail(v, kafka_error::invalid_record, "record length varint malformed", index);
    if (length < 0 || static_cast<size_t>(length) > in.remaining())
      return fail(v, kafka_error::invalid_record, "record length runs past the batch", index);
    record_cursor rec{in.p, in.p + length};
    in.p += length;

    int64_t ts_delta;
    int32_t offset_delta;
    if (!rec.skip(1))  // attributes: unused by v2
      return fail(v, kafka_error::invalid_record, "record truncated at attributes", index);
    if (!rec.varlong(ts_delta))
      return fail(v, kafka_error::invalid_record, "record timestamp delta malformed", index);
    if (!rec.varint(offset_delta))
      return fail(v, kafka_error::invalid_record, "record offset delta malformed", index);
    if (offset_delta != index)
      return fail(v, kafka_error::invalid_record, "record offset deltas are not 0..n-1", index);
    if (!rec.bytes_field(true))
      return fail(v, kafka_error::invalid_record, "record key runs past the record", index);
    if (!rec.bytes_field(true))
      return fail(v, kafka_error::invalid_record, "record value runs past the record", index);
    int32_t header_count;
    if (!rec.varint(header_count) || header_count < 0)
      return fail(v, kafka_error::invalid_record, "record header count malformed", index);
    for (int32_t i = 0; i < header_count; ++i) {
      if (!rec.bytes_field(false))
        return fail(v, kafka_error::invalid_record, "header key null or past the record", index);
      if (!rec.bytes_field(true))
        return fail(v, kafka_error::invalid_record, "header value runs past the record", index);
    }
    if (rec.remaining() != 0)
      return fail(v, kafka_error::invalid_record, "record length exceeds its fields", index);

    // Wrapping add: garbage deltas must not be undefined behaviour.
    const uint64_t ts = static_cast<uint64_t>(h.base_timestamp) + static_cast<uint64_t>(ts_delta);
    if (!any || static_cast<int64_t>(ts) > static_cast<int64_t>(max_ts)) max_ts = ts;
    any = true;
    ++index;
  }
  if (index != h.records_count)
    return fail(v, kafka_error::invalid_record, "fewer records than RecordsCount", index);
  v.records_max_timestamp = any ? static_cast<int64_t>(max_ts) : -1;
  return v;
}

void stamp(std::span<std::byte> batch, int64_t base_offset, int32_t leader_epoch) {
  if (batch.size() < batch_header_size) contract_failed("stamp on fewer than 61 bytes");
  store_be<int64_t>(batch.data() + off_base_offset, base_offset);
  store_be<int32_t>(batch.data() + off_leader_epoch, leader_epoch);
}

void rewrite_crc(std::span<std::byte> batch) {
  if (batch.size() < batch_header_size) contract_failed("rewrite_crc on fewer than 61 bytes");
  store_be<uint32_t>(batch.data() + off_crc, batch_crc(batch));
}

size_t write_empty_batch(std::span<std::byte, batch_header_size> out, int64_t base_offset,
                         int64_t last_offset, int32_t leader_epoch, int64_t timestamp) {
  if (last_offset < base_offset ||
      static_cast<uint64_t>(last_offset) - static_cast<uint64_t>(base_offset) >
          static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
    contract_failed("write_empty_batch: last_offset - base_offset outside [0, INT32_MAX]");
  batch_header h;
  h.base_offset = base_offset;
  h.length = static_cast<int32_t>(batch_header_size - 12);
  h.partition_leader_epoch = leader_epoch;
  h.last_offset_delta = static_cast<int32_t>(last_offset - base_offset);
  h.base_timestamp = timestamp;
  h.max_timestamp = timestamp;
  write_header(out.data(), h);
  rewrite_crc(out);
  return batch_header_size;
}

record_batch_builder& record_batch_builder::add(record r) {
  records_.push_back(std::move(r));
  return *this;
}

record_batch_builder& record_batch_builder::set_producer(int64_t producer_id,
                                                         int16_t producer_epoch,
                                                         int32_t base_sequence) {
  producer_id_ = producer_id;
  producer_epoch_ = producer_epoch;
  base_sequence_ = base_sequence;
  return *this;
}

record_batch_builder& record_batch_builder::set_attributes(int16_t attributes) {
  attributes_ = attributes;
  return *this;
}

record_batch_builder& record_batch_builder::set_base_offset(int64_t base_offset) {
  base_offset_ = base_offset;
  return *this;
}

record_batch_builder& record_batch_builder::set_leader_epoch(int32_t leader_epoch) {
  leader_epoch_ = leader_epoch;
  return *this;
}

std::vector<std::byte> record_batch_builder::build() const {
  std::vector<std::byte> out(batch_header_size);
  const int64_t base_ts = records_.empty() ? 0 : records_.front().timestamp;
  int64_t max_ts = base_ts;
  std::vector<std::byte> body;
  for (size_t i = 0; i < records_.size(); ++i) {
    const record& r = records_[i];
    if (r.timestamp > max_ts) max_ts = r.timestamp;
    body.clear();
    body.push_back(std::byte{0});  // attributes
    put_varint(body, static_cast<int64_t>(static_cast<uint64_t>(r.timestamp) -
                                          static_cast<uint64_t>(base_ts)));
    put_varint(body, static_cast<int64_t>(i));
    put_bytes_field(body, r.key);
    put_bytes_field(body, r.value);
    put_varint(body, static_cast<int64_t>(r.headers.size()));
    for (const record_header& hd : r.headers) {
      put_bytes_field(body, hd.key);
      put_bytes_field(body, hd.value);
    }
    put_varint(out, static_cast<int64_t>(body.size()));
    out.insert(out.end(), body.begin(), body.end());
  }
  if (out.size() - 12 > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    contract_failed("record_batch_builder: batch larger than 2 GiB");

  batch_header h;
  h.base_offset = base_offset_;
  h.length = static_cast<int32_t>(out.size() - 12);
  h.partition_leader_epoch = leader_epoch_;
  h.attributes = attributes_;
  h.last_offset_delta = records_.empty() ? 0 : static_cast<int32_t>(records_.size() - 1);
  h.base_timestamp = base_ts;
  h.max_timestamp = max_ts;
  h.producer_id = producer_id_;
  h.producer_epoch = producer_epoch_;
  h.base_sequence = base_sequence_;
  h.records_count = static_cast<int32_t>(records_.size());
  write_header(out.data(), h);
  rewrite_crc(out);
  return out;
}

std::string_view record_view::key_string() const {
  if (!key) return {};
  return {reinterpret_cast<const char*>(key->data()), key->size()};
}
std::string_view record_view::value_string() const {
  if (!value) return {};
  return {reinterpret_cast<const char*>(value->data()), value->size()};
}

record_reader::record_reader(std::span<const std::byte> batches, int64_t start_offset)
    : rest_(batches), start_offset_(start_offset), next_offset_(start_offset) {}

bool record_reader::open_next_batch() {
  while (ok_) {
    if (rest_.size() < batch_header_size) return false;  // the end, or a cut last batch
    const auto h = parse_header(rest_);
    if (!h || h->length < static_cast<int32_t>(batch_header_size - 12)) {
      ok_ = false;
      failure_ = "malformed batch header";
      return false;
    }
    if (static_cast<uint64_t>(h->size()) > rest_.size()) return false;  // cut by the fetch
    if (h->magic != batch_magic_v2) {
      ok_ = false;
      failure_ = "batch magic " + std::to_string(h->magic) + " (only v2 is read)";
      return false;
    }
    const auto batch = rest_.first(static_cast<size_t>(h->size()));
    rest_ = rest_.subspan(batch.size());
    ++batches_seen_;
    next_offset_ = std::max(next_offset_, h->last_offset() + 1);
    if (h->is_control() || h->records_count <= 0) continue;
    if (h->compression() != compression_codec::none) {
      ok_ = false;
      failure_ = "compressed batch (codec " + std::to_string(static_cast<int>(h->compression())) +
                 ") is not supported";
      return false;
    }
    records_ = batch.subspan(batch_header_size);
    left_in_batch_ = h->records_count;
    base_offset_ = h->base_offset;
    base_timestamp_ = h->base_timestamp;
    return true;
  }
  return false;
}

bool record_reader::next(record_view& out) {
  for (;;) {
    while (left_in_batch_ == 0)
      if (!open_next_batch()) return false;
    reader r(records_);
    const int32_t length = r.get_varint();
    const size_t start = r.position();
    if (!r.ok() || length < 0 || static_cast<size_t>(length) > r.remaining()) {
      ok_ = false;
      failure_ = "malformed record length";
      return false;
    }
    reader rec(records_.subspan(start, static_cast<size_t>(length)));
    records_ = records_.subspan(start + static_cast<size_t>(length));
    --left_in_batch_;
    rec.get_int8();  // attributes (unused)
    const int64_t timestamp_delta = rec.get_varlong();
    const int32_t offset_delta = rec.get_varint();
    auto bytes_field = [&rec]() -> std::optional<std::span<const std::byte>> {
      const int32_t n = rec.get_varint();
      if (n < 0) return std::nullopt;
      return rec.get_raw(static_cast<size_t>(n));
    };
    out.key = bytes_field();
    out.value = bytes_field();
    const int32_t headers = rec.get_varint();
    for (int32_t i = 0; i < headers && rec.ok(); ++i) {
      bytes_field();
      bytes_field();
    }
    if (!rec.ok() || headers < 0) {
      ok_ = false;
      failure_ = "malformed record";
      return false;
    }
    out.offset = base_offset_ + offset_delta;
    out.timestamp = base_timestamp_ + timestamp_delta;
    if (out.offset < start_offset_) continue;  // a fetch may return a batch begun earlier
    return true;
  }
}

}  // namespace keel::net::kafka

// Kafka RecordBatch v2: CRC-32C on both paths, builder -> validate -> parse, every validation
// failure with its Kafka error code, stamping, Raft's empty batches, and a mutation fuzz that
// must never crash nor accept a batch whose CRC does not match.
#include "keel/net/kafka/record_batch.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <memory>
#include <random>
#include <source_location>
#include <string>
#include <vector>

namespace keel::net::kafka {
namespace {

using bytes = std::vector<std::byte>;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

bytes to_bytes(std::initializer_list<int> values) {
  bytes out;
  for (int v : values)
    out.push_back(static_cast<std::byte>(v));
  return out;
}

void append(bytes& out, const bytes& more) {
  out.insert(out.end(), more.begin(), more.end());
}

// Zigzag varint, written independently of the library's encoder.
bytes zz(int64_t v) {
  uint64_t raw = (static_cast<uint64_t>(v) << 1) ^ (v < 0 ? ~uint64_t{0} : 0);
  bytes out;
  do {
    uint8_t b = raw & 0x7F;
    raw >>= 7;
    if (raw != 0) b |= 0x80;
    out.push_back(static_cast<std::byte>(b));
  } while (raw != 0);
  return out;
}

void put_be(bytes& b, size_t at, uint64_t v, size_t width) {
  for (size_t i = 0; i < width; ++i)
    b[at + i] = static_cast<std::byte>(v >> (8 * (width - 1 - i)));
}

uint32_t table_crc_of_batch(std::span<const std::byte> b) {
  return detail::crc32c_table(b.subspan(batch_crc_covered_from), 0);
}

batch_limits producer_limits() {
  return {};
}
batch_limits stored_limits() {
  batch_limits l;
  l.from_producer = false;
  return l;
}

record rec(std::optional<std::string> key, std::optional<std::string> value, int64_t ts,
           std::vector<record_header> headers = {}) {
  return record{std::move(key), std::move(value), ts, std::move(headers)};
}

bytes sample_batch() {
  record_batch_builder b;
  b.add(rec("k1", "value one", 1000, {{"h1", "x"}, {"h2", std::nullopt}}))
      .add(rec(std::nullopt, "value two", 1005))
      .add(rec("k3", std::nullopt, 998, {{"trace", "abc"}}))
      .add(rec("", "", 1002));
  return b.build();
}

// A batch whose records area is `records` (raw), with RecordsCount = count and a good CRC.
bytes assemble(const bytes& records, int32_t count) {
  bytes b(batch_header_size);
  append(b, records);
  put_be(b, 8, b.size() - 12, 4);  // Length
  put_be(b, 12, 0xFFFFFFFFu, 4);   // leader epoch -1
  b[16] = std::byte{2};            // magic
  put_be(b, 23, static_cast<uint32_t>(count - 1), 4);
  put_be(b, 27, 1000, 8);
  put_be(b, 35, 1000, 8);
  put_be(b, 43, ~uint64_t{0}, 8);  // producer id -1
  put_be(b, 51, 0xFFFF, 2);        // epoch -1
  put_be(b, 53, 0xFFFFFFFFu, 4);   // sequence -1
  put_be(b, 57, static_cast<uint32_t>(count), 4);
  rewrite_crc(b);
  return b;
}

// One record: attributes 0, timestamp delta 0, the given offset delta, then `rest` (key, value
// and headers, raw), with the given Length (by default the true one).
bytes raw_record(int32_t offset_delta, const bytes& rest, std::optional<int64_t> length = {}) {
  bytes body = to_bytes({0, 0});
  append(body, zz(offset_delta));
  append(body, rest);
  bytes out = zz(length.value_or(static_cast<int64_t>(body.size())));
  append(out, body);
  return out;
}

// key "k", value "v", no headers.
bytes kv_rest() {
  return to_bytes({2, 'k', 2, 'v', 0});
}

// ---- CRC-32C ----------------------------------------------------------------------------------

TEST(record_batch_crc32c, known_vectors_on_every_path) {
  bytes zeros(32, std::byte{0}), ones(32, std::byte{0xFF}), ascending(32);
  for (int i = 0; i < 32; ++i)
    ascending[i] = static_cast<std::byte>(i);
  struct vec {
    std::span<const std::byte> data;
    uint32_t crc;
  };
  const vec vectors[] = {{bytes_of("123456789"), 0xE3069283u},
                         {{}, 0u},
                         {zeros, 0x8A9136AAu},
                         {ones, 0x62A8AB43u},
                         {ascending, 0x46DD794Eu}};
  for (const vec& v : vectors) {
    EXPECT_EQ(crc32c(v.data), v.crc);
    EXPECT_EQ(detail::crc32c_table(v.data, 0), v.crc);
    if (detail::crc32c_hardware_available()) {
      EXPECT_EQ(detail::crc32c_hardware(v.data, 0), v.crc);
    }
  }
}

TEST(record_batch_crc32c, seed_chains_pieces) {
  const auto all = bytes_of("The quick brown fox jumps over the lazy dog");
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    EXPECT_EQ(crc32c(all.subspan(cut), crc32c(all.first(cut))), crc32c(all));
    EXPECT_EQ(detail::crc32c_table(all.subspan(cut), detail::crc32c_table(all.first(cut), 0)),
              crc32c(all));
  }
}

TEST(record_batch_crc32c, hardware_matches_table_at_every_length_and_alignment) {
  if (!detail::crc32c_hardware_available()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::mt19937_64 rng(12345);
  bytes buf(4200);
  for (auto& b : buf)
    b = static_cast<std::byte>(rng());
  const std::span<const std::byte> all(buf);
  for (size_t align = 0; align < 16; ++align) {
    for (size_t len = 0; len <= 300; ++len) {
      const auto s = all.subspan(align, len);
      const auto seed = static_cast<uint32_t>(rng());
      ASSERT_EQ(detail::crc32c_hardware(s, seed), detail::crc32c_table(s, seed))
          << "align " << align << " len " << len;
    }
  }
  for (int i = 0; i < 200; ++i) {
    const size_t align = rng() % 64, len = rng() % (buf.size() - 64);
    const auto s = all.subspan(align, len);
    ASSERT_EQ(detail::crc32c_hardware(s, 0), detail::crc32c_table(s, 0));
  }
}

// ---- builder, parse, validate -----------------------------------------------------------------

TEST(record_batch, builder_output_validates_and_parses) {
  record_batch_builder b;
  b.set_producer(42, 3, 17);
  b.add(rec("k1", "value one", 1000, {{"h1", "x"}, {"h2", std::nullopt}}))
      .add(rec(std::nullopt, "value two", 1005))
      .add(rec("k3", std::nullopt, 998));
  const bytes batch = b.build();

  const auto v = validate_batch(batch, producer_limits());
  ASSERT_TRUE(v.ok()) << v.reason;
  EXPECT_TRUE(v.reason.empty());
  EXPECT_EQ(v.records_max_timestamp, 1005);

  const auto h = parse_header(batch);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->base_offset, 0);
  EXPECT_EQ(h->size(), static_cast<int64_t>(batch.size()));
  EXPECT_EQ(h->partition_leader_epoch, -1);
  EXPECT_EQ(h->magic, 2);
  EXPECT_EQ(h->crc, table_crc_of_batch(batch));
  EXPECT_EQ(h->attributes, 0);
  EXPECT_EQ(h->compression(), compression_codec::none);
  EXPECT_EQ(h->timestamp_type(), timestamp_kind::create_time);
  EXPECT_FALSE(h->is_transactional());
  EXPECT_FALSE(h->is_control());
  EXPECT_EQ(h->last_offset_delta, 2);
  EXPECT_EQ(h->base_timestamp, 1000);
  EXPECT_EQ(h->max_timestamp, 1005);
  EXPECT_EQ(h->producer_id, 42);
  EXPECT_EQ(h->producer_epoch, 3);
  EXPECT_EQ(h->base_sequence, 17);
  EXPECT_EQ(h->records_count, 3);
  EXPECT_EQ(v.header.records_count, 3);
  EXPECT_EQ(v.header.producer_id, 42);
}

TEST(record_batch, builder_writes_the_documented_bytes) {
  record_batch_builder b;
  b.add(rec("k", "v", 77));
  const bytes batch = b.build();
  ASSERT_EQ(batch.size(), batch_header_size + 9);
  // Length 16 (zigzag 0x10), attributes 0, ts delta 0, offset delta 0, key "k", value "v", 0 hdrs.
  const bytes expect = to_bytes({0x10, 0, 0, 0, 2, 'k', 2, 'v', 0});
  EXPECT_EQ(bytes(batch.begin() + batch_header_size, batch.end()), expect);
  const bytes head = to_bytes({0, 0, 0, 0, 0, 0, 0, 0,  // base offset
                               0, 0, 0, 58,             // Length = 70 - 12
                               0xFF, 0xFF, 0xFF, 0xFF,  // leader epoch
                               2});                     // magic
  EXPECT_EQ(bytes(batch.begin(), batch.begin() + 17), head);
}

TEST(record_batch, parse_header_needs_61_bytes) {
  const bytes batch = sample_batch();
  EXPECT_FALSE(parse_header(std::span(batch).first(60)).has_value());
  EXPECT_TRUE(parse_header(std::span(batch).first(61)).has_value());
}

TEST(record_batch, attribute_helpers) {
  batch_header h;
  h.attributes = 0x3 | 0x8 | 0x10 | 0x20 | 0x40;
  EXPECT_EQ(h.compression(), compression_codec::lz4);
  EXPECT_EQ(h.timestamp_type(), timestamp_kind::log_append_time);
  EXPECT_TRUE(h.is_transactional());
  EXPECT_TRUE(h.is_control());
  EXPECT_TRUE(h.has_delete_horizon());
}

// ---- validation failures ----------------------------------------------------------------------

void expect_error(const bytes& batch, kafka_error e, const batch_limits& limits = {},
                  std::source_location at = std::source_location::current()) {
  SCOPED_TRACE(testing::Message() << "called from line " << at.line());
  const auto v = validate_batch(batch, limits);
  EXPECT_EQ(v.error, e) << "reason: " << v.reason;
  EXPECT_FALSE(v.ok());
  EXPECT_FALSE(v.reason.empty());
}

TEST(record_batch_validation, sizes) {
  const bytes batch = sample_batch();
  expect_error(bytes(batch.begin(), batch.end() - 1), kafka_error::corrupt_message);
  expect_error(bytes(batch.begin(), batch.begin() + 60), kafka_error::corrupt_message);
  expect_error(bytes{}, kafka_error::corrupt_message);
  bytes longer = batch;
  longer.push_back(std::byte{0});
  expect_error(longer, kafka_error::invalid_record);  // not exactly one batch
  bytes two = batch;
  append(two, batch);
  expect_error(two, kafka_error::invalid_record);
}

TEST(record_batch_validation, wrong_length_field) {
  const bytes batch = sample_batch();
  bytes b = batch;
  put_be(b, 8, batch.size() - 12 + 1, 4);
  expect_error(b, kafka_error::corrupt_message);
  put_be(b, 8, batch.size() - 12 - 1, 4);
  expect_error(b, kafka_error::invalid_record);
  put_be(b, 8, 10, 4);
  expect_error(b, kafka_error::corrupt_message);
  put_be(b, 8, 0x80000000u, 4);
  expect_error(b, kafka_error::corrupt_message);
}

TEST(record_batch_validation, every_byte_flip_in_the_crc_region_is_corrupt) {
  const bytes batch = sample_batch();
  ASSERT_TRUE(validate_batch(batch, producer_limits()).ok());
  for (size_t i = 0; i < batch.size(); ++i) {
    bytes b = batch;
    b[i] ^= std::byte{0x5A};
    const auto v = validate_batch(b, producer_limits());
    if (i < 8) {
      EXPECT_EQ(v.error, kafka_error::invalid_record) << i;  // a producer's BaseOffset must be 0
    } else if (i < 12) {
      EXPECT_FALSE(v.ok()) << i;  // Length
    } else if (i < 16) {
      EXPECT_TRUE(v.ok()) << i;  // leader epoch: outside the CRC, stamped by the leader
    } else if (i == 16) {
      EXPECT_EQ(v.error, kafka_error::invalid_record) << i;  // magic
    } else {
      EXPECT_EQ(v.error, kafka_error::corrupt_message) << i;  // CRC or the bytes it covers
    }
  }
}

TEST(record_batch_validation, wrong_magic) {
  for (int magic : {0, 1, 3, -1}) {
    bytes b = sample_batch();
    b[16] = static_cast<std::byte>(magic);
    rewrite_crc(b);
    expect_error(b, kafka_error::invalid_record);
  }
}

TEST(record_batch_validation, records_count_and_last_offset_delta) {
  const bytes batch = sample_batch();  // 4 records
  auto with = [&](int32_t count, int32_t last_delta) {
    bytes b = batch;
    put_be(b, 57, static_cast<uint32_t>(count), 4);
    put_be(b, 23, static_cast<uint32_t>(last_delta), 4);
    rewrite_crc(b);
    return b;
  };
  EXPECT_TRUE(validate_batch(with(4, 3), producer_limits()).ok());
  expect_error(with(5, 4), kafka_error::invalid_record);  // fewer records than the count
  expect_error(with(3, 2), kafka_error::invalid_record);  // more records than the count
  expect_error(with(4, 4), kafka_error::invalid_record);  // LastOffsetDelta != count - 1
  expect_error(with(4, 2), kafka_error::invalid_record);
  expect_error(with(-1, -2), kafka_error::invalid_record);
  expect_error(with(0, 0), kafka_error::invalid_record);                   // producers send records
  expect_error(with(0, 0), kafka_error::invalid_record, stored_limits());  // bytes remain
  const auto v = validate_batch(with(3, 2), producer_limits());
  EXPECT_EQ(v.record_index, 3);
}

TEST(record_batch_validation, hand_built_records) {
  bytes two = raw_record(0, kv_rest());
  append(two, raw_record(1, kv_rest()));
  EXPECT_TRUE(validate_batch(assemble(two, 2), producer_limits()).ok());

  // Offset deltas must be 0..n-1.
  bytes gap = raw_record(0, kv_rest());
  append(gap, raw_record(2, kv_rest()));
  expect_error(assemble(gap, 2), kafka_error::invalid_record);
  expect_error(assemble(raw_record(1, kv_rest()), 1), kafka_error::invalid_record);
  expect_error(assemble(raw_record(-1, kv_rest()), 1), kafka_error::invalid_record);

  // Record Length runs past the batch, or is negative.
  expect_error(assemble(raw_record(0, kv_rest(), 100), 1), kafka_error::invalid_record);
  expect_error(assemble(raw_record(0, kv_rest(), -2), 1), kafka_error::invalid_record);
  // Record Length shorter than its fields (the value runs past the record) ...
  bytes short_rec = raw_record(0, kv_rest(), 6);
  expect_error(assemble(short_rec, 1), kafka_error::invalid_record);
  // ... or longer (bytes left inside the record).
  bytes rest_plus = kv_rest();
  rest_plus.push_back(std::byte{0});
  bytes long_rec = raw_record(0, rest_plus);
  EXPECT_EQ(long_rec.size(), 10u);
  expect_error(assemble(long_rec, 1), kafka_error::invalid_record);
  EXPECT_EQ(validate_batch(assemble(long_rec, 1), {}).record_index, 0);

  // Key and value lengths: -1 is null, anything below is invalid, past the record is invalid.
  EXPECT_TRUE(validate_batch(assemble(raw_record(0, to_bytes({1, 1, 0})), 1), {}).ok());
  expect_error(assemble(raw_record(0, to_bytes({3, 1, 0})), 1), kafka_error::invalid_record);
  expect_error(assemble(raw_record(0, to_bytes({2, 'k', 20, 'v', 0})), 1),
               kafka_error::invalid_record);
  expect_error(assemble(raw_record(0, to_bytes({40, 'k', 2, 'v', 0})), 1),
               kafka_error::invalid_record);

  // Headers: count, then key (never null) and value (-1 null), all inside the record.
  EXPECT_TRUE(
      validate_batch(assemble(raw_record(0, to_bytes({1, 1, 4, 2, 'a', 1, 2, 'b', 2, 'c'})), 1), {})
          .ok());
  // header count 2 but one header present
  expect_error(assemble(raw_record(0, to_bytes({1, 1, 4, 2, 'a', 1})), 1),
               kafka_error::invalid_record);
  // header value overruns the record
  expect_error(assemble(raw_record(0, to_bytes({1, 1, 2, 2, 'a', 10, 'x'})), 1),
               kafka_error::invalid_record);
  // header key overruns the record
  expect_error(assemble(raw_record(0, to_bytes({1, 1, 2, 30, 'a', 1})), 1),
               kafka_error::invalid_record);
  // null header key
  expect_error(assemble(raw_record(0, to_bytes({1, 1, 2, 1, 1})), 1), kafka_error::invalid_record);
  // negative header count
  expect_error(assemble(raw_record(0, to_bytes({1, 1, 3})), 1), kafka_error::invalid_record);

  // Over-long varints: a 6-byte varint, and a 5-byte one with bits beyond 32.
  bytes overlong = to_bytes({0x88, 0x80, 0x80, 0x80, 0x80, 0x00});
  append(overlong, to_bytes({0, 0, 0, 2, 'k', 2, 'v', 0}));
  expect_error(assemble(overlong, 1), kafka_error::invalid_record);
  bytes too_wide = to_bytes({0x88, 0x80, 0x80, 0x80, 0x10});
  append(too_wide, to_bytes({0, 0, 0, 2, 'k', 2, 'v', 0}));
  expect_error(assemble(too_wide, 1), kafka_error::invalid_record);
  // The same Length as a non-minimal but in-range 5-byte varint is accepted.
  bytes padded = to_bytes({0x90, 0x80, 0x80, 0x80, 0x00});
  append(padded, to_bytes({0, 0, 0, 2, 'k', 2, 'v', 0}));
  EXPECT_TRUE(validate_batch(assemble(padded, 1), {}).ok());

  // A record truncated inside its timestamp varlong.
  expect_error(assemble(to_bytes({4, 0, 0x80}), 1), kafka_error::invalid_record);
}

TEST(record_batch_validation, max_message_bytes) {
  const bytes batch = sample_batch();
  batch_limits l;
  l.max_message_bytes = batch.size();
  EXPECT_TRUE(validate_batch(batch, l).ok());
  l.max_message_bytes = batch.size() - 1;
  expect_error(batch, kafka_error::message_too_large, l);
}

TEST(record_batch_validation, compressed_batches_pass_through_unread) {
  const bytes plain = sample_batch();
  std::mt19937 rng(7);
  for (int codec = 1; codec <= 4; ++codec) {
    bytes b(plain.begin(), plain.begin() + batch_header_size);
    for (int i = 0; i < 50; ++i)
      b.push_back(static_cast<std::byte>(rng()));
    put_be(b, 8, b.size() - 12, 4);
    put_be(b, 21, static_cast<uint32_t>(codec), 2);
    rewrite_crc(b);
    const auto v = validate_batch(b, producer_limits());
    ASSERT_TRUE(v.ok()) << codec << ": " << v.reason;
    EXPECT_EQ(static_cast<int>(v.header.compression()), codec);
    EXPECT_EQ(v.header.records_count, 4);
    EXPECT_EQ(v.records_max_timestamp, -1);
    if (codec == 4) {
      batch_limits old_produce;
      old_produce.zstd_allowed = false;
      expect_error(b, kafka_error::unsupported_compression_type, old_produce);
    }
    b[30] ^= std::byte{1};  // still CRC-checked
    expect_error(b, kafka_error::corrupt_message);
  }
  for (int codec = 5; codec <= 7; ++codec) {
    bytes b = plain;
    put_be(b, 21, static_cast<uint32_t>(codec), 2);
    rewrite_crc(b);
    expect_error(b, kafka_error::corrupt_message);
  }
}

TEST(record_batch_validation, producer_only_rules) {
  record_batch_builder control;
  control.set_attributes(0x20).add(rec(std::string("\0\0\0\1", 4), std::string(6, '\0'), 5));
  const bytes c = control.build();
  expect_error(c, kafka_error::invalid_record);
  EXPECT_TRUE(validate_batch(c, stored_limits()).ok());

  record_batch_builder moved;
  moved.set_base_offset(100).add(rec("k", "v", 1));
  expect_error(moved.build(), kafka_error::invalid_record);
  EXPECT_TRUE(validate_batch(moved.build(), stored_limits()).ok());

  record_batch_builder no_seq;
  no_seq.set_producer(9, 0, -1).add(rec("k", "v", 1));
  expect_error(no_seq.build(), kafka_error::invalid_record);

  record_batch_builder txn;
  txn.set_producer(9, 0, 0).set_attributes(0x10).add(rec("k", "v", 1));
  const auto v = validate_batch(txn.build(), producer_limits());
  ASSERT_TRUE(v.ok()) << v.reason;
  EXPECT_TRUE(v.header.is_transactional());
}

// ---- stamping and empty batches ---------------------------------------------------------------

TEST(record_batch, stamp_keeps_the_crc_valid) {
  bytes b = sample_batch();
  const uint32_t crc_before = parse_header(b)->crc;
  stamp(b, 123456789012345, 77);
  const auto v = validate_batch(b, stored_limits());
  ASSERT_TRUE(v.ok()) << v.reason;
  EXPECT_EQ(v.header.base_offset, 123456789012345);
  EXPECT_EQ(v.header.partition_leader_epoch, 77);
  EXPECT_EQ(v.header.last_offset(), 123456789012345 + 3);
  EXPECT_EQ(v.header.crc, crc_before);
  EXPECT_EQ(v.header.crc, table_crc_of_batch(b));
  // A producer's batch may not arrive pre-stamped.
  EXPECT_EQ(validate_batch(b, producer_limits()).error, kafka_error::invalid_record);
}

TEST(record_batch, empty_batch_spans_raft_entries) {
  std::array<std::byte, batch_header_size> out{};
  ASSERT_EQ(write_empty_batch(out, 100, 104, 7, 1700000000000), batch_header_size);
  const auto v = validate_batch(out, stored_limits());
  ASSERT_TRUE(v.ok()) << v.reason;
  EXPECT_EQ(v.header.records_count, 0);
  EXPECT_EQ(v.records_max_timestamp, -1);
  const auto h = parse_header(out);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->base_offset, 100);
  EXPECT_EQ(h->last_offset_delta, 4);
  EXPECT_EQ(h->last_offset(), 104);
  EXPECT_EQ(h->size(), 61);
  EXPECT_EQ(h->partition_leader_epoch, 7);
  EXPECT_EQ(h->magic, 2);
  EXPECT_EQ(h->attributes, 0);
  EXPECT_EQ(h->base_timestamp, 1700000000000);
  EXPECT_EQ(h->max_timestamp, 1700000000000);
  EXPECT_EQ(h->producer_id, -1);
  EXPECT_EQ(h->producer_epoch, -1);
  EXPECT_EQ(h->base_sequence, -1);
  EXPECT_EQ(h->crc, table_crc_of_batch(out));
  // Kafka never takes an empty batch from a producer.
  bytes copy(out.begin(), out.end());
  stamp(copy, 0, -1);
  EXPECT_EQ(validate_batch(copy, producer_limits()).error, kafka_error::invalid_record);

  ASSERT_EQ(write_empty_batch(out, 5, 5, 1, 0), batch_header_size);
  const auto single = validate_batch(out, stored_limits());
  ASSERT_TRUE(single.ok()) << single.reason;
  EXPECT_EQ(single.header.last_offset(), 5);
}

// ---- fuzz ---------------------------------------------------------------------------------------

TEST(record_batch_fuzz, mutations_never_crash_nor_pass_a_bad_crc) {
  std::vector<bytes> corpus;
  corpus.push_back(sample_batch());
  {
    record_batch_builder b;
    b.set_producer(1, 0, 0).add(rec(std::nullopt, std::nullopt, -5));
    corpus.push_back(b.build());
  }
  {
    record_batch_builder b;
    for (int i = 0; i < 20; ++i)
      b.add(rec("key" + std::to_string(i), std::string(static_cast<size_t>(i * 7), 'v'), i * 3,
                {{"h", std::to_string(i)}}));
    corpus.push_back(b.build());
  }
  {
    bytes b(batch_header_size);
    write_empty_batch(std::span<std::byte, batch_header_size>(b.data(), batch_header_size), 0, 3,
                      -1, 9);
    corpus.push_back(b);
  }

  std::mt19937_64 rng(0x6b65656c);  // deterministic
  size_t accepted = 0, accepted_after_crc_fix = 0;
  for (int iter = 0; iter < 100000; ++iter) {
    bytes b = corpus[rng() % corpus.size()];
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations && !b.empty(); ++m) {
      switch (rng() % 6) {
        case 0:  // flip bits
          b[rng() % b.size()] ^= static_cast<std::byte>(1 + rng() % 255);
          break;
        case 1:  // set a byte to a varint-hostile value
          b[rng() % b.size()] = static_cast<std::byte>((rng() % 2) != 0 ? 0xFF : 0x80);
          break;
        case 2:  // truncate
          b.resize(rng() % b.size());
          break;
        case 3:  // insert a byte
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng() % (b.size() + 1)),
                   static_cast<std::byte>(rng()));
          break;
        case 4:  // erase a byte
          b.erase(b.begin() + static_cast<std::ptrdiff_t>(rng() % b.size()));
          break;
        case 5:  // mutate the records area only
          if (b.size() > batch_header_size)
            b[batch_header_size + rng() % (b.size() - batch_header_size)] =
                static_cast<std::byte>(rng());
          break;
      }
    }
    // Half the time make Length and the CRC consistent again, so the record walk sees garbage.
    const bool fixed = (rng() % 2) == 0 && b.size() >= batch_header_size;
    if (fixed) {
      put_be(b, 8, b.size() - 12, 4);
      rewrite_crc(b);
    }
    for (const batch_limits& l : {producer_limits(), stored_limits()}) {
      // Validate a heap copy of exactly the bytes so ASan sees any overread.
      const auto exact = std::make_unique<std::byte[]>(b.size() + 1);
      if (!b.empty()) std::memcpy(exact.get(), b.data(), b.size());
      const auto v = validate_batch(std::span<const std::byte>(exact.get(), b.size()), l);
      if (v.ok()) {
        ASSERT_GE(b.size(), batch_header_size);
        ASSERT_EQ(v.header.crc, table_crc_of_batch(b)) << "accepted a batch with a bad CRC";
        ASSERT_EQ(v.header.size(), static_cast<int64_t>(b.size()));
        ASSERT_EQ(v.header.magic, 2);
        ASSERT_GE(v.header.records_count, 0);
        ++accepted;
        if (fixed) ++accepted_after_crc_fix;
      } else {
        ASSERT_FALSE(v.reason.empty());
      }
    }
  }
  // The fuzz reaches the record walk's success path, not only its failures.
  EXPECT_GT(accepted_after_crc_fix, 0u);
  RecordProperty("accepted", static_cast<int>(accepted));
}

}  // namespace
}  // namespace keel::net::kafka

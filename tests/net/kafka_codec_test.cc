// The Kafka codec: the bounded reader, the gathering writer, hand-built golden bytes for the
// requests real clients send first, a round trip of every generated message at every version,
// and deterministic garbage that must decode to an error or to a message that re-encodes stably.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "kafka_samples.h"
#include "keel/net/kafka/messages.h"
#include "keel/net/kafka/protocol.h"

namespace keel::net::kafka {
namespace {

std::vector<std::byte> bytes(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values)
    out.push_back(static_cast<std::byte>(v));
  return out;
}

void append(std::vector<std::byte>& out, std::string_view s) {
  for (char c : s)
    out.push_back(static_cast<std::byte>(c));
}

void append(std::vector<std::byte>& out, std::initializer_list<int> values) {
  for (int v : values)
    out.push_back(static_cast<std::byte>(v));
}

// ---------------------------------------------------------------------------------------------
// reader

TEST(kafka_reader, reads_big_endian_fixed_width_values) {
  const auto in = bytes({0x81, 0x12, 0x34, 0xff, 0xff, 0xff, 0xfe, 0x01, 0x02, 0x03, 0x04, 0x05,
                         0x06, 0x07, 0x08, 0x02, 0x3f, 0xf8, 0,    0,    0,    0,    0,    0});
  reader r(in);
  EXPECT_EQ(r.get_int8(), -127);
  EXPECT_EQ(r.get_uint16(), 0x1234);
  EXPECT_EQ(r.get_int32(), -2);
  EXPECT_EQ(r.get_int64(), 0x0102030405060708);
  EXPECT_TRUE(r.get_bool());
  EXPECT_EQ(r.get_float64(), 1.5);
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.at_end());
}

TEST(kafka_reader, a_read_past_the_end_fails_and_the_failure_sticks) {
  const auto in = bytes({0x00, 0x01, 0x02});
  reader r(in);
  EXPECT_EQ(r.get_int32(), 0);
  EXPECT_FALSE(r.ok());
  // Later reads that would fit still return zero values.
  EXPECT_EQ(r.get_int8(), 0);
  EXPECT_EQ(r.get_string(false), "");
  EXPECT_EQ(r.get_array_length(false), 0);
  EXPECT_FALSE(r.ok());
}

TEST(kafka_reader, unsigned_varints_are_bounded_to_five_and_ten_bytes) {
  {
    const auto in = bytes({0x96, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f});
    reader r(in);
    EXPECT_EQ(r.get_uvarint(), 150u);
    EXPECT_EQ(r.get_uvarint(), 0xffffffffu);
    EXPECT_TRUE(r.ok());
  }
  {  // Six bytes.
    const auto in = bytes({0x80, 0x80, 0x80, 0x80, 0x80, 0x01});
    reader r(in);
    EXPECT_EQ(r.get_uvarint(), 0u);
    EXPECT_FALSE(r.ok());
  }
  {  // Five bytes, but bits above 31.
    const auto in = bytes({0xff, 0xff, 0xff, 0xff, 0x1f});
    reader r(in);
    r.get_uvarint();
    EXPECT_FALSE(r.ok());
  }
  {  // Truncated.
    const auto in = bytes({0x80, 0x80});
    reader r(in);
    r.get_uvarint();
    EXPECT_FALSE(r.ok());
  }
  {  // Eleven bytes for a varlong.
    std::vector<std::byte> in(10, std::byte{0x80});
    in.push_back(std::byte{0});
    reader r(in);
    r.get_uvarlong();
    EXPECT_FALSE(r.ok());
  }
  {
    std::vector<std::byte> in(9, std::byte{0xff});
    in.push_back(std::byte{0x01});
    reader r(in);
    EXPECT_EQ(r.get_uvarlong(), ~uint64_t{0});
    EXPECT_TRUE(r.ok());
  }
}

TEST(kafka_reader, zigzag_varints_round_trip) {
  writer w;
  const std::vector<int32_t> ints = {0, -1, 1, -64, 63, 64, INT32_MIN, INT32_MAX};
  const std::vector<int64_t> longs = {0, -1, 1, INT64_MIN, INT64_MAX, -300};
  for (auto v : ints)
    w.put_varint(v);
  for (auto v : longs)
    w.put_varlong(v);
  const auto out = w.flatten();
  EXPECT_EQ(out[0], std::byte{0});
  EXPECT_EQ(out[1], std::byte{1});  // -1 -> 1
  EXPECT_EQ(out[2], std::byte{2});  // 1 -> 2
  reader r(out);
  for (auto v : ints)
    EXPECT_EQ(r.get_varint(), v);
  for (auto v : longs)
    EXPECT_EQ(r.get_varlong(), v);
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.at_end());
}

TEST(kafka_reader, strings_in_classic_and_compact_forms_with_null) {
  auto in = bytes({0x00, 0x02});
  append(in, "hi");
  append(in, {0xff, 0xff, 0x03});
  append(in, "yo");
  append(in, {0x00});
  reader r(in);
  EXPECT_EQ(r.get_string(false), "hi");
  EXPECT_EQ(r.get_nullable_string(false), std::nullopt);
  EXPECT_EQ(r.get_nullable_string(true), std::optional<std::string>("yo"));
  EXPECT_EQ(r.get_nullable_string(true), std::nullopt);
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.at_end());
}

TEST(kafka_reader, a_null_where_the_field_is_not_nullable_fails) {
  {
    const auto in = bytes({0xff, 0xff});
    reader r(in);
    r.get_string(false);
    EXPECT_FALSE(r.ok());
  }
  {
    const auto in = bytes({0x00});
    reader r(in);
    r.get_bytes(true);
    EXPECT_FALSE(r.ok());
  }
}

TEST(kafka_reader, negative_lengths_other_than_minus_one_fail) {
  for (const auto& in : {bytes({0xff, 0xfe}), bytes({0x80, 0x00})}) {
    reader r(in);
    EXPECT_EQ(r.get_nullable_string(false), std::nullopt);
    EXPECT_FALSE(r.ok());
  }
  {
    const auto in = bytes({0xff, 0xff, 0xff, 0xfe});
    reader r(in);
    EXPECT_EQ(r.get_array_length(false), 0);
    EXPECT_FALSE(r.ok());
  }
  {
    const auto in = bytes({0xff, 0xff, 0xff, 0xfe});
    reader r(in);
    EXPECT_FALSE(r.get_nullable_bytes(false).has_value());
    EXPECT_FALSE(r.ok());
  }
}

TEST(kafka_reader, lengths_and_counts_beyond_the_input_fail_without_allocating) {
  {  // A string of 32767 bytes with 2 left.
    const auto in = bytes({0x7f, 0xff, 'a', 'b'});
    reader r(in);
    EXPECT_EQ(r.get_string(false), "");
    EXPECT_FALSE(r.ok());
  }
  {  // An array of two billion elements.
    const auto in = bytes({0x7f, 0xff, 0xff, 0xff, 0, 0, 0});
    reader r(in);
    EXPECT_EQ(r.get_array_length(false), 0);
    EXPECT_FALSE(r.ok());
  }
  {  // A compact count of 4 billion.
    const auto in = bytes({0xff, 0xff, 0xff, 0xff, 0x0f});
    reader r(in);
    EXPECT_EQ(r.get_array_length(true), 0);
    EXPECT_FALSE(r.ok());
  }
  {  // A count that fits is returned.
    const auto in = bytes({0x00, 0x00, 0x00, 0x02, 1, 2});
    reader r(in);
    EXPECT_EQ(r.get_array_length(false), 2);
    EXPECT_TRUE(r.ok());
  }
  {  // A generated message with a forged count fails as a whole.
    const auto in = bytes({0x7f, 0xff, 0xff, 0xff});
    reader r(in);
    metadata_request m;
    EXPECT_FALSE(m.decode(r, 1));
  }
}

TEST(kafka_reader, records_are_a_view_into_the_input) {
  auto in = bytes({0x00, 0x00, 0x00, 0x03, 7, 8, 9, 0x01, 0x00});
  reader r(in);
  const auto a = r.get_records(false);
  const auto b = r.get_records(true);
  const auto c = r.get_records(true);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(a.pieces.size(), 1u);
  EXPECT_EQ(a.pieces[0].data(), in.data() + 4);
  EXPECT_EQ(a.size(), 3u);
  EXPECT_FALSE(b.null);
  EXPECT_EQ(b.size(), 0u);
  EXPECT_TRUE(c.null);
}

TEST(kafka_reader, tagged_fields_skip_unknown_tags_and_bound_their_values) {
  // Two fields: tag 3 (2 bytes), tag 9 (1 byte).
  const auto in = bytes({0x02, 0x03, 0x02, 0xaa, 0xbb, 0x09, 0x01, 0xcc});
  reader r(in);
  std::vector<uint32_t> seen;
  r.get_tagged_fields([&](uint32_t tag, reader& sub) {
    seen.push_back(tag);
    if (tag == 9) {
      EXPECT_EQ(sub.get_int8(), static_cast<int8_t>(0xcc));
    }
  });
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.at_end());
  EXPECT_EQ(seen, (std::vector<uint32_t>{3, 9}));
  {  // A value longer than the input.
    const auto bad = bytes({0x01, 0x03, 0x05, 0xaa});
    reader r2(bad);
    r2.get_tagged_fields([](uint32_t, reader&) {});
    EXPECT_FALSE(r2.ok());
  }
  {  // A read past the end of the value fails the outer reader.
    const auto bad = bytes({0x01, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd});
    reader r3(bad);
    r3.get_tagged_fields([](uint32_t, reader& sub) { sub.get_int32(); });
    EXPECT_FALSE(r3.ok());
  }
}

// ---------------------------------------------------------------------------------------------
// writer

TEST(kafka_writer, gathers_owned_and_external_pieces_in_order) {
  const auto ext1 = bytes({1, 2, 3});
  const auto ext2 = bytes({4, 5});
  writer w;
  w.put_int32(0);
  w.put_int16(7);
  w.put_external(ext1);
  w.put_external(ext2);
  w.put_int8(9);
  w.patch_int32(0, static_cast<int32_t>(w.size() - 4));
  EXPECT_EQ(w.size(), 4u + 2 + 3 + 2 + 1);
  const auto pieces = w.pieces();
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[0].size, 6u);
  EXPECT_EQ(pieces[1].data, ext1.data());
  EXPECT_EQ(pieces[2].data, ext2.data());
  EXPECT_EQ(pieces[3].size, 1u);
  EXPECT_EQ(w.flatten(), bytes({0, 0, 0, 8, 0, 7, 1, 2, 3, 4, 5, 9}));
}

// ---------------------------------------------------------------------------------------------
// Golden bytes

TEST(kafka_golden, api_versions_v3_request_with_flexible_header_v2) {
  // librdkafka's first request: ApiVersions v3 with header v2.
  std::vector<std::byte> in = bytes({0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x07});
  append(in, "rdkafka");
  append(in, {0x00, 0x0b});  // header tags; client_software_name length 10 + 1
  append(in, "librdkafka");
  append(in, {0x06});
  append(in, "2.0.2");
  append(in, {0x00});

  reader r(in);
  request_header h;
  // The api key and version come first in every header version.
  ASSERT_EQ(request_header_version(18, 3), 2);
  ASSERT_TRUE(h.decode(r, 2));
  EXPECT_EQ(h.request_api_key, 18);
  EXPECT_EQ(h.request_api_version, 3);
  EXPECT_EQ(h.correlation_id, 1);
  EXPECT_EQ(h.client_id, std::optional<std::string>("rdkafka"));
  api_versions_request req;
  ASSERT_TRUE(req.decode(r, 3));
  EXPECT_TRUE(r.at_end());
  EXPECT_EQ(req.client_software_name, "librdkafka");
  EXPECT_EQ(req.client_software_version, "2.0.2");

  writer w;
  h.encode(w, 2);
  req.encode(w, 3);
  EXPECT_EQ(w.flatten(), in);

  // The response to it: header v0 always, then a flexible body.
  EXPECT_EQ(response_header_version(18, 3), 0);
  EXPECT_EQ(response_header_version(3, 9), 1);
  EXPECT_EQ(response_header_version(3, 8), 0);
  api_versions_response resp;
  resp.api_keys.push_back({.api_key = 18, .min_version = 0, .max_version = 4});
  writer rw;
  resp.encode(rw, 3);
  // error_code, api_keys (compact count 2) {key, min, max, tags}, throttle_time_ms, tags.
  EXPECT_EQ(rw.flatten(), bytes({0, 0, 0x02, 0, 18, 0, 0, 0, 4, 0x00, 0, 0, 0, 0, 0x00}));
}

TEST(kafka_golden, metadata_v1_request) {
  std::vector<std::byte> in = bytes({0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x07, 0x00, 0x01});
  append(in, "c");
  append(in, {0x00, 0x00, 0x00, 0x02, 0x00, 0x01});
  append(in, "a");
  append(in, {0x00, 0x02});
  append(in, "bc");
  reader r(in);
  request_header h;
  ASSERT_EQ(request_header_version(3, 1), 1);
  ASSERT_TRUE(h.decode(r, 1));
  EXPECT_EQ(h.correlation_id, 7);
  metadata_request m;
  ASSERT_TRUE(m.decode(r, 1));
  EXPECT_TRUE(r.at_end());
  ASSERT_TRUE(m.topics.has_value());
  ASSERT_EQ(m.topics->size(), 2u);
  EXPECT_EQ((*m.topics)[0].name, std::optional<std::string>("a"));
  EXPECT_EQ((*m.topics)[1].name, std::optional<std::string>("bc"));
  EXPECT_TRUE(m.allow_auto_topic_creation);  // the default for versions without it
  writer w;
  h.encode(w, 1);
  m.encode(w, 1);
  EXPECT_EQ(w.flatten(), in);

  // Null topics means "all topics" in v1 and is not allowed in v0 (where empty means all).
  const auto null_topics = bytes({0xff, 0xff, 0xff, 0xff});
  reader r1(null_topics);
  metadata_request all;
  ASSERT_TRUE(all.decode(r1, 1));
  EXPECT_FALSE(all.topics.has_value());
  reader r0(null_topics);
  EXPECT_FALSE(all.decode(r0, 0));
  // Encoding null at v0 writes the empty array.
  writer w0;
  metadata_request{}.encode(w0, 0);
  EXPECT_EQ(w0.flatten(), bytes({0, 0, 0, 0}));
}

TEST(kafka_golden, produce_v7_request_records_are_not_copied) {
  std::vector<std::byte> in = bytes({0xff, 0xff,              // transactional_id null
                                     0xff, 0xff,              // acks -1
                                     0x00, 0x00, 0x75, 0x30,  // timeout_ms 30000
                                     0x00, 0x00, 0x00, 0x01,  // one topic
                                     0x00, 0x01, 't',         // name
                                     0x00, 0x00, 0x00, 0x01,  // one partition
                                     0x00, 0x00, 0x00, 0x02,  // index 2
                                     0x00, 0x00, 0x00, 0x05,  // records: 5 bytes
                                     0x10, 0x11, 0x12, 0x13, 0x14});
  reader r(in);
  produce_request p;
  ASSERT_TRUE(p.decode(r, 7));
  EXPECT_TRUE(r.at_end());
  EXPECT_FALSE(p.transactional_id.has_value());
  EXPECT_EQ(p.acks, -1);
  EXPECT_EQ(p.timeout_ms, 30000);
  ASSERT_EQ(p.topic_data.size(), 1u);
  EXPECT_EQ(p.topic_data[0].name, "t");
  ASSERT_EQ(p.topic_data[0].partition_data.size(), 1u);
  const auto& part = p.topic_data[0].partition_data[0];
  EXPECT_EQ(part.index, 2);
  ASSERT_EQ(part.records.pieces.size(), 1u);
  EXPECT_EQ(part.records.pieces[0].data(), in.data() + in.size() - 5);
  EXPECT_EQ(part.records.size(), 5u);

  writer w;
  p.encode(w, 7);
  EXPECT_EQ(w.flatten(), in);
  // The record bytes go out as an external piece: the input itself.
  const auto pieces = w.pieces();
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[1].data, in.data() + in.size() - 5);
}

TEST(kafka_golden, fetch_v11_response_gathers_external_record_pieces) {
  const auto batch_a1 = bytes({0xa1, 0xa2, 0xa3});
  const auto batch_a2 = bytes({0xa4});
  const auto batch_b = bytes({0xb1, 0xb2});
  fetch_response f;
  f.throttle_time_ms = 0;
  f.session_id = 5;
  auto& topic = f.responses.emplace_back();
  topic.topic = "t";
  auto& p0 = topic.partitions.emplace_back();
  p0.partition_index = 0;
  p0.high_watermark = 10;
  p0.last_stable_offset = 10;
  p0.log_start_offset = 0;
  p0.records.pieces = {batch_a1, batch_a2};
  auto& p1 = topic.partitions.emplace_back();
  p1.partition_index = 1;
  p1.high_watermark = 3;
  p1.last_stable_offset = 3;
  p1.log_start_offset = 0;
  p1.aborted_transactions.emplace();
  p1.records.pieces = {batch_b};

  writer w;
  w.put_int32(0);  // the frame size, patched below
  response_header{.correlation_id = 42}.encode(w, response_header_version(1, 11));
  f.encode(w, 11);
  w.patch_int32(0, static_cast<int32_t>(w.size() - 4));

  std::vector<std::byte> expected;
  const auto partition = [&](int index, int hw, std::initializer_list<int> aborted,
                             int records_size) {
    append(expected, {0, 0, 0, index, 0, 0});     // index, error
    append(expected, {0, 0, 0, 0, 0, 0, 0, hw});  // high watermark
    append(expected, {0, 0, 0, 0, 0, 0, 0, hw});  // last stable offset
    append(expected, {0, 0, 0, 0, 0, 0, 0, 0});   // log start offset
    append(expected, aborted);                    // aborted transactions
    append(expected, {0xff, 0xff, 0xff, 0xff});   // preferred read replica -1
    append(expected, {0, 0, 0, records_size});    // records length
  };
  append(expected, {0, 0, 0, 0});                         // size (patched)
  append(expected, {0, 0, 0, 42});                        // correlation id
  append(expected, {0, 0, 0, 0, 0, 0, 0, 0, 0, 5});       // throttle, error, session
  append(expected, {0, 0, 0, 1, 0, 1, 't', 0, 0, 0, 2});  // one topic "t", 2 partitions
  partition(0, 10, {0xff, 0xff, 0xff, 0xff}, 4);
  const size_t first_owned = expected.size();
  append(expected, {0xa1, 0xa2, 0xa3, 0xa4});
  const size_t second_owned = expected.size();
  partition(1, 3, {0, 0, 0, 0}, 2);
  const size_t second_owned_end = expected.size();
  append(expected, {0xb1, 0xb2});
  expected[3] = static_cast<std::byte>(expected.size() - 4);

  EXPECT_EQ(w.size(), expected.size());
  EXPECT_EQ(w.flatten(), expected);
  const auto pieces = w.pieces();
  ASSERT_EQ(pieces.size(), 5u);
  EXPECT_EQ(pieces[0].size, first_owned);
  EXPECT_EQ(pieces[1].data, batch_a1.data());
  EXPECT_EQ(pieces[1].size, 3u);
  EXPECT_EQ(pieces[2].data, batch_a2.data());
  EXPECT_EQ(pieces[3].size, second_owned_end - second_owned);
  EXPECT_EQ(pieces[4].data, batch_b.data());
  size_t total = 0;
  for (const auto& p : pieces)
    total += p.size;
  EXPECT_EQ(total, expected.size());

  // And it decodes back (the records joined into one view).
  const auto flat = w.flatten();
  reader r(std::span<const std::byte>(flat).subspan(4));
  response_header h;
  ASSERT_TRUE(h.decode(r, 0));
  EXPECT_EQ(h.correlation_id, 42);
  fetch_response back;
  ASSERT_TRUE(back.decode(r, 11));
  EXPECT_TRUE(r.at_end());
  EXPECT_EQ(back, f);
}

// ---------------------------------------------------------------------------------------------
// Every message, every version

template <class T>
void round_trip_every_version() {
  for (int16_t v = T::lowest_version; v <= T::highest_version; ++v) {
    SCOPED_TRACE(::testing::Message() << typeid(T).name() << " v" << v);
    T a;
    uint32_t seed = static_cast<uint32_t>(v) * 7;
    kafka::testing::fill_sample(a, v, seed);
    writer w;
    a.encode(w, v);
    const auto flat = w.flatten();
    reader r(flat);
    T b;
    ASSERT_TRUE(b.decode(r, v));
    EXPECT_TRUE(r.at_end());
    EXPECT_EQ(a, b);
    // A default message round trips too.
    writer w2;
    T{}.encode(w2, v);
    const auto flat2 = w2.flatten();
    reader r2(flat2);
    T c;
    ASSERT_TRUE(c.decode(r2, v));
    writer w3;
    c.encode(w3, v);
    EXPECT_EQ(w3.flatten(), flat2);
  }
}

TEST(kafka_round_trip, every_message_at_every_version) {
  round_trip_every_version<request_header>();
  round_trip_every_version<response_header>();
  int types = 0;
  for_each_message_type([&](auto t) {
    round_trip_every_version<typename decltype(t)::type>();
    ++types;
  });
  EXPECT_EQ(types, 48);
}

TEST(kafka_round_trip, tagged_fields_are_written_only_when_not_default) {
  fetch_response::partition_data p;
  writer plain;
  fetch_response f;
  f.responses.emplace_back().partitions.push_back(p);
  f.encode(plain, 12);
  f.responses[0].partitions[0].current_leader.leader_epoch = 3;
  writer tagged;
  f.encode(tagged, 12);
  // The tag section of the partition grows by: tag 1, size 8, the struct (8 bytes + 0x00 tags).
  EXPECT_EQ(tagged.size(), plain.size() + 1 + 1 + 9);
  const auto flat = tagged.flatten();
  reader r(flat);
  fetch_response back;
  ASSERT_TRUE(back.decode(r, 12));
  EXPECT_EQ(back.responses[0].partitions[0].current_leader.leader_epoch, 3);
}

TEST(kafka_api_table, matches_the_message_types) {
  const auto apis = generated_apis();
  EXPECT_EQ(apis.size(), 24u);
  for (const auto& a : apis) {
    bool found = false;
    visit_request_type(a.api_key, [&](auto t) {
      using T = typename decltype(t)::type;
      found = true;
      EXPECT_EQ(T::lowest_version, a.lowest_version);
      EXPECT_EQ(T::highest_version, a.highest_version);
      EXPECT_EQ(T::flexible_from, a.flexible_from);
    });
    EXPECT_TRUE(found) << a.name;
    EXPECT_TRUE(visit_response_type(a.api_key, [](auto) {}));
  }
  EXPECT_FALSE(visit_request_type(999, [](auto) {}));
  EXPECT_TRUE(is_flexible(3, 9));
  EXPECT_FALSE(is_flexible(3, 8));
  EXPECT_FALSE(is_flexible(47, 0));  // OffsetDelete has no flexible version
  EXPECT_TRUE(is_flexible(18, 7));   // an ApiVersions version beyond ours
  EXPECT_EQ(request_header_version(0, 9), 2);
  EXPECT_EQ(request_header_version(0, 8), 1);
  EXPECT_EQ(request_header_version(7, 0), 0);
  ASSERT_NE(find_api(60), nullptr);
  EXPECT_EQ(find_api(60)->name, "DescribeCluster");
}

// ---------------------------------------------------------------------------------------------
// Garbage in

// Decodes in; if it decodes, the re-encoding must decode and re-encode to the same bytes.
template <class T>
void decode_is_safe(std::span<const std::byte> in, int16_t version) {
  reader r(in);
  T m;
  if (!m.decode(r, version)) return;
  writer w;
  m.encode(w, version);
  const auto once = w.flatten();
  reader r2(once);
  T again;
  ASSERT_TRUE(again.decode(r2, version));
  writer w2;
  again.encode(w2, version);
  ASSERT_EQ(w2.flatten(), once);
}

void mutate(std::vector<std::byte>& b, std::mt19937& rng) {
  const int kind = static_cast<int>(rng() % 5);
  if (b.empty() || kind == 0) {
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(b.empty() ? 0 : rng() % b.size()),
             static_cast<std::byte>(rng()));
  } else if (kind == 1) {
    b[rng() % b.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
  } else if (kind == 2) {
    b[rng() % b.size()] = static_cast<std::byte>(rng());
  } else if (kind == 3) {
    b.resize(rng() % b.size());
  } else {
    // A length-looking value: 0xff.. or a big count.
    const size_t at = rng() % b.size();
    for (size_t i = at; i < std::min(b.size(), at + 1 + rng() % 4); ++i)
      b[i] = (rng() & 1) ? std::byte{0xff} : std::byte{0x7f};
  }
}

template <class T>
int fuzz_type(std::mt19937& rng, int per_version) {
  int runs = 0;
  for (int16_t v = T::lowest_version; v <= T::highest_version; ++v) {
    T sample;
    uint32_t seed = rng();
    kafka::testing::fill_sample(sample, v, seed);
    writer w;
    sample.encode(w, v);
    const auto base = w.flatten();
    for (int i = 0; i < per_version; ++i) {
      std::vector<std::byte> in;
      if (i % 8 == 0) {
        in.resize(rng() % 64);
        for (auto& b : in)
          b = static_cast<std::byte>(rng());
      } else {
        in = base;
        const int mutations = 1 + static_cast<int>(rng() % 3);
        for (int k = 0; k < mutations; ++k)
          mutate(in, rng);
      }
      decode_is_safe<T>(in, v);
      if (::testing::Test::HasFatalFailure()) return runs;
      ++runs;
    }
  }
  return runs;
}

TEST(kafka_garbage, mutated_and_random_inputs_never_crash) {
  std::mt19937 rng(20240611);
  int runs = 0;
  for_each_message_type([&](auto t) {
    using T = typename decltype(t)::type;
    // Requests come from untrusted clients: most of the budget goes there.
    bool request = false;
    visit_request_type(T::api_key,
                       [&](auto u) { request = std::is_same_v<typename decltype(u)::type, T>; });
    runs += fuzz_type<T>(rng, request ? 1500 : 200);
  });
  runs += fuzz_type<request_header>(rng, 2000);
  EXPECT_GT(runs, 200000);
}

// ---------------------------------------------------------------------------------------------
// The fuzzer's seed corpus: header + body of each request at its lowest, first flexible and
// highest versions. KEEL_WRITE_KAFKA_CORPUS=dir writes it; the committed copy must parse.

std::vector<std::pair<std::string, std::vector<std::byte>>> corpus_inputs() {
  std::vector<std::pair<std::string, std::vector<std::byte>>> out;
  for (const auto& a : generated_apis()) {
    std::vector<int16_t> versions = {a.lowest_version, a.highest_version};
    if (a.flexible_from >= 0 && a.flexible_from != a.highest_version)
      versions.push_back(a.flexible_from);
    for (int16_t v : versions) {
      visit_request_type(a.api_key, [&](auto t) {
        using T = typename decltype(t)::type;
        writer w;
        request_header h;
        h.request_api_key = a.api_key;
        h.request_api_version = v;
        h.correlation_id = 1;
        h.client_id = "keel-corpus";
        h.encode(w, request_header_version(a.api_key, v));
        T body;
        uint32_t seed = 1;
        kafka::testing::fill_sample(body, v, seed);
        body.encode(w, v);
        out.emplace_back(std::string(a.name) + "_v" + std::to_string(v), w.flatten());
      });
    }
  }
  return out;
}

// Parses a request as the broker will: the header (its version from the key and version that
// open it), then the body, which must take the rest.
bool parse_request(std::span<const std::byte> data) {
  reader peek(data);
  const int16_t key = peek.get_int16();
  const int16_t version = peek.get_int16();
  reader r(data);
  request_header h;
  if (!peek.ok() || !h.decode(r, request_header_version(key, version))) return false;
  bool parsed = false;
  visit_request_type(key, [&](auto t) {
    typename decltype(t)::type body;
    parsed = body.decode(r, version) && r.at_end();
  });
  return parsed;
}

TEST(kafka_corpus, seed_inputs_parse) {
  const char* dir = std::getenv("KEEL_WRITE_KAFKA_CORPUS");
  for (const auto& [name, data] : corpus_inputs()) {
    EXPECT_TRUE(parse_request(data)) << name;
    if (dir != nullptr) {
      std::ofstream f(std::filesystem::path(dir) / name, std::ios::binary);
      f.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size()));
    }
  }
#ifdef KEEL_KAFKA_CORPUS_DIR
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(KEEL_KAFKA_CORPUS_DIR)) {
    std::ifstream f(entry.path(), std::ios::binary);
    const std::vector<char> raw((std::istreambuf_iterator<char>(f)),
                                std::istreambuf_iterator<char>());
    std::vector<std::byte> data(raw.size());
    if (!raw.empty()) std::memcpy(data.data(), raw.data(), raw.size());
    EXPECT_TRUE(parse_request(data)) << entry.path();
    ++files;
  }
  EXPECT_GT(files, 0);
#endif
}

}  // namespace
}  // namespace keel::net::kafka

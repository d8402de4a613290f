// The inter-broker frame codec: round trips at every split of the stream, and every kind of
// bad input is an error with a reason, never a crash or a misread frame.
#include "keel/net/frame.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace keel::net {
namespace {

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s));
}

TEST(frame, round_trips_whatever_the_stream_split) {
  std::vector<std::byte> stream;
  const std::vector<std::string> payloads = {"", "a", std::string(1000, 'x'), "last one"};
  for (size_t i = 0; i < payloads.size(); ++i)
    encode_frame(stream, static_cast<uint16_t>(i + 7), bytes_of(payloads[i]));
  for (size_t split = 1; split <= stream.size(); ++split) {
    frame_decoder d;
    size_t got = 0;
    for (size_t at = 0; at < stream.size(); at += split) {
      d.feed(std::span(stream).subspan(at, std::min(split, stream.size() - at)));
      frame_decoder::frame_view f;
      while (d.next(f) == frame_decoder::status::frame) {
        ASSERT_LT(got, payloads.size());
        EXPECT_EQ(f.type, got + 7);
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.payload.data()), f.payload.size()),
                  payloads[got]);
        ++got;
      }
    }
    EXPECT_EQ(got, payloads.size()) << "split " << split;
    EXPECT_EQ(d.buffered(), 0u);
  }
}

TEST(frame, oversized_frame_is_refused_before_its_payload_arrives) {
  std::vector<std::byte> stream;
  encode_frame(stream, 1, bytes_of(std::string(2000, 'y')));
  frame_decoder d(1024);
  d.feed(std::span(stream).first(4));  // the length alone is enough to refuse
  frame_decoder::frame_view f;
  EXPECT_EQ(d.next(f), frame_decoder::status::error);
  EXPECT_NE(d.error_message().find("exceeds the maximum"), std::string::npos);
}

TEST(frame, flipped_byte_anywhere_is_detected) {
  std::vector<std::byte> good;
  encode_frame(good, 3, bytes_of("the payload of a frame"));
  for (size_t i = 4; i < good.size(); ++i) {  // the length field is checked by size instead
    auto bad = good;
    bad[i] ^= std::byte{0x20};
    frame_decoder d;
    d.feed(bad);
    frame_decoder::frame_view f;
    EXPECT_EQ(d.next(f), frame_decoder::status::error) << "byte " << i;
    EXPECT_FALSE(d.error_message().empty());
  }
}

TEST(frame, random_garbage_never_crashes_and_never_yields_a_frame) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 2000; ++round) {
    std::vector<std::byte> junk(rng() % 300);
    for (auto& b : junk)
      b = static_cast<std::byte>(rng());
    frame_decoder d(1 << 16);
    d.feed(junk);
    frame_decoder::frame_view f;
    // A valid checksum by chance is a 2^-64 event: anything else is need_more or error.
    EXPECT_NE(d.next(f), frame_decoder::status::frame);
  }
}

}  // namespace
}  // namespace keel::net

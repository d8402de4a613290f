// The inter-broker frame codec: round trips at every split of the stream, and every kind of
// bad input is an error with a reason, never a crash or a misread frame.
#include "keel/net/frame.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
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

TEST(frame, reading_in_place_yields_the_same_frames_and_keeps_partial_ones) {
  // As the transport reads: straight into prepare()'s room, any amount per read, so partial
  // frames are moved to the front when room runs out; a frame sealed in place matches too.
  std::vector<std::byte> stream;
  std::vector<std::string> payloads;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 40; ++i) {
    payloads.push_back(std::string(rng() % 3 == 0 ? 200000 + rng() % 1000 : rng() % 300,
                                   static_cast<char>('a' + i % 26)));
    if (i % 2 == 0) {
      encode_frame(stream, static_cast<uint16_t>(i + 16), bytes_of(payloads.back()));
    } else {
      const auto b = bytes_of(payloads.back());
      std::vector<std::byte> sealed(frame_header_size + b.size());
      if (!b.empty()) std::memcpy(sealed.data() + frame_header_size, b.data(), b.size());
      seal_frame(sealed, static_cast<uint16_t>(i + 16));
      stream.insert(stream.end(), sealed.begin(), sealed.end());
    }
  }
  frame_decoder d;
  size_t got = 0;
  for (size_t at = 0; at < stream.size();) {
    auto room = d.prepare(1 + rng() % 70000);
    const size_t n = std::min({room.size(), stream.size() - at, size_t(1 + rng() % 90000)});
    std::memcpy(room.data(), stream.data() + at, n);
    d.commit(n);
    at += n;
    frame_decoder::frame_view f;
    while (d.next(f) == frame_decoder::status::frame) {
      ASSERT_LT(got, payloads.size());
      EXPECT_EQ(f.type, got + 16);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.payload.data()), f.payload.size()),
                payloads[got]);
      ++got;
    }
  }
  EXPECT_EQ(got, payloads.size());
  EXPECT_EQ(d.buffered(), 0u);
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

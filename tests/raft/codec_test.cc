// The wire codec: round trips for every message kind, heartbeat frames, bounded and validated
// decoding, and a fuzz pass of random and mutated inputs (run under ASan + UBSan in CI).
#include <gtest/gtest.h>

#include <cstring>

#include "test_util.h"

namespace keel::raft::testing {
namespace {

std::vector<message> samples() {
  membership m = voters({1, 2, 5});
  m.learners.push_back(node_id(9));
  std::vector<message> out = {
      msg(1, 2, 3, vote_request{true, false, offset(10), term_id(2)}),
      msg(1, 2, 3, vote_request{false, true, offset::none(), term_id(0)}),
      msg(2, 1, 3, vote_response{true, true}),
      msg(2, 1, 3, vote_response{false, false}),
      msg(1, 2, 4, append_request{offset(4), term_id(2), offset(3), {}}),
      msg(1, 2, 4,
          append_request{
              offset(4),
              term_id(2),
              offset(3),
              {make_batch(batch_type::data, 3, 5, 9, 0xab), make_batch(batch_type::noop, 4, 10, 10),
               batch{batch_type::config, term_id(4), offset(11), offset(11),
                     codec::encode_membership(m)}}}),
      msg(2, 1, 4, append_response{false, offset(11), offset::none(), offset::none(), term_id(0)}),
      msg(2, 1, 4, append_response{true, offset::none(), offset(7), offset(3), term_id(2)}),
      msg(1, 2, 4, heartbeat_request{offset(8), 17}),
      msg(2, 1, 4, heartbeat_response{17}),
      msg(1, 2, 4,
          reset_request{offset(100), term_id(3), m, offset(50), shared_bytes::copy_of("snap", 4)}),
      msg(1, 2, 4, timeout_now{}),
  };
  return out;
}

TEST(Codec, EveryMessageKindRoundTrips) {
  for (const message& m : samples()) {
    auto bytes = codec::encode(m);
    auto back = codec::decode(bytes);
    ASSERT_TRUE(back.ok()) << m.describe() << ": " << back.err().describe();
    EXPECT_EQ(*back, m) << m.describe();
  }
}

TEST(Codec, HeartbeatsOfManyGroupsShareOneFrame) {
  std::vector<message> beats;
  for (uint64_t g = 1; g <= 1000; ++g) {
    message m = msg(1, 2, int64_t(g % 7 + 1), heartbeat_request{offset(int64_t(g)), g});
    m.group = group_id(g);
    beats.push_back(m);
  }
  auto frame = codec::encode_heartbeat_frame(beats);
  EXPECT_LT(frame.size(), 1000u * 40);  // ~32 bytes per group, one shared header
  auto back = codec::decode_heartbeat_frame(frame);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, beats);
  // Responses fan back out by group.
  std::vector<message> replies;
  for (const message& b : *back) {
    message r =
        msg(2, 1, b.term.value(), heartbeat_response{std::get<heartbeat_request>(b.body).read_seq});
    r.group = b.group;
    replies.push_back(r);
  }
  auto rframe = codec::decode_heartbeat_frame(codec::encode_heartbeat_frame(replies));
  ASSERT_TRUE(rframe.ok());
  EXPECT_EQ(*rframe, replies);
}

TEST(Codec, TruncatedInputIsAnErrorAtEveryLength) {
  for (const message& m : samples()) {
    auto bytes = codec::encode(m);
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto r = codec::decode(std::span(bytes.data(), n));
      EXPECT_FALSE(r.ok()) << m.describe() << " cut at " << n;
    }
  }
}

TEST(Codec, TrailingBytesAreRejected) {
  auto bytes = codec::encode(samples()[0]);
  bytes.push_back(std::byte(0));
  auto r = codec::decode(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::malformed);
}

TEST(Codec, UnknownVersionIsReportedAsSuch) {
  auto bytes = codec::encode(samples()[0]);
  bytes[2] = std::byte(codec::version + 1);
  auto r = codec::decode(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::unsupported_version);
}

TEST(Codec, HugeCountsAreRejectedBeforeAllocating) {
  // An append_request claiming 2^32-1 batches in a 60-byte frame.
  auto bytes = codec::encode(msg(1, 2, 4, append_request{offset(4), term_id(2), offset(3), {}}));
  const uint32_t huge = 0xffffffffu;
  std::memcpy(bytes.data() + bytes.size() - 4, &huge, 4);
  auto r = codec::decode(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::malformed);
}

TEST(Codec, StructurallyInvalidMessagesAreRejected) {
  // Decodable, but breaking rules the core relies on.
  std::vector<message> bad = {
      msg(1, 2, 4,
          append_request{offset(4),
                         term_id(2),
                         offset(3),  // gap after prev
                         {make_batch(batch_type::data, 3, 6, 6)}}),
      msg(1, 2, 4,
          append_request{offset(4),
                         term_id(2),
                         offset(3),  // term above the sender's
                         {make_batch(batch_type::data, 5, 5, 5)}}),
      msg(1, 2, 4,
          append_request{offset(4),
                         term_id(3),
                         offset(3),  // terms decrease
                         {make_batch(batch_type::data, 2, 5, 5)}}),
      msg(1, 2, 4,
          append_request{offset(4),
                         term_id(2),
                         offset(3),  // last < base
                         {make_batch(batch_type::data, 3, 5, 4)}}),
      msg(0, 2, 4, heartbeat_request{}),                                // no sender
      msg(1, 2, 4, vote_request{false, false, offset(3), term_id(5)}),  // last term > term
  };
  batch odd = make_batch(batch_type::data, 3, 5, 5);
  odd.type = static_cast<batch_type>(77);
  bad.push_back(msg(1, 2, 4, append_request{offset(4), term_id(2), offset(3), {odd}}));
  for (const message& m : bad) {
    EXPECT_FALSE(codec::validate(m).ok()) << m.describe();
    EXPECT_FALSE(codec::decode(codec::encode(m)).ok()) << m.describe();
  }
}

TEST(Codec, MembershipRoundTripsAndRejectsGarbage) {
  membership m = voters({3, 1, 2});
  m.learners.push_back(node_id(7));
  auto enc = codec::encode_membership(m);
  auto back = codec::decode_membership(std::span(enc.data(), enc.size()));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, m);
  membership overlapping = voters({1, 2});
  overlapping.learners.push_back(node_id(2));
  auto enc2 = codec::encode_membership(overlapping);
  EXPECT_FALSE(codec::decode_membership(std::span(enc2.data(), enc2.size())).ok());
}

// The fuzz pass: random bytes, and valid frames with random bit flips, byte changes,
// insertions, deletions and truncations. Any result is fine except a crash, a sanitizer report,
// or a decoded message that fails validation or does not re-encode to a decodable frame.
TEST(Codec, FuzzRandomAndMutatedInputsNeverCrash) {
  uint64_t state = 0x5eed;
  auto next = [&] {
    state += 0x9e3779b97f4a7c15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  std::vector<std::vector<std::byte>> corpus;
  for (const message& m : samples())
    corpus.push_back(codec::encode(m));
  {
    std::vector<message> beats = {msg(1, 2, 3, heartbeat_request{offset(1), 2}),
                                  msg(1, 2, 4, heartbeat_request{offset(5), 0})};
    beats[1].group = group_id(9);
    corpus.push_back(codec::encode_heartbeat_frame(beats));
  }
  size_t decoded = 0;
  constexpr int iterations = 60000;
  for (int i = 0; i < iterations; ++i) {
    std::vector<std::byte> input;
    if (i % 5 == 0) {
      input.resize(next() % 96);
      for (auto& b : input)
        b = std::byte(next() & 0xff);
    } else {
      input = corpus[next() % corpus.size()];
      const int mutations = 1 + int(next() % 4);
      for (int k = 0; k < mutations && !input.empty(); ++k) {
        const size_t at = next() % input.size();
        switch (next() % 5) {
          case 0:
            input[at] ^= std::byte(uint8_t(1u << (next() % 8)));
            break;
          case 1:
            input[at] = std::byte(next() & 0xff);
            break;
          case 2:
            input.insert(input.begin() + long(at), std::byte(next() & 0xff));
            break;
          case 3:
            input.erase(input.begin() + long(at));
            break;
          case 4:
            input.resize(at);
            break;
        }
      }
    }
    auto m = codec::decode(input);
    if (m.ok()) {
      ++decoded;
      ASSERT_TRUE(codec::validate(*m).ok());
      auto again = codec::decode(codec::encode(*m));
      ASSERT_TRUE(again.ok());
      ASSERT_EQ(*again, *m);
    }
    auto frame = codec::decode_heartbeat_frame(input);
    if (frame.ok() && !frame->empty()) {
      auto again = codec::decode_heartbeat_frame(codec::encode_heartbeat_frame(*frame));
      ASSERT_TRUE(again.ok());
    }
  }
  // Mutations of valid frames often stay valid (a flipped payload byte): the pass reached the
  // decoder's success paths too, not only its early exits.
  EXPECT_GT(decoded, size_t(iterations / 50));
}

}  // namespace
}  // namespace keel::raft::testing

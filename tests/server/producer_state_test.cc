#include "keel/server/producer_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "keel/net/kafka/errors.h"
#include "keel/net/kafka/record_batch.h"

namespace keel::server {
namespace {

namespace error_code = net::kafka::error_code;

// A producer's batch of `records` records at sequence `seq`, appended at `offset`.
struct fixture {
  producer_state s;
  int64_t next_offset = 0;

  // Checks, and records when the check says append; returns the verdict.
  producer_state::verdict produce(int64_t id, int16_t epoch, int32_t seq, int32_t records) {
    auto v = s.check(id, epoch, seq, records - 1);
    if (v.error == 0 && !v.duplicate) {
      s.record(id, epoch, seq, records - 1, next_offset);
      next_offset += records;
    }
    return v;
  }
};

TEST(ProducerState, SequenceArithmeticWraps) {
  EXPECT_EQ(add_sequence(0, 4), 4);
  EXPECT_EQ(add_sequence(INT32_MAX, 1), 0);
  EXPECT_EQ(add_sequence(INT32_MAX - 1, 3), 1);
}

TEST(ProducerState, UnknownProducerStartsAtSequenceZero) {
  fixture f;
  EXPECT_EQ(f.produce(7, 0, 5, 1).error, error_code::unknown_producer_id);
  EXPECT_EQ(f.s.size(), 0u);
  EXPECT_EQ(f.produce(7, 0, 0, 3).error, 0);
  ASSERT_NE(f.s.find(7), nullptr);
  EXPECT_EQ(f.s.find(7)->batches.back().last_seq, 2);
}

TEST(ProducerState, InSequenceBatchesAreAccepted) {
  fixture f;
  EXPECT_EQ(f.produce(1, 0, 0, 3).error, 0);
  EXPECT_EQ(f.produce(1, 0, 3, 2).error, 0);
  EXPECT_EQ(f.produce(1, 0, 5, 1).error, 0);
  EXPECT_EQ(f.next_offset, 6);
  // Other producers are independent.
  EXPECT_EQ(f.produce(2, 3, 0, 1).error, 0);
}

TEST(ProducerState, GapsAndRewindsAreOutOfOrder) {
  fixture f;
  f.produce(1, 0, 0, 3);
  EXPECT_EQ(f.produce(1, 0, 4, 1).error, error_code::out_of_order_sequence_number);  // gap
  EXPECT_EQ(f.produce(1, 0, 1, 1).error, error_code::out_of_order_sequence_number);  // inside
  EXPECT_EQ(f.produce(1, 0, 0, 2).error, error_code::out_of_order_sequence_number);  // overlap
}

TEST(ProducerState, OlderEpochIsFenced) {
  fixture f;
  f.produce(1, 2, 0, 1);
  EXPECT_EQ(f.produce(1, 1, 1, 1).error, error_code::invalid_producer_epoch);
  EXPECT_EQ(f.produce(1, 1, 0, 1).error, error_code::invalid_producer_epoch);
}

TEST(ProducerState, NewerEpochMustStartAtZeroAndResets) {
  fixture f;
  f.produce(1, 0, 0, 5);
  EXPECT_EQ(f.produce(1, 1, 5, 1).error, error_code::out_of_order_sequence_number);
  EXPECT_EQ(f.produce(1, 1, 0, 2).error, 0);
  const producer_entry* p = f.s.find(1);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->epoch, 1);
  ASSERT_EQ(p->batches.size(), 1u);  // the old epoch's batches are gone
  EXPECT_EQ(p->batches[0].first_offset, 5);
  // The old epoch is fenced now; a duplicate of an old-epoch batch is not a duplicate.
  EXPECT_EQ(f.produce(1, 0, 0, 5).error, error_code::invalid_producer_epoch);
  EXPECT_EQ(f.produce(1, 1, 2, 1).error, 0);
}

TEST(ProducerState, DuplicatesOfTheLastFiveBatchesAnswerTheirOffsets) {
  fixture f;
  for (int i = 0; i < 7; ++i)
    ASSERT_EQ(f.produce(1, 0, i * 2, 2).error, 0);  // batches at offsets 0, 2, ..., 12
  for (int i = 2; i < 7; ++i) {
    auto v = f.produce(1, 0, i * 2, 2);
    EXPECT_EQ(v.error, 0);
    ASSERT_TRUE(v.duplicate) << i;
    EXPECT_EQ(v.duplicate->first_offset, i * 2);
    EXPECT_EQ(v.duplicate->last_offset, i * 2 + 1);
  }
  EXPECT_EQ(f.next_offset, 14);  // duplicates appended nothing
  // Older than the last five: no longer known, so out of order.
  auto old = f.produce(1, 0, 2, 2);
  EXPECT_FALSE(old.duplicate);
  EXPECT_EQ(old.error, error_code::out_of_order_sequence_number);
  // Same first sequence, another last one: not a duplicate.
  auto other = f.produce(1, 0, 12, 1);
  EXPECT_FALSE(other.duplicate);
  EXPECT_EQ(other.error, error_code::out_of_order_sequence_number);
}

TEST(ProducerState, SequencesWrapFromInt32MaxToZero) {
  fixture f;
  // A producer that already numbered nearly 2^31 records: rebuilt from the log, not checked.
  f.s.record(9, 0, INT32_MAX - 2, 1, 0);  // sequences INT32_MAX-2 .. INT32_MAX-1
  f.next_offset = 2;
  EXPECT_EQ(f.produce(9, 0, INT32_MAX, 3).error, 0);  // INT32_MAX, 0, 1
  EXPECT_EQ(f.s.find(9)->batches.back().last_seq, 1);
  auto dup = f.produce(9, 0, INT32_MAX, 3);
  ASSERT_TRUE(dup.duplicate);
  EXPECT_EQ(dup.duplicate->first_offset, 2);
  EXPECT_EQ(f.produce(9, 0, 2, 1).error, 0);
  EXPECT_EQ(f.produce(9, 0, 0, 1).error, error_code::out_of_order_sequence_number);
}

TEST(ProducerState, TruncationKeepsThePrefixAndReplayRestoresTheState) {
  // Replaying the batches at or above an offset onto the truncated state gives the same state.
  std::mt19937 rng(42);
  for (int round = 0; round < 50; ++round) {
    struct appended {
      int64_t id;
      int16_t epoch;
      int32_t seq, delta;
      int64_t base;
    };
    std::vector<appended> log;
    producer_state full;
    std::map<int64_t, std::pair<int16_t, int32_t>> next;  // id -> epoch, next seq
    int64_t offset = 0;
    for (int i = 0; i < 60; ++i) {
      const int64_t id = rng() % 4;
      auto& [epoch, seq] = next[id];
      if (rng() % 10 == 0) epoch = static_cast<int16_t>(epoch + 1), seq = 0;
      const int32_t delta = static_cast<int32_t>(rng() % 3);
      ASSERT_EQ(full.check(id, epoch, seq, delta).error, 0);
      full.record(id, epoch, seq, delta, offset);
      log.push_back({id, epoch, seq, delta, offset});
      seq = add_sequence(seq, delta + 1);
      offset += delta + 1;
    }
    const int64_t cut = rng() % (offset + 1);
    producer_state s = full;
    s.truncate_from(cut);
    // Nothing at or above the cut remains.
    for (int64_t id = 0; id < 4; ++id) {
      if (const producer_entry* p = s.find(id)) {
        for (const auto& b : p->batches) {
          ASSERT_LT(b.last_offset, cut);
        }
      }
    }
    // Snapshot round trip at the cut, then replay from the batch holding the cut (as the log's
    // read does).
    auto image = s.encode_snapshot(cut);
    auto decoded = producer_state::decode_snapshot(image);
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->next_offset, cut);
    EXPECT_EQ(decoded->state, s);
    for (const auto& a : log)
      if (a.base + a.delta >= cut) decoded->state.record(a.id, a.epoch, a.seq, a.delta, a.base);
    EXPECT_EQ(decoded->state, full) << "round " << round << " cut " << cut;
  }
}

TEST(ProducerState, TruncationTakesTheEpochOfTheNewestBatchLeft) {
  producer_state s;
  s.record(1, 0, 0, 0, 0);
  s.record(1, 1, 0, 0, 1);  // the bump's first batch: epoch 0's batches are gone
  s.record(1, 1, 1, 0, 2);
  s.record(2, 0, 0, 0, 3);
  s.record(2, 0, 1, 0, 4);
  s.truncate_from(2);
  ASSERT_NE(s.find(1), nullptr);
  EXPECT_EQ(s.find(1)->epoch, 1);
  EXPECT_EQ(s.find(1)->batches.size(), 1u);
  EXPECT_EQ(s.find(2), nullptr);  // nothing of producer 2 below the cut
  s.truncate_from(1);
  EXPECT_EQ(s.size(), 0u);
}

TEST(ProducerState, SnapshotRejectsGarbage) {
  producer_state s;
  s.record(5, 3, 0, 9, 100);
  s.record(6, 0, 0, 0, 110);
  auto image = s.encode_snapshot(111);
  ASSERT_TRUE(producer_state::decode_snapshot(image));
  // Trailing bytes (an older, longer image in the slot) are ignored.
  auto longer = image;
  longer.resize(image.size() + 100, std::byte{0x5a});
  ASSERT_TRUE(producer_state::decode_snapshot(longer));
  EXPECT_EQ(producer_state::decode_snapshot(longer)->state, s);
  // Every flipped byte, every truncation is rejected.
  for (size_t i = 0; i < image.size(); ++i) {
    auto bad = image;
    bad[i] ^= std::byte{0x01};
    EXPECT_FALSE(producer_state::decode_snapshot(bad)) << "flipped byte " << i;
  }
  for (size_t n = 0; n < image.size(); ++n)
    EXPECT_FALSE(producer_state::decode_snapshot(std::span(image).first(n))) << n;
  std::mt19937 rng(7);
  for (int i = 0; i < 1000; ++i) {
    std::vector<std::byte> junk(rng() % 200);
    for (auto& b : junk)
      b = static_cast<std::byte>(rng());
    EXPECT_FALSE(producer_state::decode_snapshot(junk));
  }
  // A batch at or above the snapshot's own offset is inconsistent.
  EXPECT_FALSE(producer_state::decode_snapshot(s.encode_snapshot(110)));
}

TEST(ProducerState, EmptySnapshot) {
  producer_state s;
  auto d = producer_state::decode_snapshot(s.encode_snapshot(0));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->next_offset, 0);
  EXPECT_EQ(d->state.size(), 0u);
}

class ProducerSnapshotStore : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/keel-producer-state-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto r = engine::io_ring::create(16);
    ASSERT_TRUE(r.ok());
    ring_ = std::move(r).value();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void save(producer_snapshot_store& st, std::vector<std::byte> image) {
    bool done = false;
    std::string error = "not run";
    ASSERT_TRUE(st.save(std::move(image), [&](const std::string& e) {
      done = true;
      error = e;
    }));
    EXPECT_TRUE(st.busy());
    while (!done)
      ring_->wait();
    EXPECT_EQ(error, "");
  }
  std::string dir_;
  std::unique_ptr<engine::io_ring> ring_;
};

TEST_F(ProducerSnapshotStore, SavesThroughTheRingAndLoadsTheNewest) {
  std::vector<std::string> warnings;
  auto warn = [&](const std::string& w) { warnings.push_back(w); };
  producer_state a, b;
  a.record(1, 0, 0, 4, 0);
  b = a;
  b.record(1, 0, 5, 0, 5);
  {
    auto st = producer_snapshot_store::open(dir_, *ring_);
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE((*st)->load(warn).empty());
    save(**st, a.encode_snapshot(5));
    save(**st, b.encode_snapshot(6));
  }
  auto st = producer_snapshot_store::open(dir_, *ring_);
  ASSERT_TRUE(st.ok());
  auto found = (*st)->load(warn);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].next_offset, 6);
  EXPECT_EQ(found[0].state, b);
  EXPECT_EQ(found[1].next_offset, 5);
  EXPECT_TRUE(warnings.empty());
  // The next save replaces the older slot: a shorter image over a longer one still loads.
  producer_state c;
  save(**st, c.encode_snapshot(7));
  found = (*st)->load(warn);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].next_offset, 7);
  EXPECT_EQ(found[1].next_offset, 6);
  // Garbage in a slot is warned about and ignored.
  {
    std::ofstream out(dir_ + "/producer_state.0", std::ios::binary | std::ios::trunc);
    out << "this is not a snapshot at all";
  }
  {
    std::ofstream out(dir_ + "/producer_state.1", std::ios::binary | std::ios::trunc);
    out << "neither is this";
  }
  found = (*st)->load(warn);
  EXPECT_TRUE(found.empty());
  EXPECT_EQ(warnings.size(), 2u);
}

TEST_F(ProducerSnapshotStore, RebuildScansTheLogFromTheSnapshot) {
  engine::log_config config;
  auto l = engine::log::open(dir_ + "/log", config, *ring_);
  ASSERT_TRUE(l.ok());
  engine::log& log = **l;
  // Ten batches of producer 3 (two records each), a non-data entry, a non-idempotent batch.
  producer_state expected;
  auto append = [&](uint8_t type, int64_t id, int32_t seq) {
    net::kafka::record_batch_builder bb;
    bb.add({std::nullopt, std::string("v"), 0, {}}).add({std::nullopt, std::string("w"), 0, {}});
    if (id >= 0) bb.set_producer(id, 0, seq);
    const int64_t base = log.next_offset().value();
    bb.set_base_offset(base);
    auto bytes = bb.build();
    engine::batch_spec spec;
    spec.type = type;
    spec.term = engine::term_id(1);
    spec.offset_count = 2;
    spec.payload = bytes;
    ASSERT_TRUE(log.append(spec).ok());
    if (type == 1 && id >= 0) expected.record(id, 0, seq, 1, base);
  };
  for (int i = 0; i < 10; ++i) {
    append(1, 3, i * 2);
    if (i == 4) append(2, -1, 0);
    if (i == 6) append(1, -1, 0);
  }
  bool flushed = false;
  log.flush([&](const engine::status&) { flushed = true; });
  while (!flushed)
    ring_->wait();
  const int64_t end = log.next_offset().value();
  std::vector<std::string> warnings;
  auto warn = [&](const std::string& w) { warnings.push_back(w); };
  auto st = producer_snapshot_store::open(dir_ + "/log", *ring_);
  ASSERT_TRUE(st.ok());
  producer_state s;
  int64_t from = -1;
  ASSERT_TRUE(rebuild_producer_state(log, st->get(), end, 1, s, from, warn));
  EXPECT_EQ(from, 0);
  EXPECT_EQ(s, expected);
  // A snapshot as of offset 8, taken from a state that also had later batches.
  producer_state snap = expected;
  snap.truncate_from(8);
  save(**st, snap.encode_snapshot(8));
  ASSERT_TRUE(rebuild_producer_state(log, st->get(), end, 1, s, from, warn));
  EXPECT_EQ(from, 8);
  EXPECT_EQ(s, expected);
  EXPECT_TRUE(warnings.empty());
  // A snapshot beyond the log's end is stale: a full scan, with a warning.
  save(**st, producer_state().encode_snapshot(end + 100));
  ASSERT_TRUE(rebuild_producer_state(log, st->get(), end, 1, s, from, warn));
  EXPECT_EQ(from, 8);  // the older slot is still good
  EXPECT_EQ(s, expected);
  EXPECT_EQ(warnings.size(), 1u);
  // Not written up to `until`: not rebuilt.
  EXPECT_FALSE(rebuild_producer_state(log, nullptr, end + 2, 1, s, from, warn));
  ASSERT_TRUE(log.close().ok());
}

}  // namespace
}  // namespace keel::server

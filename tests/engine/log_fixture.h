// A fixture for tests of one log in a fresh directory, with an injectable clock.
#pragma once

#include "test_util.h"

namespace keel::engine::test {

class log_fixture : public ::testing::Test {
 public:
  void SetUp() override {
    auto r = io_ring::create(64);
    ASSERT_TRUE(r.ok()) << r.err().describe();
    ring_ = std::move(r).value();
  }

  // Small segments and a dense index, so a few dozen batches span several segments.
  log_config small_config() {
    log_config c;
    c.segment_bytes = 16 << 10;
    c.index_interval_bytes = 512;
    c.index_max_bytes = 4096;
    c.preallocate_bytes = 4096;
    c.flush = flush_policy::every_append();
    c.now_ms = [this] { return clock_ms_; };
    return c;
  }

  std::string dir() const { return dir_.sub("log"); }

  std::unique_ptr<log> open_log(const log_config& c, segment_cache* cache = nullptr) {
    auto r = log::open(dir(), c, *ring_, cache);
    EXPECT_TRUE(r.ok()) << r.err().describe();
    return r ? std::move(r).value() : nullptr;
  }

  // Appends `n` batches of `size` bytes (payload_for their base), each waited for.
  void append_n(log& l, int n, size_t size, int64_t term = 1, int64_t ts = -1) {
    for (int i = 0; i < n; ++i) {
      const std::string p = payload_for(l.next_offset().value(), size);
      auto a = append_wait(l, *ring_, spec_of(p, term, ts));
      ASSERT_TRUE(a.ok()) << a.err().describe();
    }
  }

  // Every batch from the log start is there, in order, with the payload its base implies.
  void expect_contents(const log& l, int64_t first, int64_t next, size_t size) {
    auto all = read_all(l, l.log_start());
    ASSERT_TRUE(all.ok()) << all.err().describe();
    int64_t expect = first;
    for (const stored_batch& b : *all) {
      ASSERT_EQ(b.header.base_offset.value(), expect);
      ASSERT_TRUE(b.payload == payload_for(expect, size)) << "payload of offset " << expect;
      expect = b.header.last_offset.value() + 1;
    }
    EXPECT_EQ(expect, next);
    EXPECT_EQ(l.next_offset().value(), next);
  }

  temp_dir dir_;
  std::unique_ptr<io_ring> ring_;
  int64_t clock_ms_ = 1'700'000'000'000;
};

}  // namespace keel::engine::test

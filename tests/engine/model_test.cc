// A randomized model test: long random sequences of append / read / truncate_suffix /
// truncate_prefix / retention / time lookup / flush / close + reopen / "crash" (destroy without
// close, then reopen) against a trivial in-memory model: a vector of batches.
//
// Every seed is independent. A failure names its seed; replay one with
//   KEEL_MODEL_SEED=<seed> build/release/tests/engine/engine_unit_test --gtest_filter='Model*'
// (KEEL_MODEL_OPS=<n> changes the number of operations per seed, default 300).
#include <cstdio>
#include <cstdlib>
#include <random>

#include "test_util.h"

namespace keel::engine::test {
namespace {

struct model_batch {
  int64_t base, last, term, ts;
  std::string payload;
  uint64_t stored() const { return batch_header_size + payload.size(); }
};

struct model {
  int64_t start = 0, next = 0, last_term = 0;
  std::vector<model_batch> batches;  // every batch with last >= start, in order

  void drop_below(int64_t s) {
    std::erase_if(batches, [&](const model_batch& b) { return b.last < s; });
  }
  // Index of the batch containing o, or batches.size().
  size_t containing(int64_t o) const {
    for (size_t i = 0; i < batches.size(); ++i)
      if (batches[i].base <= o && o <= batches[i].last) return i;
    return batches.size();
  }
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

class model_run {
 public:
  explicit model_run(uint64_t seed) : seed_(seed), rng_(seed) {}

  void run(int ops) {
    auto r = io_ring::create(64);
    ASSERT_TRUE(r.ok());
    ring_ = std::move(r).value();
    choose_config();
    reopen();
    if (::testing::Test::HasFatalFailure()) return;
    for (op_ = 0; op_ < ops; ++op_) {
      clock_ms_ += pick(0, 20);
      step();
      if (::testing::Test::HasFatalFailure()) return;
      check_offsets();
      if (::testing::Test::HasFatalFailure()) return;
    }
    drain(*ring_);
    check_everything();
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_TRUE(log_->close().ok());
    log_.reset();
    reopen();
    check_everything();
  }

 private:
  int64_t pick(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  bool chance(int percent) { return pick(0, 99) < percent; }
  // KEEL_MODEL_TRACE=1 prints each operation, to follow a replayed seed.
  void trace(const std::string& what) const {
    static const bool on = std::getenv("KEEL_MODEL_TRACE") != nullptr;
    if (on)
      std::fprintf(stderr, "op %d: %s (start %lld next %lld)\n", op_, what.c_str(),
                   static_cast<long long>(m_.start), static_cast<long long>(m_.next));
  }
  std::string where() const {
    return "seed " + std::to_string(seed_) + " op " + std::to_string(op_) +
           " (replay: KEEL_MODEL_SEED=" + std::to_string(seed_) + ")";
  }

  void choose_config() {
    const uint64_t segment_sizes[] = {4096, 16384, 65536};
    config_.segment_bytes = segment_sizes[pick(0, 2)];
    const uint32_t intervals[] = {64, 512, 4096};
    config_.index_interval_bytes = intervals[pick(0, 2)];
    config_.index_max_bytes = 4096;
    config_.preallocate_bytes = chance(50) ? 4096 : 64 << 10;
    config_.write_chains_in_flight_max = static_cast<unsigned>(pick(1, 4));
    config_.staged_bytes_max = 1 << 20;
    config_.segment_ms = chance(30) ? 500 : 1'000'000'000;
    config_.retention_ms = -1;
    config_.retention_bytes = chance(50) ? -1 : pick(8192, 65536);
    switch (pick(0, 3)) {
      case 0:
        config_.flush = flush_policy::every_append();
        break;
      case 1:
        config_.flush = flush_policy::every_n_bytes(static_cast<uint64_t>(pick(1, 20000)));
        break;
      case 2:
        config_.flush = flush_policy::every_ms(50);
        break;
      default:
        config_.flush = flush_policy::none();
    }
    config_.now_ms = [this] { return clock_ms_; };
  }

  void reopen() {
    SCOPED_TRACE(where());
    auto r = log::open(dir_.sub("log"), config_, *ring_);
    ASSERT_TRUE(r.ok()) << r.err().describe();
    log_ = std::move(r).value();
    ASSERT_EQ(log_->log_start().value(), m_.start);
    ASSERT_EQ(log_->next_offset().value(), m_.next);
    ASSERT_EQ(log_->durable_offset().value(), m_.next - 1);  // recovery syncs what it keeps
    if (!m_.batches.empty()) {
      ASSERT_EQ(log_->last_term().value(), m_.batches.back().term);
    } else {
      ASSERT_LE(log_->last_term().value(), m_.last_term);
    }
    m_.last_term = log_->last_term().value();
  }

  void check_offsets() {
    SCOPED_TRACE(where());
    ASSERT_EQ(log_->log_start().value(), m_.start);
    ASSERT_EQ(log_->next_offset().value(), m_.next);
    ASSERT_LE(log_->durable_offset(), log_->written_offset());
    ASSERT_LE(log_->written_offset(), log_->appended_offset());
    ASSERT_FALSE(log_->failure().has_value()) << log_->failure()->describe();
  }

  void step() {
    const int64_t dice = pick(0, 99);
    if (dice < 50) return do_append();
    if (dice < 72) return do_read();
    if (dice < 78) return do_truncate_suffix();
    if (dice < 81) return do_truncate_prefix();
    if (dice < 84) return do_retention();
    if (dice < 89) return do_time_lookup();
    if (dice < 92) return do_flush();
    if (dice < 96) {
      if (chance(50)) ring_->poll();
      if (chance(30)) log_->tick();
      return;
    }
    if (dice < 98) {  // clean close, then reopen
      SCOPED_TRACE(where());
      trace("close + reopen");
      ASSERT_TRUE(log_->close().ok());
      log_.reset();
      return reopen();
    }
    trace("crash + reopen");
    log_.reset();  // "crash": no close, no marker
    reopen();
  }

  void do_append() {
    SCOPED_TRACE(where());
    if (m_.last_term > 0 && chance(3)) {
      auto bad = log_->append(spec_of("x", m_.last_term - 1));
      ASSERT_FALSE(bad.ok());
      ASSERT_EQ(bad.err().code, errc::invalid_argument);
    }
    model_batch b;
    b.base = m_.next;
    b.last = b.base + pick(0, chance(80) ? 0 : 4);
    b.term = m_.last_term + (chance(8) ? 1 : 0);
    b.ts = chance(20) ? -1 : pick(1, 1'000'000);
    // Mostly small batches, some near a segment's size, a few larger than any segment.
    const size_t size = static_cast<size_t>(chance(3)    ? pick(5000, 40000)
                                            : chance(15) ? pick(1000, 3000)
                                                         : pick(0, 400));
    b.payload = payload_for(b.base, size, seed_);
    batch_spec spec = spec_of(b.payload, b.term, b.ts, static_cast<uint32_t>(b.last - b.base + 1));
    if (chance(30)) spec.base = offset(b.base);
    trace("append [" + std::to_string(b.base) + ", " + std::to_string(b.last) + "] " +
          std::to_string(b.payload.size()) + " bytes");
    const int64_t expect_base = b.base;
    auto r = log_->append(spec, [this, expect_base](const result<append_ack>& a) {
      EXPECT_TRUE(a.ok()) << a.err().describe();
      if (a.ok()) {
        EXPECT_EQ(a->base.value(), expect_base);
      }
      EXPECT_GT(expect_base, last_acked_) << "callbacks out of order";
      last_acked_ = expect_base;
    });
    if (!r.ok() && r.err().code == errc::busy) {
      drain(*ring_);
      r = log_->append(spec);
    }
    ASSERT_TRUE(r.ok()) << r.err().describe();
    ASSERT_EQ(r->base.value(), b.base);
    ASSERT_EQ(r->last.value(), b.last);
    m_.next = b.last + 1;
    m_.last_term = b.term;
    m_.batches.push_back(std::move(b));
    if (chance(50)) ring_->poll();
  }

  void do_read() {
    SCOPED_TRACE(where());
    if (chance(50)) drain(*ring_);
    const int64_t from = pick(m_.start, m_.next);
    const uint64_t max_bytes = static_cast<uint64_t>(chance(20) ? pick(0, 100) : pick(0, 64 << 10));
    const int64_t upper = chance(50) ? INT64_MAX : pick(m_.start - 1, m_.next + 2);
    const bool verify = chance(50);
    auto r = log_->read(offset(from), max_bytes, offset(upper), read_options{verify});
    ASSERT_TRUE(r.ok()) << r.err().describe();
    const int64_t bound = std::min(upper, log_->written_offset().value());
    std::vector<const model_batch*> want;
    uint64_t bytes = 0;
    for (size_t i = m_.containing(from); i < m_.batches.size(); ++i) {
      const model_batch& b = m_.batches[i];
      if (b.last > bound) break;
      if (!want.empty() && bytes + b.stored() > max_bytes) break;
      want.push_back(&b);
      bytes += b.stored();
    }
    const std::vector<batch_view> views = views_of(*r);
    ASSERT_EQ(views.size(), want.size())
        << "read(" << from << ", " << max_bytes << ", " << upper << ") written " << bound;
    ASSERT_EQ(r->bytes, bytes);
    for (size_t i = 0; i < want.size(); ++i) {
      const batch_view& v = views[i];
      ASSERT_EQ(v.header.base_offset.value(), want[i]->base);
      ASSERT_EQ(v.header.last_offset.value(), want[i]->last);
      ASSERT_EQ(v.header.term.value(), want[i]->term);
      ASSERT_EQ(v.header.max_timestamp.value(), want[i]->ts);
      ASSERT_TRUE(string_of(v.payload()) == want[i]->payload) << "payload of " << want[i]->base;
    }
    ASSERT_EQ(r->next_offset.value(), want.empty() ? from : want.back()->last + 1);
  }

  void do_truncate_suffix() {
    SCOPED_TRACE(where());
    // A batch boundary at or after the log start, or the next offset.
    std::vector<size_t> candidates;
    for (size_t i = 0; i < m_.batches.size(); ++i)
      if (m_.batches[i].base >= m_.start) candidates.push_back(i);
    if (candidates.empty()) return;
    const size_t i =
        candidates[static_cast<size_t>(pick(0, static_cast<int64_t>(candidates.size()) - 1))];
    const model_batch& b = m_.batches[i];
    if (b.last > b.base && chance(20)) {
      ASSERT_EQ(log_->truncate_suffix(offset(b.base + 1)).err().code, errc::invalid_argument);
    }
    const int64_t from = b.base;
    trace("truncate_suffix " + std::to_string(from));
    auto s = log_->truncate_suffix(offset(from));
    ASSERT_TRUE(s.ok()) << s.err().describe();
    m_.batches.resize(i);
    m_.next = from;
    last_acked_ = from - 1;  // offsets from `from` on are handed out again
    // A log with no batch left has no last term: a lower term may follow.
    m_.last_term = m_.batches.empty() ? 0 : m_.batches.back().term;
    ASSERT_EQ(log_->durable_offset().value(), from - 1);
    ASSERT_EQ(log_->last_term().value(), m_.last_term);
  }

  void do_truncate_prefix() {
    SCOPED_TRACE(where());
    const int64_t to = chance(15) ? m_.next + pick(1, 50) : pick(m_.start, m_.next);
    trace("truncate_prefix " + std::to_string(to));
    auto s = log_->truncate_prefix(offset(to));
    ASSERT_TRUE(s.ok()) << s.err().describe();
    if (to > m_.next) {
      last_acked_ = to - 1;
      m_.batches.clear();
      m_.start = m_.next = to;
      m_.last_term = 0;
      ASSERT_EQ(log_->last_term().value(), 0);
    } else if (to > m_.start) {
      m_.start = to;
      m_.drop_below(to);
    }
  }

  void do_retention() {
    SCOPED_TRACE(where());
    trace("apply_retention");
    auto r = log_->apply_retention();
    ASSERT_TRUE(r.ok()) << r.err().describe();
    ASSERT_GE(r->value(), m_.start);
    ASSERT_LE(r->value(), m_.next);
    if (config_.retention_bytes < 0) {
      ASSERT_EQ(r->value(), m_.start);
    }
    m_.start = r->value();
    m_.drop_below(m_.start);
    if (config_.retention_bytes >= 0) {
      // What stays is bounded: the active segment plus what retention allows.
      ASSERT_LE(log_->size_bytes(), static_cast<uint64_t>(config_.retention_bytes) +
                                        2 * config_.segment_bytes + 40000 + 2 * batch_header_size);
    }
  }

  void do_time_lookup() {
    SCOPED_TRACE(where());
    if (chance(50)) drain(*ring_);
    const int64_t target = pick(1, 1'000'001);
    auto r = log_->offset_for_timestamp(timestamp_ms(target));
    ASSERT_TRUE(r.ok()) << r.err().describe();
    std::optional<int64_t> want;
    for (const model_batch& b : m_.batches) {
      if (b.last > log_->written_offset().value()) break;
      if (b.ts >= target) {
        want = std::max(b.base, m_.start);
        break;
      }
    }
    ASSERT_EQ(r->has_value(), want.has_value()) << "target " << target;
    if (want) {
      ASSERT_EQ((*r)->value(), *want) << "target " << target;
    }
  }

  void do_flush() {
    SCOPED_TRACE(where());
    ASSERT_TRUE(flush_wait(*log_, *ring_).ok());
    drain(*ring_);
    ASSERT_EQ(log_->durable_offset().value(), m_.next - 1);
  }

  void check_everything() {
    SCOPED_TRACE(where() + " final check");
    auto all = read_all(*log_, offset(m_.start), 1 << 20, true);
    ASSERT_TRUE(all.ok()) << all.err().describe();
    ASSERT_EQ(all->size(), m_.batches.size());
    for (size_t i = 0; i < all->size(); ++i) {
      ASSERT_EQ((*all)[i].header.base_offset.value(), m_.batches[i].base);
      ASSERT_TRUE((*all)[i].payload == m_.batches[i].payload);
    }
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
  temp_dir dir_;
  std::unique_ptr<io_ring> ring_;
  std::unique_ptr<log> log_;
  log_config config_;
  model m_;
  int64_t clock_ms_ = 1'000'000'000;
  int64_t last_acked_ = -1;
  int op_ = 0;
};

constexpr int kShards = 8;
constexpr int kSeedsPerShard = 25;  // 200 seeds in all

class ModelTest : public ::testing::TestWithParam<int> {};

TEST_P(ModelTest, RandomOperationsMatchTheModel) {
  const int ops = env_int("KEEL_MODEL_OPS", 300);
  if (const char* one = std::getenv("KEEL_MODEL_SEED")) {
    if (GetParam() != 0) GTEST_SKIP() << "KEEL_MODEL_SEED replays one seed in shard 0";
    const uint64_t seed = std::strtoull(one, nullptr, 10);
    model_run(seed).run(ops);
    return;
  }
  for (int k = 0; k < kSeedsPerShard; ++k) {
    const uint64_t seed = static_cast<uint64_t>(GetParam() * kSeedsPerShard + k);
    SCOPED_TRACE("seed " + std::to_string(seed));
    model_run(seed).run(ops);
    if (HasFatalFailure()) {
      ADD_FAILURE() << "replay with KEEL_MODEL_SEED=" << seed;
      return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, ModelTest, ::testing::Range(0, kShards));

}  // namespace
}  // namespace keel::engine::test

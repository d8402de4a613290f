// The log-linear latency histogram: exact below 2^precision_bits, bounded relative error above,
// bucket arithmetic consistent at every magnitude, percentiles of known distributions, merging.
#include "keel/server/latency_histogram.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace keel::server {
namespace {

using h = latency_histogram;

TEST(LatencyHistogram, EmptyReportsZero) {
  h x;
  EXPECT_EQ(x.count(), 0u);
  EXPECT_EQ(x.percentile(50), 0u);
  EXPECT_EQ(x.max(), 0u);
  EXPECT_EQ(x.min(), 0u);
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  for (uint64_t v = 0; v < h::sub_buckets; ++v) {
    EXPECT_EQ(h::index_of(v), v);
    EXPECT_EQ(h::lowest_of(v), v);
    EXPECT_EQ(h::width_of(v), 1u);
  }
  h x;
  x.record(7);
  x.record(9);
  x.record(200);
  EXPECT_EQ(x.percentile(0), 7u);
  EXPECT_EQ(x.percentile(50), 9u);
  EXPECT_EQ(x.percentile(100), 200u);
}

TEST(LatencyHistogram, BucketsTileTheRangeWithBoundedWidth) {
  // Every bucket starts where the previous one ended, and its width over its lowest value is
  // at most 2^-precision_bits.
  uint64_t expected_low = 0;
  for (size_t i = 0; i < h::bucket_count(); ++i) {
    ASSERT_EQ(h::lowest_of(i), expected_low) << i;
    ASSERT_EQ(h::index_of(h::lowest_of(i)), i);
    const uint64_t last = h::lowest_of(i) + (h::width_of(i) - 1);
    ASSERT_EQ(h::index_of(last), i);
    if (i >= h::sub_buckets) {
      ASSERT_LE(static_cast<double>(h::width_of(i)) / static_cast<double>(h::lowest_of(i)),
                1.0 / static_cast<double>(h::sub_buckets));
    }
    expected_low = last + 1;  // wraps to 0 after the last bucket
  }
  EXPECT_EQ(expected_low, 0u);
}

TEST(LatencyHistogram, RandomValuesStayWithinRelativeError) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    h x;
    x.record(v);
    x.record(v == 0 ? 0 : v - 1);  // a neighbour, so min/max clamping alone is not the answer
    const auto mid = static_cast<double>(h::middle_of(h::index_of(v)));
    if (v >= h::sub_buckets) {
      ASSERT_LE(std::abs(mid - static_cast<double>(v)) / static_cast<double>(v),
                2 * h::relative_error)
          << v;
    }
  }
}

TEST(LatencyHistogram, UniformPercentiles) {
  h x;
  for (uint64_t v = 1; v <= 1000000; ++v)
    x.record(v * 1000);  // 1 us .. 1 s in ns
  EXPECT_EQ(x.count(), 1000000u);
  for (double p : {50.0, 90.0, 99.0, 99.9, 99.99}) {
    const double want = p / 100.0 * 1e9;
    const auto got = static_cast<double>(x.percentile(p));
    EXPECT_NEAR(got, want, want * 2 * h::relative_error) << p;
  }
  EXPECT_EQ(x.percentile(100), 1000000000u);
  EXPECT_EQ(x.min(), 1000u);
  EXPECT_NEAR(x.mean(), 500000500.0, 1.0);
}

TEST(LatencyHistogram, StallShowsInTheTail) {
  // 999 fast values and one stall: p99.9 and above see the stall, p99 does not.
  h x;
  for (int i = 0; i < 999; ++i)
    x.record(100000);
  x.record(2000000000);
  EXPECT_LT(x.percentile(99), 101000u);
  EXPECT_GT(x.percentile(99.95), 1990000000u);
  EXPECT_EQ(x.max(), 2000000000u);
}

TEST(LatencyHistogram, MergeEqualsRecordingEverything) {
  h a, b, all;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t v = rng() % 10000000;
    (i % 2 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  for (double p : {1.0, 50.0, 99.0, 99.9})
    EXPECT_EQ(a.percentile(p), all.percentile(p));
  a.reset();
  EXPECT_EQ(a.count(), 0u);
  EXPECT_EQ(a.percentile(50), 0u);
}

}  // namespace
}  // namespace keel::server

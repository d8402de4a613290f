// A log-linear histogram of non-negative integers (latencies in nanoseconds, sizes), in the style
// of HdrHistogram: values below 2^precision_bits are counted exactly; above, every power-of-two
// range [2^k, 2^(k+1)) is split into 2^precision_bits equal buckets. A percentile is reported as
// the middle of its bucket (clamped to the recorded min/max), so its relative error is at most
// 1 / 2^(precision_bits+1) (0.2 % with the default 8 bits), at any magnitude, in a fixed
// 57 * 256 counters. Recording is O(1) with no allocation; histograms of equal precision merge.
#pragma once

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstdint>
#include <vector>

namespace keel::server {

class latency_histogram {
 public:
  static constexpr int precision_bits = 8;
  static constexpr uint64_t sub_buckets = uint64_t{1} << precision_bits;
  // The worst relative error of a reported percentile.
  static constexpr double relative_error = 1.0 / static_cast<double>(2 * sub_buckets);

  latency_histogram() : counts_(bucket_count(), 0) {}

  void record(uint64_t value, uint64_t count = 1) {
    if (count == 0) return;
    counts_[index_of(value)] += count;
    total_ += count;
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
    sum_ += static_cast<double>(value) * static_cast<double>(count);
  }

  void merge(const latency_histogram& other) {
    for (size_t i = 0; i < counts_.size(); ++i)
      counts_[i] += other.counts_[i];
    total_ += other.total_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
    sum_ += other.sum_;
  }

  void reset() {
    std::fill(counts_.begin(), counts_.end(), 0);
    total_ = 0;
    min_ = UINT64_MAX;
    max_ = 0;
    sum_ = 0;
  }

  uint64_t count() const { return total_; }
  uint64_t min() const { return total_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return total_ ? sum_ / static_cast<double>(total_) : 0; }

  // The value at or below which `percent` (0..100) of the recorded values lie; 0 when empty.
  uint64_t percentile(double percent) const {
    if (total_ == 0) return 0;
    percent = std::clamp(percent, 0.0, 100.0);
    // The rank of the wanted value, 1-based: at least 1, at most total.
    auto rank = static_cast<uint64_t>(percent / 100.0 * static_cast<double>(total_) + 0.5);
    rank = std::clamp<uint64_t>(rank, 1, total_);
    if (rank == total_) return max_;  // the largest value is known exactly
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::clamp(middle_of(i), min_, max_);
    }
    return max_;
  }

  // Bucket arithmetic, exposed for tests.
  static size_t index_of(uint64_t value) {
    if (value < sub_buckets) return static_cast<size_t>(value);
    const int msb = 63 - std::countl_zero(value);
    const int shift = msb - precision_bits;    // >= 0
    const uint64_t mantissa = value >> shift;  // in [sub_buckets, 2 * sub_buckets)
    return static_cast<size_t>((static_cast<uint64_t>(shift) + 1) * sub_buckets +
                               (mantissa - sub_buckets));
  }
  static uint64_t lowest_of(size_t index) {
    if (index < sub_buckets) return index;
    const uint64_t shift = index / sub_buckets - 1;
    const uint64_t mantissa = sub_buckets + index % sub_buckets;
    return mantissa << shift;
  }
  static uint64_t width_of(size_t index) {
    return index < sub_buckets ? 1 : uint64_t{1} << (index / sub_buckets - 1);
  }
  static uint64_t middle_of(size_t index) { return lowest_of(index) + width_of(index) / 2; }
  static size_t bucket_count() { return index_of(UINT64_MAX) + 1; }

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  double sum_ = 0;
};

}  // namespace keel::server

// The sparse offset index and the time index on their own: lookups at every boundary, a full
// index, the zero terminator that gives the count back after a reopen, and the sanity check
// that decides when an index is rebuilt.
#include <fcntl.h>
#include <unistd.h>

#include "keel/engine/offset_index.h"
#include "test_util.h"

namespace keel::engine::test {
namespace {

offset_index make_index(const temp_dir& d, const std::string& name, offset base,
                        size_t capacity_bytes = 4096) {
  auto f = index_file::open(d.sub(name), 8, capacity_bytes, true);
  EXPECT_TRUE(f.ok()) << f.err().describe();
  return offset_index(std::move(f).value(), base);
}

// The reference: the greatest entry whose offset is <= target.
std::optional<size_t> floor_reference(const std::vector<std::pair<int64_t, uint32_t>>& entries,
                                      int64_t target) {
  std::optional<size_t> out;
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].first <= target) out = i;
  return out;
}

TEST(OffsetIndex, FloorAtEveryBoundaryForEveryLength) {
  temp_dir d;
  const offset base(1000);
  for (size_t n = 0; n <= 17; ++n) {
    offset_index idx = make_index(d, "i" + std::to_string(n) + ".index", base);
    std::vector<std::pair<int64_t, uint32_t>> entries;
    for (size_t i = 0; i < n; ++i) {
      // Offsets 1003, 1008, 1013, ...; positions 100, 300, 500, ...
      entries.emplace_back(1003 + 5 * static_cast<int64_t>(i),
                           100 + 200 * static_cast<uint32_t>(i));
      idx.append(offset(entries.back().first), entries.back().second);
    }
    ASSERT_EQ(idx.count(), n);
    // Before the first entry, each exact entry, between entries, after the last.
    for (int64_t target = 990; target <= 1003 + 5 * static_cast<int64_t>(n) + 10; ++target) {
      SCOPED_TRACE("entries " + std::to_string(n) + " target " + std::to_string(target));
      const auto want = floor_reference(entries, target);
      const auto got = idx.floor(offset(target));
      ASSERT_EQ(got.has_value(), want.has_value());
      if (want) {
        EXPECT_EQ(got->base_offset.value(), entries[*want].first);
        EXPECT_EQ(got->position, entries[*want].second);
      }
    }
  }
}

TEST(OffsetIndex, FullIndexKeepsAnsweringAndReopensWithItsCount) {
  temp_dir d;
  const offset base(0);
  {
    offset_index idx = make_index(d, "full.index", base, 4096);
    size_t n = 0;
    while (!idx.full()) {
      idx.append(offset(static_cast<int64_t>(2 * n + 2)), static_cast<uint32_t>(64 * (n + 1)));
      ++n;
    }
    ASSERT_EQ(n, 4096u / 8);
    EXPECT_FALSE(idx.floor(offset(1)).has_value());
    EXPECT_EQ(idx.floor(offset(2))->position, 64u);
    EXPECT_EQ(idx.floor(offset(1024))->position, 64u * 512);  // the last entry, exactly
    EXPECT_EQ(idx.floor(offset(1023))->position, 64u * 511);  // just before it
    EXPECT_EQ(idx.floor(offset(1 << 30))->position, 64u * 512);
    EXPECT_TRUE(idx.sane(64u * 512 + 1));
    EXPECT_FALSE(idx.sane(64u * 512));  // a position at or past the log's end is not sane
  }
  // Read-only reopen: the count comes back from the file (no terminator: the file is full).
  auto f = index_file::open(d.sub("full.index"), 8, 0, false);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  offset_index idx(std::move(f).value(), base);
  EXPECT_EQ(idx.count(), 512u);
  EXPECT_EQ(idx.floor(offset(500))->base_offset.value(), 500);
}

TEST(OffsetIndex, TruncateZeroesTheTailSoAReopenCountsRight) {
  temp_dir d;
  const offset base(50);
  {
    offset_index idx = make_index(d, "t.index", base);
    for (int i = 1; i <= 10; ++i)
      idx.append(offset(50 + 10 * i), static_cast<uint32_t>(1000 * i));
    idx.truncate_from(offset(85));  // drops entries 90, 100, ... (offset >= 85)
    EXPECT_EQ(idx.count(), 3u);
    EXPECT_EQ(idx.floor(offset(1000))->base_offset.value(), 80);
    idx.truncate_from(offset(80));
    EXPECT_EQ(idx.count(), 2u);
  }
  auto f = index_file::open(d.sub("t.index"), 8, 4096, true);
  ASSERT_TRUE(f.ok());
  offset_index idx(std::move(f).value(), base);
  EXPECT_EQ(idx.count(), 2u);
  idx.append(offset(75), 2500);  // appends continue after the surviving entries
  EXPECT_EQ(idx.count(), 3u);
  EXPECT_EQ(idx.floor(offset(79))->position, 2500u);
}

TEST(OffsetIndex, SanityRejectsDisorderAndZeroPositions) {
  temp_dir d;
  {
    // Entries written by hand: offsets out of order.
    const int fd = ::open(d.sub("bad.index").c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    const uint32_t raw[] = {5, 100, 3, 200};
    ASSERT_EQ(::write(fd, raw, sizeof raw), static_cast<ssize_t>(sizeof raw));
    ::close(fd);
  }
  auto f = index_file::open(d.sub("bad.index"), 8, 0, false);
  ASSERT_TRUE(f.ok());
  offset_index idx(std::move(f).value(), offset(0));
  EXPECT_EQ(idx.count(), 2u);
  EXPECT_FALSE(idx.sane(1 << 20));
}

TEST(OffsetIndex, EmptyReadOnlyFileHasNoEntries) {
  temp_dir d;
  const int fd = ::open(d.sub("empty.index").c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ::close(fd);
  auto f = index_file::open(d.sub("empty.index"), 8, 0, false);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  offset_index idx(std::move(f).value(), offset(0));
  EXPECT_EQ(idx.count(), 0u);
  EXPECT_FALSE(idx.floor(offset(10)).has_value());
  EXPECT_TRUE(idx.sane(100));
}

TEST(TimeIndex, FloorBeforeAtEveryBoundary) {
  temp_dir d;
  auto f = index_file::open(d.sub("x.timeindex"), 12, 4096, true);
  ASSERT_TRUE(f.ok());
  time_index idx(std::move(f).value(), offset(100));
  EXPECT_FALSE(idx.last().has_value());
  EXPECT_FALSE(idx.floor_before(timestamp_ms(5)).has_value());
  EXPECT_TRUE(idx.maybe_append(timestamp_ms(10), offset(100)));
  EXPECT_TRUE(idx.maybe_append(timestamp_ms(20), offset(105)));
  EXPECT_FALSE(idx.maybe_append(timestamp_ms(20), offset(107)));  // not larger: skipped
  EXPECT_FALSE(idx.maybe_append(timestamp_ms(15), offset(108)));
  EXPECT_FALSE(idx.maybe_append(timestamp_ms(0), offset(109)));  // never indexed
  EXPECT_TRUE(idx.maybe_append(timestamp_ms(30), offset(110)));
  ASSERT_EQ(idx.count(), 3u);
  EXPECT_TRUE(idx.sane());
  EXPECT_FALSE(idx.floor_before(timestamp_ms(10)).has_value());  // nothing strictly older
  EXPECT_EQ(idx.floor_before(timestamp_ms(11))->base_offset.value(), 100);
  EXPECT_EQ(idx.floor_before(timestamp_ms(20))->base_offset.value(), 100);
  EXPECT_EQ(idx.floor_before(timestamp_ms(21))->base_offset.value(), 105);
  EXPECT_EQ(idx.floor_before(timestamp_ms(31))->base_offset.value(), 110);
  EXPECT_EQ(idx.last()->timestamp.value(), 30);
  idx.truncate_from(offset(105));
  EXPECT_EQ(idx.count(), 1u);
  EXPECT_EQ(idx.last()->timestamp.value(), 10);
}

}  // namespace
}  // namespace keel::engine::test

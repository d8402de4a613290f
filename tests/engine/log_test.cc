// Unit tests of one partition log: offsets, rolls, reads and their bounds, both truncations,
// retention, lookup by time, reopen (clean and unclean), views that outlive their segment, the
// flush policies, callback order and the errors of the API.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "keel/engine/segment_cache.h"
#include "log_fixture.h"

namespace keel::engine::test {
namespace {

namespace fs = std::filesystem;

using LogTest = log_fixture;

constexpr size_t kPayload = 1000;  // stored 1056 bytes: 15 batches fill a 16 KiB segment
constexpr int kPerSegment = 15;

std::vector<int64_t> segment_bases_on_disk(const std::string& dir) {
  std::vector<int64_t> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 24 && name.substr(20) == ".log")
      out.push_back(std::stoll(name.substr(0, 20)));
  }
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_size);
}

void flip_byte(const std::string& path, uint64_t position) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  unsigned char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(position)), 1);
  c ^= 0x5a;
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(position)), 1);
  ::close(fd);
}

TEST_F(LogTest, AppendAssignsOffsetsAndReadFindsTheContainingBatch) {
  auto l = open_log(small_config());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->next_offset().value(), 0);
  EXPECT_EQ(l->written_offset(), offset::none());
  const std::string p = payload_for(0, 100);
  for (int i = 0; i < 5; ++i) {
    auto a = append_wait(*l, *ring_, spec_of(p, 1, -1, 3));
    ASSERT_TRUE(a.ok()) << a.err().describe();
    EXPECT_EQ(a->base.value(), 3 * i);
    EXPECT_EQ(a->last.value(), 3 * i + 2);
    EXPECT_TRUE(a->durable);
  }
  EXPECT_EQ(l->next_offset().value(), 15);
  EXPECT_EQ(l->written_offset().value(), 14);
  EXPECT_EQ(l->durable_offset().value(), 14);
  for (int64_t o = 0; o < 15; ++o) {
    auto r = l->read(offset(o), 1, offset(100));
    ASSERT_TRUE(r.ok()) << r.err().describe();
    ASSERT_EQ(r->batches().count(), 1u);
    EXPECT_EQ(r->batches().front().header.base_offset.value(), o / 3 * 3);
    EXPECT_EQ(r->next_offset.value(), o / 3 * 3 + 3);
    auto h = l->batch_at(offset(o));
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->base_offset.value(), o / 3 * 3);
  }
  // Reading at the end returns nothing, and says where to continue.
  auto r = l->read(offset(15), 1 << 20, offset(100));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->batches().empty());
  EXPECT_EQ(r->next_offset.value(), 15);
}

TEST_F(LogTest, RollsAtSegmentBytesAndReadsAcrossSegments) {
  auto l = open_log(small_config());
  ASSERT_TRUE(l);
  append_n(*l, 4 * kPerSegment + 3, kPayload);
  EXPECT_EQ(l->segment_count(), 5u);
  EXPECT_EQ(segment_bases_on_disk(dir()), (std::vector<int64_t>{0, kPerSegment, 2 * kPerSegment,
                                                                3 * kPerSegment, 4 * kPerSegment}));
  // Rolled segments are cut to their content (through the ring); each holds 15 batches.
  drain(*ring_);
  EXPECT_EQ(file_size(dir() + "/00000000000000000015.log"), kPerSegment * (kPayload + 56));
  expect_contents(*l, 0, 4 * kPerSegment + 3, kPayload);
  // One read spanning every segment.
  auto r = l->read(offset(3), 1 << 30, l->written_offset());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->batches().count(), 4u * kPerSegment);
  EXPECT_EQ(r->next_offset.value(), 4 * kPerSegment + 3);
  // A read starting exactly at a segment's base.
  r = l->read(offset(2 * kPerSegment), 1, l->written_offset());
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->batches().count(), 1u);
  EXPECT_EQ(r->batches().front().header.base_offset.value(), 2 * kPerSegment);
  ASSERT_TRUE(l->close().ok());
  l = open_log(small_config());
  EXPECT_EQ(l->segment_count(), 5u);
  expect_contents(*l, 0, 4 * kPerSegment + 3, kPayload);
}

TEST_F(LogTest, RollsAtSegmentMsOnAppendAndOnTick) {
  log_config c = small_config();
  c.segment_ms = 60'000;
  auto l = open_log(c);
  ASSERT_TRUE(l);
  append_n(*l, 2, 100);
  clock_ms_ += 59'999;
  l->tick();
  append_n(*l, 1, 100);
  EXPECT_EQ(l->segment_count(), 1u);
  clock_ms_ += 1;  // the segment's first append is now 60 s old
  // The next segment's files are made through the ring first: this append still lands in the
  // old segment, the next one after the files are ready rolls.
  append_n(*l, 1, 100);
  EXPECT_EQ(l->segment_count(), 1u);
  drain(*ring_);
  append_n(*l, 1, 100);
  EXPECT_EQ(l->segment_count(), 2u);
  EXPECT_EQ(segment_bases_on_disk(dir()), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(l->rolls_from_spare(), 1u);
  clock_ms_ += 60'000;
  l->tick();  // time alone rolls the segment, once its successor's files are ready
  drain(*ring_);
  l->tick();
  drain(*ring_);
  EXPECT_EQ(l->segment_count(), 3u);
  EXPECT_EQ(l->rolls_from_spare(), 2u);
  l->tick();  // an empty active segment does not roll
  EXPECT_EQ(l->segment_count(), 3u);
  append_n(*l, 1, 100);
  EXPECT_EQ(segment_bases_on_disk(dir()), (std::vector<int64_t>{0, 4, 5}));
  expect_contents(*l, 0, 6, 100);
}

TEST_F(LogTest, SegmentAgeDoesNotRollEveryReopenedSegment) {
  log_config c = small_config();
  c.segment_ms = 3'600'000;
  {
    auto l = open_log(c);
    append_n(*l, 2, 100);
    ASSERT_TRUE(l->close().ok());
  }
  clock_ms_ += 1000;
  {
    auto l = open_log(c);  // clean reopen
    append_n(*l, 1, 100);
    l->tick();
    EXPECT_EQ(l->segment_count(), 1u) << "a reopened segment rolled before segment_ms passed";
  }
  clock_ms_ += 1000;
  auto l = open_log(c);  // reopen after an unclean stop
  append_n(*l, 1, 100);
  l->tick();
  EXPECT_EQ(l->segment_count(), 1u) << "a recovered segment rolled before segment_ms passed";
  clock_ms_ += 3'600'000;
  l->tick();  // makes the next segment's files
  drain(*ring_);
  l->tick();  // rolls into them
  drain(*ring_);
  EXPECT_EQ(l->segment_count(), 2u);
  expect_contents(*l, 0, 4, 100);
}

// A read's ranges: one per segment touched, each the exact bytes of its whole batches back to
// back, ending at the bound, the byte budget or the segment's end, at every position.
TEST_F(LogTest, ReadRangesEndAtEveryBoundary) {
  log_config c = small_config();
  c.index_interval_bytes = 2000;  // an entry every other batch: ends between and at entries
  auto l = open_log(c);
  constexpr int64_t n = 3 * kPerSegment + 4;
  append_n(*l, n, kPayload);
  const uint64_t stored = kPayload + batch_header_size;
  for (int64_t from = 0; from < n; ++from) {
    for (int64_t upper : {from - 1, from, from + 1, from + 7, int64_t{kPerSegment - 1},
                          int64_t{2 * kPerSegment}, n - 1, n + 5}) {
      for (uint64_t max : {uint64_t{0}, stored - 1, stored, 3 * stored + 1, 14 * stored,
                           15 * stored, 16 * stored, uint64_t{1} << 30}) {
        SCOPED_TRACE("read(" + std::to_string(from) + ", " + std::to_string(max) + ", " +
                     std::to_string(upper) + ")");
        auto r = l->read(offset(from), max, offset(upper));
        ASSERT_TRUE(r.ok()) << r.err().describe();
        // The model: batches from `from` while within the bound, and the budget after the first.
        int64_t want = 0;
        while (from + want <= std::min(upper, n - 1) && (want == 0 || (want + 1) * stored <= max))
          ++want;
        ASSERT_EQ(r->bytes, static_cast<uint64_t>(want) * stored);
        ASSERT_EQ(r->next_offset.value(), from + want);
        // One range per segment touched, split exactly at segment bases.
        int64_t at = from;
        uint64_t total = 0;
        for (const batch_range& range : r->ranges) {
          ASSERT_EQ(range.base.value(), at);
          const int64_t segment_end = (at / kPerSegment + 1) * kPerSegment;
          const int64_t last = std::min(from + want, segment_end) - 1;
          ASSERT_EQ(range.last.value(), last);
          ASSERT_EQ(range.bytes.size(), static_cast<uint64_t>(last - at + 1) * stored);
          total += range.bytes.size();
          at = last + 1;
        }
        ASSERT_EQ(total, r->bytes);
        ASSERT_EQ(at, from + want);
        // The views, decoded lazily, are the batches of the ranges in order.
        int64_t expect = from;
        for (const batch_view& v : r->batches()) {
          ASSERT_EQ(v.header.base_offset.value(), expect);
          ASSERT_TRUE(string_of(v.payload()) == payload_for(expect, kPayload));
          ++expect;
        }
        ASSERT_EQ(expect, from + want);
        ASSERT_EQ(r->keep_alive.size(), r->ranges.size());
      }
    }
  }
}

// A checksum mismatch: on the first batch the read fails; later, the read ends before it and
// its bytes are not returned. Unverified reads hand the bytes on (the range is what was asked).
TEST_F(LogTest, VerifiedReadsStopBeforeDamage) {
  auto l = open_log(small_config());
  append_n(*l, 10, kPayload);
  const uint64_t stored = kPayload + batch_header_size;
  flip_byte(dir() + "/" + segment_file_stem(offset(0)) + ".log", 6 * stored + 100);
  auto r = l->read(offset(2), 1 << 20, offset(100), read_options{true});
  ASSERT_TRUE(r.ok()) << r.err().describe();
  EXPECT_EQ(r->next_offset.value(), 6);
  EXPECT_EQ(r->bytes, 4 * stored);
  ASSERT_EQ(r->ranges.size(), 1u);
  EXPECT_EQ(r->ranges[0].bytes.size(), 4 * stored);
  auto bad = l->read(offset(6), 1 << 20, offset(100), read_options{true});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.err().code, errc::corrupt);
  auto raw = l->read(offset(2), 1 << 20, offset(100), read_options{false});
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->next_offset.value(), 10);
}

TEST_F(LogTest, ReadHonoursMaxBytesUpperBoundAndTheWrittenEnd) {
  auto l = open_log(small_config());
  append_n(*l, 10, 100);  // stored 156 bytes each
  // max_bytes: whole batches only, and always at least one.
  for (uint64_t max : {0ull, 1ull, 155ull, 156ull, 311ull, 312ull, 313ull, 100000ull}) {
    auto r = l->read(offset(2), max, offset(100));
    ASSERT_TRUE(r.ok());
    const size_t want = std::min<size_t>(8, std::max<size_t>(1, max / 156));
    EXPECT_EQ(r->batches().count(), want) << "max_bytes " << max;
    EXPECT_EQ(r->bytes, want * 156);
    EXPECT_EQ(r->next_offset.value(), 2 + static_cast<int64_t>(want));
  }
  // upper_bound: never past it, even for the first batch.
  auto r = l->read(offset(0), 1 << 20, offset(4));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->batches().count(), 5u);
  r = l->read(offset(5), 1 << 20, offset(4));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->batches().empty());
  EXPECT_EQ(r->next_offset.value(), 5);
  // A batch spanning offsets [10, 12] is not returned under a bound of 11.
  append_n(*l, 0, 0);
  const std::string p10 = payload_for(10, 100);
  ASSERT_TRUE(append_wait(*l, *ring_, spec_of(p10, 1, -1, 3)).ok());
  r = l->read(offset(10), 1 << 20, offset(11));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->batches().empty());
  r = l->read(offset(10), 1 << 20, offset(12));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->batches().count(), 1u);

  // The written end: an append whose write has not completed is not readable.
  const std::string p = payload_for(13, 100);
  bool called = false;
  ASSERT_TRUE(l->append(spec_of(p), [&](const result<append_ack>&) { called = true; }).ok());
  EXPECT_EQ(l->appended_offset().value(), 13);
  EXPECT_EQ(l->written_offset().value(), 12);  // completions run only when the ring is polled
  r = l->read(offset(13), 1 << 20, offset(100));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->batches().empty());
  EXPECT_EQ(l->batch_at(offset(13)).err().code, errc::offset_out_of_range);
  drain(*ring_);
  EXPECT_TRUE(called);
  r = l->read(offset(13), 1 << 20, offset(100));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->batches().count(), 1u);
  EXPECT_TRUE(string_of(r->batches().front().payload()) == p);
}

TEST_F(LogTest, TruncateSuffixMidSegmentThenAppendAndReopen) {
  auto l = open_log(small_config());
  append_n(*l, 10, 100, 1);
  append_n(*l, 5, 100, 2);
  ASSERT_TRUE(l->truncate_suffix(offset(12)).ok());
  EXPECT_EQ(l->next_offset().value(), 12);
  EXPECT_EQ(l->written_offset().value(), 11);
  EXPECT_EQ(l->durable_offset().value(), 11);
  EXPECT_EQ(l->last_term().value(), 2);
  expect_contents(*l, 0, 12, 100);
  ASSERT_TRUE(l->truncate_suffix(offset(10)).ok());
  EXPECT_EQ(l->last_term().value(), 1);  // a follower may now append term 1 again
  append_n(*l, 3, 200, 1);
  auto all = read_all_ok(*l);
  ASSERT_EQ(all.size(), 13u);
  EXPECT_TRUE(all[10].payload == payload_for(10, 200));
  l.reset();  // unclean: no close
  l = open_log(small_config());
  EXPECT_EQ(l->next_offset().value(), 13);
  EXPECT_EQ(l->last_term().value(), 1);
  all = read_all_ok(*l);
  ASSERT_EQ(all.size(), 13u);
  EXPECT_TRUE(all[9].payload == payload_for(9, 100));
  EXPECT_TRUE(all[12].payload == payload_for(12, 200));
  ASSERT_TRUE(l->close().ok());
  l = open_log(small_config());
  EXPECT_EQ(l->next_offset().value(), 13);
  EXPECT_EQ(read_all_ok(*l).size(), 13u);
}

TEST_F(LogTest, TruncateSuffixAtASegmentBaseAndAcrossSegments) {
  auto l = open_log(small_config());
  append_n(*l, 5 * kPerSegment, kPayload);
  ASSERT_EQ(l->segment_count(), 5u);
  // At the active segment's base: it empties and stays.
  ASSERT_TRUE(l->truncate_suffix(offset(4 * kPerSegment)).ok());
  EXPECT_EQ(l->next_offset().value(), 4 * kPerSegment);
  expect_contents(*l, 0, 4 * kPerSegment, kPayload);
  // Across several segments, into the middle of a closed one.
  ASSERT_TRUE(l->truncate_suffix(offset(kPerSegment + 4)).ok());
  EXPECT_EQ(l->segment_count(), 2u);
  EXPECT_EQ(segment_bases_on_disk(dir()), (std::vector<int64_t>{0, kPerSegment}));
  expect_contents(*l, 0, kPerSegment + 4, kPayload);
  // Appends continue in the reopened segment and roll as usual.
  append_n(*l, 20, kPayload);
  expect_contents(*l, 0, kPerSegment + 24, kPayload);
  EXPECT_EQ(l->segment_count(), 3u);
  // At a closed segment's base.
  ASSERT_TRUE(l->truncate_suffix(offset(kPerSegment)).ok());
  expect_contents(*l, 0, kPerSegment, kPayload);
  append_n(*l, 2, kPayload);
  l.reset();
  l = open_log(small_config());
  expect_contents(*l, 0, kPerSegment + 2, kPayload);
  // Everything.
  ASSERT_TRUE(l->truncate_suffix(offset(0)).ok());
  EXPECT_EQ(l->next_offset().value(), 0);
  EXPECT_EQ(l->written_offset(), offset::none());
  append_n(*l, 1, 10);
  ASSERT_TRUE(l->close().ok());
  l = open_log(small_config());
  expect_contents(*l, 0, 1, 10);
}

TEST_F(LogTest, TruncateSuffixRejectsOffsetsOutsideOrInsideABatch) {
  auto l = open_log(small_config());
  ASSERT_TRUE(append_wait(*l, *ring_, spec_of("abc", 1, -1, 4)).ok());
  EXPECT_EQ(l->truncate_suffix(offset(5)).err().code, errc::offset_out_of_range);
  EXPECT_EQ(l->truncate_suffix(offset(2)).err().code, errc::invalid_argument);
  EXPECT_TRUE(l->truncate_suffix(offset(4)).ok());  // next offset: nothing to do
  EXPECT_EQ(l->next_offset().value(), 4);
}

TEST_F(LogTest, TruncatePrefixWithinDeletesWholeSegmentsAndPersists) {
  auto l = open_log(small_config());
  append_n(*l, 3 * kPerSegment + 2, kPayload);
  ASSERT_TRUE(l->truncate_prefix(offset(kPerSegment + 3)).ok());
  EXPECT_EQ(l->log_start().value(), kPerSegment + 3);
  // The file work runs on the ring, not in the call: the segment is still on disk until then.
  EXPECT_EQ(segment_bases_on_disk(dir()),
            (std::vector<int64_t>{0, kPerSegment, 2 * kPerSegment, 3 * kPerSegment}));
  ring_->drain();
  EXPECT_EQ(segment_bases_on_disk(dir()),
            (std::vector<int64_t>{kPerSegment, 2 * kPerSegment, 3 * kPerSegment}));
  EXPECT_EQ(l->read(offset(kPerSegment + 2), 1, offset(1000)).err().code,
            errc::offset_out_of_range);
  EXPECT_EQ(l->batch_at(offset(0)).err().code, errc::offset_out_of_range);
  expect_contents(*l, kPerSegment + 3, 3 * kPerSegment + 2, kPayload);
  // A start that does not move back.
  ASSERT_TRUE(l->truncate_prefix(offset(2)).ok());
  EXPECT_EQ(l->log_start().value(), kPerSegment + 3);
  l.reset();
  l = open_log(small_config());
  EXPECT_EQ(l->log_start().value(), kPerSegment + 3);
  expect_contents(*l, kPerSegment + 3, 3 * kPerSegment + 2, kPayload);
  // Up to the next offset exactly: an empty log that continues.
  ASSERT_TRUE(l->truncate_prefix(l->next_offset()).ok());
  EXPECT_EQ(l->segment_count(), 1u);
  append_n(*l, 1, kPayload);
  ASSERT_TRUE(l->close().ok());
  l = open_log(small_config());
  EXPECT_EQ(l->log_start().value(), 3 * kPerSegment + 2);
  expect_contents(*l, 3 * kPerSegment + 2, 3 * kPerSegment + 3, kPayload);
}

TEST_F(LogTest, TruncatePrefixBeyondTheEndResets) {
  auto l = open_log(small_config());
  append_n(*l, 2 * kPerSegment, kPayload);
  ASSERT_TRUE(l->truncate_prefix(offset(1000)).ok());
  EXPECT_EQ(l->log_start().value(), 1000);
  EXPECT_EQ(l->next_offset().value(), 1000);
  EXPECT_EQ(l->written_offset().value(), 999);
  EXPECT_EQ(segment_bases_on_disk(dir()), (std::vector<int64_t>{1000}));
  EXPECT_EQ(l->read(offset(5), 1, offset(2000)).err().code, errc::offset_out_of_range);
  const std::string p = payload_for(1000, kPayload);
  batch_spec b = spec_of(p);
  b.base = offset(1000);  // a follower continues from the leader's start
  ASSERT_TRUE(append_wait(*l, *ring_, b).ok());
  l.reset();
  l = open_log(small_config());
  EXPECT_EQ(l->log_start().value(), 1000);
  expect_contents(*l, 1000, 1001, kPayload);
}

// A truncation that leaves no batch forgets the removed batches' term: a Raft follower may
// then append a lower term (the term before the start is Raft's to remember, not the log's).
TEST_F(LogTest, ALogEmptiedByATruncationTakesALowerTerm) {
  auto l = open_log(small_config());
  append_n(*l, 5, 100, 7);
  // Everything, from offset 0.
  ASSERT_TRUE(l->truncate_suffix(offset(0)).ok());
  EXPECT_EQ(l->last_term().value(), 0);
  append_n(*l, 5, 100, 3);
  EXPECT_EQ(l->last_term().value(), 3);

  // Everything from a start inside the active segment: the batches below the start, which
  // share its segment, go too, so recovery never meets a term that goes backwards.
  ASSERT_TRUE(l->truncate_prefix(offset(2)).ok());
  ASSERT_TRUE(l->truncate_suffix(offset(2)).ok());
  EXPECT_EQ(l->last_term().value(), 0);
  EXPECT_EQ(l->log_start().value(), 2);
  EXPECT_EQ(l->next_offset().value(), 2);
  EXPECT_EQ(l->durable_offset().value(), 1);
  EXPECT_EQ(segment_bases_on_disk(dir()), (std::vector<int64_t>{2}));
  append_n(*l, 3, 100, 1);
  l.reset();  // unclean: recovery scans the batches of term 1
  l = open_log(small_config());
  EXPECT_EQ(l->last_term().value(), 1);
  expect_contents(*l, 2, 5, 100);

  // A reset past the end.
  append_n(*l, 2, 100, 9);
  ASSERT_TRUE(l->truncate_prefix(offset(500)).ok());
  EXPECT_EQ(l->last_term().value(), 0);
  append_n(*l, 1, 100, 2);
  EXPECT_EQ(l->last_term().value(), 2);
  ASSERT_TRUE(l->close().ok());
  l = open_log(small_config());
  EXPECT_EQ(l->last_term().value(), 2);
  expect_contents(*l, 500, 501, 100);
  // A lower term than the last batch's is still refused.
  EXPECT_EQ(l->append(spec_of("x", 1)).err().code, errc::invalid_argument);
}

TEST_F(LogTest, RetentionByBytesKeepsTheNewestSegments) {
  log_config c = small_config();
  c.retention_bytes = 2 * kPerSegment * (kPayload + 56);
  auto l = open_log(c);
  append_n(*l, 5 * kPerSegment, kPayload);
  ASSERT_EQ(l->segment_count(), 5u);
  auto start = l->apply_retention();
  ASSERT_TRUE(start.ok()) << start.err().describe();
  EXPECT_EQ(start->value(), 3 * kPerSegment);
  EXPECT_EQ(l->log_start().value(), 3 * kPerSegment);
  EXPECT_EQ(l->segment_count(), 2u);
  ring_->drain();
  EXPECT_EQ(segment_bases_on_disk(dir()), (std::vector<int64_t>{3 * kPerSegment, 4 * kPerSegment}));
  EXPECT_EQ(l->apply_retention()->value(), 3 * kPerSegment);  // nothing more to delete
  l.reset();
  l = open_log(c);
  EXPECT_EQ(l->log_start().value(), 3 * kPerSegment);
  expect_contents(*l, 3 * kPerSegment, 5 * kPerSegment, kPayload);
}

TEST_F(LogTest, RetentionByAgeUsesEachSegmentsNewestTimestamp) {
  log_config c = small_config();
  c.retention_ms = 10'000;
  auto l = open_log(c);
  for (int s = 0; s < 4; ++s) {
    append_n(*l, kPerSegment, kPayload, 1, clock_ms_);
    clock_ms_ += 5'000;
  }
  append_n(*l, 1, kPayload, 1, clock_ms_);
  ASSERT_EQ(l->segment_count(), 5u);
  // Segment newest timestamps: t0, t0+5 s, t0+10 s, t0+15 s; now t0+20 s. Older than 10 s: the
  // first two.
  auto start = l->apply_retention();
  ASSERT_TRUE(start.ok());
  EXPECT_EQ(start->value(), 2 * kPerSegment);
  EXPECT_EQ(l->segment_count(), 3u);
  clock_ms_ += 1'000'000;  // everything is old, but the active segment stays
  EXPECT_EQ(l->apply_retention()->value(), 4 * kPerSegment);
  // The newest rolled segment goes once its seal, issued by the truncation, completed.
  ring_->drain();
  EXPECT_EQ(l->segment_count(), 1u);
  expect_contents(*l, 4 * kPerSegment, 4 * kPerSegment + 1, kPayload);
}

TEST_F(LogTest, OffsetForTimestampAcrossSegmentsAndAfterReopen) {
  log_config c = small_config();
  auto l = open_log(c);
  // Timestamps that mostly grow, with dips, across five segments.
  std::vector<int64_t> ts;
  for (int i = 0; i < 5 * kPerSegment; ++i)
    ts.push_back(10'000 + 100 * i - (i % 7 == 3 ? 450 : 0));
  for (int64_t t : ts)
    append_n(*l, 1, kPayload, 1, t);
  auto check = [&](const log& lg, const char* when) {
    SCOPED_TRACE(when);
    for (int64_t target = 9'000; target <= ts.back() + 200; target += 25) {
      std::optional<int64_t> want;
      for (size_t i = 0; i < ts.size() && !want; ++i)
        if (static_cast<int64_t>(i) >= lg.log_start().value() && ts[i] >= target)
          want = static_cast<int64_t>(i);
      auto got = lg.offset_for_timestamp(timestamp_ms(target));
      ASSERT_TRUE(got.ok()) << got.err().describe();
      ASSERT_EQ(got->has_value(), want.has_value()) << "target " << target;
      if (want) {
        ASSERT_EQ((*got)->value(), *want) << "target " << target;
      }
    }
  };
  check(*l, "open");
  ASSERT_TRUE(l->close().ok());
  l = open_log(c);
  check(*l, "after a clean reopen");
  l.reset();
  l = open_log(c);
  check(*l, "after an unclean reopen");
  ASSERT_TRUE(l->truncate_prefix(offset(kPerSegment + 5)).ok());
  check(*l, "after truncate_prefix");
  ASSERT_TRUE(l->truncate_suffix(offset(3 * kPerSegment + 2)).ok());
  ts.resize(3 * kPerSegment + 2);
  check(*l, "after truncate_suffix");
}

TEST_F(LogTest, CleanCloseWritesAMarkerThatTheNextOpenTrusts) {
  auto l = open_log(small_config());
  append_n(*l, kPerSegment + 5, kPayload);
  ASSERT_TRUE(l->close().ok());
  EXPECT_EQ(l->append(spec_of("x")).err().code, errc::closed);
  l.reset();
  ASSERT_TRUE(fs::exists(dir() + "/clean_shutdown"));
  // Damage a batch in the middle of the active segment. A trusted marker means no scan: the
  // open does not notice, and a verifying read refuses the damaged batch instead of serving it.
  const std::string active = dir() + "/" + segment_file_stem(offset(kPerSegment)) + ".log";
  flip_byte(active, 2 * (kPayload + 56) + 100);  // in the payload of offset 17
  l = open_log(small_config());
  EXPECT_FALSE(fs::exists(dir() + "/clean_shutdown"));  // removed before anything changes
  EXPECT_EQ(l->next_offset().value(), kPerSegment + 5);
  auto r = l->read(offset(kPerSegment + 2), 1 << 20, l->written_offset());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::corrupt);
  r = l->read(offset(kPerSegment + 2), 1 << 20, l->written_offset(), read_options{false});
  EXPECT_TRUE(r.ok());
  // An unclean stop: the next open scans and cuts at the damage.
  l.reset();
  ::testing::internal::CaptureStderr();
  l = open_log(small_config());
  const std::string warnings = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(warnings.find("checksum"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find(active), std::string::npos) << warnings;
  expect_contents(*l, 0, kPerSegment + 2, kPayload);
}

TEST_F(LogTest, UncleanStopKeepsEverythingWrittenAndContinues) {
  {
    auto l = open_log(small_config());
    append_n(*l, 2 * kPerSegment + 3, kPayload, 4);
    // Destroyed without close(): no marker.
  }
  EXPECT_FALSE(fs::exists(dir() + "/clean_shutdown"));
  auto l = open_log(small_config());
  EXPECT_EQ(l->last_term().value(), 4);
  EXPECT_EQ(l->durable_offset().value(), 2 * kPerSegment + 2);
  expect_contents(*l, 0, 2 * kPerSegment + 3, kPayload);
  EXPECT_EQ(l->append(spec_of("x", 3)).err().code, errc::invalid_argument);
  append_n(*l, kPerSegment, kPayload, 4);
  expect_contents(*l, 0, 3 * kPerSegment + 3, kPayload);
}

TEST_F(LogTest, ViewsOutliveRollTruncationDeletionAndTheLogItself) {
  segment_cache cache(1);  // closed segments are unmapped as soon as another is used
  auto l = open_log(small_config(), &cache);
  append_n(*l, 3 * kPerSegment, kPayload);
  auto held = l->read(offset(0), 1 << 30, l->written_offset());
  ASSERT_TRUE(held.ok());
  // Decoded now: the views must outlive what follows, while their headers are still there.
  const std::vector<batch_view> held_views = views_of(*held);
  ASSERT_EQ(held_views.size(), 3u * kPerSegment);
  auto check_view = [&](const batch_view& v) {
    EXPECT_TRUE(string_of(v.payload()) == payload_for(v.header.base_offset.value(), kPayload))
        << "view of offset " << v.header.base_offset.value();
  };
  append_n(*l, 2, kPayload);  // rolls the segment the last views point into
  ASSERT_TRUE(l->truncate_prefix(offset(2 * kPerSegment)).ok());  // deletes two segments
  // Maps of the reopened segments come and go through the cache; views keep theirs.
  ASSERT_TRUE(read_all(*l, l->log_start()).ok());
  for (const batch_view& v : held_views)
    check_view(v);
  ASSERT_TRUE(l->truncate_suffix(offset(2 * kPerSegment + 4)).ok());  // cuts a closed segment
  // Views of the cut batches stay mapped (their bytes may be zeros now); the rest is intact.
  uint64_t sum = 0;
  for (const batch_view& v : held_views) {
    if (v.header.base_offset.value() < 2 * kPerSegment + 4)
      check_view(v);
    else
      for (std::byte b : v.stored)
        sum += static_cast<uint64_t>(b);
  }
  l.reset();
  for (size_t i = 0; i < 2 * kPerSegment + 4; ++i)
    check_view(held_views[i]);
  (void)sum;
}

TEST_F(LogTest, FlushEveryAppendMakesEachAckDurable) {
  auto l = open_log(small_config());
  for (int i = 0; i < 5; ++i) {
    auto a = append_wait(*l, *ring_, spec_of("abc"));
    ASSERT_TRUE(a.ok());
    EXPECT_TRUE(a->durable);
    EXPECT_EQ(l->durable_offset().value(), i);
  }
}

TEST_F(LogTest, FlushEveryNBytes) {
  log_config c = small_config();
  c.flush = flush_policy::every_n_bytes(3000);
  auto l = open_log(c);
  std::vector<bool> durable;
  for (int i = 0; i < 6; ++i) {
    const std::string p = payload_for(i, kPayload);  // 1056 bytes stored
    auto a = append_wait(*l, *ring_, spec_of(p));
    ASSERT_TRUE(a.ok());
    durable.push_back(a->durable);
    EXPECT_EQ(l->written_offset().value(), i);
    EXPECT_EQ(l->durable_offset().value(), i < 2 ? -1 : i < 5 ? 2 : 5);
  }
  EXPECT_EQ(durable, (std::vector<bool>{false, false, true, false, false, true}));
}

TEST_F(LogTest, FlushEveryIntervalThroughTick) {
  log_config c = small_config();
  c.flush = flush_policy::every_ms(100);
  auto l = open_log(c);
  auto a = append_wait(*l, *ring_, spec_of("a"));
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->durable);
  clock_ms_ += 99;
  l->tick();
  drain(*ring_);
  EXPECT_EQ(l->durable_offset(), offset::none());
  clock_ms_ += 1;
  l->tick();
  drain(*ring_);
  EXPECT_EQ(l->durable_offset().value(), 0);
  a = append_wait(*l, *ring_, spec_of("b"));
  EXPECT_FALSE(a->durable);
  clock_ms_ += 100;  // due: the next append's own write carries the sync
  a = append_wait(*l, *ring_, spec_of("c"));
  EXPECT_TRUE(a->durable);
  EXPECT_EQ(l->durable_offset().value(), 2);
  l->tick();  // nothing to sync
  EXPECT_EQ(ring_->in_flight(), 0u);
}

TEST_F(LogTest, FlushNeverSyncsOnlyOnRollFlushAndClose) {
  log_config c = small_config();
  c.flush = flush_policy::none();
  auto l = open_log(c);
  for (int i = 0; i < kPerSegment; ++i) {
    const std::string p = payload_for(i, kPayload);
    auto a = append_wait(*l, *ring_, spec_of(p));
    ASSERT_TRUE(a.ok());
    EXPECT_FALSE(a->durable);
  }
  EXPECT_EQ(l->durable_offset(), offset::none());
  EXPECT_EQ(l->written_offset().value(), kPerSegment - 1);
  // Rolls: the rolled segment's sync waits for the next durable claim, and the new segment's
  // writes do not wait for it.
  append_n(*l, 1, kPayload);
  EXPECT_EQ(l->segment_count(), 2u);
  EXPECT_EQ(l->durable_offset(), offset::none());
  append_n(*l, 1, kPayload);
  EXPECT_EQ(l->written_offset().value(), kPerSegment + 1);
  EXPECT_EQ(l->durable_offset(), offset::none());
  ASSERT_TRUE(flush_wait(*l, *ring_).ok());
  EXPECT_EQ(l->durable_offset().value(), kPerSegment + 1);
  ASSERT_TRUE(flush_wait(*l, *ring_).ok());  // nothing new: completes at once
  append_n(*l, 1, kPayload);
  ASSERT_TRUE(l->close().ok());
  EXPECT_EQ(l->durable_offset().value(), kPerSegment + 2);
}

// Zeroes [position, position + bytes) of a file, as a write that never reached the disk.
void zero_bytes(const std::string& path, uint64_t position, uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  const std::string zeros(bytes, '\0');
  ASSERT_EQ(::pwrite(fd, zeros.data(), bytes, static_cast<off_t>(position)),
            static_cast<ssize_t>(bytes));
  ::close(fd);
}

// A rolled segment's deferred sync that a crash beat: the `sealed` record does not name the
// segment, so open scans it; whole, it is kept and sealed; with a tail that never reached the
// disk, the log is cut at its last valid batch and the later segments (after a gap) go.
TEST_F(LogTest, ACrashBeforeADeferredSealScansTheUnsealedSegment) {
  log_config c = small_config();
  c.flush = flush_policy::none();
  auto l = open_log(c);
  // The second roll issues the first rolled segment's sync; the second rolled one's waits.
  append_n(*l, 2 * kPerSegment + 3, kPayload);
  drain(*ring_);
  ASSERT_EQ(l->segment_count(), 3u);
  EXPECT_EQ(l->durable_offset().value(), kPerSegment - 1);
  // The files as a crash now leaves them (a process crash keeps the page cache).
  const std::string whole = dir_.sub("whole"), torn = dir_.sub("torn");
  fs::copy(dir(), whole);
  fs::copy(dir(), torn);
  const std::string unsealed = "/" + segment_file_stem(offset(kPerSegment)) + ".log";
  const uint64_t stored = kPayload + batch_header_size;
  EXPECT_GT(file_size(whole + unsealed), kPerSegment * stored) << "not cut to its content yet";
  zero_bytes(torn + unsealed, (kPerSegment - 1) * stored, stored);
  {
    auto w = log::open(whole, c, *ring_);
    ASSERT_TRUE(w.ok()) << w.err().describe();
    EXPECT_EQ((*w)->segment_count(), 3u);
    expect_contents(**w, 0, 2 * kPerSegment + 3, kPayload);
    EXPECT_EQ(file_size(whole + unsealed), kPerSegment * stored) << "sealed by the recovery";
  }
  {
    auto t = log::open(torn, c, *ring_);
    ASSERT_TRUE(t.ok()) << t.err().describe();
    EXPECT_EQ((*t)->segment_count(), 2u);
    EXPECT_EQ(segment_bases_on_disk(torn), (std::vector<int64_t>{0, kPerSegment}));
    expect_contents(**t, 0, 2 * kPerSegment - 1, kPayload);
    append_n(**t, 2, kPayload);  // continues from the cut, rolling again
    expect_contents(**t, 0, 2 * kPerSegment + 1, kPayload);
    ASSERT_TRUE((*t)->close().ok());
  }
  auto again = log::open(torn, c, *ring_);
  ASSERT_TRUE(again.ok()) << again.err().describe();
  expect_contents(**again, 0, 2 * kPerSegment + 1, kPayload);
}

// A durable claim (flush) waits for the rolled segments' deferred syncs before its own.
TEST_F(LogTest, AFlushAfterDeferredRollsCoversEverySegment) {
  log_config c = small_config();
  c.flush = flush_policy::none();
  auto l = open_log(c);
  append_n(*l, 3 * kPerSegment + 2, kPayload);
  EXPECT_LT(l->durable_offset().value(), 2 * kPerSegment);
  ASSERT_TRUE(flush_wait(*l, *ring_).ok());
  EXPECT_EQ(l->durable_offset().value(), 3 * kPerSegment + 1);
  // Every rolled segment is sealed: cut to its content (through the ring).
  drain(*ring_);
  for (int k = 0; k < 3; ++k)
    EXPECT_EQ(file_size(dir() + "/" + segment_file_stem(offset(k * kPerSegment)) + ".log"),
              kPerSegment * (kPayload + batch_header_size));
}

// Many appenders, each appending again as soon as acknowledged: groups' writes and syncs
// overlap, yet every acknowledgement says durable only with durable_offset already covering it,
// in append order, across rolls.
TEST_F(LogTest, OverlappingGroupCommitsAckOnlyWhatASyncCovered) {
  log_config c = small_config();
  c.flush = flush_policy::every_append();
  auto l = open_log(c);
  const std::string p = payload_for(0, kPayload);
  int64_t acked = -1;
  int done = 0, ready = 16;
  while (done < 400) {
    for (; ready > 0 && l->next_offset().value() < 400; --ready) {
      auto r = l->append(spec_of(p), [&](const result<append_ack>& a) {
        ASSERT_TRUE(a.ok());
        EXPECT_TRUE(a->durable);
        EXPECT_EQ(a->base.value(), acked + 1) << "in append order";
        EXPECT_GE(l->durable_offset(), a->last) << "acknowledged before a sync covered it";
        acked = a->last.value();
        ++done;
        ++ready;
      });
      ASSERT_TRUE(r.ok());
    }
    ring_->wait();
  }
  EXPECT_GT(l->segment_count(), 20u);
  ASSERT_TRUE(l->close().ok());
}

TEST_F(LogTest, CallbacksFireOnceEachInAppendOrder) {
  for (flush_policy policy : {flush_policy::every_append(), flush_policy::none()}) {
    log_config c = small_config();
    c.flush = policy;
    auto l = open_log(c);
    std::vector<int64_t> seen;
    int progress = 0;
    l->set_progress_listener([&] { ++progress; });
    const int64_t first = l->next_offset().value();
    for (int i = 0; i < 300; ++i) {
      const std::string p = payload_for(first + i, 50 + i % 900);
      auto r = l->append(spec_of(p), [&, i](const result<append_ack>& a) {
        ASSERT_TRUE(a.ok());
        EXPECT_EQ(a->base.value(), first + i);
        seen.push_back(a->base.value());
      });
      ASSERT_TRUE(r.ok());
      if (i % 7 == 0) ring_->poll();
    }
    drain(*ring_);
    ASSERT_EQ(seen.size(), 300u);
    for (int i = 0; i < 300; ++i)
      EXPECT_EQ(seen[i], first + i);
    EXPECT_GT(progress, 0);
    EXPECT_EQ(l->written_offset().value(), first + 299);
    ASSERT_TRUE(l->close().ok());
  }
}

// Appends only stage: the ring issues them at its next submit, poll or wait, as one write.
TEST_F(LogTest, AppendsStageUntilTheRingHandsWorkToTheKernel) {
  log_config c = small_config();
  c.flush = flush_policy::none();
  c.segment_bytes = 1 << 20;
  auto l = open_log(c);
  int listened = 0;
  ring_->set_staged_listener([&] { ++listened; });
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(l->append(spec_of("abcdef")).ok());
  EXPECT_EQ(listened, 1);  // once per turn, when the first log lists itself
  EXPECT_EQ(l->written_offset(), offset::none());
  EXPECT_EQ(l->staged_bytes(), 10 * (batch_header_size + 6));
  EXPECT_GT(ring_->in_flight(), 0u);  // staged work counts: wait() makes progress
  ring_->submit();
  EXPECT_EQ(l->staged_bytes(), 0u);  // one chain, issued
  drain(*ring_);
  EXPECT_EQ(l->written_offset().value(), 9);
  ASSERT_TRUE(l->append(spec_of("x")).ok());
  EXPECT_EQ(listened, 2);
  drain(*ring_);
  EXPECT_EQ(l->written_offset().value(), 10);
  ring_->set_staged_listener({});
}

TEST_F(LogTest, AChainPastTheIssueThresholdLeavesAtOnce) {
  log_config c = small_config();
  c.flush = flush_policy::none();
  c.segment_bytes = 8 << 20;
  c.issue_staged_bytes = 64 << 10;
  auto l = open_log(c);
  const std::string p(16 << 10, 'p');
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(l->append(spec_of(p)).ok());
  EXPECT_GT(l->staged_bytes(), 0u);
  ASSERT_TRUE(l->append(spec_of(p)).ok());  // the chain passes 64 KiB: issued without a submit
  EXPECT_EQ(l->staged_bytes(), 0u);
  drain(*ring_);
  EXPECT_EQ(l->written_offset().value(), 3);
  c.issue_staged_bytes = c.staged_bytes_max + 1;
  EXPECT_FALSE(c.validate().empty());
}

// A durable append completes through the ring's wait alone (the wait issues it), many appends
// of one turn share one fdatasync, and a log that goes away while staged leaves the ring clean.
TEST_F(LogTest, StagedDurableAppendsShareASyncAndSurviveTheLogGoing) {
  auto l = open_log(small_config());
  int acked = 0, durable = 0, chains_done = 0;
  l->set_progress_listener([&] { ++chains_done; });
  for (int i = 0; i < 8; ++i)
    ASSERT_TRUE(l->append(spec_of("d"), [&](const result<append_ack>& a) {
                   ASSERT_TRUE(a.ok());
                   ++acked;
                   durable += a->durable;
                 }).ok());
  while (acked < 8) {
    ASSERT_GT(ring_->in_flight(), 0u);
    ring_->wait();
  }
  EXPECT_EQ(durable, 8);
  EXPECT_EQ(chains_done, 1);  // one write and one fdatasync for the eight
  EXPECT_EQ(l->durable_offset().value(), 7);
  ASSERT_TRUE(l->append(spec_of("e")).ok());
  l.reset();  // staged, never submitted: the log issues and waits for it as it goes
  EXPECT_EQ(ring_->in_flight(), 0u);
  l = open_log(small_config());
  EXPECT_EQ(l->next_offset().value(), 9);
}

TEST_F(LogTest, ErrorsOfTheApi) {
  auto l = open_log(small_config());
  append_n(*l, 3, 10, 5);
  auto r = l->append(spec_of("x", 4));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::invalid_argument);  // a decreasing term
  batch_spec b = spec_of("x", 5);
  b.base = offset(4);
  EXPECT_EQ(l->append(b).err().code, errc::invalid_argument);  // a gap
  b.base = offset(2);
  EXPECT_EQ(l->append(b).err().code, errc::invalid_argument);  // an overlap
  b = spec_of("x", 5, -1, 0);
  EXPECT_EQ(l->append(b).err().code, errc::invalid_argument);  // spans no offset
  EXPECT_EQ(l->next_offset().value(), 3);                      // nothing was taken
  EXPECT_EQ(l->read(offset(4), 100, offset(10)).err().code, errc::offset_out_of_range);
  EXPECT_EQ(l->read(offset(-1), 100, offset(10)).err().code, errc::offset_out_of_range);
  EXPECT_EQ(l->batch_at(offset(3)).err().code, errc::offset_out_of_range);
  EXPECT_EQ(l->truncate_suffix(offset(4)).err().code, errc::offset_out_of_range);
  ASSERT_TRUE(l->truncate_prefix(offset(2)).ok());
  EXPECT_EQ(l->read(offset(1), 100, offset(10)).err().code, errc::offset_out_of_range);
  EXPECT_EQ(l->truncate_suffix(offset(1)).err().code, errc::offset_out_of_range);
  b = spec_of("x", 5);
  b.base = offset(3);
  EXPECT_TRUE(append_wait(*l, *ring_, b).ok());
  log_config bad = small_config();
  bad.segment_bytes = 100;
  auto opened = log::open(dir_.sub("bad"), bad, *ring_);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.err().code, errc::invalid_argument);
}

TEST_F(LogTest, AFullOffsetIndexStillFindsEveryBatch) {
  log_config c = small_config();
  c.segment_bytes = 1 << 20;
  c.index_interval_bytes = 1;  // an entry per batch: 512 fit in 4 KiB
  auto l = open_log(c);
  append_n(*l, 1000, 8);
  auto check = [&](const log& lg) {
    for (int64_t o = 0; o < 1000; ++o) {
      auto r = lg.read(offset(o), 1, offset(1000));
      ASSERT_TRUE(r.ok());
      ASSERT_EQ(r->batches().count(), 1u);
      ASSERT_EQ(r->batches().front().header.base_offset.value(), o);
      ASSERT_TRUE(string_of(r->batches().front().payload()) == payload_for(o, 8));
    }
  };
  check(*l);
  EXPECT_EQ(file_size(dir() + "/00000000000000000000.index"), 4096u);
  ASSERT_TRUE(l->close().ok());
  l = open_log(c);
  check(*l);
  l.reset();
  l = open_log(c);
  check(*l);
}

TEST_F(LogTest, ABatchLargerThanASegment) {
  auto l = open_log(small_config());
  // First in an empty segment, then after others.
  append_n(*l, 1, 40 << 10);
  append_n(*l, 2, 100);
  append_n(*l, 1, 40 << 10);
  append_n(*l, 1, 100);
  auto all = read_all_ok(*l);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_TRUE(all[0].payload == payload_for(0, 40 << 10));
  EXPECT_TRUE(all[3].payload == payload_for(3, 40 << 10));
  const size_t segments = l->segment_count();
  EXPECT_EQ(segment_bases_on_disk(dir()).size(), segments);
  ASSERT_TRUE(l->close().ok());
  l = open_log(small_config());
  EXPECT_EQ(l->segment_count(), segments);
  all = read_all_ok(*l);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_TRUE(all[3].payload == payload_for(3, 40 << 10));
}

TEST_F(LogTest, TruncatePrefixWhileARolledSegmentIsStillBeingWritten) {
  auto l = open_log(small_config());
  append_n(*l, kPerSegment - 2, kPayload);
  // Three appends without waiting: the first syncs, the second gathers behind it, the third
  // rolls the segment, so the rolled segment's last write is not issued yet.
  std::vector<result<append_ack>> acks;
  for (int i = 0; i < 3; ++i) {
    const std::string p = payload_for(l->next_offset().value(), kPayload);
    ASSERT_TRUE(
        l->append(spec_of(p), [&](const result<append_ack>& a) { acks.push_back(a); }).ok());
  }
  ASSERT_EQ(l->segment_count(), 2u);
  ASSERT_TRUE(l->truncate_prefix(offset(kPerSegment)).ok());
  drain(*ring_);
  ASSERT_EQ(acks.size(), 3u);
  for (const auto& a : acks)
    EXPECT_TRUE(a.ok()) << a.err().describe();
  EXPECT_FALSE(l->failure().has_value()) << l->failure()->describe();
  append_n(*l, 1, kPayload);
  expect_contents(*l, kPerSegment, kPerSegment + 2, kPayload);
  l.reset();
  l = open_log(small_config());
  expect_contents(*l, kPerSegment, kPerSegment + 2, kPayload);
}

// Rolls take the next segment's files made ahead through the ring (segment_spare.h): the files
// end with the segment's names, nothing of a spare is left behind after a reopen, and the data
// survives both a clean reopen and a crash.
TEST_F(LogTest, RollsUseTheSegmentFilesMadeAhead) {
  log_config c = small_config();
  c.segment_bytes = 64 << 10;
  c.index_max_bytes = 64 << 10;
  auto l = open_log(c);
  ASSERT_TRUE(l);
  append_n(*l, 40, 8000);  // ~320 KiB: four rolls or more
  ASSERT_GE(l->segment_count(), 5u);
  // Every roll found its spare ready: appends wait, and a spare is made once a segment is half
  // full.
  EXPECT_EQ(l->rolls_from_spare(), l->segment_count() - 1);
  const auto bases = segment_bases_on_disk(dir());
  ASSERT_EQ(bases.size(), l->segment_count());
  for (int64_t base : bases) {
    for (const char* ext : {".index", ".timeindex"})
      EXPECT_TRUE(fs::exists(dir() + "/" + segment_file_stem(offset(base)) + ext)) << base << ext;
  }
  expect_contents(*l, 0, 40, 8000);
  // A crash (no close) and a reopen: every batch is there, spare files are gone.
  l.reset();
  l = open_log(c);
  ASSERT_TRUE(l);
  expect_contents(*l, 0, 40, 8000);
  for (const char* name : {"spare.log", "spare.index", "spare.timeindex"})
    EXPECT_FALSE(fs::exists(dir() + "/" + name)) << name;
  append_n(*l, 20, 8000);
  ASSERT_TRUE(l->close().ok());
  l = open_log(c);
  ASSERT_TRUE(l);
  expect_contents(*l, 0, 60, 8000);
  EXPECT_EQ(segment_bases_on_disk(dir()).size(), l->segment_count());
}

// A roll's seal cuts the rolled segment's three files through the ring (no blocking call on the
// appending thread); once it completes the `sealed` record names the newest sealed segment.
TEST_F(LogTest, ASealCutsTheRolledFilesAndRecordsIt) {
  log_config c = small_config();
  c.flush = flush_policy::none();
  auto l = open_log(c);
  ASSERT_TRUE(l);
  append_n(*l, 3 * kPerSegment + 2, kPayload);
  ASSERT_EQ(l->segment_count(), 4u);
  ASSERT_TRUE(flush_wait(*l, *ring_).ok());  // the rolled segments' syncs, then their seals
  ring_->drain();
  for (int k = 0; k < 3; ++k) {
    const std::string stem = dir() + "/" + segment_file_stem(offset(k * kPerSegment));
    EXPECT_EQ(file_size(stem + ".log"), kPerSegment * (kPayload + batch_header_size)) << k;
    // Indexes hold whole entries only, none of their preallocated tail.
    EXPECT_EQ(file_size(stem + ".index") % 8, 0u) << k;
    EXPECT_LT(file_size(stem + ".index"), 4096u) << k;
    EXPECT_EQ(file_size(stem + ".timeindex") % 12, 0u) << k;
    EXPECT_LT(file_size(stem + ".timeindex"), 4096u) << k;
  }
  // The active segment keeps its preallocation.
  EXPECT_GE(file_size(dir() + "/" + segment_file_stem(offset(3 * kPerSegment)) + ".index"), 4096u);
  std::ifstream in(dir() + "/sealed", std::ios::binary);
  char record[24];
  ASSERT_TRUE(in.read(record, sizeof record));
  int64_t to = 0;
  std::memcpy(&to, record + 8, sizeof to);
  EXPECT_EQ(to, 3 * kPerSegment) << "sealed up to the active segment";
  expect_contents(*l, 0, 3 * kPerSegment + 2, kPayload);
  // Reopened without a clean close, the log trusts the record and every batch reads back.
  l.reset();
  l = open_log(c);
  ASSERT_TRUE(l);
  expect_contents(*l, 0, 3 * kPerSegment + 2, kPayload);
}

// Reads of rolled segments while their seals run on the ring (when the kernel is slower than the
// reads), with a segment cache that unmaps every closed segment but one: a segment whose files
// are still being cut is neither cached nor unmapped, and every read returns the right batches.
TEST_F(LogTest, ReadsDuringSealsStayCorrect) {
  segment_cache cache(1);
  log_config c = small_config();
  c.flush = flush_policy::none();
  auto l = open_log(c, &cache);
  ASSERT_TRUE(l);
  const int64_t total = 5 * kPerSegment + 1;
  append_n(*l, total, kPayload);
  ASSERT_TRUE(flush_wait(*l, *ring_).ok());  // starts every rolled segment's seal
  do {
    for (int64_t o = 0; o < total; o += kPerSegment / 2) {
      auto r = l->read(offset(o), 1, l->written_offset());
      ASSERT_TRUE(r.ok()) << r.err().describe();
      ASSERT_FALSE(r->batches().empty()) << o;
      EXPECT_LE(r->batches().front().header.base_offset.value(), o);
    }
  } while (ring_->poll() > 0 || ring_->in_flight() > 0);
  EXPECT_LE(cache.mapped(), 1u);
  expect_contents(*l, 0, total, kPayload);
}

}  // namespace
}  // namespace keel::engine::test

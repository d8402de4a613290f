// Unit tests of the page-cache bound on a log's tail (log_config::cached_tail_bytes,
// cache_window.h): durable bytes older than the window leave the page cache, the newest stay,
// every byte still reads back intact (from disk), and the bound can be set and lifted at run time.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "log_fixture.h"

namespace keel::engine::test {
namespace {

namespace fs = std::filesystem;

class CacheWindowTest : public log_fixture {
 public:
  void SetUp() override {
    log_fixture::SetUp();
    // tmpfs pages are the files themselves: nothing can drop them from memory.
    struct statfs st {};
    ASSERT_EQ(::statfs(dir_.path().c_str(), &st), 0);
    if (st.f_type == TMPFS_MAGIC) GTEST_SKIP() << "the test directory is on tmpfs";
  }
};

constexpr size_t kBatch = 256 << 10;
constexpr uint64_t kSegment = 8 << 20;
constexpr uint64_t kWindow = 4 << 20;

// Fraction of the pages of [from, to) of a file that the page cache holds.
double resident_fraction(const std::string& path, uint64_t from, uint64_t to) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path;
  if (fd < 0) return -1;
  const uint64_t size = fs::file_size(path);
  to = std::min(to, size);
  if (to <= from) {
    ::close(fd);
    return 0;
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  EXPECT_NE(map, MAP_FAILED) << path;
  if (map == MAP_FAILED) return -1;
  const size_t page = 4096;
  const size_t first = from / page, last = (to + page - 1) / page;
  std::vector<unsigned char> v((size + page - 1) / page);
  EXPECT_EQ(::mincore(map, size, v.data()), 0);
  size_t in = 0;
  for (size_t i = first; i < last; ++i)
    in += v[i] & 1;
  ::munmap(map, size);
  return double(in) / double(last - first);
}

std::map<int64_t, std::string> segment_files(const std::string& dir) {
  std::map<int64_t, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 24 && name.substr(20) == ".log")
      out[std::stoll(name.substr(0, 20))] = e.path().string();
  }
  return out;
}

log_config window_config(uint64_t window) {
  log_config c;
  c.segment_bytes = kSegment;
  c.flush = flush_policy::every_append();
  c.cached_tail_bytes = window;
  return c;
}

// Bytes of the page cache that the segments with base >= `from_base` hold.
uint64_t resident_bytes(const std::string& dir, int64_t from_base = 0) {
  uint64_t total = 0;
  for (const auto& [base, path] : segment_files(dir)) {
    if (base < from_base) continue;
    const uint64_t size = fs::file_size(path);
    total += static_cast<uint64_t>(resident_fraction(path, 0, size) * double(size));
  }
  return total;
}

// Bytes of the batches in the segment based at `base` (the active segment's file is longer).
uint64_t content_bytes(const log& l, int64_t base) {
  auto files = segment_files(l.dir());
  auto next = files.upper_bound(base);
  uint64_t total = 0;
  for (const stored_batch& b : read_all_ok(l)) {
    if (b.header.base_offset < offset(base)) continue;
    if (next != files.end() && b.header.base_offset >= offset(next->first)) break;
    total += b.header.stored_size();
  }
  return total;
}

// Drops go in steps (cache_window.cc): the cache may hold up to one step beyond the window.
constexpr uint64_t kSlack = (4 << 20) + (1 << 20);

TEST_F(CacheWindowTest, DurableBytesOlderThanTheWindowLeaveThePageCache) {
  auto l = open_log(window_config(kWindow));
  ASSERT_TRUE(l);
  append_n(*l, 96, kBatch);  // 24 MiB: several sealed segments and an active one
  ring_->drain();
  auto files = segment_files(dir());
  ASSERT_GE(files.size(), 3u);
  EXPECT_LE(resident_bytes(dir()), kWindow + kSlack);
  // The oldest segment is far behind the window and the newest bytes are inside it.
  const std::string oldest = files.begin()->second;
  EXPECT_LT(resident_fraction(oldest, 0, fs::file_size(oldest)), 0.05);
  EXPECT_GT(resident_fraction(files.rbegin()->second, 0, content_bytes(*l, files.rbegin()->first)),
            0.95);
  // Every batch reads back intact, from disk where the cache let go of it.
  expect_contents(*l, 0, 96, kBatch);
}

TEST_F(CacheWindowTest, NoWindowLeavesTheCacheToTheKernelAndOneCanBeSetLater) {
  auto l = open_log(window_config(0));
  ASSERT_TRUE(l);
  append_n(*l, 48, kBatch);  // 12 MiB: one sealed segment
  ring_->drain();
  auto files = segment_files(dir());
  ASSERT_GE(files.size(), 2u);
  EXPECT_GT(resident_bytes(dir()), uint64_t(11) << 20);

  // A bound set now applies to the active segment and those after it.
  const int64_t active_base = files.rbegin()->first;
  l->set_cached_tail_bytes(kWindow);
  append_n(*l, 48, kBatch);
  ring_->drain();
  EXPECT_LE(resident_bytes(dir(), active_base), kWindow + kSlack);

  // Lifting it keeps what is written from now on.
  l->set_cached_tail_bytes(0);
  const int64_t lifted_base = segment_files(dir()).rbegin()->first;
  append_n(*l, 48, kBatch);
  ring_->drain();
  const auto later = segment_files(dir());
  const auto after = std::next(later.find(lifted_base));
  ASSERT_NE(after, later.end());
  EXPECT_GT(resident_fraction(after->second, 0, content_bytes(*l, after->first)), 0.95)
      << after->second;
  expect_contents(*l, 0, 144, kBatch);
}

}  // namespace
}  // namespace keel::engine::test

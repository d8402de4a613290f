// log_manager: many logs under one data directory, one ring, bounded descriptors and maps.
#include "keel/engine/log_manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace keel::engine {
namespace {

size_t open_descriptors() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d))
    n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

class log_manager_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("keel-log-manager-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto r = io_ring::create();
    ASSERT_TRUE(r.ok());
    ring_ = std::move(r).value();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  log_manager::options options() const {
    log_manager::options o;
    o.data_dir = dir_.string();
    o.defaults.segment_bytes = 64 << 10;
    o.defaults.flush = flush_policy::none();
    return o;
  }

  static void append_text(log& l, const std::string& text) {
    batch_spec b;
    b.term = term_id(1);
    b.payload = std::as_bytes(std::span(text));
    ASSERT_TRUE(l.append(b).ok());
  }

  std::filesystem::path dir_;
  std::unique_ptr<io_ring> ring_;
};

TEST_F(log_manager_test, thousands_of_logs_reopen_with_bounded_descriptors) {
  constexpr int logs = 2000;
  const size_t before = open_descriptors();
  {
    auto m = log_manager::open(options(), *ring_);
    ASSERT_TRUE(m.ok()) << m.err().describe();
    for (int i = 0; i < logs; ++i) {
      auto l = (*m)->open_log("topic-" + std::to_string(i));
      ASSERT_TRUE(l.ok()) << l.err().describe();
      append_text(**l, "hello " + std::to_string(i));
    }
    // One descriptor per log for its active segment and one for its directory; no index fds.
    EXPECT_LE(open_descriptors() - before, static_cast<size_t>(2 * logs + 8));
    ASSERT_TRUE((*m)->close().ok());
  }
  auto m = log_manager::open(options(), *ring_);
  ASSERT_TRUE(m.ok()) << m.err().describe();
  EXPECT_EQ((*m)->size(), static_cast<size_t>(logs));
  for (int i = 0; i < logs; i += 97) {
    log* l = (*m)->find("topic-" + std::to_string(i));
    ASSERT_NE(l, nullptr);
    auto r = l->read(offset(0), 1 << 20, l->written_offset());
    ASSERT_TRUE(r.ok()) << r.err().describe();
    ASSERT_EQ(r->batches().count(), 1u);
    const std::string want = "hello " + std::to_string(i);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(r->batches().front().payload().data()),
                          r->batches().front().payload().size()),
              want);
  }
}

TEST_F(log_manager_test, closed_segment_maps_are_bounded_across_logs) {
  auto o = options();
  o.mapped_segments_max = 3;
  auto m = log_manager::open(o, *ring_);
  ASSERT_TRUE(m.ok());
  const std::string big(20 << 10, 'x');
  std::vector<log*> all;
  for (int i = 0; i < 4; ++i) {
    auto l = (*m)->open_log("p-" + std::to_string(i));
    ASSERT_TRUE(l.ok());
    for (int j = 0; j < 12; ++j)
      append_text(**l, big);  // 4+ segments of 64 KiB each
    (*l)->flush();
    all.push_back(*l);
  }
  ring_->drain();
  for (log* l : all) {
    ASSERT_GT(l->segment_count(), 3u);
    auto r = l->read(offset(0), 64 << 20, l->written_offset());
    ASSERT_TRUE(r.ok()) << r.err().describe();
    EXPECT_EQ(r->batches().count(), 12u);
    EXPECT_LE((*m)->mapped_segments(), 3u);
  }
  // Views taken before eviction stay readable after their segment's map was dropped.
  auto first = all[0]->read(offset(0), 1, all[0]->written_offset());
  ASSERT_TRUE(first.ok());
  for (log* l : all)
    ASSERT_TRUE(l->read(offset(0), 64 << 20, l->written_offset()).ok());
  EXPECT_EQ(first->batches().front().payload()[0], std::byte{'x'});
}

TEST_F(log_manager_test, names_are_validated_and_remove_deletes_the_directory) {
  auto m = log_manager::open(options(), *ring_);
  ASSERT_TRUE(m.ok());
  for (const char* bad : {"", ".", "..", "a/b", "with space", "x\n"}) {
    auto l = (*m)->open_log(bad);
    ASSERT_FALSE(l.ok()) << bad;
    EXPECT_EQ(l.err().code, errc::invalid_argument);
  }
  auto l = (*m)->open_log("orders-0");
  ASSERT_TRUE(l.ok());
  append_text(**l, "x");
  ASSERT_TRUE((*m)->remove("orders-0").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "orders-0"));
  EXPECT_EQ((*m)->find("orders-0"), nullptr);
  EXPECT_EQ((*m)->remove("orders-0").err().code, errc::not_found);
}

// Entries of `dir` whose names mark a removed log.
std::vector<std::filesystem::path> removed_dirs(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (log_manager::removed_name(e.path().filename().string())) out.push_back(e.path());
  return out;
}

size_t files_under(const std::filesystem::path& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    n += e.is_regular_file();
  return n;
}

TEST_F(log_manager_test, a_removed_log_frees_its_name_at_once_and_its_files_go_through_the_ring) {
  auto m = log_manager::open(options(), *ring_);
  ASSERT_TRUE(m.ok());
  auto l = (*m)->open_log("orders-0");
  ASSERT_TRUE(l.ok());
  const std::string big(20 << 10, 'r');
  for (int i = 0; i < 12; ++i)
    append_text(**l, big);
  ring_->drain();
  ASSERT_GT((*l)->segment_count(), 2u);

  ASSERT_TRUE((*m)->remove("orders-0").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "orders-0"));
  // The call only moved the directory: its files go once the ring has synced the rename.
  auto aside = removed_dirs(dir_);
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_GT(files_under(aside[0]), 6u);
  EXPECT_FALSE((*m)->removals().idle());

  // The name serves a new, empty log at once, while the old files are still being deleted.
  auto again = (*m)->open_log("orders-0");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->next_offset(), offset(0));
  append_text(**again, "new");
  ring_->drain();
  EXPECT_TRUE((*m)->removals().idle());
  EXPECT_EQ((*m)->removals().directories_removed(), 1u);
  EXPECT_EQ((*m)->removals().failures(), 0u);
  EXPECT_FALSE(std::filesystem::exists(aside[0]));
  EXPECT_EQ((*again)->next_offset(), offset(1));
}

TEST_F(log_manager_test, a_removal_cut_short_is_finished_at_the_next_open) {
  // What a crash between the rename and the last unlink leaves: files, a nested directory, and
  // a link to a directory outside, which must not be followed.
  const auto aside = dir_ / "orders-0~deleted-1";
  const auto outside = dir_.string() + "-outside";
  std::filesystem::create_directories(aside / "nested");
  std::filesystem::create_directories(outside);
  for (const auto& f : {aside / "00000000000000000000.log", aside / "nested" / "x",
                        std::filesystem::path(outside) / "kept"}) {
    FILE* out = std::fopen(f.c_str(), "w");
    ASSERT_NE(out, nullptr);
    std::fputs("left behind", out);
    std::fclose(out);
  }
  std::filesystem::create_directory_symlink(outside, aside / "link");
  auto m = log_manager::open(options(), *ring_);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE((*m)->names().empty());  // not taken for a log

  // A log of the same name removed while that removal still runs takes the next free name.
  auto l = (*m)->open_log("orders-0");
  ASSERT_TRUE(l.ok());
  append_text(**l, "x");
  ASSERT_TRUE((*m)->remove("orders-0").ok());
  EXPECT_TRUE(std::filesystem::exists(aside));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "orders-0~deleted-2"));
  ring_->drain();
  EXPECT_TRUE(removed_dirs(dir_).empty());
  EXPECT_EQ((*m)->removals().directories_removed(), 2u);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(outside) / "kept"));
  std::filesystem::remove_all(outside);
}

TEST_F(log_manager_test, close_leaves_an_unfinished_removal_to_the_next_open) {
  // A stop does not wait for a large deletion: what is not yet deleted stays, under the
  // removed name, and the next open deletes it.
  std::filesystem::path aside;
  {
    auto m = log_manager::open(options(), *ring_);
    ASSERT_TRUE(m.ok());
    auto l = (*m)->open_log("orders-1");
    ASSERT_TRUE(l.ok());
    const std::string big(20 << 10, 'c');
    for (int i = 0; i < 40; ++i)
      append_text(**l, big);
    ring_->drain();
    ASSERT_TRUE((*m)->remove("orders-1").ok());
    ASSERT_TRUE((*m)->close().ok());
    EXPECT_TRUE((*m)->removals().idle());
    auto left = removed_dirs(dir_);
    ASSERT_EQ(left.size(), 1u);
    aside = left[0];
    EXPECT_GT(files_under(aside), 0u);
  }
  auto m = log_manager::open(options(), *ring_);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE((*m)->names().empty());
  ring_->drain();
  EXPECT_FALSE(std::filesystem::exists(aside));
  EXPECT_EQ((*m)->removals().directories_removed(), 1u);
}

// Sets or clears the immutable flag of `path`; false where the filesystem has none.
bool set_immutable(const std::filesystem::path& path, bool on) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  int flags = 0;
  bool ok = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  if (ok) {
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    ok = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  }
  ::close(fd);
  return ok;
}

TEST_F(log_manager_test, a_file_that_cannot_be_deleted_leaves_its_directory_for_the_next_open) {
  auto m = log_manager::open(options(), *ring_);
  ASSERT_TRUE(m.ok());
  auto l = (*m)->open_log("orders-5");
  ASSERT_TRUE(l.ok());
  append_text(**l, "kept");
  ring_->drain();
  // An immutable file cannot be unlinked, by root either.
  std::filesystem::path stuck = dir_ / "orders-5" / "stuck";
  {
    FILE* out = std::fopen(stuck.c_str(), "w");
    ASSERT_NE(out, nullptr);
    std::fclose(out);
  }
  if (!set_immutable(stuck, true)) GTEST_SKIP() << "this filesystem cannot mark a file immutable";
  struct release {  // whatever fails below, the fixture can still delete its directory
    std::filesystem::path* file;
    ~release() { set_immutable(*file, false); }
  } guard{&stuck};

  ASSERT_TRUE((*m)->remove("orders-5").ok());
  auto aside = removed_dirs(dir_);
  ASSERT_EQ(aside.size(), 1u);
  stuck = aside[0] / "stuck";
  ring_->drain();
  EXPECT_EQ((*m)->removals().failures(), 1u);
  EXPECT_EQ((*m)->removals().directories_removed(), 0u);
  EXPECT_EQ(files_under(aside[0]), 1u);  // everything else went
  // The manager goes on serving.
  auto other = (*m)->open_log("orders-6");
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*m)->close().ok());
  m->reset();

  // Once the file can go, the next open finishes the removal.
  ASSERT_TRUE(set_immutable(stuck, false));
  auto reopened = log_manager::open(options(), *ring_);
  ASSERT_TRUE(reopened.ok());
  ring_->drain();
  EXPECT_FALSE(std::filesystem::exists(aside[0]));
  EXPECT_EQ((*reopened)->names(), std::vector<std::string>{"orders-6"});
}

TEST_F(log_manager_test, tick_applies_retention_on_its_interval) {
  int64_t now = 1'000'000;
  auto o = options();
  o.defaults.now_ms = [&] { return now; };
  o.defaults.retention_ms = 10'000;
  o.retention_check_interval_ms = 1'000;
  auto m = log_manager::open(o, *ring_);
  ASSERT_TRUE(m.ok());
  auto l = (*m)->open_log("t-0");
  ASSERT_TRUE(l.ok());
  const std::string big(30 << 10, 'y');
  for (int j = 0; j < 6; ++j) {
    batch_spec b;
    b.term = term_id(1);
    b.max_timestamp = timestamp_ms(now);
    b.payload = std::as_bytes(std::span(big));
    ASSERT_TRUE((*l)->append(b).ok());
  }
  ring_->drain();
  ASSERT_GT((*l)->segment_count(), 1u);
  (*m)->tick();
  EXPECT_EQ((*l)->log_start(), offset(0));  // nothing is old yet
  now += 20'000;
  (*m)->tick();
  EXPECT_GT((*l)->log_start(), offset(0));
  ring_->drain();  // the rolled segment's seal, then its deletion, run on the ring
  EXPECT_EQ((*l)->segment_count(), 1u);  // the active segment is never deleted
}

TEST_F(log_manager_test, a_reopened_log_takes_the_settings_its_owner_gives_it) {
  // A restart opens every log with the directory's defaults; the owner (a broker, from its
  // topic configs) then hands each its own settings, and rolls and retention follow them.
  log_config own = options().defaults;
  own.segment_bytes = 8 << 10;
  own.retention_bytes = 16 << 10;
  const std::string big(3 << 10, 'z');
  {
    auto m = log_manager::open(options(), *ring_);
    ASSERT_TRUE(m.ok());
    auto l = (*m)->open_log("t-0", own);
    ASSERT_TRUE(l.ok());
    append_text(**l, big);
    ring_->drain();
    ASSERT_TRUE((*m)->close().ok());
  }
  auto m = log_manager::open(options(), *ring_);
  ASSERT_TRUE(m.ok());
  log* l = (*m)->find("t-0");
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->config().segment_bytes, options().defaults.segment_bytes);  // the defaults
  auto again = (*m)->open_log("t-0", own);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, l);
  EXPECT_EQ(l->config().segment_bytes, own.segment_bytes);
  EXPECT_EQ(l->config().retention_bytes, own.retention_bytes);
  for (int i = 0; i < 30; ++i)
    append_text(*l, big);
  ring_->drain();
  EXPECT_GE(l->segment_count(), 8u);  // 8 KiB segments, not the default 64 KiB
  auto start = l->apply_retention();
  ASSERT_TRUE(start.ok());
  EXPECT_GT(start->value(), 0);
  ring_->drain();
  EXPECT_LE(l->size_bytes(), static_cast<uint64_t>(own.retention_bytes) + own.segment_bytes);
  // Settings that do not validate are refused, and the log keeps its own.
  log_config bad = own;
  bad.segment_bytes = 1;
  EXPECT_FALSE((*m)->open_log("t-0", bad).ok());
  EXPECT_EQ(l->config().segment_bytes, own.segment_bytes);
}

}  // namespace
}  // namespace keel::engine

// Faults from the environment: a full disk, a read-only filesystem, and files in the log
// directory that are unknown, damaged or missing. Each must give a clear error value or a
// warning, never a crash, and never lose or corrupt what was acknowledged before.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <random>

#include "log_fixture.h"

namespace keel::engine::test {
namespace {

namespace fs = std::filesystem;

// A small tmpfs mounted for one test (the tests run as root); unmounted at the end.
class tmpfs_mount {
 public:
  explicit tmpfs_mount(std::string dir, const char* options) : dir_(std::move(dir)) {
    fs::create_directories(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options) == 0)
      mounted_ = true;
    else
      why_ = std::string("mount -t tmpfs not permitted here: ") + std::strerror(errno);
  }
  ~tmpfs_mount() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  status remount_read_only() {
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, nullptr) != 0)
      return make_sys_error(errno, "remount read-only");
    return ok_status();
  }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string why_;
};

using FaultTest = log_fixture;

void write_file(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// Fills a 2 MiB tmpfs. segment_bytes decides where the disk runs out: 64 KiB segments roll
// often, so it runs out creating a segment; a 4 MiB segment never rolls, so it runs out in the
// preallocation and the writes through the ring.
void full_disk(FaultTest& t, uint64_t segment_bytes, uint64_t preallocate_bytes) {
  tmpfs_mount mnt(t.dir_.sub("mnt"), "size=2m");
  if (!mnt.mounted()) GTEST_SKIP() << mnt.why();
  log_config c = t.small_config();
  c.segment_bytes = segment_bytes;
  c.preallocate_bytes = preallocate_bytes;
  c.index_interval_bytes = 1024;
  auto& ring_ = t.ring_;
  auto& dir_ = t.dir_;
  const std::string path = dir_.sub("mnt") + "/log";
  std::vector<int64_t> acked;
  std::optional<error> first_error;
  {
    auto opened = log::open(path, c, *ring_);
    ASSERT_TRUE(opened.ok()) << opened.err().describe();
    log& l = **opened;
    for (int i = 0; i < 1000 && !first_error; ++i) {
      const std::string p = payload_for(l.next_offset().value(), 3000);
      auto a = append_wait(l, *ring_, spec_of(p));
      if (a.ok()) {
        EXPECT_TRUE(a->durable);
        acked.push_back(a->base.value());
      } else {
        first_error = a.err();
      }
    }
    ASSERT_TRUE(first_error.has_value()) << "2 MiB never filled up";
    EXPECT_TRUE(first_error->code == errc::no_space || first_error->code == errc::log_failed)
        << first_error->describe();
    ASSERT_TRUE(l.failure().has_value());
    EXPECT_EQ(l.failure()->code, errc::no_space) << l.failure()->describe();
    EXPECT_EQ(l.failure()->sys_errno, ENOSPC);
    // Further appends are refused with the reason; a flush reports it; reads still work.
    const std::string p = payload_for(l.next_offset().value(), 10);
    auto r = l.append(spec_of(p));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, errc::log_failed);
    EXPECT_NE(r.err().message.find("No space"), std::string::npos) << r.err().describe();
    EXPECT_FALSE(flush_wait(l, *ring_).ok());
    auto all = read_all(l, offset(0));
    ASSERT_TRUE(all.ok()) << all.err().describe();
    EXPECT_GE(all->size(), acked.size());
    EXPECT_EQ(l.close().err().code, errc::log_failed);
  }
  ASSERT_GT(acked.size(), 100u);
  // Reopen on the still-full filesystem: everything acknowledged is there and intact.
  auto opened = log::open(path, c, *ring_);
  ASSERT_TRUE(opened.ok()) << opened.err().describe();
  log& l = **opened;
  auto all = read_all(l, offset(0));
  ASSERT_TRUE(all.ok()) << all.err().describe();
  ASSERT_GE(all->size(), acked.size());
  for (size_t i = 0; i < all->size(); ++i) {
    ASSERT_EQ((*all)[i].header.base_offset.value(), static_cast<int64_t>(i));
    ASSERT_TRUE((*all)[i].payload == payload_for(static_cast<int64_t>(i), 3000)) << i;
  }
}

TEST_F(FaultTest, AFullDiskWhileRollingFailsTheLogCleanlyAndKeepsWhatWasAcknowledged) {
  full_disk(*this, 64 << 10, 4096);
}

TEST_F(FaultTest, AFullDiskWhileWritingFailsTheLogCleanlyAndKeepsWhatWasAcknowledged) {
  full_disk(*this, 4 << 20, 64 << 10);
}

TEST_F(FaultTest, AFullDiskInASingleWriteFailsTheLogCleanly) {
  full_disk(*this, 4 << 20, 4 << 20);
}

TEST_F(FaultTest, AReadOnlyFilesystemGivesAnErrorNotACrash) {
  // A tmpfs remounted read-only (root ignores a directory's mode bits, so chmod proves nothing).
  // The remount needs no file open for writing, so the logs are closed or destroyed first.
  tmpfs_mount mnt(dir_.sub("mnt"), "size=8m");
  if (!mnt.mounted()) GTEST_SKIP() << mnt.why();
  const std::string clean = dir_.sub("mnt") + "/clean", unclean = dir_.sub("mnt") + "/unclean";
  log_config c = small_config();
  {
    auto a = log::open(clean, c, *ring_);
    ASSERT_TRUE(a.ok()) << a.err().describe();
    append_n(**a, 20, 500);
    ASSERT_TRUE((*a)->close().ok());
    auto b = log::open(unclean, c, *ring_);
    ASSERT_TRUE(b.ok()) << b.err().describe();
    append_n(**b, 20, 500);
  }
  ASSERT_TRUE(mnt.remount_read_only().ok());
  for (const std::string& path : {clean, unclean, dir_.sub("mnt") + "/new"}) {
    SCOPED_TRACE(path);
    auto opened = log::open(path, c, *ring_);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.err().code, errc::io_error);
    EXPECT_EQ(opened.err().sys_errno, EROFS) << opened.err().describe();
    EXPECT_NE(opened.err().message.find(path), std::string::npos) << opened.err().describe();
  }
}

TEST_F(FaultTest, UnknownFilesAreWarnedAboutAndLeftAlone) {
  auto l = open_log(small_config());
  append_n(*l, 20, 1000);
  ASSERT_TRUE(l->close().ok());
  l.reset();
  write_file(dir() + "/notes.txt", "hello");
  write_file(dir() + "/00000000000000000abc.log", "not a segment");
  fs::create_directory(dir() + "/subdir");
  ::testing::internal::CaptureStderr();
  l = open_log(small_config());
  const std::string warnings = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(l);
  EXPECT_NE(warnings.find("notes.txt"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("00000000000000000abc.log"), std::string::npos) << warnings;
  EXPECT_TRUE(fs::exists(dir() + "/notes.txt"));
  expect_contents(*l, 0, 20, 1000);
  append_n(*l, 1, 1000);
  expect_contents(*l, 0, 21, 1000);
}

// Damages the index files of every segment with `damage`, then checks reads still find every
// batch after a clean reopen and after an unclean one.
void check_index_damage(FaultTest& t, const std::function<void(const std::string&)>& damage,
                        const char* what) {
  SCOPED_TRACE(what);
  const int n = 50;  // over three segments
  {
    auto l = t.open_log(t.small_config());
    t.append_n(*l, n, 1000);
    ASSERT_TRUE(l->close().ok());
  }
  for (const auto& e : fs::directory_iterator(t.dir())) {
    const std::string name = e.path().string();
    if (name.ends_with(".index") || name.ends_with(".timeindex")) damage(name);
  }
  for (int round = 0; round < 2; ++round) {
    auto l = t.open_log(t.small_config());
    ASSERT_TRUE(l);
    t.expect_contents(*l, 0, n, 1000);
    for (int64_t o = 0; o < n; ++o) {
      auto h = l->batch_at(offset(o));
      ASSERT_TRUE(h.ok()) << h.err().describe();
      ASSERT_EQ(h->base_offset.value(), o);
    }
    auto ts = l->offset_for_timestamp(timestamp_ms(1));
    ASSERT_TRUE(ts.ok());
    EXPECT_FALSE(ts->has_value());  // no batch has a timestamp
    if (round == 1) {
      ASSERT_TRUE(l->close().ok());  // round 0 stops uncleanly
    }
  }
  fs::remove_all(t.dir());
}

TEST_F(FaultTest, GarbageIndexFilesAreRebuilt) {
  std::mt19937_64 rng(7);
  check_index_damage(
      *this,
      [&](const std::string& path) {
        std::string junk(4096, '\0');
        for (char& ch : junk)
          ch = static_cast<char>(rng());
        write_file(path, junk);
      },
      "random bytes");
  check_index_damage(
      *this,
      [&](const std::string& path) {
        // Plausible entries that point to the wrong places: increasing, inside the file.
        std::string entries;
        for (uint32_t i = 1; i <= 8; ++i) {
          const uint32_t rel = i, position = 100 * i + 7;
          entries.append(reinterpret_cast<const char*>(&rel), 4);
          entries.append(reinterpret_cast<const char*>(&position), 4);
        }
        if (path.ends_with(".index")) write_file(path, entries);
      },
      "plausible but wrong entries");
  check_index_damage(
      *this,
      [&](const std::string& path) {
        // One entry among many moved by a few bytes: a sampled check at open may miss it, so
        // lookups must not trust an entry that does not point at its batch.
        if (!path.ends_with(".index") || fs::file_size(path) < 4 * 8) return;
        const int fd = ::open(path.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        uint32_t position = 0;
        ASSERT_EQ(::pread(fd, &position, 4, 3 * 8 + 4), 4);
        position += 8;
        ASSERT_EQ(::pwrite(fd, &position, 4, 3 * 8 + 4), 4);
        ::close(fd);
      },
      "one entry off by a few bytes");
}

TEST_F(FaultTest, ZeroLengthIndexFilesAreRebuiltOrScanned) {
  check_index_damage(
      *this, [](const std::string& path) { write_file(path, ""); }, "zero-length");
}

TEST_F(FaultTest, MissingIndexFilesAreRebuilt) {
  check_index_damage(
      *this, [](const std::string& path) { fs::remove(path); }, "missing");
}

TEST_F(FaultTest, ADamagedLogStartFileIsAnError) {
  auto l = open_log(small_config());
  append_n(*l, 20, 1000);
  ASSERT_TRUE(l->truncate_prefix(offset(16)).ok());
  l.reset();
  write_file(dir() + "/log_start", "garbage");
  auto opened = log::open(dir(), small_config(), *ring_);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.err().code, errc::corrupt);
  EXPECT_NE(opened.err().message.find("log_start"), std::string::npos);
}

TEST_F(FaultTest, ALogStartThatCannotBePersistedStopsAppendsAndKeepsTheSegments) {
  auto l = open_log(small_config());
  append_n(*l, 20, 1000);
  // A directory where the record's temporary file goes: creating it fails (EISDIR), as root too.
  fs::create_directories(dir() + "/log_start.tmp/x");
  ASSERT_TRUE(l->truncate_prefix(offset(16)).ok());  // the file work runs on the ring
  ring_->drain();
  ASSERT_TRUE(l->failure().has_value());
  EXPECT_NE(l->failure()->message.find("log_start.tmp"), std::string::npos)
      << l->failure()->describe();
  auto refused = l->append(spec_of("x", 1));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.err().code, errc::log_failed);
  // Nothing was deleted: the start on disk is still 0, and so is the data.
  EXPECT_TRUE(fs::exists(dir() + "/00000000000000000000.log"));
  l.reset();
  fs::remove_all(dir() + "/log_start.tmp");
  l = open_log(small_config());
  EXPECT_EQ(l->log_start().value(), 0);
  expect_contents(*l, 0, 20, 1000);
}

TEST_F(FaultTest, SegmentsLeftBelowAPersistedStartAreDeletedAtOpen) {
  // A crash after the new start is durable and before the unlinks ran: the files come back.
  auto l = open_log(small_config());
  append_n(*l, 40, 1000);
  const std::string first = dir() + "/00000000000000000000";
  const std::string saved = dir() + "/../saved";
  fs::create_directories(saved);
  for (const char* ext : {".log", ".index", ".timeindex"})
    fs::copy_file(first + ext, saved + "/s" + ext);
  ASSERT_TRUE(l->truncate_prefix(offset(16)).ok());
  l.reset();  // waits for the ring's work
  ASSERT_FALSE(fs::exists(first + ".log"));
  for (const char* ext : {".log", ".index", ".timeindex"})
    fs::copy_file(saved + "/s" + ext, first + ext);
  l = open_log(small_config());
  EXPECT_EQ(l->log_start().value(), 16);
  EXPECT_FALSE(fs::exists(first + ".log"));
  expect_contents(*l, 16, 40, 1000);
  fs::remove_all(saved);
}

}  // namespace
}  // namespace keel::engine::test

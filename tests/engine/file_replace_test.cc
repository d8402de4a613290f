// file_replace: a small file replaced whole and durably through the ring.
#include "keel/engine/file_replace.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <gtest/gtest.h>

#include "test_util.h"

namespace keel::engine::test {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> bytes_of(const std::string& s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct file_replace_fixture : ::testing::Test {
  void SetUp() override {
    auto r = io_ring::create(16);
    ASSERT_TRUE(r.ok());
    ring = std::move(r).value();
    dir_fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dir_fd, 0);
  }
  void TearDown() override { ::close(dir_fd); }
  temp_dir dir;
  std::unique_ptr<io_ring> ring;
  int dir_fd = -1;
};

using FileReplaceTest = file_replace_fixture;

TEST_F(FileReplaceTest, ReplacesTheWholeFileOnTheRingAndLeavesNoTemporary) {
  const std::string path = dir.sub("record");
  { std::ofstream(path) << "an older and much longer content"; }
  file_replace f(*ring, dir_fd, path);
  std::optional<status> got;
  f.start(bytes_of("new"), [&](const status& st) { got = st; });
  EXPECT_FALSE(f.idle());
  EXPECT_FALSE(got.has_value());  // nothing happens until the ring runs
  EXPECT_EQ(read_all(path), "an older and much longer content");
  ring->drain();
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->ok()) << got->err().describe();
  EXPECT_TRUE(f.idle());
  EXPECT_EQ(read_all(path), "new");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(FileReplaceTest, ImagesQueuedBehindOneInFlightCollapseIntoTheNewestAndEveryoneHears) {
  const std::string path = dir.sub("record");
  file_replace f(*ring, dir_fd, path);
  std::vector<std::string> heard;
  f.start(bytes_of("one"), [&](const status& st) { heard.push_back(st ? "1 ok" : "1 failed"); });
  f.start(bytes_of("two"), [&](const status& st) { heard.push_back(st ? "2 ok" : "2 failed"); });
  f.start(bytes_of("three"), [&](const status& st) { heard.push_back(st ? "3 ok" : "3 failed"); });
  ring->drain();
  EXPECT_EQ(heard, (std::vector<std::string>{"1 ok", "2 ok", "3 ok"}));
  EXPECT_EQ(read_all(path), "three");
  EXPECT_EQ(f.replacements(), 2u);  // "two" never reached the disk: "three" took its place
}

TEST_F(FileReplaceTest, AFailedStepIsReportedAndTheOldFileStays) {
  const std::string path = dir.sub("record");
  { std::ofstream(path) << "old"; }
  fs::create_directories(path + ".tmp/x");  // the temporary cannot be created, as root too
  file_replace f(*ring, dir_fd, path);
  std::optional<status> got;
  f.start(bytes_of("new"), [&](const status& st) { got = st; });
  ring->drain();
  ASSERT_TRUE(got.has_value());
  ASSERT_FALSE(got->ok());
  EXPECT_NE(got->err().message.find("record.tmp"), std::string::npos) << got->err().describe();
  EXPECT_EQ(read_all(path), "old");
  // Once the obstacle is gone, the next replacement works.
  fs::remove_all(path + ".tmp");
  got.reset();
  f.start(bytes_of("new"), [&](const status& st) { got = st; });
  ring->drain();
  ASSERT_TRUE(got.has_value() && got->ok());
  EXPECT_EQ(read_all(path), "new");
}

}  // namespace
}  // namespace keel::engine::test

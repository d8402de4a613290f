// The ring's file operations that segment_seal relies on: cutting a file and closing it on a
// kernel worker.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "keel/engine/io_ring.h"
#include "test_util.h"

namespace keel::engine::test {
namespace {

struct recorded : io_ring::operation {
  int result = 1;
  bool done = false;
  recorded() {
    complete = [](io_ring::operation* self, int r) {
      auto* me = static_cast<recorded*>(self);
      me->result = r;
      me->done = true;
    };
  }
};

void wait_for(io_ring& ring, const recorded& op) {
  while (!op.done)
    ring.wait();
}

TEST(IoRingTest, CutsAFileAndClosesItsDescriptor) {
  auto ring = io_ring::create(8);
  ASSERT_TRUE(ring.ok());
  if (!(*ring)->can_ftruncate()) GTEST_SKIP() << "this kernel's io_uring cannot cut files";
  temp_dir dir;
  const std::string path = dir.sub("file");
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
  recorded cut;
  (*ring)->prep_ftruncate(&cut, fd, 12345);
  wait_for(**ring, cut);
  EXPECT_EQ(cut.result, 0);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 12345);

  recorded closed;
  (*ring)->prep_close(&closed, fd);
  wait_for(**ring, closed);
  EXPECT_EQ(closed.result, 0);
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "the descriptor is closed";
  EXPECT_EQ(errno, EBADF);

  // A cut of a descriptor that is not open reports the error, not a crash.
  recorded bad;
  (*ring)->prep_ftruncate(&bad, fd, 0);
  wait_for(**ring, bad);
  EXPECT_EQ(bad.result, -EBADF);
}

}  // namespace
}  // namespace keel::engine::test

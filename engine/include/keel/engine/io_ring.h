// io_ring: one io_uring owned by one thread (a shard), serving every log of that thread.
//
// Operations are intrusive: the owner embeds an io_ring::operation, points its `complete`
// at a function, and passes it to a prep call; the ring calls `complete` with the CQE's result
// (bytes, 0, or -errno; -ECANCELED when an earlier link in its chain failed) from poll() or
// wait(). Completions also signal an eventfd, so an event loop (Asio) can wait for them without
// blocking in the ring.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "keel/engine/result.h"

struct io_uring;
struct io_uring_sqe;

namespace keel::engine {

class io_ring {
 public:
  struct operation {
    void (*complete)(operation* self, int result) = nullptr;
  };

  // entries: submission queue size (a power of two); the completion queue is twice that.
  static result<std::unique_ptr<io_ring>> create(unsigned entries = 256);
  ~io_ring();
  io_ring(const io_ring&) = delete;
  io_ring& operator=(const io_ring&) = delete;

  // Prep calls queue one operation; `link` chains it to the next queued one (IOSQE_IO_LINK):
  // the next starts only after this one succeeds and is cancelled if it fails.
  void prep_write(operation* op, int fd, const void* data, size_t bytes, uint64_t file_offset,
                  bool link);
  void prep_writev(operation* op, int fd, const iovec* iov, unsigned iov_count,
                   uint64_t file_offset, bool link);
  void prep_fdatasync(operation* op, int fd, bool link);
  void prep_fsync(operation* op, int fd, bool link);  // a full fsync (directories)
  void prep_fallocate(operation* op, int fd, int mode, uint64_t file_offset, uint64_t bytes,
                      bool link);

  // Hands queued operations to the kernel. Never waits for them to complete.
  void submit();
  // Runs the handlers of every completion available now; returns how many ran. Never blocks.
  size_t poll();
  // Blocks until at least one completion is available, then behaves as poll(). Returns 0 at
  // once when nothing is in flight: a caller waiting for a condition must check in_flight().
  size_t wait();
  // Waits until no operation of this ring is in flight.
  void drain();

  // Readable (a counter > 0) when completions are waiting; read it to reset, then poll().
  int event_fd() const { return event_fd_; }
  size_t in_flight() const { return in_flight_; }

 private:
  explicit io_ring(std::unique_ptr<::io_uring> ring, int event_fd);
  io_uring_sqe* next_sqe(operation* op);
  size_t reap();

  std::unique_ptr<::io_uring> ring_;
  int event_fd_ = -1;
  size_t in_flight_ = 0;  // queued or submitted operations whose completion has not run
  size_t queued_ = 0;     // prepared but not yet submitted
};

}  // namespace keel::engine

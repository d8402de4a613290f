// io_ring: one io_uring owned by one thread (a shard), serving every log of that thread.
//
// Operations are intrusive: the owner embeds an io_ring::operation, points its `complete`
// at a function, and passes it to a prep call; the ring calls `complete` with the CQE's result
// (bytes, 0, or -errno; -ECANCELED when an earlier link in its chain failed) from poll() or
// wait(). Completions also signal an eventfd, so an event loop (Asio) can wait for them without
// blocking in the ring.
//
// Staged work: a log's appends only stage bytes; the log lists itself here (note_staged) and the
// ring lets every listed issuer issue its work when the thread is about to hand work to the
// kernel: at the start of submit(), poll(), wait() and drain(). So the appends of one turn of
// an event loop become one write, not one write each. An event loop that does not otherwise
// call the ring after a turn sets a staged listener: it runs when the first issuer is listed,
// and should arrange a submit() at the end of the turn (a shard posts one to its io_context).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
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
  // A source of staged work, embedded in its owner (a log). `issue` queues the owner's staged
  // work through the prep calls; it runs once per note_staged, at the ring's next hand-off.
  class issuer {
   public:
    void (*issue)(issuer* self) = nullptr;

   private:
    friend class io_ring;
    issuer* prev_ = nullptr;
    issuer* next_ = nullptr;
    bool listed_ = false;
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
  void prep_madvise(operation* op, void* address, uint64_t bytes, int advice, bool link);
  // The path strings must outlive the operation. The result of an open is the descriptor.
  void prep_openat(operation* op, const char* path, int flags, unsigned mode);
  void prep_renameat(operation* op, const char* from, const char* to);
  void prep_unlinkat(operation* op, const char* path, int flags = 0);  // AT_REMOVEDIR: rmdir
  void prep_fadvise(operation* op, int fd, uint64_t file_offset, uint64_t bytes, int advice,
                    bool link);
  // Cuts (or extends) the file to `bytes`; only when can_ftruncate() (Linux 6.9 and later).
  void prep_ftruncate(operation* op, int fd, uint64_t bytes);
  bool can_ftruncate() const { return can_ftruncate_; }
  // Closes `fd` on a kernel worker: the last close of a file can start its writeback (ext4
  // flushes a file cut shorter), which must not happen on the ring's thread.
  void prep_close(operation* op, int fd);

  // Lists `i` (once) to issue at the ring's next hand-off to the kernel.
  void note_staged(issuer* i);
  // Unlists `i`; its owner calls this before it goes away.
  void forget(issuer* i);
  // Runs when the list of staged issuers stops being empty (on the ring's thread).
  void set_staged_listener(std::function<void()> listener) {
    staged_listener_ = std::move(listener);
  }

  // Lets the staged issuers issue, then hands queued operations to the kernel. Never waits for
  // them to complete.
  void submit();
  // Hands queued operations to the kernel without asking the staged issuers (an issuer that
  // issues its own work on the spot uses this, so it does not issue everyone else's).
  void submit_queued();
  // As submit(), then runs the handlers of every completion available now, then submits what
  // they staged or queued; returns how many ran. Never blocks.
  size_t poll();
  // As submit(), then blocks until at least one completion is available, then behaves as poll().
  // Returns 0 at once when nothing is in flight: a caller waiting for a condition must check
  // in_flight().
  size_t wait();
  // Waits until nothing of this ring is staged or in flight.
  void drain();

  // Readable (a counter > 0) when completions are waiting; read it to reset, then poll().
  int event_fd() const { return event_fd_; }
  // Operations whose completion has not run, plus issuers with staged work not yet issued:
  // while it is > 0, wait() makes progress.
  size_t in_flight() const { return in_flight_ + staged_count_; }

 private:
  explicit io_ring(std::unique_ptr<::io_uring> ring, int event_fd);
  io_uring_sqe* next_sqe(operation* op);
  void issue_staged();
  size_t reap();

  std::unique_ptr<::io_uring> ring_;
  int event_fd_ = -1;
  size_t in_flight_ = 0;  // queued or submitted operations whose completion has not run
  size_t queued_ = 0;     // prepared but not yet submitted
  // Issuers with staged work, in the order they were listed; while a round of issue_staged()
  // runs, the ones it took are in issuing_head_ (so forget() finds them there).
  issuer* staged_head_ = nullptr;
  issuer* staged_tail_ = nullptr;
  issuer* issuing_head_ = nullptr;
  size_t staged_count_ = 0;
  bool issuing_ = false;
  bool can_ftruncate_ = false;
  std::function<void()> staged_listener_;
};

}  // namespace keel::engine

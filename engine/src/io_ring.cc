#include "keel/engine/io_ring.h"

#include <fcntl.h>

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace keel::engine {

namespace {
// IORING_OP_FTRUNCATE (Linux 6.9), newer than the headers of Debian 12's liburing.
constexpr int ftruncate_opcode = 55;
}  // namespace

result<std::unique_ptr<io_ring>> io_ring::create(unsigned entries) {
  auto ring = std::make_unique<::io_uring>();
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = entries * 2;
  const int rc = io_uring_queue_init_params(entries, ring.get(), &params);
  if (rc < 0) return make_sys_error(-rc, "io_uring_queue_init");
  const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) {
    const int e = errno;
    io_uring_queue_exit(ring.get());
    return make_sys_error(e, "eventfd for io_uring completions");
  }
  if (const int r = io_uring_register_eventfd(ring.get(), efd); r < 0) {
    io_uring_queue_exit(ring.get());
    ::close(efd);
    return make_sys_error(-r, "io_uring_register_eventfd");
  }
  std::unique_ptr<io_ring> out(new io_ring(std::move(ring), efd));
  if (io_uring_probe* probe = io_uring_get_probe_ring(out->ring_.get())) {
    out->can_ftruncate_ = io_uring_opcode_supported(probe, ftruncate_opcode) != 0;
    io_uring_free_probe(probe);
  }
  return out;
}

io_ring::io_ring(std::unique_ptr<::io_uring> ring, int event_fd)
    : ring_(std::move(ring)), event_fd_(event_fd) {}

io_ring::~io_ring() {
  // Operations point into their owners' memory: none may complete after the ring is gone.
  drain();
  KEEL_ASSERT(staged_head_ == nullptr && issuing_head_ == nullptr,
              "every issuer is forgotten before its ring goes");
  io_uring_queue_exit(ring_.get());
  ::close(event_fd_);
}

io_uring_sqe* io_ring::next_sqe(operation* op) {
  KEEL_ASSERT(op != nullptr && op->complete != nullptr, "an operation needs a completion");
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  while (sqe == nullptr) {
    // The submission queue is full: hand it to the kernel to make room. A link chain is never
    // split here because chains are far shorter than the queue and are prepared back to back.
    submit_queued();
    sqe = io_uring_get_sqe(ring_.get());
  }
  io_uring_sqe_set_data(sqe, op);
  ++in_flight_;
  ++queued_;
  return sqe;
}

void io_ring::prep_write(operation* op, int fd, const void* data, size_t bytes,
                         uint64_t file_offset, bool link) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_write(sqe, fd, data, static_cast<unsigned>(bytes), file_offset);
  if (link) sqe->flags |= IOSQE_IO_LINK;
}

void io_ring::prep_writev(operation* op, int fd, const iovec* iov, unsigned iov_count,
                          uint64_t file_offset, bool link) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_writev(sqe, fd, iov, iov_count, file_offset);
  if (link) sqe->flags |= IOSQE_IO_LINK;
}

void io_ring::prep_fdatasync(operation* op, int fd, bool link) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  if (link) sqe->flags |= IOSQE_IO_LINK;
}

void io_ring::prep_fsync(operation* op, int fd, bool link) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_fsync(sqe, fd, 0);
  if (link) sqe->flags |= IOSQE_IO_LINK;
}

void io_ring::prep_fallocate(operation* op, int fd, int mode, uint64_t file_offset, uint64_t bytes,
                             bool link) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_fallocate(sqe, fd, mode, file_offset, bytes);
  if (link) sqe->flags |= IOSQE_IO_LINK;
}

void io_ring::prep_madvise(operation* op, void* address, uint64_t bytes, int advice, bool link) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_madvise(sqe, address, static_cast<off_t>(bytes), advice);
  if (link) sqe->flags |= IOSQE_IO_LINK;
}

void io_ring::prep_openat(operation* op, const char* path, int flags, unsigned mode) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_openat(sqe, AT_FDCWD, path, flags, mode);
}

void io_ring::prep_renameat(operation* op, const char* from, const char* to) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_renameat(sqe, AT_FDCWD, from, AT_FDCWD, to, 0);
}

void io_ring::prep_unlinkat(operation* op, const char* path, int flags) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_unlinkat(sqe, AT_FDCWD, path, flags);
}

void io_ring::prep_fadvise(operation* op, int fd, uint64_t file_offset, uint64_t bytes, int advice,
                           bool link) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_fadvise(sqe, fd, file_offset, static_cast<off_t>(bytes), advice);
  if (link) sqe->flags |= IOSQE_IO_LINK;
}

void io_ring::prep_ftruncate(operation* op, int fd, uint64_t bytes) {
  KEEL_ASSERT(can_ftruncate_, "the kernel's io_uring cuts files (checked at creation)");
  io_uring_sqe* sqe = next_sqe(op);
  // The kernel reads the length from the offset field and wants every other field zero.
  io_uring_prep_rw(ftruncate_opcode, sqe, fd, nullptr, 0, bytes);
}

void io_ring::prep_close(operation* op, int fd) {
  io_uring_sqe* sqe = next_sqe(op);
  io_uring_prep_close(sqe, fd);
  sqe->flags |= IOSQE_ASYNC;
}

void io_ring::note_staged(issuer* i) {
  KEEL_ASSERT(i != nullptr && i->issue != nullptr, "an issuer needs its issue function");
  if (i->listed_) return;
  i->listed_ = true;
  i->next_ = nullptr;
  i->prev_ = staged_tail_;
  if (staged_tail_)
    staged_tail_->next_ = i;
  else
    staged_head_ = i;
  staged_tail_ = i;
  ++staged_count_;
  if (staged_count_ == 1 && staged_listener_) staged_listener_();
}

void io_ring::forget(issuer* i) {
  if (!i->listed_) return;
  if (i->prev_) {
    i->prev_->next_ = i->next_;
  } else if (staged_head_ == i) {
    staged_head_ = i->next_;
  } else {
    KEEL_ASSERT(issuing_head_ == i, "a listed issuer is in one of the two lists");
    issuing_head_ = i->next_;
  }
  if (i->next_) {
    i->next_->prev_ = i->prev_;
  } else if (staged_tail_ == i) {
    staged_tail_ = i->prev_;
  }
  i->prev_ = i->next_ = nullptr;
  i->listed_ = false;
  --staged_count_;
}

void io_ring::issue_staged() {
  // Issuing can re-enter the ring (a full submission queue is submitted, and a busy completion
  // queue reaped, whose handlers may stage more): one round at a time; the outer caller's next
  // round takes what was listed meanwhile.
  if (issuing_) return;
  issuing_ = true;
  while (staged_head_ != nullptr) {
    issuing_head_ = staged_head_;
    staged_head_ = staged_tail_ = nullptr;
    while (issuing_head_ != nullptr) {
      issuer* i = issuing_head_;
      forget(i);
      i->issue(i);
    }
  }
  issuing_ = false;
}

void io_ring::submit() {
  issue_staged();
  submit_queued();
}

void io_ring::submit_queued() {
  if (queued_ == 0) return;
  int rc;
  do {
    rc = io_uring_submit(ring_.get());
  } while (rc == -EINTR);
  // -EBUSY/-EAGAIN: the completion queue is full; reaping frees it and the next submit retries.
  if (rc == -EBUSY || rc == -EAGAIN) {
    reap();
    return;
  }
  KEEL_ASSERT(rc >= 0, "io_uring_submit failed for a reason other than backpressure");
  queued_ = queued_ > static_cast<size_t>(rc) ? queued_ - static_cast<size_t>(rc) : 0;
}

size_t io_ring::reap() {
  size_t done = 0;
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(ring_.get(), &cqe) == 0 && cqe != nullptr) {
    auto* op = static_cast<operation*>(io_uring_cqe_get_data(cqe));
    const int res = cqe->res;
    io_uring_cqe_seen(ring_.get(), cqe);
    KEEL_ASSERT(in_flight_ > 0, "a completion arrived with nothing in flight");
    --in_flight_;
    ++done;
    op->complete(op, res);  // may queue more operations
  }
  return done;
}

size_t io_ring::poll() {
  submit();
  const size_t done = reap();
  submit();  // handlers may have staged or queued follow-up work
  return done;
}

size_t io_ring::wait() {
  submit();
  // Completions reaped while submitting (a busy completion queue) may have staged more: issue it
  // before blocking. Each round issues what it takes, so this ends.
  while (staged_head_ != nullptr && !issuing_)
    submit();
  if (in_flight_ == 0) return 0;
  io_uring_cqe* cqe = nullptr;
  int rc;
  do {
    rc = io_uring_wait_cqe(ring_.get(), &cqe);
  } while (rc == -EINTR);
  KEEL_ASSERT(rc == 0, "io_uring_wait_cqe failed");
  return poll();
}

void io_ring::drain() {
  while (in_flight() > 0)
    wait();
}

}  // namespace keel::engine

#include "keel/engine/file_replace.h"

#include <fcntl.h>

#include <cerrno>

#include "keel/engine/assert.h"

namespace keel::engine {

file_replace::file_replace(io_ring& ring, int directory_fd, std::string path)
    : ring_(ring), directory_fd_(directory_fd), path_(std::move(path)), tmp_path_(path_ + ".tmp") {
  for (step* s : {&write_op_, &sync_op_, &other_op_}) {
    s->complete = &file_replace::on_complete;
    s->owner = this;
  }
  sync_op_.is_sync = true;
}

file_replace::~file_replace() {
  KEEL_ASSERT(idle(), "a file replacement finishes before its owner goes");
}

void file_replace::start(std::vector<std::byte> bytes, done_fn done) {
  KEEL_ASSERT(bytes.size() < (1u << 30), "file_replace is for small files");
  waiting_bytes_ = std::move(bytes);
  waiting_.push_back(std::move(done));
  if (!running_ && !finishing_) run_next();
}

void file_replace::run_next() {
  KEEL_ASSERT(!running_ && !waiting_.empty(), "one replacement at a time, and one to run");
  running_ = true;
  bytes_ = std::move(waiting_bytes_);
  waiting_bytes_.clear();
  running_done_ = std::move(waiting_);
  waiting_.clear();
  error_ = 0;
  stage_ = stage::opening;
  steps_left_ = 1;
  ring_.prep_openat(&other_op_, tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

void file_replace::on_complete(io_ring::operation* op, int result) {
  const step& s = *static_cast<step*>(op);
  s.owner->on_step(s, result);
}

void file_replace::on_step(const step& s, int result) {
  switch (stage_) {
    case stage::opening:
      if (result < 0) return finish(make_sys_error(-result, "create " + tmp_path_));
      fd_ = result;
      stage_ = stage::writing;
      steps_left_ = 2;
      ring_.prep_write(&write_op_, fd_, bytes_.data(), bytes_.size(), 0, true);
      ring_.prep_fdatasync(&sync_op_, fd_, false);
      return;
    case stage::writing:
      // A short write counts as a failure; the linked sync then reports -ECANCELED, which must
      // not hide the write's own error.
      if (!s.is_sync && result >= 0 && static_cast<size_t>(result) != bytes_.size()) result = -EIO;
      if (result < 0 && error_ == 0) {
        error_ = result;
        failed_step_ = s.is_sync ? "fdatasync " : "write ";
      }
      if (--steps_left_ > 0) return;
      stage_ = stage::closing;
      steps_left_ = 1;
      ring_.prep_close(&other_op_, fd_);
      fd_ = -1;
      return;
    case stage::closing:
      if (error_ != 0) return finish(make_sys_error(-error_, failed_step_ + tmp_path_));
      stage_ = stage::renaming;
      ring_.prep_renameat(&other_op_, tmp_path_.c_str(), path_.c_str());
      return;
    case stage::renaming:
      if (result < 0) return finish(make_sys_error(-result, "rename " + tmp_path_));
      stage_ = stage::syncing_directory;
      ring_.prep_fsync(&other_op_, directory_fd_, false);
      return;
    case stage::syncing_directory:
      if (result < 0) return finish(make_sys_error(-result, "fsync the directory of " + path_));
      return finish(ok_status());
  }
}

void file_replace::finish(status st) {
  running_ = false;
  ++replacements_;
  auto told = std::move(running_done_);
  running_done_.clear();
  bytes_.clear();
  // Those who queued earlier hear first, before a newer image can start (and, should a
  // callback wait on the ring, complete): an image queued by a callback waits for the loop.
  finishing_ = true;
  for (auto& d : told)
    if (d) d(st);
  finishing_ = false;
  if (!waiting_.empty()) run_next();
}

}  // namespace keel::engine

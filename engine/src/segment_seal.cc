#include "keel/engine/segment_seal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "keel/engine/assert.h"
#include "keel/engine/result.h"
#include "warning.h"

namespace keel::engine {

segment_seal::segment_seal(io_ring& ring, sealed_fn sealed)
    : ring_(ring), sealed_(std::move(sealed)) {
  for (size_t i = 0; i < steps_.size(); ++i)
    steps_[i] = {{&segment_seal::on_step}, this, static_cast<int>(i)};
}

segment_seal::~segment_seal() {
  KEEL_ASSERT(jobs_.empty(), "seals finish before their owner goes");
}

void segment_seal::start(std::shared_ptr<segment> seg) {
  job j;
  const segment::seal_cuts cuts = seg->begin_seal();
  j.fds[0] = cuts.log_fd;
  j.bytes = {cuts.log_bytes, cuts.index_bytes, cuts.time_index_bytes};
  for (size_t i = 0; i < segment_file_extensions.size(); ++i)
    j.paths[i] = seg->path(segment_file_extensions[i]);
  j.seg = std::move(seg);
  jobs_.push_back(std::move(j));
  if (jobs_.size() == 1) run_front();
}

void segment_seal::run_front() {
  stage_ = stage::opening;
  steps_left_ = 2;
  for (int i = 1; i <= 2; ++i)
    ring_.prep_openat(&steps_[i].op, jobs_.front().paths[i].c_str(), O_WRONLY | O_CLOEXEC, 0);
}

void segment_seal::cut() {
  job& j = jobs_.front();
  stage_ = stage::cutting;
  steps_left_ = 0;
  for (int i = 0; i < 3; ++i) {
    if (j.fds[i] < 0) continue;
    if (ring_.can_ftruncate()) {
      ring_.prep_ftruncate(&steps_[i].op, j.fds[i], j.bytes[i]);
      ++steps_left_;
    } else if (::ftruncate(j.fds[i], static_cast<off_t>(j.bytes[i])) != 0) {
      if (i == 0) j.log_error = -errno;
      if (i > 0) warn("cut " + j.paths[i] + " to its entries: " + std::strerror(errno));
    }
  }
  if (steps_left_ == 0) close_files();
}

void segment_seal::close_files() {
  job& j = jobs_.front();
  stage_ = stage::closing;
  steps_left_ = 0;
  for (int i = 0; i < 3; ++i) {
    if (j.fds[i] < 0) continue;
    ring_.prep_close(&steps_[i].op, j.fds[i]);
    j.fds[i] = -1;
    ++steps_left_;
  }
  if (steps_left_ == 0) finish();
}

void segment_seal::finish() {
  job j = std::move(jobs_.front());
  jobs_.pop_front();
  if (!jobs_.empty()) run_front();
  sealed_(j.seg, j.log_error);
}

void segment_seal::on_step(io_ring::operation* op, int result) {
  step& s = *reinterpret_cast<step*>(op);
  segment_seal& self = *s.owner;
  job& j = self.jobs_.front();
  switch (self.stage_) {
    case stage::opening:
      if (result >= 0) {
        j.fds[s.file] = result;
      } else if (result != -ENOENT) {
        warn("open " + j.paths[s.file] + " to cut it: " + std::strerror(-result));
      }
      break;
    case stage::cutting:
      if (result < 0 && s.file == 0) j.log_error = result;
      if (result < 0 && s.file > 0)
        warn("cut " + j.paths[s.file] + " to its entries: " + std::strerror(-result));
      break;
    case stage::closing:
      break;  // a close that fails leaves nothing to do: the descriptor is gone either way
  }
  if (--self.steps_left_ > 0) return;
  switch (self.stage_) {
    case stage::opening:
      self.cut();
      break;
    case stage::cutting:
      self.close_files();
      break;
    case stage::closing:
      self.finish();
      break;
  }
}

}  // namespace keel::engine

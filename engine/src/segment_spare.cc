#include "keel/engine/segment_spare.h"

#include <fcntl.h>
#include <unistd.h>

#include "keel/engine/assert.h"

namespace keel::engine {

segment_spare::segment_spare(io_ring& ring, std::string dir, const log_config& config)
    : ring_(ring), dir_(std::move(dir)), reserve_bytes_(config.segment_bytes) {
  const auto [index_bytes, time_bytes] = segment::index_capacities(config, reserve_bytes_);
  index_bytes_ = {index_bytes, time_bytes};
  for (size_t i = 0; i < segment_file_extensions.size(); ++i) {
    spare_paths_[i] = dir_ + "/spare" + segment_file_extensions[i];
    open_steps_[i] = {{&segment_spare::on_opened}, this, static_cast<int>(i)};
    rename_steps_[i] = {{&segment_spare::on_renamed}, this, static_cast<int>(i)};
  }
  for (size_t i = 0; i < size_steps_.size(); ++i)
    size_steps_[i] = {{&segment_spare::on_sized}, this, static_cast<int>(i + 1)};
}

segment_spare::~segment_spare() {
  KEEL_ASSERT(in_flight_ == 0, "a spare's operations finish before it goes");
  close_files();
}

bool segment_spare::is_spare_file(const std::string& name) {
  return name == "spare.log" || name == "spare.index" || name == "spare.timeindex";
}

void segment_spare::close_files() {
  for (int& fd : fds_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

void segment_spare::on_roll() {
  if (stage_ == stage::failed) stage_ = stage::none;
}

void segment_spare::start() {
  stage_ = stage::opening;
  steps_left_ = 3;
  first_error_ = 0;
  for (size_t i = 0; i < 3; ++i) {
    ring_.prep_openat(&open_steps_[i].op, spare_paths_[i].c_str(),
                      O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ++in_flight_;
  }
}

bool segment_spare::step_done(int result) {
  --in_flight_;
  if (result < 0 && first_error_ == 0) first_error_ = result;
  if (--steps_left_ > 0) return false;
  if (first_error_ != 0) {
    close_files();
    stage_ = stage::failed;
    return false;
  }
  return true;
}

void segment_spare::on_opened(io_ring::operation* op, int result) {
  step& s = *reinterpret_cast<step*>(op);
  segment_spare& self = *s.owner;
  if (result >= 0) self.fds_[s.file] = result;
  if (!self.step_done(result)) return;
  // Allocate the indexes' blocks, not just their size: a store through the map into a hole the
  // filesystem cannot fill (a full disk) is a SIGBUS (as index_file::open does).
  self.stage_ = stage::sizing;
  self.steps_left_ = 2;
  for (size_t i = 0; i < self.size_steps_.size(); ++i) {
    self.ring_.prep_fallocate(&self.size_steps_[i].op, self.fds_[i + 1], 0, 0, self.index_bytes_[i],
                              false);
    ++self.in_flight_;
  }
}

void segment_spare::on_sized(io_ring::operation* op, int result) {
  segment_spare& self = *reinterpret_cast<step*>(op)->owner;
  if (self.step_done(result)) self.stage_ = stage::ready;
}

segment::prepared_files segment_spare::take(offset base, std::function<void(int)> renamed) {
  KEEL_ASSERT(stage_ == stage::ready, "take() needs a ready spare");
  KEEL_ASSERT(renames_in_flight_ == 0, "one spare's renames run at a time");
  segment::prepared_files files{fds_[0], fds_[1], fds_[2]};
  fds_ = {-1, -1, -1};
  stage_ = stage::none;
  renamed_ = std::move(renamed);
  rename_error_ = 0;
  for (size_t i = 0; i < 3; ++i) {
    target_paths_[i] = dir_ + "/" + segment_file_stem(base) + segment_file_extensions[i];
    ring_.prep_renameat(&rename_steps_[i].op, spare_paths_[i].c_str(), target_paths_[i].c_str());
    ++in_flight_;
    ++renames_in_flight_;
  }
  return files;
}

void segment_spare::on_renamed(io_ring::operation* op, int result) {
  step& s = *reinterpret_cast<step*>(op);
  segment_spare& self = *s.owner;
  --self.in_flight_;
  if (result < 0 && self.rename_error_ == 0) self.rename_error_ = result;
  if (--self.renames_in_flight_ > 0) return;
  auto done = std::move(self.renamed_);
  self.renamed_ = nullptr;
  if (done) done(self.rename_error_);
}

}  // namespace keel::engine

#include "keel/engine/log_manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "warning.h"

namespace keel::engine {
namespace {

// Thousands of logs need more descriptors than the usual soft limit of 1024.
void raise_descriptor_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

int64_t system_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

constexpr const char* removed_marker = "~deleted-";

}  // namespace

bool log_manager::removed_name(const std::string& name) {
  return name.find(removed_marker) != std::string::npos;
}

bool log_manager::valid_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

log_manager::log_manager(options opts, io_ring& ring)
    : options_(std::move(opts)),
      ring_(ring),
      cache_(options_.mapped_segments_max),
      removals_(ring) {
  if (!options_.defaults.now_ms) options_.defaults.now_ms = &system_now_ms;
  last_retention_ms_ = options_.defaults.now_ms();
}

log_manager::~log_manager() {
  // Logs destroyed without close() recover by scan on their next open; that is the contract
  // for a crash, and the owner calls close() on a clean stop.
  logs_.clear();
  stop_removals();  // the ring holds operations that point into removals_
  if (data_dir_fd_ >= 0) ::close(data_dir_fd_);
}

void log_manager::stop_removals() {
  removals_.abandon();
  while (!removals_.idle())
    ring_.wait();
}

result<std::unique_ptr<log_manager>> log_manager::open(options opts, io_ring& ring) {
  if (std::string bad = opts.defaults.validate(); !bad.empty())
    return make_error(errc::invalid_argument, "default log config: " + bad);
  if (opts.mapped_segments_max == 0)
    return make_error(errc::invalid_argument, "mapped_segments_max must be positive");
  std::error_code ec;
  std::filesystem::create_directories(opts.data_dir, ec);
  if (ec) return make_sys_error(ec.value(), "create data directory " + opts.data_dir);
  raise_descriptor_limit();
  std::unique_ptr<log_manager> m(new log_manager(std::move(opts), ring));
  m->data_dir_fd_ = ::open(m->options_.data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (m->data_dir_fd_ < 0)
    return make_sys_error(errno, "open data directory " + m->options_.data_dir);
  DIR* d = ::opendir(m->options_.data_dir.c_str());
  if (d == nullptr) return make_sys_error(errno, "list data directory " + m->options_.data_dir);
  std::vector<std::string> found;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    const std::string path = m->options_.data_dir + "/" + name;
    if (removed_name(name)) {
      // A removal a crash or a failure interrupted (a link is never followed into).
      if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        m->removals_.start(path, m->data_dir_fd_);
      continue;
    }
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (!valid_name(name)) {
      warn(path + " is not a log name; left alone");
      continue;
    }
    found.push_back(name);
  }
  ::closedir(d);
  for (const std::string& name : found) {
    auto l = m->open_log(name);
    if (!l) return std::move(l).err();
  }
  return m;
}

result<log*> log_manager::open_log(const std::string& name, std::optional<log_config> config) {
  if (auto it = logs_.find(name); it != logs_.end()) {
    if (config) {
      if (auto s = it->second->reconfigure(*config); !s) return s.err();
    }
    return it->second.get();
  }
  if (!valid_name(name))
    return make_error(errc::invalid_argument,
                      "log name '" + name + "' is not 1-200 of [A-Za-z0-9._-]");
  log_config c = config ? std::move(*config) : options_.defaults;
  if (!c.now_ms) c.now_ms = options_.defaults.now_ms;
  auto l = log::open(options_.data_dir + "/" + name, std::move(c), ring_, &cache_);
  if (!l) return std::move(l).err();
  log* raw = l->get();
  logs_.emplace(name, std::move(l).value());
  return raw;
}

log* log_manager::find(const std::string& name) const {
  auto it = logs_.find(name);
  return it == logs_.end() ? nullptr : it->second.get();
}

status log_manager::remove(const std::string& name) {
  auto it = logs_.find(name);
  if (it == logs_.end()) return make_error(errc::not_found, "no log named '" + name + "'");
  const std::string dir = it->second->dir();
  logs_.erase(it);  // waits for its writes in flight
  // Out of the way first (one rename), so the name is free at once and a crash leaves a
  // directory the next open recognises; the files go through the ring.
  for (;;) {
    const std::string aside =
        options_.data_dir + "/" + name + removed_marker + std::to_string(++removal_sequence_);
    int moved = ::renameat2(AT_FDCWD, dir.c_str(), AT_FDCWD, aside.c_str(), RENAME_NOREPLACE);
    if (moved != 0 && errno == EINVAL) {  // a filesystem without RENAME_NOREPLACE
      struct stat st {};
      if (::lstat(aside.c_str(), &st) == 0) continue;
      moved = ::rename(dir.c_str(), aside.c_str());
    }
    if (moved == 0) {
      removals_.start(aside, data_dir_fd_);
      return ok_status();
    }
    if (errno == EEXIST || errno == ENOTEMPTY) continue;  // an earlier removal's name
    // Cannot move it: delete it in place, as before, rather than leave its data under a name
    // that a new log of that name would open.
    const int why = errno;
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (ec) return make_sys_error(ec.value(), "delete log directory " + dir);
    warn("moving " + dir + " aside failed (" + std::strerror(why) + "); deleted in place");
    return ok_status();
  }
}

std::vector<std::string> log_manager::names() const {
  std::vector<std::string> out;
  out.reserve(logs_.size());
  for (const auto& [name, l] : logs_)
    out.push_back(name);
  return out;
}

void log_manager::tick() {
  for (auto& [name, l] : logs_)
    l->tick();
  const int64_t now = options_.defaults.now_ms();
  if (options_.retention_check_interval_ms >= 0 &&
      now - last_retention_ms_ >= options_.retention_check_interval_ms) {
    last_retention_ms_ = now;
    for (auto& [name, l] : logs_) {
      if (auto r = l->apply_retention(); !r)
        warn("retention of " + name + ": " + r.err().describe());
    }
  }
}

status log_manager::close() {
  status first = ok_status();
  for (auto& [name, l] : logs_) {
    if (auto s = l->close(); !s && first) first = s;
  }
  stop_removals();
  return first;
}

}  // namespace keel::engine

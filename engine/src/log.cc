#include "keel/engine/log.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "keel/engine/cache_window.h"
#include "keel/engine/segment_cache.h"
#include "keel/engine/segment_removal.h"
#include "keel/engine/segment_seal.h"
#include "keel/engine/segment_spare.h"
#include "warning.h"

namespace keel::engine {
namespace {

constexpr uint64_t log_start_magic = 0x5452415453474F4CULL;  // "LOGSTART"
constexpr uint64_t shutdown_magic = 0x4E574F4454554853ULL;   // "SHUTDOWN"
constexpr const char* log_start_file = "log_start";
constexpr const char* shutdown_file = "clean_shutdown";
constexpr uint64_t sealed_magic = 0x4F5444454C414553ULL;  // "SEALEDTO"
constexpr const char* sealed_file = "sealed";

template <class T>
void put(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <class T>
T get(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Writes `bytes` to dir/name atomically and durably: a temporary file, fsync, rename, fsync dir.
status write_file_durably(const std::string& dir, const char* name, const std::byte* bytes,
                          size_t size) {
  const std::string path = dir + "/" + name;
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return make_sys_error(errno, "create " + tmp);
  const ssize_t n = ::pwrite(fd, bytes, size, 0);
  const int write_errno = errno;
  if (n != static_cast<ssize_t>(size) || ::fsync(fd) != 0) {
    const int e = n < 0 ? write_errno : (errno ? errno : EIO);
    ::close(fd);
    ::unlink(tmp.c_str());
    return make_sys_error(e, "write " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return make_sys_error(errno, "rename " + tmp);
  return ok_status();
}

// Reads a whole small file; nullopt when it does not exist.
result<std::optional<std::vector<std::byte>>> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::vector<std::byte>>();
    return make_sys_error(errno, "open " + path);
  }
  std::vector<std::byte> out(256);
  const ssize_t n = ::pread(fd, out.data(), out.size(), 0);
  const int e = errno;
  ::close(fd);
  if (n < 0) return make_sys_error(e, "read " + path);
  out.resize(static_cast<size_t>(n));
  return std::optional<std::vector<std::byte>>(std::move(out));
}

bool parse_segment_name(const char* name, offset& base) {
  // 20 decimal digits then ".log"
  if (std::strlen(name) != 24 || std::strcmp(name + 20, ".log") != 0) return false;
  int64_t v = 0;
  for (int i = 0; i < 20; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    if (v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (name[i] - '0');
  }
  base = offset(v);
  return true;
}

// Zeroes [position, position + bytes) of a file without changing its size; returns 0 or an
// errno. ZERO_RANGE keeps the blocks allocated; filesystems without it (tmpfs) punch a hole,
// and as a last resort the zeros are written.
int zero_range(int fd, uint64_t position, uint64_t bytes) {
  const auto at = static_cast<off_t>(position);
  const auto length = static_cast<off_t>(bytes);
  if (::fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, at, length) == 0) return 0;
  if (errno != EOPNOTSUPP) return errno;
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, length) == 0) return 0;
  if (errno != EOPNOTSUPP) return errno;
  static const std::byte zeros[64 << 10] = {};
  for (uint64_t done = 0; done < bytes;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(sizeof zeros, bytes - done));
    const ssize_t w = ::pwrite(fd, zeros, n, static_cast<off_t>(position + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    done += static_cast<uint64_t>(w);
  }
  return 0;
}

// Whether a segment's .log starts with a batch header. An I/O error counts as yes, so the
// caller's open of the segment reports it.
bool starts_with_batch(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  std::byte buf[batch_header_size];
  const ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  ::close(fd);
  if (n < 0) return true;
  batch_header h;
  return n == static_cast<ssize_t>(sizeof buf) && decode_batch_header(buf, h) == header_check::ok;
}

void encode_sealed(std::byte (&out)[24], offset to) {
  put<uint64_t>(out, sealed_magic);
  put<int64_t>(out + 8, to.value());
  put<uint64_t>(out + 16, XXH3_64bits(out, 16));
}

int64_t system_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string log_config::validate() const {
  if (segment_bytes < 4096 || segment_bytes > (1ull << 32) - (1ull << 20))
    return "segment_bytes must lie in [4096, 4 GiB - 1 MiB]";
  if (segment_ms <= 0) return "segment_ms must be positive";
  if (index_interval_bytes == 0) return "index_interval_bytes must be positive";
  if (index_max_bytes < 4096) return "index_max_bytes must be at least 4096";
  if (preallocate_bytes < 4096) return "preallocate_bytes must be at least 4096";
  if (flush.kind == flush_policy::mode::every_bytes && flush.bytes == 0)
    return "flush every N bytes needs N > 0";
  if (flush.kind == flush_policy::mode::every_interval && flush.interval_ms <= 0)
    return "flush every T ms needs T > 0";
  if (write_chains_in_flight_max == 0) return "write_chains_in_flight_max must be positive";
  if (staged_bytes_max < (1u << 20)) return "staged_bytes_max must be at least 1 MiB";
  if (issue_staged_bytes == 0 || issue_staged_bytes > staged_bytes_max)
    return "issue_staged_bytes must lie in [1, staged_bytes_max]";
  return {};
}

// One write chain: the staged bytes of one segment, then their write (and sync) in flight.
struct log::chain {
  enum class state { building, issued, done };
  enum class op_kind { allocate, write, sync, directory_sync };
  struct op : io_ring::operation {
    chain* owner = nullptr;
    op_kind kind{};
  };
  struct pending_ack {
    offset base;
    offset last;
    append_callback done;
  };

  log* owner = nullptr;
  std::shared_ptr<segment> seg;
  uint64_t position = 0;  // file position of buffer[0]
  staging_buffer buffer;
  bool has_batches = false;
  offset last;  // last offset staged in this chain
  std::vector<pending_ack> acks;
  std::vector<std::function<void(const status&)>> flush_waiters;
  bool force_sync = false;
  bool sealing = false;  // the last chain of a rolled segment: synced, then the segment sealed
  // A sealing chain with no bytes, queued at a roll under a flush policy that does not sync
  // every append: it syncs the rolled segment only when a durable claim needs it (or another
  // roll comes), and the next segment's writes do not wait for it. `last` is then the rolled
  // segment's last offset.
  bool seal_only = false;
  state st = state::building;

  op ops[4];
  int ops_pending = 0;
  uint64_t written_bytes = 0;
  bool has_sync = false;
  int syncs_ok = 0;
  int syncs_needed = 0;
  int cancels_expected = 0;
  int error = 0;

  chain() {
    for (int i = 0; i < 4; ++i) {
      ops[i].owner = this;
      ops[i].kind = static_cast<op_kind>(i);
      ops[i].complete = &chain::on_complete;
    }
  }

  static void on_complete(io_ring::operation* base, int res) {
    auto* o = static_cast<op*>(base);
    o->owner->complete(o->kind, res);
  }

  void complete(op_kind kind, int res) {
    KEEL_ASSERT(ops_pending > 0, "a chain completion without an operation pending");
    --ops_pending;
    if (res == -ECANCELED && cancels_expected > 0) {
      --cancels_expected;
    } else if (res < 0) {
      if (error == 0) error = -res;
    } else if (kind == op_kind::write) {
      written_bytes += static_cast<uint64_t>(res);
      if (res == 0 && written_bytes < buffer.size()) {
        if (error == 0) error = EIO;
      } else if (written_bytes < buffer.size() && error == 0) {
        // A short write ends its link chain: the linked sync comes back cancelled. Write the
        // rest, then sync again.
        if (has_sync) ++cancels_expected;
        owner->ring_.prep_write(&ops[1], seg->fd(), buffer.data() + written_bytes,
                                buffer.size() - written_bytes, position + written_bytes, has_sync);
        ++ops_pending;
        if (has_sync) {
          owner->ring_.prep_fdatasync(&ops[2], seg->fd(), false);
          ++ops_pending;
        }
      }
    } else if (kind == op_kind::sync || kind == op_kind::directory_sync) {
      ++syncs_ok;
    }
    // A chain waiting for this write to complete may be issued now, beside this one's sync.
    if (kind == op_kind::write && write_complete() && ops_pending > 0 &&
        owner->chains_.back()->st == state::building)
      owner->ring_.note_staged(&owner->issuer_);
    if (ops_pending == 0) {
      st = state::done;
      owner->on_chain_done(this);
    }
  }

  bool synced() const { return has_sync && error == 0 && syncs_ok >= syncs_needed; }
  // Its bytes reached the page cache (or failed): a later chain's sync may start.
  bool write_complete() const { return error != 0 || written_bytes >= buffer.size(); }
};

// The `sealed` record's in-place write through the ring (log.h has its format): open, write,
// close, each a step on the ring, so no call on the shard thread waits for the filesystem.
struct log::sealed_record {
  enum class stage { opening, writing, closing };
  struct step {
    io_ring::operation op;  // first: the ring hands back &op, which is this step
    sealed_record* owner = nullptr;
  };
  log* owner = nullptr;
  std::string path;
  step op{{&sealed_record::on_step}, this};
  int fd = -1;
  stage st = stage::opening;
  std::byte bytes[24] = {};
  bool in_flight = false;
  bool again = false;  // a newer value waits for the write in flight

  void start() {
    in_flight = true;
    st = stage::opening;
    owner->ring_.prep_openat(&op.op, path.c_str(), O_WRONLY | O_CLOEXEC, 0);
  }
  static void on_step(io_ring::operation* self, int res) {
    sealed_record& r = *reinterpret_cast<step*>(self)->owner;
    // A record that cannot be written only makes recovery scan more: warn and go on.
    switch (r.st) {
      case stage::opening:
        if (res < 0) {
          warn("open " + r.path + ": " + std::strerror(-res));
          break;
        }
        r.fd = res;
        r.st = stage::writing;
        encode_sealed(r.bytes, r.owner->sealed_to_);
        r.owner->ring_.prep_write(&r.op.op, r.fd, r.bytes, sizeof r.bytes, 0, false);
        return;
      case stage::writing:
        if (res < 0) warn(r.path + ": write failed: " + std::strerror(-res));
        r.st = stage::closing;
        r.owner->ring_.prep_close(&r.op.op, r.fd);
        r.fd = -1;
        return;
      case stage::closing:
        break;
    }
    r.in_flight = false;
    if (r.again) {
      r.again = false;
      r.start();
    }
  }
};

log::log(std::string dir, log_config config, io_ring& ring, segment_cache* cache)
    : dir_(std::move(dir)),
      config_(std::move(config)),
      ring_(ring),
      cache_(cache),
      sealed_(std::make_unique<sealed_record>()) {
  sealed_->owner = this;
  sealed_->path = dir_ + "/" + sealed_file;
  seal_ = std::make_unique<segment_seal>(
      ring_,
      [this](const std::shared_ptr<segment>& seg, int error) { on_segment_sealed(seg, error); });
  if (!config_.now_ms) config_.now_ms = &system_now_ms;
  if (config_.cached_tail_bytes > 0)
    cache_window_ = std::make_unique<cache_window>(ring_, config_.cached_tail_bytes);
  spare_ = std::make_unique<segment_spare>(ring_, dir_, config_);
  issuer_.issue = &log::issue_thunk;
  issuer_.owner = this;
}

log::~log() {
  // Chains in flight point into this log: let the ring finish them first.
  wait_idle();
  ring_.forget(&issuer_);
  if (cache_) {
    for (auto& s : segments_)
      cache_->forget(s.get());
  }
  if (directory_fd_ >= 0) ::close(directory_fd_);
}

result<std::unique_ptr<log>> log::open(std::string dir, log_config config, io_ring& ring,
                                       segment_cache* cache) {
  if (std::string bad = config.validate(); !bad.empty())
    return make_error(errc::invalid_argument, "log " + dir + ": " + bad);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return make_sys_error(errno, "create log directory " + dir);
  std::unique_ptr<log> l(new log(std::move(dir), std::move(config), ring, cache));
  // Kept open for the log's life: the ring resolves descriptors when an operation runs, which
  // for an fsync is later, on a kernel worker.
  l->directory_fd_ = ::open(l->dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (l->directory_fd_ < 0) return make_sys_error(errno, "open log directory " + l->dir_);
  l->removal_ =
      std::make_unique<segment_removal>(ring, l->directory_fd_, l->dir_ + "/" + log_start_file,
                                        [raw = l.get()](const error& e) { raw->fail(e); });
  if (auto s = l->recover(); !s) return std::move(s).err();
  // Every closed segment is synced and sealed now (recovery made sure of those no record named).
  // Unsynced: a lost or torn record only makes the next recovery scan more. Its name, though,
  // must last: a missing record means a log older than it, whose recovery trusts more.
  if (const offset to = l->segments_.back()->base(); l->sealed_on_disk_ != to) {
    const bool created = !l->sealed_on_disk_ && !l->sealed_found_;
    if (auto s = l->write_sealed(to, false); !s) return std::move(s).err();
    if (created) {
      if (auto s = l->sync_directory(); !s) return std::move(s).err();
    }
  }
  l->last_sync_ms_ = l->now();
  l->check_offsets();
  return l;
}

status log::sync_directory() {
  if (::fsync(directory_fd_) != 0) return make_sys_error(errno, "fsync directory " + dir_);
  return ok_status();
}

std::vector<std::byte> log::encode_log_start(offset start) const {
  std::vector<std::byte> buf(24);
  put<uint64_t>(buf.data(), log_start_magic);
  put<int64_t>(buf.data() + 8, start.value());
  put<uint64_t>(buf.data() + 16, XXH3_64bits(buf.data(), 16));
  return buf;
}

status log::persist_log_start(offset start) {
  const std::vector<std::byte> buf = encode_log_start(start);
  if (auto s = write_file_durably(dir_, log_start_file, buf.data(), buf.size()); !s) return s;
  return sync_directory();
}

status log::recover() {
  // 1. What is in the directory.
  std::vector<offset> bases;
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return make_sys_error(errno, "list log directory " + dir_);
  std::vector<std::string> others;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    offset base;
    if (parse_segment_name(e->d_name, base))
      bases.push_back(base);
    else
      others.push_back(name);
  }
  ::closedir(d);
  std::sort(bases.begin(), bases.end());
  for (const std::string& name : others) {
    const bool index =
        name.size() > 20 && (name.substr(20) == ".index" || name.substr(20) == ".timeindex");
    if (index) {
      offset b;
      if (!parse_segment_name((name.substr(0, 20) + ".log").c_str(), b) ||
          !std::binary_search(bases.begin(), bases.end(), b)) {
        warn(dir_ + "/" + name + ": an index without its segment; deleted");
        ::unlink((dir_ + "/" + name).c_str());
      }
    } else if (segment_spare::is_spare_file(name)) {
      ::unlink((dir_ + "/" + name).c_str());  // a next segment made ahead and never used
    } else if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") {
      ::unlink((dir_ + "/" + name).c_str());  // a durable write that did not finish
    } else if (name != log_start_file && name != shutdown_file && name != sealed_file) {
      warn(dir_ + "/" + name + ": not a file of a Keel log; left alone");
    }
  }

  // 2. The persisted log start.
  auto start_bytes = read_small_file(dir_ + "/" + log_start_file);
  if (!start_bytes) return std::move(start_bytes).err();
  if (start_bytes->has_value()) {
    const auto& b = **start_bytes;
    if (b.size() != 24 || get<uint64_t>(b.data()) != log_start_magic ||
        get<uint64_t>(b.data() + 16) != XXH3_64bits(b.data(), 16) ||
        get<int64_t>(b.data() + 8) < 0) {
      return make_error(errc::corrupt, dir_ + "/log_start is damaged");
    }
    log_start_ = offset(get<int64_t>(b.data() + 8));
  } else if (!bases.empty()) {
    log_start_ = bases.front();
  }

  // 2b. The `sealed` record: which closed segments are known synced.
  std::optional<offset> recorded_sealed;  // none: a log older than the record
  {
    auto b = read_small_file(dir_ + "/" + sealed_file);
    if (!b) return std::move(b).err();
    if (b->has_value()) {
      sealed_found_ = true;
      const auto& v = **b;
      if (v.size() == 24 && get<uint64_t>(v.data()) == sealed_magic &&
          get<uint64_t>(v.data() + 16) == XXH3_64bits(v.data(), 16)) {
        sealed_on_disk_ = offset(get<int64_t>(v.data() + 8));
        recorded_sealed = sealed_on_disk_;
        sealed_to_ = *sealed_on_disk_;
      } else {
        warn(dir_ + "/sealed is damaged; every closed segment is scanned");
        recorded_sealed = offset::none();
      }
    }
  }

  // 3. The clean-shutdown marker, removed durably before anything may change.
  struct marker_t {
    offset next;
    offset active_base;
    uint64_t active_size;
    uint64_t last_batch_position;
  };
  std::optional<marker_t> marker;
  auto marker_bytes = read_small_file(dir_ + "/" + shutdown_file);
  if (!marker_bytes) return std::move(marker_bytes).err();
  if (marker_bytes->has_value()) {
    const auto& b = **marker_bytes;
    if (b.size() == 48 && get<uint64_t>(b.data()) == shutdown_magic &&
        get<uint64_t>(b.data() + 40) == XXH3_64bits(b.data(), 40)) {
      marker = marker_t{offset(get<int64_t>(b.data() + 8)), offset(get<int64_t>(b.data() + 16)),
                        get<uint64_t>(b.data() + 24), get<uint64_t>(b.data() + 32)};
    } else {
      warn(dir_ + "/clean_shutdown is damaged; recovering by scan");
    }
    if (::unlink((dir_ + "/" + shutdown_file).c_str()) != 0)
      return make_sys_error(errno, "remove " + dir_ + "/clean_shutdown");
    if (auto s = sync_directory(); !s) return s;
  }

  // 4. Segments wholly below the log start are gone (a crash inside truncate_prefix).
  while (bases.size() > 1 && bases[1] <= log_start_) {
    auto s = segment::open_closed(dir_, bases.front(), 0);
    if (auto r = s->remove_files(); !r) return r;
    bases.erase(bases.begin());
  }
  // 4b. After an unclean stop, a last segment that holds no batch is what an interrupted roll
  // leaves: roll() creates the new segment before the rolled one's last write chain has
  // reached the disk (or the new segment's indexes could not be created). Continuing from its
  // base would leave a gap after the rolled segment's real end, so it goes, and the rolled
  // segment is recovered as the active one.
  bool removed_empty = false;
  while (!marker && bases.size() > 1 && bases.back() > log_start_ &&
         !starts_with_batch(dir_ + "/" + segment_file_stem(bases.back()) + ".log")) {
    warn(dir_ + "/" + segment_file_stem(bases.back()) +
         ".log: an empty segment left by an interrupted roll; deleted");
    auto s = segment::open_closed(dir_, bases.back(), 0);
    if (auto r = s->remove_files(); !r) return r;
    bases.pop_back();
    removed_empty = true;
  }
  if (removed_empty) {
    if (auto s = sync_directory(); !s) return s;
  }
  if (bases.empty()) {
    auto seg = segment::create(dir_, log_start_, config_, config_.segment_bytes);
    if (!seg) return std::move(seg).err();
    segments_.push_back(std::move(seg).value());
    // Its name is made durable with the segment's (see open()).
    if (auto s = write_sealed(log_start_, false); !s) return s;
    if (auto s = sync_directory(); !s) return s;
    next_offset_ = log_start_;
    written_ = durable_ = log_start_.prev();
    return ok_status();
  }

  for (size_t i = 0; i + 1 < bases.size(); ++i) {
    struct stat st {};
    const std::string p = dir_ + "/" + segment_file_stem(bases[i]) + ".log";
    if (::stat(p.c_str(), &st) != 0) return make_sys_error(errno, "stat " + p);
    segments_.push_back(segment::open_closed(dir_, bases[i], static_cast<uint64_t>(st.st_size)));
  }

  if (!marker && !segments_.empty() && !recorded_sealed) {
    if (auto s = segments_.back()->repair_unsealed_tail(); !s) return s;
  } else if (!marker && !segments_.empty()) {
    // Closed segments the record names were synced; the newest of them may still lack its
    // seal's cut (that is not synced). The others may not have reached the disk whole.
    size_t k = 0;
    while (k < segments_.size() && bases[k + 1] <= *recorded_sealed)
      ++k;
    if (k > 0) {
      if (auto s = segments_[k - 1]->repair_unsealed_tail(); !s) return s;
    }
    for (size_t i = k; i < segments_.size(); ++i) {
      auto complete = recover_unsealed(i, bases[i + 1]);
      if (!complete) return std::move(complete).err();
      if (*complete) continue;
      // Segment i ends before its successor begins: what follows is cut, newest first, and
      // segment i becomes the active one (scanned, cut and zeroed below).
      for (size_t j = bases.size() - 1; j > i; --j) {
        warn(dir_ + "/" + segment_file_stem(bases[j]) +
             ".log: follows a segment cut short by a crash before its sync; deleted");
        auto gone = segment::open_closed(dir_, bases[j], 0);
        if (auto r = gone->remove_files(); !r) return r;
      }
      if (auto r = sync_directory(); !r) return r;
      bases.resize(i + 1);
      segments_.resize(i);
      break;
    }
  }

  // 5. The active segment: trusted from the marker when it checks out, scanned otherwise.
  const offset active_base = bases.back();
  bool trusted = false;
  if (marker && marker->active_base == active_base) {
    auto seg = segment::open_active(dir_, active_base, config_, marker->active_size);
    if (seg) {
      auto& s = *seg;
      s->set_last_batch_position(marker->last_batch_position);
      bool ok = true;
      if (marker->active_size > 0) {
        auto h = s->header_at(marker->last_batch_position);
        ok = h && h->last_offset.next() == marker->next &&
             marker->last_batch_position + h->stored_size() == marker->active_size &&
             verify_batch(s->map()->bytes(marker->last_batch_position, h->stored_size()), *h);
        if (ok) last_term_ = h->term;
      } else {
        ok = marker->next == active_base;
      }
      if (ok) {
        segments_.push_back(std::move(seg).value());
        next_offset_ = marker->next;
        trusted = true;
      }
    }
    if (!trusted) warn(dir_ + ": the clean-shutdown marker does not match the files; scanning");
  }
  if (!trusted) {
    auto seg = segment::open_active(dir_, active_base, config_, std::nullopt);
    if (!seg) return std::move(seg).err();
    auto scan = (*seg)->recover(term_id(0), config_.index_interval_bytes);
    if (!scan) return std::move(scan).err();
    if (!scan->clean_end) {
      warn((*seg)->path(".log") + ": cut at position " + std::to_string(scan->end) + " (offset " +
           std::to_string(scan->next_offset.value()) + "): " + scan->damage);
    }
    // Zero whatever follows the valid batches so no stale bytes can be mistaken for batches.
    const uint64_t alloc = (*seg)->allocated();
    if (alloc > scan->end) {
      if (const int e = zero_range((*seg)->fd(), scan->end, alloc - scan->end); e != 0)
        return make_sys_error(e, "zero the tail of " + (*seg)->path(".log"));
    }
    // The previous process may have died with bytes only in the page cache: make them durable.
    if (::fdatasync((*seg)->fd()) != 0)
      return make_sys_error(errno, "fdatasync " + (*seg)->path(".log"));
    next_offset_ = scan->next_offset;
    last_term_ = scan->last_term;
    segments_.push_back(std::move(seg).value());
  }
  written_ = durable_ = next_offset_.prev();
  // A reopened segment's age counts from this open (the time of its first append is not on
  // disk); left unset, every reopened segment would roll at its first append.
  if (segments_.back()->size() > 0) segments_.back()->set_first_append_ms(now());
  if (log_start_ > next_offset_) {
    // A reset beyond the end that crashed before its new segment existed.
    return truncate_prefix(log_start_);
  }
  if (segments_.back()->size() == 0 && segments_.size() > 1 && next_offset_ > log_start_) {
    auto h = batch_at(next_offset_.prev());
    if (h) last_term_ = h->term;
  }
  return ok_status();
}

result<bool> log::recover_unsealed(size_t i, offset next_base) {
  auto seg = segment::open_active(dir_, segments_[i]->base(), config_, std::nullopt);
  if (!seg) return std::move(seg).err();
  auto scan = (*seg)->recover(term_id(0), config_.index_interval_bytes);
  if (!scan) return std::move(scan).err();
  if (scan->next_offset != next_base) {
    warn((*seg)->path(".log") + ": not synced before a crash; it ends at offset " +
         std::to_string(scan->next_offset.value()) + " (position " + std::to_string(scan->end) +
         (scan->clean_end ? "" : ", " + scan->damage) + ") and the next segment begins at " +
         std::to_string(next_base.value()) + ": the log is cut there");
    return false;
  }
  // Whole: make it durable (the dead process's bytes may be only in the page cache) and cut
  // it to its content, as its roll would have.
  if (::fdatasync((*seg)->fd()) != 0)
    return make_sys_error(errno, "fdatasync " + (*seg)->path(".log"));
  if (auto s = (*seg)->seal(); !s) return std::move(s).err();
  segments_[i] = segment::open_closed(dir_, segments_[i]->base(), scan->end);
  return true;
}

void log::note_sealed(const segment& s) {
  auto it =
      std::upper_bound(segments_.begin(), segments_.end(), s.base(),
                       [](offset v, const std::shared_ptr<segment>& x) { return v < x->base(); });
  if (it == segments_.end()) return;  // a sealed segment always has a successor
  const offset to = (*it)->base();
  if (to <= sealed_to_) return;
  sealed_to_ = to;
  write_sealed_async();
}

void log::write_sealed_async() {
  // Once per roll; a newer value waits for the write in flight.
  if (sealed_->in_flight) {
    sealed_->again = true;
    return;
  }
  sealed_->start();
}

void log::on_segment_sealed(const std::shared_ptr<segment>& seg, int error) {
  seg->end_seal();
  if (error != 0) {
    fail(make_sys_error(-error, "cut " + seg->path(".log") + " to its content"));
    on_chain_done(nullptr);  // appends staged meanwhile fail now, not at close
    return;
  }
  // After a failed seal no later one is recorded: the `sealed` record would vouch for the
  // segment left uncut.
  if (failure_) return;
  if (cache_ && seg->mapped()) cache_->touch(seg.get());
  if (cache_window_) cache_window_->on_sealed(*seg);
  note_sealed(*seg);
  // A truncate_prefix that came while it was being sealed left it for now.
  drop_segments_below_start();
}

status log::write_sealed(offset to, bool durable) {
  while (sealed_->in_flight)
    ring_.wait();
  sealed_->again = false;
  sealed_to_ = to;
  std::byte bytes[24];
  encode_sealed(bytes, to);
  const std::string path = dir_ + "/" + sealed_file;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return make_sys_error(errno, "open " + path);
  const ssize_t n = ::pwrite(fd, bytes, sizeof bytes, 0);
  const int e = n < 0 ? errno : EIO;
  const bool ok = n == static_cast<ssize_t>(sizeof bytes) && (!durable || ::fdatasync(fd) == 0);
  const int sync_errno = errno;
  ::close(fd);
  if (!ok)
    return make_sys_error(n == static_cast<ssize_t>(sizeof bytes) ? sync_errno : e,
                          "write " + path);
  sealed_on_disk_ = to;
  return ok_status();
}

void log::check_offsets() const {
  KEEL_ASSERT(durable_ <= written_, "durable <= written");
  KEEL_ASSERT(written_ <= next_offset_.prev(), "written <= appended");
  KEEL_ASSERT(log_start_ <= next_offset_, "log start <= next offset");
}

uint64_t log::size_bytes() const {
  uint64_t n = 0;
  for (const auto& s : segments_)
    n += s->size();
  return n;
}

uint64_t log::staged_bytes() const {
  return staged_bytes_;
}

status log::roll(uint64_t reserve_bytes) {
  const std::shared_ptr<segment>& old = segments_.back();
  if (config_.flush.kind != flush_policy::mode::every_append) {
    // The rolled segment's sync waits for the next durable claim (seal_due), so appends to
    // the new segment never wait for it; until it completes, durable_ stays below the rolled
    // segment's end and recovery scans the segment (the `sealed` record does not name it).
    auto c = new_chain();
    c->owner = this;
    c->seg = old;
    c->position = old->size();
    c->sealing = c->seal_only = true;
    c->last = next_offset_.prev();
    chains_.push_back(std::move(c));
  } else if (!chains_.empty() && chains_.back()->st == chain::state::building &&
             chains_.back()->seg == old) {
    // Every append syncs: the old segment's last chain syncs it and then seals it; until that
    // sync completes no chain of the new segment is issued, so a crash never leaves a gap.
    chains_.back()->sealing = true;
  } else {
    auto c = new_chain();
    c->owner = this;
    c->seg = old;
    c->position = old->size();
    c->sealing = true;
    chains_.push_back(std::move(c));
  }
  result<std::shared_ptr<segment>> seg = std::shared_ptr<segment>();
  if (spare_->ready() && reserve_bytes <= spare_->reserve_bytes()) {
    // The files exist already: map them and let the ring rename them (no sync is issued until
    // the renames complete; see issue()).
    auto files = spare_->take(next_offset_, [this](int rc) {
      if (rc < 0 && !failure_) {
        fail(make_sys_error(-rc, "rename the prepared segment files in " + dir_));
        on_chain_done(nullptr);  // appends staged meanwhile fail now, not at close
      } else {
        ring_.note_staged(&issuer_);  // a sync that waited for the renames may go now
      }
    });
    seg = segment::adopt(dir_, next_offset_, config_, reserve_bytes, files);
    ++rolls_from_spare_;
  } else {
    seg = segment::create(dir_, next_offset_, config_, reserve_bytes);
  }
  spare_->on_roll();
  if (!seg) return std::move(seg).err();
  segments_.push_back(std::move(seg).value());
  directory_sync_pending_ = true;
  return ok_status();
}

result<append_ack> log::append(const batch_spec& batch, append_callback done) {
  if (closed_) return make_error(errc::closed, "log " + dir_ + " is closed");
  if (failure_)
    return make_error(errc::log_failed, "log " + dir_ + " failed: " + failure_->describe());
  if (batch.offset_count == 0)
    return make_error(errc::invalid_argument, "a batch spans at least one offset");
  if (batch.payload.size() > batch_payload_max_bytes)
    return make_error(errc::invalid_argument, "payload larger than 1 GiB");
  if (batch.term < last_term_)
    return make_error(errc::invalid_argument, "term " + std::to_string(batch.term.value()) +
                                                  " is below the log's last term " +
                                                  std::to_string(last_term_.value()));
  if (batch.base && *batch.base != next_offset_)
    return make_error(errc::invalid_argument, "base offset " + std::to_string(batch.base->value()) +
                                                  " does not follow the log's end " +
                                                  std::to_string(next_offset_.value()));
  const uint64_t stored = batch_header_size + batch.payload.size();
  if (staged_bytes_ + stored > config_.staged_bytes_max && staged_bytes_ > 0)
    return make_error(errc::busy, "log " + dir_ + " has its staged bytes at their bound");

  const std::shared_ptr<segment>* active = &segments_.back();
  const uint64_t size = (*active)->size();
  // The age is read once per chain (an event-loop turn), not per append: a clock read costs as
  // much as the rest of a small append's bookkeeping.
  const bool starts_chain = chains_.empty() || chains_.back()->st != chain::state::building ||
                            chains_.back()->seg != *active ||
                            chains_.back()->buffer.size() >= chain_split_bytes();
  const bool too_old = size > 0 && starts_chain &&
                       now() - (*active)->first_append_ms() >= config_.segment_ms &&
                       age_roll_ready();
  if (size == 0 && stored > (*active)->reserve()) {
    if (auto s = (*active)->grow_reserve(stored); !s) {
      fail(s.err());
      return s.err();
    }
  } else if ((size > 0 && size + stored > config_.segment_bytes) || too_old ||
             size + stored > (*active)->reserve()) {
    if (auto s = roll(std::max<uint64_t>(config_.segment_bytes, stored)); !s) {
      fail(s.err());
      return s.err();
    }
    active = &segments_.back();
  }
  segment& seg = **active;

  // A chain that cannot leave yet (chains in flight at their bound) stops growing at
  // chain_split_bytes: the next one starts, so buffers stay small enough to recycle instead of
  // doubling (a copy and fresh pages each time) while the writes lag.
  if (chains_.empty() || chains_.back()->st != chain::state::building ||
      chains_.back()->seg.get() != &seg || chains_.back()->buffer.size() >= chain_split_bytes()) {
    auto c = new_chain();
    c->owner = this;
    c->seg = *active;
    c->position = seg.size();
    chains_.push_back(std::move(c));
  }
  chain& c = *chains_.back();
  const offset base = next_offset_;
  const offset last = base.plus(batch.offset_count - 1);
  const size_t at = c.buffer.size();
  c.buffer.resize(at + stored);
  const batch_header header = encode_batch_header(
      std::span<std::byte, batch_header_size>(c.buffer.data() + at, batch_header_size), batch.type,
      base, last, batch.term, batch.max_timestamp, batch.payload);
  if (!batch.payload.empty())
    std::memcpy(c.buffer.data() + at + batch_header_size, batch.payload.data(),
                batch.payload.size());
  if (seg.size() == 0) seg.set_first_append_ms(now());
  seg.note_append(header, config_.index_interval_bytes);
  if (seg.size() >= config_.segment_bytes / 2) spare_->prepare();  // a no-op once under way
  c.has_batches = true;
  c.last = last;
  staged_bytes_ += stored;
  if (done) c.acks.push_back({base, last, std::move(done)});
  next_offset_ = last.next();
  last_term_ = batch.term;
  if (c.buffer.size() >= config_.issue_staged_bytes)
    issue();
  else
    ring_.note_staged(&issuer_);
  return append_ack{base, last, false};
}

void log::flush(std::function<void(const status&)> done) {
  if (failure_) {
    if (done) done(failure_.value());
    return;
  }
  if (chains_.empty() && durable_ == written_ && written_ == next_offset_.prev()) {
    if (done) done(ok_status());
    return;
  }
  // A waiting seal covers only its own segment: the claim needs a sync of the active one too.
  if (chains_.empty() || chains_.back()->st != chain::state::building ||
      chains_.back()->seal_only) {
    auto c = new_chain();
    c->owner = this;
    c->seg = segments_.back();
    c->position = segments_.back()->size();
    chains_.push_back(std::move(c));
  }
  chains_.back()->force_sync = true;
  if (done) chains_.back()->flush_waiters.push_back(std::move(done));
  issue();
}

void log::tick() {
  if (closed_ || failure_) return;
  const int64_t t = now();
  if (config_.flush.kind == flush_policy::mode::every_interval && durable_ < next_offset_.prev() &&
      t - last_sync_ms_ >= config_.flush.interval_ms) {
    flush();
  }
  const segment& active = *segments_.back();
  if (active.size() > 0 && t - active.first_append_ms() >= config_.segment_ms && age_roll_ready()) {
    if (auto s = roll(config_.segment_bytes); !s) fail(s.err());
    issue();
  }
}

bool log::age_roll_ready() {
  // A roll by age is not urgent: it waits for the next segment's files to be made through the
  // ring, as a roll by size does, instead of creating them on this thread. A spare that cannot
  // be made (a full disk) lets it create them in place and report what fails.
  if (spare_->ready() || spare_->failed()) return true;
  spare_->prepare();
  return false;
}

bool log::sync_due(const chain& c) const {
  if (c.force_sync || c.sealing || !c.flush_waiters.empty()) return true;
  switch (config_.flush.kind) {
    case flush_policy::mode::every_append:
      return true;
    case flush_policy::mode::every_bytes:
      return bytes_since_sync_ + c.buffer.size() >= config_.flush.bytes;
    case flush_policy::mode::every_interval:
      return now() - last_sync_ms_ >= config_.flush.interval_ms;
    case flush_policy::mode::never:
      return false;
  }
  return false;
}

void log::issue_thunk(io_ring::issuer* self) {
  // The ring submits once after letting every staged log issue.
  static_cast<issuer_t*>(self)->owner->issue(false);
}

bool log::seal_due(size_t i) const {
  if (seals_forced_) return true;
  // A rolled segment wholly below the log start waits only for its seal to be deleted.
  if (chains_[i]->last < log_start_) return true;
  // A later durable claim needs this segment synced first; a later roll bounds the rolled
  // segments waiting for their sync (and their descriptors) to one.
  for (size_t j = i + 1; j < chains_.size(); ++j) {
    const chain& later = *chains_[j];
    if (later.seal_only || (later.st == chain::state::building && sync_due(later))) return true;
  }
  return false;
}

void log::issue(bool submit) {
  if (failure_) return;
  unsigned in_flight = 0;     // chains issued and not done, seal-only ones aside
  bool unwritten = false;     // an issued chain whose write has not completed
  bool seal_pending = false;  // a rolled segment's deferred sync waiting or in flight
  bool issued_any = false;
  for (size_t i = 0; i < chains_.size(); ++i) {
    chain& c = *chains_[i];
    if (c.st == chain::state::done) continue;  // waiting for an earlier one to retire
    if (c.st == chain::state::issued) {
      // A roll's sync under every_append: the next segment gets no byte before it completes.
      if (c.sealing && !c.seal_only) break;
      if (c.seal_only) {
        seal_pending = true;
        continue;
      }
      ++in_flight;
      unwritten |= !c.write_complete();
      continue;
    }
    if (c.seal_only && !seal_due(i)) {
      seal_pending = true;
      continue;
    }
    const bool sync = sync_due(c);
    if (!sync && c.buffer.empty()) break;
    if (!c.seal_only && in_flight >= config_.write_chains_in_flight_max) break;
    // An fdatasync covers the writes of its file that completed before it started: a chain
    // that syncs waits for every earlier write (and every earlier segment's sync), not for the
    // earlier syncs, so the next group's write and sync overlap the previous group's sync.
    // A roll's renames complete before the sync (and directory fsync) that claims its segment.
    if (sync && (unwritten || seal_pending || spare_->renaming())) break;
    // io_uring runs the buffered writes of one file one at a time, so a write issued now would
    // only queue behind the one in flight: let this chain gather until that one completes (or
    // it holds issue_staged_bytes), for fewer, larger writes at no cost in latency.
    if (!sync && unwritten && !c.sealing && c.buffer.size() < config_.issue_staged_bytes) break;
    c.has_sync = sync;
    issue_chain(c);
    issued_any = true;
    if (c.seal_only) {
      seal_pending = true;  // the next segment's writes go on beside a rolled one's sync
      continue;
    }
    ++in_flight;
    unwritten |= !c.write_complete();
    if (c.sealing) break;
  }
  if (issued_any && submit) ring_.submit_queued();
}

void log::issue_chain(chain& c) {
  KEEL_ASSERT(staged_bytes_ >= c.buffer.size(), "staged bytes count the building chains");
  staged_bytes_ -= c.buffer.size();
  c.st = chain::state::issued;
  segment& seg = *c.seg;
  const uint64_t end = c.position + c.buffer.size();
  const bool write = !c.buffer.empty();
  if (write && end > seg.allocated()) {
    // Grow ahead of the writer in steps that double with the segment, up to preallocate_bytes,
    // so small logs stay small and busy ones rarely allocate.
    const uint64_t step = std::clamp<uint64_t>(
        seg.allocated(), std::min<uint64_t>(1u << 20, config_.preallocate_bytes),
        config_.preallocate_bytes);
    const uint64_t target =
        std::min<uint64_t>(std::max(end, seg.allocated() + step), seg.reserve());
    ring_.prep_fallocate(&c.ops[0], seg.fd(), 0, seg.allocated(), target - seg.allocated(), true);
    ++c.ops_pending;
    seg.set_allocated(target);
  }
  if (write) {
    ring_.prep_write(&c.ops[1], seg.fd(), c.buffer.data(), c.buffer.size(), c.position, c.has_sync);
    ++c.ops_pending;
  }
  if (c.has_sync) {
    ring_.prep_fdatasync(&c.ops[2], seg.fd(), false);
    ++c.ops_pending;
    ++c.syncs_needed;
    if (directory_sync_pending_) {
      ring_.prep_fsync(&c.ops[3], directory_fd_, false);
      ++c.ops_pending;
      ++c.syncs_needed;
      directory_sync_pending_ = false;
    }
  }
  if (c.ops_pending == 0) {  // a sealing chain with nothing to write and no sync cannot happen
    c.st = chain::state::done;
  }
}

void log::on_chain_done(chain*) {
  bool progressed = false;
  for (size_t i = 0; i < chains_.size();) {
    if (chains_[i]->st != chain::state::done) {
      // Later writes retire past a rolled segment's sync that waits or runs: it holds no
      // batch of theirs, and durable_ does not pass it until it completes.
      if (chains_[i]->seal_only) {
        ++i;
        continue;
      }
      break;
    }
    std::unique_ptr<chain> c = std::move(chains_[i]);
    chains_.erase(chains_.begin() + static_cast<std::ptrdiff_t>(i));
    if (c->error != 0 && !failure_) {
      failure_ = make_sys_error(c->error, "write or fdatasync of " + c->seg->path(".log") +
                                              " at position " + std::to_string(c->position));
      warn(dir_ + ": appends stopped: " + failure_->describe());
    }
    if (failure_) {
      for (auto& a : c->acks)
        a.done(failure_.value());
      for (auto& w : c->flush_waiters)
        w(failure_.value());
      continue;
    }
    c->seg->note_written(c->position + c->buffer.size());
    if (c->seal_only) {
      // Its segment's batches were all written before it was issued, and every earlier
      // segment's sync completed before it was issued.
      KEEL_ASSERT(c->synced(), "a seal syncs");
      durable_ = std::max(durable_, c->last);
    } else {
      if (c->has_batches) written_ = c->last;
      if (c->synced()) {
        // Every earlier chain's write completed before this sync was issued, and every
        // earlier chain retired before this one.
        durable_ = written_;
        if (cache_window_) cache_window_->on_durable(*c->seg, c->position + c->buffer.size());
        bytes_since_sync_ = 0;
        last_sync_ms_ = now();
      } else {
        bytes_since_sync_ += c->buffer.size();
      }
    }
    check_offsets();
    progressed = true;
    if (c->sealing) {
      if (cache_window_ && c->synced()) cache_window_->on_durable(*c->seg, c->seg->written_size());
      KEEL_ASSERT(c->synced(), "a sealing chain syncs its segment");
      seal_->start(c->seg);
    }
    const bool durable = c->synced();
    for (auto& a : c->acks)
      a.done(append_ack{a.base, a.last, durable});
    for (auto& w : c->flush_waiters)
      w(ok_status());
    // The buffer serves the next chain: no reallocation and no fresh pages per chain (as many
    // as may be in flight at once, and the one building).
    if (spare_buffers_.size() <= std::min<size_t>(config_.write_chains_in_flight_max, 8) &&
        c->buffer.capacity() <= (16u << 20)) {
      c->buffer.clear();
      spare_buffers_.push_back(std::move(c->buffer));
    }
  }
  if (failure_) {
    // Chains not yet issued will never be: fail their appends now. Issued ones report above
    // when the ring hands them back.
    for (size_t i = chains_.size(); i-- > 0;) {
      if (chains_[i]->st != chain::state::building) continue;
      auto c = std::move(chains_[i]);
      chains_.erase(chains_.begin() + static_cast<std::ptrdiff_t>(i));
      staged_bytes_ -= c->buffer.size();
      for (auto& a : c->acks)
        a.done(failure_.value());
      for (auto& w : c->flush_waiters)
        w(failure_.value());
    }
  } else if (!chains_.empty() && chains_.back()->st == chain::state::building) {
    // What gathered meanwhile leaves at the ring's next hand-off, with whatever the other
    // completions of this round stage.
    ring_.note_staged(&issuer_);
  }
  if (progressed && on_progress_) on_progress_();
}

std::unique_ptr<log::chain> log::new_chain() {
  auto c = std::make_unique<chain>();
  if (!spare_buffers_.empty()) {
    c->buffer = std::move(spare_buffers_.back());
    spare_buffers_.pop_back();
  } else {
    // Room for a full chain and the append that takes it past the threshold, so a chain's
    // buffer is not reallocated (and its pages faulted in afresh) as it fills.
    c->buffer.reserve(config_.issue_staged_bytes + (64u << 10));
  }
  return c;
}

void log::fail(error e) {
  if (!failure_) {
    failure_ = std::move(e);
    warn(dir_ + ": appends stopped: " + failure_->describe());
  }
}

void log::wait_idle() {
  seals_forced_ = true;
  while (!chains_.empty()) {
    issue();
    bool any_issued = false;
    for (auto& c : chains_)
      any_issued |= c->st == chain::state::issued;
    if (!any_issued && spare_->renaming()) {
      ring_.wait();  // a sync waits for a roll's renames
      continue;
    }
    if (!any_issued) {
      if (failure_) on_chain_done(nullptr);  // drops the building chains with their errors
      if (!chains_.empty() && !failure_) {
        // Only building chains remain and none could be issued: cannot happen, since issue()
        // always issues the first chain when nothing is in flight.
        KEEL_ASSERT(false, "a log could not make progress");
      }
      break;
    }
    ring_.wait();
  }
  while (sealed_->in_flight || !spare_->idle() || !seal_->idle() || (removal_ && !removal_->idle()))
    ring_.wait();
  seals_forced_ = false;
}

const segment* log::segment_for(offset o) const {
  auto it =
      std::upper_bound(segments_.begin(), segments_.end(), o,
                       [](offset v, const std::shared_ptr<segment>& s) { return v < s->base(); });
  if (it == segments_.begin()) return nullptr;
  return std::prev(it)->get();
}

status log::ensure_mapped(const segment& s) const {
  auto& seg = const_cast<segment&>(s);  // mapping is a cache, not a change of the log
  if (auto r = seg.ensure_mapped(); !r) return r;
  if (cache_ && !seg.active() && seg.mapped()) cache_->touch(&seg);
  return ok_status();
}

namespace {

// Checks each batch of [start, end) (a run of whole batches, the first at `start` with base
// `base`): header, offsets following on, checksum. Returns the end of the valid prefix and its
// last offset (the run's start and none when the first batch fails).
segment::run verified_prefix(const std::byte* data, uint64_t start, uint64_t end, offset base) {
  segment::run out{start, offset::none()};
  offset expected = base;
  for (uint64_t position = start; position < end;) {
    batch_header h;
    if (end - position < batch_header_size ||
        decode_batch_header({data + position, batch_header_size}, h) != header_check::ok ||
        h.stored_size() > end - position || h.base_offset != expected ||
        !verify_batch({data + position, h.stored_size()}, h))
      break;
    position += h.stored_size();
    out.end = position;
    out.last = h.last_offset;
    expected = h.last_offset.next();
  }
  return out;
}

}  // namespace

void batch_list::iterator::load() {
  while (range_ < ranges_.size()) {
    const std::span<const std::byte> bytes = ranges_[range_].bytes;
    if (position_ < bytes.size()) {
      batch_header& h = view_.header;
      if (bytes.size() - position_ >= batch_header_size &&
          decode_batch_header(bytes.subspan(position_, batch_header_size), h) == header_check::ok &&
          h.stored_size() <= bytes.size() - position_) {
        view_.stored = bytes.subspan(position_, h.stored_size());
        return;
      }
      break;  // damage: the iteration ends here
    }
    ++range_;
    position_ = 0;
  }
  range_ = ranges_.size();
  position_ = 0;
  view_ = {};
}

size_t batch_list::count() const {
  size_t n = 0;
  for (auto it = begin(); it != end(); ++it)
    ++n;
  return n;
}

result<read_result> log::read(offset from, uint64_t max_bytes, offset upper_bound,
                              read_options options) const {
  if (from < log_start_ || from > next_offset_)
    return make_error(errc::offset_out_of_range,
                      "offset " + std::to_string(from.value()) + " is outside [" +
                          std::to_string(log_start_.value()) + ", " +
                          std::to_string(next_offset_.value()) + "] of " + dir_);
  read_result out;
  out.next_offset = from;
  const offset bound = std::min(upper_bound, written_);
  if (from > bound) return out;
  auto it =
      std::upper_bound(segments_.begin(), segments_.end(), from,
                       [](offset v, const std::shared_ptr<segment>& s) { return v < s->base(); });
  KEEL_ASSERT(it != segments_.begin(), "a segment holds every offset at or above the log start");
  bool first = true;
  for (--it; it != segments_.end(); ++it) {
    const segment& seg = **it;
    if (auto s = ensure_mapped(seg); !s) return s.err();
    if (seg.written_size() == 0) continue;
    uint64_t start = 0;
    if (first) {
      auto p = seg.find(from);
      if (!p) return std::move(p).err();
      // The segment with the greatest base <= `from` must hold it: anything else is a gap.
      if (!p->has_value())
        return make_error(errc::corrupt, seg.path(".log") + " holds no batch with offset " +
                                             std::to_string(from.value()) +
                                             " (a gap before the next segment)");
      start = **p;
    }
    KEEL_ASSERT(seg.written_size() <= seg.map()->size(),
                "the written part of a segment lies inside its map");
    const std::byte* const data = seg.map()->data();
    const bool read_empty = out.ranges.empty();
    // The first batch of the segment: a gap before it, or damage, ends a read that already has
    // batches (the next read, starting there, reports it); on the read's first batch it is the
    // answer.
    auto h = seg.header_at(start);
    if (!h || (!first && h->base_offset != out.next_offset)) {
      if (!read_empty) break;
      if (!h) return std::move(h).err();
      return make_error(errc::corrupt, seg.path(".log") + " starts at offset " +
                                           std::to_string(h->base_offset.value()) + ", not " +
                                           std::to_string(out.next_offset.value()));
    }
    first = false;
    // The byte budget left; the read's first batch is returned whatever its size.
    uint64_t room = max_bytes > out.bytes ? max_bytes - out.bytes : 0;
    if (read_empty) room = std::max<uint64_t>(room, h->stored_size());
    const uint64_t limit = start + std::min(room, seg.written_size() - start);
    auto r = seg.run_end(start, limit, bound);
    if (!r) {
      if (!read_empty) break;
      return std::move(r).err();
    }
    segment::run run = *r;
    bool damaged = false;
    if (options.verify_checksums && run.end > start) {
      const segment::run valid = verified_prefix(data, start, run.end, h->base_offset);
      if (valid.end < run.end) {
        if (valid.end == start && read_empty)
          return make_error(errc::corrupt, seg.path(".log") +
                                               ": checksum mismatch in the batch at position " +
                                               std::to_string(start) + " (offset " +
                                               std::to_string(h->base_offset.value()) + ")");
        // Later damage ends the read before it; the next read, starting there, reports it.
        damaged = true;
        run = valid;
      }
    }
    if (run.end > start) {
      out.ranges.push_back({{data + start, run.end - start}, h->base_offset, run.last});
      out.keep_alive.push_back(seg.map());
      out.bytes += run.end - start;
      out.next_offset = run.last.next();
    }
    // The bound, the byte budget or damage ended the run inside this segment.
    if (damaged || run.end < seg.written_size()) break;
  }
  return out;
}

result<batch_header> log::batch_at(offset o) const {
  if (o < log_start_ || o > written_)
    return make_error(errc::offset_out_of_range,
                      "no written batch holds offset " + std::to_string(o.value()));
  const segment* seg = segment_for(o);
  KEEL_ASSERT(seg != nullptr, "a segment holds every offset at or above the log start");
  if (auto s = ensure_mapped(*seg); !s) return s.err();
  auto p = seg->find(o);
  if (!p) return std::move(p).err();
  if (!p->has_value())
    return make_error(errc::not_found, "no batch holds offset " + std::to_string(o.value()));
  return seg->header_at(**p);
}

result<std::optional<offset>> log::offset_for_timestamp(timestamp_ms target) const {
  for (const auto& sp : segments_) {
    const segment& seg = *sp;
    if (auto s = ensure_mapped(seg); !s) return s.err();
    if (seg.written_size() == 0 || seg.max_timestamp() < target) continue;
    uint64_t position = 0;
    if (auto e = seg.time_floor(target)) {
      auto p = seg.find(e->base_offset);
      if (!p) return std::move(p).err();
      if (p->has_value()) position = **p;
    }
    while (position < seg.written_size()) {
      auto h = seg.header_at(position);
      if (!h) return std::move(h).err();
      if (h->last_offset > written_) break;
      if (h->max_timestamp >= target && h->last_offset >= log_start_)
        return std::optional<offset>(std::max(h->base_offset, log_start_));
      position += h->stored_size();
    }
  }
  return std::optional<offset>();
}

void log::set_cached_tail_bytes(uint64_t bytes) {
  config_.cached_tail_bytes = bytes;
  if (bytes == 0) {
    cache_window_.reset();  // drops in flight own what they need
  } else if (!cache_window_) {
    cache_window_ = std::make_unique<cache_window>(ring_, bytes);
  } else {
    cache_window_->set_window(bytes);
  }
}

status log::truncate_suffix(offset from) {
  if (closed_) return make_error(errc::closed, "log " + dir_ + " is closed");
  if (from < log_start_ || from > next_offset_)
    return make_error(errc::offset_out_of_range, "truncate_suffix(" + std::to_string(from.value()) +
                                                     ") outside [log start, next offset] of " +
                                                     dir_);
  wait_idle();
  if (failure_)
    return make_error(errc::log_failed, "log " + dir_ + " failed: " + failure_->describe());
  if (from == next_offset_) return ok_status();
  if (cache_window_) cache_window_->reset();
  // Everything goes: the log restarts empty at its start. Batches below the start that share
  // the kept segment would otherwise stay on disk with their terms, and recovery refuses a
  // term that goes backwards after them.
  if (from == log_start_) return reset_to(from);

  auto it =
      std::upper_bound(segments_.begin(), segments_.end(), from,
                       [](offset v, const std::shared_ptr<segment>& s) { return v < s->base(); });
  --it;
  std::shared_ptr<segment> keep = *it;
  uint64_t position = 0;
  if (keep->base() != from) {
    if (auto s = ensure_mapped(*keep); !s) return s;
    auto p = keep->find(from);
    if (!p) return std::move(p).err();
    if (!p->has_value())
      return make_error(errc::not_found, "no batch holds offset " + std::to_string(from.value()));
    auto h = keep->header_at(**p);
    if (!h) return std::move(h).err();
    if (h->base_offset != from)
      return make_error(errc::invalid_argument, "offset " + std::to_string(from.value()) +
                                                    " is inside a batch, not at its start");
    position = **p;
  }
  // The record must not name the segment that becomes active again, nor any that replaces the
  // ones removed.
  if (sealed_to_ > keep->base()) {
    if (auto s = write_sealed(keep->base(), true); !s) {
      fail(s.err());
      return s;
    }
  }
  // Later segments go entirely; views into them keep their pages.
  bool removed = false;
  while (segments_.back() != keep) {
    if (cache_) cache_->forget(segments_.back().get());
    if (auto s = segments_.back()->remove_files(); !s) return s;
    segments_.pop_back();
    removed = true;
  }
  if (!keep->active()) {
    // A closed segment becomes active again, its files at their full size.
    if (cache_) cache_->forget(keep.get());
    auto reopened = segment::open_active(dir_, keep->base(), config_, keep->size());
    if (!reopened) return std::move(reopened).err();
    keep = std::move(reopened).value();
    keep->set_first_append_ms(now());  // as at open: its age counts from its reopening
    segments_.back() = keep;
  }
  const uint64_t old_size = keep->size();
  keep->cut(position, from);
  // Zero, rather than shrink, so a reader's map never points past the file's end; recovery
  // stops at the zeros, so the cut survives a crash once synced.
  if (old_size > position) {
    if (const int e = zero_range(keep->fd(), position, old_size - position); e != 0) {
      fail(make_sys_error(
          e, "zero " + keep->path(".log") + " from position " + std::to_string(position)));
      return failure_.value();
    }
  }
  if (::fdatasync(keep->fd()) != 0) {
    fail(make_sys_error(errno, "fdatasync " + keep->path(".log")));
    return failure_.value();
  }
  if (removed) {
    if (auto s = sync_directory(); !s) return s;
  }
  next_offset_ = from;
  written_ = from.prev();
  // The fdatasync above covers what stays of this segment, and every earlier segment was
  // synced when it rolled: all that remains is durable.
  durable_ = written_;
  if (from > log_start_) {
    auto h = batch_at(from.prev());
    if (h) last_term_ = h->term;
  }
  check_offsets();
  return ok_status();
}

status log::truncate_prefix(offset new_start) {
  if (closed_) return make_error(errc::closed, "log " + dir_ + " is closed");
  if (cache_window_) cache_window_->reset();  // it may hold segments about to go
  if (new_start > next_offset_) {
    // A reset past the end (a follower behind a leader's retention): the log empties and
    // continues from new_start.
    wait_idle();
    return reset_to(new_start);
  }
  // The start never moves back. Segments wholly below it go even when it does not move: a
  // start set while its segment was the active one leaves that segment behind once it rolls.
  const offset start = std::max(new_start, log_start_);
  const bool moved = start > log_start_;
  log_start_ = start;
  if (!drop_segments_below_start() && moved) {
    // Nothing to delete yet: only the record.
    removal_->start(encode_log_start(start), {});
  }
  // A rolled segment left below the start waits for its seal: issue it now (seal_due).
  if (segments_.size() > 1 && segments_[1]->base() <= log_start_) issue();
  return ok_status();
}

bool log::drop_segments_below_start() {
  // A rolled segment whose last write chain or seal has not completed is still written to,
  // synced and cut through its descriptor: it stays (below the start, so never read) until its
  // seal completes (on_segment_sealed), and so do the segments after it.
  std::vector<std::shared_ptr<segment>> gone;
  while (segments_.size() > 1 && segments_[1]->base() <= log_start_ &&
         !segments_.front()->active()) {
    if (cache_) cache_->forget(segments_.front().get());
    gone.push_back(std::move(segments_.front()));
    segments_.pop_front();
  }
  if (gone.empty()) return false;
  // The start is persisted before any file goes: a crash part-way leaves segments that open()
  // deletes. Views into the dropped segments keep their pages meanwhile.
  removal_->start(encode_log_start(log_start_), std::move(gone));
  return true;
}

status log::reset_to(offset start) {
  KEEL_ASSERT(chains_.empty(), "a reset waits for the log's writes first");
  if (cache_window_) cache_window_->reset();
  // The start is persisted first: a crash part-way leaves segments that open() deletes (or, for
  // a start equal to the old one, a suffix that was being removed).
  if (auto s = persist_log_start(start); !s) return s;
  if (sealed_to_ > start) {
    if (auto s = write_sealed(start, true); !s) return s;
  }
  // From the newest back, so a crash part-way never leaves a gap after the start.
  while (!segments_.empty()) {
    if (cache_) cache_->forget(segments_.back().get());
    if (auto s = segments_.back()->remove_files(); !s) {
      fail(s.err());
      return s;
    }
    segments_.pop_back();
  }
  auto seg = segment::create(dir_, start, config_, config_.segment_bytes);
  if (!seg) {
    fail(seg.err());
    return std::move(seg).err();
  }
  segments_.push_back(std::move(seg).value());
  if (auto s = sync_directory(); !s) return s;
  log_start_ = next_offset_ = start;
  written_ = durable_ = start.prev();
  // The log holds no batch: the term before its start is the Raft layer's to remember.
  last_term_ = term_id(0);
  bytes_since_sync_ = 0;
  check_offsets();
  return ok_status();
}

result<offset> log::retention_start() const {
  const int64_t t = now();
  // The oldest segments go while they are past retention; the active one always stays.
  // Segments already below the start (waiting for their seal) do not count.
  size_t drop = 0;
  uint64_t remaining = size_bytes();
  while (drop + 1 < segments_.size() && segments_[drop + 1]->base() <= log_start_)
    remaining -= segments_[drop++]->size();
  while (drop + 1 < segments_.size()) {
    const segment& oldest = *segments_[drop];
    if (auto s = ensure_mapped(oldest); !s) return s.err();
    const bool by_bytes =
        config_.retention_bytes >= 0 &&
        remaining - oldest.size() >= static_cast<uint64_t>(config_.retention_bytes);
    const bool by_age = config_.retention_ms >= 0 &&
                        oldest.max_timestamp() != timestamp_ms::none() &&
                        t - oldest.max_timestamp().value() > config_.retention_ms;
    if (!by_bytes && !by_age) break;
    remaining -= oldest.size();
    ++drop;
  }
  return std::max(segments_[drop]->base(), log_start_);
}

result<offset> log::apply_retention() {
  auto start = retention_start();
  if (!start) return start;
  if (*start > log_start_) {
    if (auto s = truncate_prefix(*start); !s) return s.err();
  }
  return log_start_;
}

status log::reconfigure(const log_config& c) {
  if (std::string bad = c.validate(); !bad.empty())
    return make_error(errc::invalid_argument, "log " + dir_ + ": " + bad);
  const bool resized = c.segment_bytes != config_.segment_bytes;
  config_.segment_bytes = c.segment_bytes;
  // A spare not under way is made again for the new size (a ready one serves a roll if it is
  // large enough; otherwise that roll makes its files in place).
  if (resized && spare_->idle() && !spare_->ready())
    spare_ = std::make_unique<segment_spare>(ring_, dir_, config_);
  config_.segment_ms = c.segment_ms;
  config_.retention_ms = c.retention_ms;
  config_.retention_bytes = c.retention_bytes;
  config_.flush = c.flush;
  return ok_status();
}

status log::close() {
  if (closed_) return ok_status();
  if (!failure_) flush();
  wait_idle();
  if (failure_) {
    closed_ = true;
    return make_error(errc::log_failed, "log " + dir_ + " failed: " + failure_->describe());
  }
  segment& active = *segments_.back();
  active.finish_time_index();
  if (auto s = active.sync_indexes(); !s) return s;
  std::byte buf[48];
  put<uint64_t>(buf, shutdown_magic);
  put<int64_t>(buf + 8, next_offset_.value());
  put<int64_t>(buf + 16, active.base().value());
  put<uint64_t>(buf + 24, active.size());
  put<uint64_t>(buf + 32, active.last_batch_position());
  put<uint64_t>(buf + 40, XXH3_64bits(buf, 40));
  if (auto s = write_file_durably(dir_, shutdown_file, buf, sizeof buf); !s) return s;
  if (auto s = sync_directory(); !s) return s;
  closed_ = true;
  return ok_status();
}

}  // namespace keel::engine

#include "keel/engine/segment.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <tuple>

namespace keel::engine {
namespace {

constexpr size_t offset_entry_bytes = 8;
constexpr size_t time_entry_bytes = 12;
constexpr uint64_t page_bytes = 4096;

uint64_t round_up_pages(uint64_t n) {
  return (n + page_bytes - 1) / page_bytes * page_bytes;
}

}  // namespace

std::string segment_file_stem(offset base) {
  char name[32];
  std::snprintf(name, sizeof name, "%020lld", static_cast<long long>(base.value()));
  return name;
}

segment::segment(std::string dir, offset base)
    : dir_(std::move(dir)), base_(base), max_timestamp_offset_(base) {}

segment::~segment() {
  if (fd_ >= 0) ::close(fd_);
}

std::string segment::path(const char* extension) const {
  return dir_ + "/" + segment_file_stem(base_) + extension;
}

std::pair<size_t, size_t> segment::index_capacities(const log_config& config,
                                                    uint64_t reserve_bytes) {
  // An entry is added per index_interval_bytes of batches at most, so a segment never needs
  // more than reserve / interval entries: preallocate that much, up to index_max_bytes.
  const uint64_t reserve = round_up_pages(std::max<uint64_t>(reserve_bytes, config.segment_bytes));
  const uint64_t entries = reserve / config.index_interval_bytes + 2;
  return {std::min<uint64_t>(config.index_max_bytes, round_up_pages(entries * offset_entry_bytes)),
          std::min<uint64_t>(config.index_max_bytes, round_up_pages(entries * time_entry_bytes))};
}

status segment::map_indexes(bool writable, const log_config* config) {
  size_t index_capacity = 0, time_capacity = 0;
  if (config) std::tie(index_capacity, time_capacity) = index_capacities(*config, reserve_);
  auto index = index_file::open(path(".index"), offset_entry_bytes, index_capacity, writable);
  if (!index) return std::move(index).err();
  auto times = index_file::open(path(".timeindex"), time_entry_bytes, time_capacity, writable);
  if (!times) return std::move(times).err();
  index_ = offset_index(std::move(index).value(), base_);
  time_index_ = time_index(std::move(times).value(), base_);
  return ok_status();
}

result<std::shared_ptr<segment>> segment::create(const std::string& dir, offset base,
                                                 const log_config& config, uint64_t reserve_bytes) {
  std::shared_ptr<segment> seg(new segment(dir, base));
  // Leftovers of an earlier, failed creation hold nothing: start from empty files.
  for (const char* ext : {".index", ".timeindex"})
    ::unlink(seg->path(ext).c_str());
  const std::string log_path = seg->path(".log");
  seg->fd_ = ::open(log_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (seg->fd_ < 0) return make_sys_error(errno, "create " + log_path);
  seg->reserve_ = round_up_pages(std::max<uint64_t>(reserve_bytes, config.segment_bytes));
  auto map = file_map::map(seg->fd_, seg->reserve_, false, log_path);
  if (!map) return std::move(map).err();
  seg->map_ = std::move(map).value();
  if (auto s = seg->map_indexes(true, &config); !s) return std::move(s).err();
  return seg;
}

result<std::shared_ptr<segment>> segment::adopt(const std::string& dir, offset base,
                                                const log_config& config, uint64_t reserve_bytes,
                                                prepared_files files) {
  std::shared_ptr<segment> seg(new segment(dir, base));
  seg->fd_ = files.log_fd;
  seg->reserve_ = round_up_pages(std::max<uint64_t>(reserve_bytes, config.segment_bytes));
  const auto [index_bytes, time_bytes] = index_capacities(config, reserve_bytes);
  auto index =
      index_file::adopt(files.index_fd, seg->path(".index"), offset_entry_bytes, index_bytes);
  auto times =
      index_file::adopt(files.time_fd, seg->path(".timeindex"), time_entry_bytes, time_bytes);
  if (!index) return std::move(index).err();
  if (!times) return std::move(times).err();
  auto map = file_map::map(seg->fd_, seg->reserve_, false, seg->path(".log"));
  if (!map) return std::move(map).err();
  seg->map_ = std::move(map).value();
  seg->index_ = offset_index(std::move(index).value(), base);
  seg->time_index_ = time_index(std::move(times).value(), base);
  return seg;
}

result<std::shared_ptr<segment>> segment::open_active(const std::string& dir, offset base,
                                                      const log_config& config,
                                                      std::optional<uint64_t> end) {
  std::shared_ptr<segment> seg(new segment(dir, base));
  const std::string log_path = seg->path(".log");
  seg->fd_ = ::open(log_path.c_str(), O_RDWR | O_CLOEXEC);
  if (seg->fd_ < 0) return make_sys_error(errno, "open " + log_path);
  struct stat st {};
  if (::fstat(seg->fd_, &st) != 0) return make_sys_error(errno, "fstat " + log_path);
  seg->allocated_ = static_cast<uint64_t>(st.st_size);
  if (end && *end > seg->allocated_)
    return make_error(errc::corrupt, log_path + " is shorter than its recorded end");
  seg->reserve_ = round_up_pages(std::max<uint64_t>(seg->allocated_, config.segment_bytes));
  auto map = file_map::map(seg->fd_, seg->reserve_, false, log_path);
  if (!map) return std::move(map).err();
  seg->map_ = std::move(map).value();
  if (auto s = seg->map_indexes(true, &config); !s) return std::move(s).err();
  if (end) {
    seg->size_ = seg->written_size_ = *end;
    if (!seg->index_.sane(std::max<uint64_t>(*end, 1)) || !seg->time_index_.sane() ||
        !seg->index_points_at_batches(*end)) {
      seg->rebuild_indexes(config.index_interval_bytes, *end);
    }
    if (auto t = seg->time_index_.last()) {
      seg->max_timestamp_ = t->timestamp;
      seg->max_timestamp_offset_ = t->base_offset;
    }
    // Bytes appended since the last index entry, so the interval continues where it stopped.
    const uint64_t last_entry =
        seg->index_.count() ? seg->index_.at(seg->index_.count() - 1).position : 0;
    seg->bytes_since_index_ = *end - last_entry;
  }
  return seg;
}

std::shared_ptr<segment> segment::open_closed(const std::string& dir, offset base,
                                              uint64_t size_bytes) {
  std::shared_ptr<segment> seg(new segment(dir, base));
  seg->size_ = seg->written_size_ = seg->allocated_ = seg->reserve_ = size_bytes;
  return seg;
}

status segment::ensure_mapped() {
  if (map_ || size_ == 0) return ok_status();
  const std::string log_path = path(".log");
  const int fd = ::open(log_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_sys_error(errno, "open " + log_path);
  auto map = file_map::map(fd, size_, false, log_path);
  ::close(fd);
  if (!map) return std::move(map).err();
  map_ = std::move(map).value();
  // A closed segment's index is trusted when sane, rebuilt (in memory only) when not.
  if (auto s = map_indexes(false, nullptr);
      !s || !index_.sane(size_) || !time_index_.sane() || !index_points_at_batches(size_)) {
    log_config defaults;
    if (auto w = map_indexes(true, &defaults); !w) return std::move(w).err();
    rebuild_indexes(defaults.index_interval_bytes, size_);
    std::fprintf(stderr, "keel: warning: rebuilt the indexes of %s\n", log_path.c_str());
  }
  if (auto t = time_index_.last()) {
    max_timestamp_ = t->timestamp;
    max_timestamp_offset_ = t->base_offset;
  }
  return ok_status();
}

status segment::repair_unsealed_tail() {
  KEEL_ASSERT(!active(), "the active segment is recovered by recover()");
  if (auto s = ensure_mapped(); !s) return s;
  if (size_ == 0) return ok_status();
  uint64_t position = index_.count() ? index_.at(index_.count() - 1).position : 0;
  while (position + batch_header_size <= size_) {
    batch_header h;
    if (decode_batch_header(map_->bytes(position, batch_header_size), h) != header_check::ok ||
        position + h.stored_size() > size_ ||
        !verify_batch(map_->bytes(position, h.stored_size()), h))
      break;
    position += h.stored_size();
  }
  if (position == size_) return ok_status();
  // Only the preallocated zeros of an unsealed segment are cut. Anything else is damage inside
  // a segment that later segments follow: cutting it would make reads skip silently from its
  // last good batch to the next segment, so it stays for reads to refuse as corrupt.
  for (uint64_t p = position; p < size_; ++p) {
    if (map_->data()[p] != std::byte{0}) {
      std::fprintf(stderr,
                   "keel: warning: %s: damaged batch at position %llu; reads there will fail\n",
                   path(".log").c_str(), static_cast<unsigned long long>(position));
      return ok_status();
    }
  }
  std::fprintf(stderr,
               "keel: warning: %s: cut at position %llu of %llu (unsealed before a crash)\n",
               path(".log").c_str(), static_cast<unsigned long long>(position),
               static_cast<unsigned long long>(size_));
  unmap();  // at open no reader holds a view yet
  if (::truncate(path(".log").c_str(), static_cast<off_t>(position)) != 0)
    return make_sys_error(errno, "cut " + path(".log"));
  size_ = written_size_ = allocated_ = reserve_ = position;
  return ensure_mapped();  // re-checks the index against the new size, rebuilding it if needed
}

status segment::grow_reserve(uint64_t bytes) {
  KEEL_ASSERT(active() && size_ == 0, "only an empty active segment grows its reserve");
  if (bytes <= reserve_) return ok_status();
  const uint64_t reserve = round_up_pages(bytes);
  auto map = file_map::map(fd_, reserve, false, path(".log"));
  if (!map) return std::move(map).err();
  map_ = std::move(map).value();  // readers' views keep the old map
  reserve_ = reserve;
  return ok_status();
}

void segment::unmap() {
  KEEL_ASSERT(!active(), "the active segment stays mapped");
  map_.reset();
  index_ = offset_index();
  time_index_ = time_index();
}

void segment::note_append(const batch_header& header, uint32_t index_interval_bytes) {
  KEEL_ASSERT(active(), "appends go to the active segment");
  const uint64_t position = size_;
  KEEL_ASSERT(position + header.stored_size() <= reserve_, "a batch fits in its segment");
  if (position > 0 && bytes_since_index_ >= index_interval_bytes && !index_.full()) {
    index_.append(header.base_offset, static_cast<uint32_t>(position));
    bytes_since_index_ = 0;
    if (max_timestamp_ != timestamp_ms::none())
      time_index_.maybe_append(max_timestamp_, max_timestamp_offset_);
  }
  if (header.max_timestamp > max_timestamp_) {
    max_timestamp_ = header.max_timestamp;
    max_timestamp_offset_ = header.base_offset;
  }
  bytes_since_index_ += header.stored_size();
  last_batch_position_ = position;
  size_ += header.stored_size();
}

status segment::sync_indexes() {
  if (auto s = index_.sync(); !s) return s;
  return time_index_.sync();
}

void segment::finish_time_index() {
  if (max_timestamp_ != timestamp_ms::none())
    time_index_.maybe_append(max_timestamp_, max_timestamp_offset_);
}

result<batch_header> segment::header_at(uint64_t position) const {
  KEEL_ASSERT(map_ != nullptr, "reads need a mapped segment");
  if (position + batch_header_size > written_size_)
    return make_error(errc::corrupt, path(".log") + ": truncated batch header at position " +
                                         std::to_string(position));
  batch_header h;
  if (decode_batch_header(map_->bytes(position, batch_header_size), h) != header_check::ok ||
      position + h.stored_size() > written_size_) {
    return make_error(errc::corrupt, path(".log") + ": invalid batch header at position " +
                                         std::to_string(position));
  }
  return h;
}

bool segment::index_points_at_batches(uint64_t end) const {
  // Entries that increase inside the file can still point between batches (a damaged file):
  // check a sample spread over the index, the last entry included, against the batches.
  const size_t n = index_.is_open() ? index_.count() : 0;
  const size_t samples = std::min<size_t>(n, 8);
  for (size_t k = 0; k < samples; ++k) {
    const offset_index::entry e = index_.at(n - 1 - k * (n - 1) / std::max<size_t>(samples - 1, 1));
    batch_header h;
    if (e.position + batch_header_size > end ||
        decode_batch_header(map_->bytes(e.position, batch_header_size), h) != header_check::ok ||
        h.base_offset != e.base_offset || e.position + h.stored_size() > end)
      return false;
  }
  return true;
}

result<std::optional<uint64_t>> segment::find(offset target) const {
  uint64_t position = 0;
  if (auto e = index_.is_open() ? index_.floor(target) : std::nullopt) {
    // An entry that does not point at its batch (damage the sampled check at open missed) is
    // not followed: the scan starts from the segment's first batch instead.
    batch_header h;
    if (e->position + batch_header_size <= written_size_ &&
        decode_batch_header(map_->bytes(e->position, batch_header_size), h) == header_check::ok &&
        h.base_offset == e->base_offset)
      position = e->position;
  }
  while (position < written_size_) {
    auto h = header_at(position);
    if (!h) return std::move(h).err();
    if (h->last_offset >= target) {
      if (h->base_offset > target) return std::optional<uint64_t>();
      return std::optional<uint64_t>(position);
    }
    position += h->stored_size();
  }
  return std::optional<uint64_t>();
}

result<segment::run> segment::run_end(uint64_t start, uint64_t limit, offset bound) const {
  KEEL_ASSERT(map_ != nullptr, "reads need a mapped segment");
  KEEL_ASSERT(start < written_size_, "a run starts at a batch inside the written part");
  limit = std::min(limit, written_size_);
  run out{start, offset::none()};
  uint64_t position = start;
  std::optional<offset> expected;  // the base the batch at `position` must have
  if (index_.is_open() && limit > start) {
    // Every batch before an entry at or below limit - 1 ends by the limit (an entry exactly at
    // the limit may be a batch still unwritten), and every batch before an entry whose offset
    // is <= bound ends before the bound: the walk starts at the nearer of the two.
    const auto by_limit = index_.floor_position(limit - 1);
    const auto by_bound = index_.floor(bound);
    std::optional<offset_index::entry> e;
    if (by_limit && by_bound) e = by_limit->position < by_bound->position ? by_limit : by_bound;
    if (e && e->position <= start) e.reset();
    batch_header h;
    // An entry is followed only when it points at its batch (as find() checks).
    if (e && e->position + batch_header_size <= written_size_ &&
        decode_batch_header(map_->bytes(e->position, batch_header_size), h) == header_check::ok &&
        h.base_offset == e->base_offset) {
      position = out.end = e->position;
      out.last = e->base_offset.prev();  // batches of a segment follow on without gaps
      expected = e->base_offset;
    }
  }
  const std::byte* const data = map_->data();
  while (position < limit) {
    batch_header h;
    if (written_size_ - position < batch_header_size ||
        decode_batch_header({data + position, batch_header_size}, h) != header_check::ok ||
        h.stored_size() > written_size_ - position || (expected && h.base_offset != *expected)) {
      if (position == start) {
        auto e = header_at(start);
        KEEL_ASSERT(!e, "header_at refuses what the run walk refused at its start");
        return std::move(e).err();
      }
      break;
    }
    if (h.stored_size() > limit - position || h.last_offset > bound) break;
    position += h.stored_size();
    out.end = position;
    out.last = h.last_offset;
    expected = h.last_offset.next();
  }
  return out;
}

void segment::rebuild_indexes(uint32_t index_interval_bytes, uint64_t end) {
  index_.clear();
  time_index_.clear();
  max_timestamp_ = timestamp_ms::none();
  max_timestamp_offset_ = base_;
  bytes_since_index_ = 0;
  uint64_t position = 0;
  while (position < end) {
    batch_header h;
    if (decode_batch_header(
            map_->bytes(position, std::min<uint64_t>(batch_header_size, end - position)), h) !=
        header_check::ok)
      break;
    if (position > 0 && bytes_since_index_ >= index_interval_bytes && !index_.full()) {
      index_.append(h.base_offset, static_cast<uint32_t>(position));
      bytes_since_index_ = 0;
      if (max_timestamp_ != timestamp_ms::none())
        time_index_.maybe_append(max_timestamp_, max_timestamp_offset_);
    }
    if (h.max_timestamp > max_timestamp_) {
      max_timestamp_ = h.max_timestamp;
      max_timestamp_offset_ = h.base_offset;
    }
    bytes_since_index_ += h.stored_size();
    position += h.stored_size();
  }
  if (max_timestamp_ != timestamp_ms::none())
    time_index_.maybe_append(max_timestamp_, max_timestamp_offset_);
}

result<segment::scan_result> segment::recover(term_id min_term, uint32_t index_interval_bytes) {
  KEEL_ASSERT(active(), "recovery runs on the active segment");
  index_.clear();
  time_index_.clear();
  size_ = written_size_ = 0;
  bytes_since_index_ = 0;
  max_timestamp_ = timestamp_ms::none();
  max_timestamp_offset_ = base_;
  scan_result out;
  out.next_offset = base_;
  out.last_term = min_term;
  const uint64_t limit = allocated_;
  uint64_t position = 0;
  while (position < limit) {
    if (limit - position < batch_header_size) {
      for (uint64_t p = position; p < limit; ++p) {
        if (map_->data()[p] != std::byte{0}) {
          out.clean_end = false;
          out.damage = "a torn batch header";
          break;
        }
      }
      break;
    }
    batch_header h;
    const header_check hc = decode_batch_header(map_->bytes(position, batch_header_size), h);
    if (hc == header_check::zero) {
      // Zeros where a header should be: the unwritten tail, unless non-zero bytes follow it
      // (a torn write whose first page was lost).
      const uint64_t probe = std::min<uint64_t>(limit - position, 1 << 20);
      const std::byte* p = map_->data() + position;
      for (uint64_t i = 0; i < probe; ++i) {
        if (p[i] != std::byte{0}) {
          out.clean_end = false;
          out.damage = "zeros followed by data (a torn write)";
          break;
        }
      }
      break;
    }
    auto fail = [&](std::string why) {
      out.clean_end = false;
      out.damage = std::move(why);
    };
    if (hc != header_check::ok) {
      fail(hc == header_check::bad_magic ? "bytes that are not a batch header"
                                         : "a batch header with impossible fields");
      break;
    }
    if (position + h.stored_size() > limit) {
      fail("a batch cut short by the file's end");
      break;
    }
    if (h.base_offset != out.next_offset) {
      fail("a batch whose offsets do not follow on");
      break;
    }
    if (h.term < out.last_term) {
      fail("a batch whose term goes backwards");
      break;
    }
    if (!verify_batch(map_->bytes(position, h.stored_size()), h)) {
      fail("a batch whose checksum does not match");
      break;
    }
    written_size_ = size_ = position;  // note_append reads size_
    note_append(h, index_interval_bytes);
    out.last_batch_position = position;
    position += h.stored_size();
    out.next_offset = h.last_offset.next();
    out.last_term = h.term;
  }
  written_size_ = size_ = position;
  out.end = position;
  return out;
}

void segment::cut(uint64_t position, offset from) {
  KEEL_ASSERT(active(), "only the active segment is cut");
  KEEL_ASSERT(position <= size_, "cut inside the segment");
  index_.truncate_from(from);
  time_index_.truncate_from(from);
  size_ = written_size_ = position;
  // Recompute the largest timestamp and the index interval over what remains after the last
  // surviving index entry; earlier batches are covered by the surviving time index entries.
  max_timestamp_ = timestamp_ms::none();
  max_timestamp_offset_ = base_;
  if (auto t = time_index_.last()) {
    max_timestamp_ = t->timestamp;
    max_timestamp_offset_ = t->base_offset;
  }
  uint64_t p = index_.count() ? index_.at(index_.count() - 1).position : 0;
  bytes_since_index_ = position - p;
  last_batch_position_ = 0;
  while (p < position) {
    batch_header h;
    if (decode_batch_header(map_->bytes(p, batch_header_size), h) != header_check::ok) break;
    last_batch_position_ = p;
    if (h.max_timestamp > max_timestamp_) {
      max_timestamp_ = h.max_timestamp;
      max_timestamp_offset_ = h.base_offset;
    }
    p += h.stored_size();
  }
}

status segment::seal() {
  finish_time_index();
  if (auto s = index_.trim(path(".index")); !s) return s;
  if (auto s = time_index_.trim(path(".timeindex")); !s) return s;
  if (fd_ >= 0) {
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
      return make_sys_error(errno, "cut " + path(".log") + " to its content");
    ::close(fd_);
    fd_ = -1;
    allocated_ = size_;
  }
  return ok_status();
}

segment::seal_cuts segment::begin_seal() {
  KEEL_ASSERT(fd_ >= 0 && !seal_pending_, "only the active segment is sealed");
  finish_time_index();
  seal_cuts cuts{fd_, size_, index_.content_bytes(), time_index_.content_bytes()};
  fd_ = -1;
  seal_pending_ = true;
  allocated_ = size_;
  return cuts;
}

status segment::remove_files() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  for (const char* ext : {".log", ".index", ".timeindex"}) {
    if (::unlink(path(ext).c_str()) != 0 && errno != ENOENT)
      return make_sys_error(errno, "delete " + path(ext));
  }
  return ok_status();
}

std::optional<time_index::entry> segment::last_time_entry() const {
  if (!time_index_.is_open()) return std::nullopt;
  return time_index_.last();
}

std::optional<time_index::entry> segment::time_floor(timestamp_ms target) const {
  if (!time_index_.is_open()) return std::nullopt;
  return time_index_.floor_before(target);
}

}  // namespace keel::engine

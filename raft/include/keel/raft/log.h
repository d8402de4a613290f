// The Raft log as raft/ sees it: batches of offsets that share a term, and a read-only port onto
// the host's log (for Keel, the partition's engine log).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "keel/raft/types.h"

namespace keel::raft {

// Immutable, shared bytes: a leader sends the same batch to every follower without copying it.
class shared_bytes {
 public:
  shared_bytes() = default;
  explicit shared_bytes(std::vector<std::byte> bytes) {
    auto v = std::make_shared<const std::vector<std::byte>>(std::move(bytes));
    data_ = v->data();
    size_ = v->size();
    owner_ = std::move(v);
  }
  // A view into memory that `owner` keeps alive (a Kafka request frame: its batch is proposed
  // without a copy).
  shared_bytes(std::shared_ptr<const void> owner, std::span<const std::byte> bytes)
      : owner_(std::move(owner)), data_(bytes.data()), size_(bytes.size()) {}
  static shared_bytes copy_of(const void* data, size_t size) {
    auto p = static_cast<const std::byte*>(data);
    return shared_bytes(std::vector<std::byte>(p, p + size));
  }

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size() == 0; }
  bool operator==(const shared_bytes& o) const {
    if (size() != o.size()) return false;
    return size() == 0 || std::equal(data(), data() + size(), o.data());
  }

 private:
  std::shared_ptr<const void> owner_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// What a batch holds. Raft's own entries live in the same log as the data, at their own offsets:
// Kafka clients see them as batches without data records.
enum class batch_type : uint8_t {
  data = 1,    // records produced by clients (Kafka RecordBatch bytes, opaque to raft/)
  noop = 2,    // the entry a new leader appends to commit its predecessors' entries (§5.4.2, §8)
  config = 3,  // a membership configuration (payload: encode_config); effective once appended
};

const char* to_string(batch_type type);
bool is_known(batch_type type);

// A stored batch: offsets [base, last], one term for all of them.
// Invariant: base <= last; term > 0.
struct batch {
  batch_type type = batch_type::data;
  term_id term;
  offset base;
  offset last;
  shared_bytes payload;

  int64_t offset_count() const { return last.value() - base.value() + 1; }
  bool operator==(const batch&) const = default;
};

// Bytes a batch costs in flow-control windows: payload plus a fixed header estimate.
inline uint64_t batch_cost_bytes(const batch& b) {
  return b.payload.size() + 32;
}

// Read-only port onto the host's log. raft/ never writes through it: writes are handed to the host
// in a Ready. The host's log reflects every Ready it has been handed and has written (not
// necessarily fsynced yet); raft/ keeps anything newer in memory.
//
// Offsets: first_offset() is the log start (0 for a fresh log), last_offset() the last written
// offset (first_offset() - 1 when empty). Prefix truncation (retention or a log-start reset) moves
// the start; the host must remember the term of the offset just before the start, because Raft
// compares it in AppendEntries (§5.3) and elections (§5.4.1).
class log_reader {
 public:
  virtual ~log_reader() = default;

  virtual offset first_offset() const = 0;
  virtual offset last_offset() const = 0;
  // The term of the batch holding `at`, for at in [first_offset() - 1, last_offset()]; term 0 for
  // offset(-1). errc::compacted below that range, errc::unavailable above it.
  virtual result<term_id> term_at(offset at) const = 0;
  // Whole batches covering [from, to] (the first batch holds `from` and may start before it), in
  // order, about max_bytes of them: at least one batch; a reader may stop before or after the
  // batch that crosses max_bytes (a short read is fine). Same errors as term_at for `from`.
  virtual result<std::vector<batch>> read(offset from, offset to, uint64_t max_bytes) const = 0;
  // The configuration batches in [from, to]. Called only when a core starts; the default scans
  // read(); an adapter may keep an index instead.
  virtual std::vector<batch> config_batches(offset from, offset to) const;
};

}  // namespace keel::raft

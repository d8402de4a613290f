#include "keel/server/raft_state_store.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "keel/net/wire.h"
#include "keel/raft/codec.h"

namespace keel::server {
namespace {

constexpr uint64_t magic = 0x5441545354464152ULL;  // "RAFTSTAT"
constexpr size_t checksum_at = raft_state_store::slot_bytes - 8;
constexpr size_t group_at = checksum_at - 8;

}  // namespace

std::vector<std::byte> encode_raft_state(const raft_persistent_state& s, uint64_t sequence) {
  std::vector<std::byte> out;
  net::wire_writer w(out);
  w.put<uint64_t>(magic);
  w.put<uint64_t>(sequence);
  w.put<int64_t>(s.hard.term.value());
  w.put<uint64_t>(s.hard.vote.value());
  w.put<int64_t>(s.hard.commit.value());
  w.put<int64_t>(s.log_start.value());
  w.put<int64_t>(s.start_prev_term.value());
  w.put<int64_t>(s.start_config_offset.value());
  const raft::shared_bytes config = raft::codec::encode_membership(s.start_config);
  w.put_bytes(std::span(config.data(), config.size()));
  w.put<uint32_t>(static_cast<uint32_t>(s.config_offsets.size()));
  for (raft::offset o : s.config_offsets)
    w.put<int64_t>(o.value());
  KEEL_ASSERT(out.size() <= group_at, "raft state fits its slot");
  out.resize(raft_state_store::slot_bytes);
  std::memcpy(out.data() + group_at, &s.group, 8);
  const uint64_t sum = XXH3_64bits(out.data(), checksum_at);
  std::memcpy(out.data() + checksum_at, &sum, 8);
  return out;
}

bool decode_raft_state(std::span<const std::byte> slot, raft_persistent_state& out,
                       uint64_t& sequence) {
  if (slot.size() != raft_state_store::slot_bytes) return false;
  uint64_t sum;
  std::memcpy(&sum, slot.data() + checksum_at, 8);
  if (sum != XXH3_64bits(slot.data(), checksum_at)) return false;
  net::wire_reader r(slot.first(group_at));
  if (r.get<uint64_t>() != magic) return false;
  raft_persistent_state s;
  sequence = r.get<uint64_t>();
  s.hard.term = raft::term_id(r.get<int64_t>());
  s.hard.vote = raft::node_id(r.get<uint64_t>());
  s.hard.commit = raft::offset(r.get<int64_t>());
  s.log_start = raft::offset(r.get<int64_t>());
  s.start_prev_term = raft::term_id(r.get<int64_t>());
  s.start_config_offset = raft::offset(r.get<int64_t>());
  auto config = r.get_bytes(group_at);
  const uint32_t n = r.get_count(8);
  for (uint32_t i = 0; i < n && r.ok(); ++i)
    s.config_offsets.push_back(raft::offset(r.get<int64_t>()));
  if (!r.ok()) return false;
  auto m = raft::codec::decode_membership(config);
  if (!m.ok()) return false;
  s.start_config = std::move(*m);
  std::memcpy(&s.group, slot.data() + group_at, 8);
  out = std::move(s);
  return true;
}

engine::result<std::unique_ptr<raft_state_store>> raft_state_store::open(
    const std::string& dir, engine::io_ring& ring, const raft_persistent_state& initial) {
  const std::string path = dir + "/raft_state";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return engine::make_sys_error(errno, "open " + path);
  std::unique_ptr<raft_state_store> store(new raft_state_store(fd, ring));
  std::vector<std::byte> slots(2 * slot_bytes);
  const ssize_t n = ::pread(fd, slots.data(), slots.size(), 0);
  if (n < 0) return engine::make_sys_error(errno, "read " + path);
  bool found = false;
  for (int i = 0; i < 2; ++i) {
    if (static_cast<size_t>(n) < (i + 1) * slot_bytes) break;
    raft_persistent_state s;
    uint64_t seq = 0;
    if (decode_raft_state(std::span(slots).subspan(i * slot_bytes, slot_bytes), s, seq) &&
        (!found || seq > store->sequence_)) {
      store->state_ = std::move(s);
      store->sequence_ = seq;
      store->durable_slot_ = i;
      found = true;
    }
  }
  // What was read may be an unsynced write still in the page cache (a crash of the process,
  // not of the machine): sync it, since the next write goes to the other slot.
  if (found && initial.group != 0 && store->state_.group != 0 &&
      store->state_.group != initial.group)
    return engine::make_error(engine::errc::already_exists,
                              path + " belongs to raft group " +
                                  std::to_string(store->state_.group) + ", not to group " +
                                  std::to_string(initial.group));
  if (found && store->state_.group == 0) store->state_.group = initial.group;  // written next save
  if (found && ::fdatasync(fd) != 0) return engine::make_sys_error(errno, "fdatasync " + path);
  if (!found) {
    if (n > 0) return engine::make_error(engine::errc::corrupt, path + " holds no valid slot");
    // A new group: write the initial state synchronously (start-up, not the hot path).
    store->state_ = initial;
    const auto bytes = encode_raft_state(initial, 1);
    if (::pwrite(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()) ||
        ::fdatasync(fd) != 0)
      return engine::make_sys_error(errno ? errno : EIO, "write " + path);
    store->sequence_ = 1;
    store->durable_slot_ = 0;
  }
  return store;
}

std::optional<uint64_t> raft_state_store::stored_group(const std::string& dir) {
  const std::string path = dir + "/raft_state";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::vector<std::byte> slots(2 * slot_bytes);
  const ssize_t n = ::pread(fd, slots.data(), slots.size(), 0);
  ::close(fd);
  std::optional<uint64_t> group;
  uint64_t best = 0;
  for (int i = 0; i < 2 && n >= static_cast<ssize_t>((i + 1) * slot_bytes); ++i) {
    raft_persistent_state s;
    uint64_t seq = 0;
    if (decode_raft_state(std::span(slots).subspan(i * slot_bytes, slot_bytes), s, seq) &&
        (!group || seq > best)) {
      group = s.group;
      best = seq;
    }
  }
  return group;
}

raft_state_store::raft_state_store(int fd, engine::io_ring& ring) : fd_(fd), ring_(ring) {
  for (write_op* op : {&write_op_, &sync_op_}) {
    op->owner = this;
    op->complete = [](engine::io_ring::operation* o, int res) {
      auto* op = static_cast<write_op*>(o);
      op->owner->on_write_done(res, op->is_sync);
    };
  }
  sync_op_.is_sync = true;
}

raft_state_store::~raft_state_store() {
  while (in_flight_)
    ring_.wait();
  if (staged_ || dirty_) {
    // Closing: the last commit index is written too (unsynced, like any staged change), so a
    // clean restart starts from it; a save still waiting gets its sync.
    start_write(!waiters_next_.empty());
    while (in_flight_)
      ring_.wait();
  }
  ::close(fd_);
}

void raft_state_store::save(raft_persistent_state next,
                            std::function<void(const engine::status&)> done) {
  state_ = std::move(next);
  if (done) waiters_next_.push_back(std::move(done));
  if (in_flight_) {
    dirty_ = true;
  } else {
    start_write(true);
  }
}

void raft_state_store::stage(raft_persistent_state next) {
  state_ = std::move(next);
  staged_ = true;
}

void raft_state_store::write_staged() {
  if (staged_ && !in_flight_) start_write(false);
}

void raft_state_store::start_write(bool sync) {
  KEEL_ASSERT(!in_flight_, "one state write at a time");
  const auto bytes = encode_raft_state(state_, ++sequence_);
  std::memcpy(buffer_, bytes.data(), slot_bytes);
  // Never over the last synced slot: an unsynced write (or a synced one torn before its sync)
  // must leave a valid, durable slot behind.
  writing_slot_ = 1 - durable_slot_;
  writing_synced_ = sync;
  dirty_ = false;
  staged_ = false;
  in_flight_ = true;
  error_ = 0;
  pending_ops_ = sync ? 2 : 1;
  waiters_in_flight_ = std::move(waiters_next_);
  waiters_next_.clear();
  ring_.prep_write(&write_op_, fd_, buffer_, slot_bytes, writing_slot_ * slot_bytes, sync);
  if (sync) ring_.prep_fdatasync(&sync_op_, fd_, false);
  ring_.submit();
}

void raft_state_store::on_write_done(int result, bool is_sync) {
  if (result < 0 && error_ == 0) error_ = -result;
  if (!is_sync && result >= 0 && result < static_cast<int>(slot_bytes) && error_ == 0)
    error_ = EIO;  // a short write of one 8 KiB slot: the disk is failing
  if (--pending_ops_ > 0) return;
  in_flight_ = false;
  if (error_ == 0 && writing_synced_) durable_slot_ = writing_slot_;
  if (error_ != 0 && waiters_in_flight_.empty())
    std::fprintf(stderr,
                 "keel: warning: an unsynced write of the raft state (commit index) failed: %s\n",
                 std::strerror(error_));
  auto waiters = std::move(waiters_in_flight_);
  waiters_in_flight_.clear();
  const engine::status st = error_
                                ? engine::status(engine::make_sys_error(error_, "write raft_state"))
                                : engine::ok_status();
  if (dirty_) start_write(true);
  for (auto& w : waiters)
    w(st);
}

}  // namespace keel::server

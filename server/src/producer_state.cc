#include "keel/server/producer_state.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "keel/net/kafka/errors.h"
#include "keel/net/kafka/record_batch.h"
#include "keel/net/wire.h"

namespace keel::server {
namespace {

namespace error_code = net::kafka::error_code;

constexpr uint64_t snapshot_magic = 0x54415453444F5250ULL;  // "PRODSTAT"
constexpr uint32_t snapshot_version = 1;
constexpr size_t batch_bytes = 4 + 4 + 8 + 8 + 2;
constexpr size_t max_image_bytes = size_t{1} << 30;

}  // namespace

int32_t add_sequence(int32_t sequence, int64_t delta) {
  const int64_t span = int64_t{INT32_MAX} + 1;
  int64_t s = (int64_t{sequence} + delta) % span;
  if (s < 0) s += span;
  return static_cast<int32_t>(s);
}

producer_state::verdict producer_state::check(int64_t id, int16_t epoch, int32_t base_seq,
                                              int32_t last_offset_delta) const {
  verdict v;
  auto it = producers_.find(id);
  if (it == producers_.end()) {
    if (base_seq != 0) v.error = error_code::unknown_producer_id;
    return v;
  }
  const producer_entry& p = it->second;
  if (epoch < p.epoch) {
    v.error = error_code::invalid_producer_epoch;
    return v;
  }
  if (epoch > p.epoch) {
    if (base_seq != 0) v.error = error_code::out_of_order_sequence_number;
    return v;
  }
  const int32_t last_seq = add_sequence(base_seq, last_offset_delta);
  for (const producer_batch& b : p.batches) {
    if (b.first_seq == base_seq && b.last_seq == last_seq) {
      v.duplicate = b;
      return v;
    }
  }
  // A known producer whose batches were all dropped (truncated away) has no last sequence.
  if (p.batches.empty()) {
    if (base_seq != 0) v.error = error_code::out_of_order_sequence_number;
    return v;
  }
  if (base_seq != add_sequence(p.batches.back().last_seq, 1))
    v.error = error_code::out_of_order_sequence_number;
  return v;
}

void producer_state::record(int64_t id, int16_t epoch, int32_t base_seq, int32_t last_offset_delta,
                            int64_t base_offset) {
  auto [it, fresh] = producers_.try_emplace(id);
  producer_entry& p = it->second;
  if (!fresh) {
    if (epoch < p.epoch) return;
    if (epoch > p.epoch) p.batches.clear();
  }
  p.epoch = epoch;
  p.batches.push_back({base_seq, add_sequence(base_seq, last_offset_delta), base_offset,
                       base_offset + last_offset_delta, epoch});
  while (p.batches.size() > max_batches)
    p.batches.pop_front();
}

void producer_state::truncate_from(int64_t offset) {
  for (auto it = producers_.begin(); it != producers_.end();) {
    auto& batches = it->second.batches;
    while (!batches.empty() && batches.back().last_offset >= offset)
      batches.pop_back();
    if (batches.empty()) {
      it = producers_.erase(it);
    } else {
      // The epoch is the newest remaining batch's: a bump is known from its first batch only.
      it->second.epoch = batches.back().epoch;
      ++it;
    }
  }
}

const producer_entry* producer_state::find(int64_t id) const {
  auto it = producers_.find(id);
  return it == producers_.end() ? nullptr : &it->second;
}

std::vector<std::byte> producer_state::encode_snapshot(int64_t next_offset) const {
  std::vector<std::byte> out;
  net::wire_writer w(out);
  w.put<uint64_t>(snapshot_magic);
  w.put<uint32_t>(0);  // body length, filled in below
  const size_t body_from = out.size();
  w.put<uint32_t>(snapshot_version);
  w.put<int64_t>(next_offset);
  w.put<uint32_t>(static_cast<uint32_t>(producers_.size()));
  for (const auto& [id, p] : producers_) {
    w.put<int64_t>(id);
    w.put<int16_t>(p.epoch);
    w.put<uint8_t>(static_cast<uint8_t>(p.batches.size()));
    for (const producer_batch& b : p.batches) {
      w.put<int32_t>(b.first_seq);
      w.put<int32_t>(b.last_seq);
      w.put<int64_t>(b.first_offset);
      w.put<int64_t>(b.last_offset);
      w.put<int16_t>(b.epoch);
    }
  }
  const auto body = static_cast<uint32_t>(out.size() - body_from);
  std::memcpy(out.data() + 8, &body, 4);
  w.put<uint64_t>(XXH3_64bits(out.data(), out.size()));
  return out;
}

std::optional<producer_snapshot> producer_state::decode_snapshot(std::span<const std::byte> image) {
  if (image.size() < 12 + 8) return std::nullopt;
  net::wire_reader head(image);
  if (head.get<uint64_t>() != snapshot_magic) return std::nullopt;
  const uint32_t body = head.get<uint32_t>();
  if (body > image.size() - 12 - 8) return std::nullopt;
  uint64_t sum;
  std::memcpy(&sum, image.data() + 12 + body, 8);
  if (sum != XXH3_64bits(image.data(), 12 + body)) return std::nullopt;
  net::wire_reader r(image.subspan(12, body));
  if (r.get<uint32_t>() != snapshot_version) return std::nullopt;
  producer_snapshot out;
  out.next_offset = r.get<int64_t>();
  const uint32_t n = r.get_count(8 + 2 + 1);
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    const int64_t id = r.get<int64_t>();
    producer_entry p;
    p.epoch = r.get<int16_t>();
    const uint8_t batches = r.get<uint8_t>();
    if (batches == 0 || batches > max_batches || r.remaining() < batches * batch_bytes) break;
    for (uint8_t k = 0; k < batches; ++k) {
      producer_batch b;
      b.first_seq = r.get<int32_t>();
      b.last_seq = r.get<int32_t>();
      b.first_offset = r.get<int64_t>();
      b.last_offset = r.get<int64_t>();
      b.epoch = r.get<int16_t>();
      if (b.first_seq < 0 || b.last_seq < 0 || b.first_offset < 0 ||
          b.last_offset < b.first_offset || b.last_offset >= out.next_offset ||
          (!p.batches.empty() && b.first_offset <= p.batches.back().last_offset))
        r.fail();
      p.batches.push_back(b);
    }
    if (id < 0 || !out.state.producers_.emplace(id, std::move(p)).second) r.fail();
  }
  if (!r.ok() || !r.at_end() || out.state.producers_.size() != n) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Snapshot files

engine::result<std::unique_ptr<producer_snapshot_store>> producer_snapshot_store::open(
    const std::string& dir, engine::io_ring& ring) {
  std::unique_ptr<producer_snapshot_store> s(new producer_snapshot_store(ring, dir));
  for (int i = 0; i < 2; ++i) {
    const std::string path = dir + "/producer_state." + std::to_string(i);
    s->fds_[i] = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->fds_[i] < 0) return engine::make_sys_error(errno, "open " + path);
  }
  for (op* o : {&s->write_op_, &s->sync_op_}) {
    o->owner = s.get();
    o->complete = [](engine::io_ring::operation* x, int res) {
      auto* self = static_cast<op*>(x);
      self->owner->on_done(res, self->is_sync);
    };
  }
  s->sync_op_.is_sync = true;
  return s;
}

producer_snapshot_store::~producer_snapshot_store() {
  while (pending_ > 0)
    ring_.wait();
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

std::vector<producer_snapshot> producer_snapshot_store::load(
    const std::function<void(const std::string&)>& warn) {
  std::vector<producer_snapshot> out;
  for (int i = 0; i < 2; ++i) {
    slot_offset_[i] = -1;
    const std::string path = dir_ + "/producer_state." + std::to_string(i);
    const off_t size = ::lseek(fds_[i], 0, SEEK_END);
    if (size <= 0) continue;  // never written
    if (static_cast<size_t>(size) > max_image_bytes) {
      warn(path + " is too large to be a producer snapshot; ignored");
      continue;
    }
    std::vector<std::byte> bytes(static_cast<size_t>(size));
    const ssize_t n = ::pread(fds_[i], bytes.data(), bytes.size(), 0);
    if (n != size) {
      warn("cannot read " + path + ": " + std::strerror(n < 0 ? errno : EIO));
      continue;
    }
    auto d = producer_state::decode_snapshot(bytes);
    if (!d) {
      warn(path + " holds no valid producer snapshot; ignored");
      continue;
    }
    slot_offset_[i] = d->next_offset;
    out.push_back(std::move(*d));
  }
  // The next write replaces the older (or the damaged) slot.
  next_slot_ = slot_offset_[0] <= slot_offset_[1] ? 0 : 1;
  if (out.size() == 2 && out[1].next_offset > out[0].next_offset) std::swap(out[0], out[1]);
  return out;
}

bool producer_snapshot_store::save(std::vector<std::byte> image,
                                   std::function<void(const std::string&)> done) {
  if (pending_ > 0) return false;
  buffer_ = std::move(image);
  done_ = std::move(done);
  const int fd = fds_[next_slot_];
  next_slot_ ^= 1;
  pending_ = 2;
  error_ = 0;
  ring_.prep_write(&write_op_, fd, buffer_.data(), buffer_.size(), 0, true);
  ring_.prep_fdatasync(&sync_op_, fd, false);
  ring_.submit_queued();
  return true;
}

void producer_snapshot_store::on_done(int result, bool is_sync) {
  if (result < 0 && error_ == 0) error_ = -result;
  if (!is_sync && result >= 0 && static_cast<size_t>(result) < buffer_.size() && error_ == 0)
    error_ = EIO;  // a short write of a small file: the disk is failing
  if (--pending_ > 0) return;
  auto done = std::move(done_);
  done_ = {};
  if (done)
    done(error_ ? "write " + dir_ + "/producer_state: " + std::strerror(error_) : std::string());
}

// ---------------------------------------------------------------------------------------------
// Rebuild

bool rebuild_producer_state(const engine::log& log, producer_snapshot_store* store, int64_t until,
                            uint8_t data_type, producer_state& state, int64_t& scanned_from,
                            const std::function<void(const std::string&)>& warn) {
  const int64_t start = log.log_start().value();
  state.clear();
  scanned_from = start;
  if (store) {
    for (auto& d : store->load(warn)) {
      if (d.next_offset < start || d.next_offset > until) {
        warn("producer snapshot at offset " + std::to_string(d.next_offset) +
             " lies outside the log [" + std::to_string(start) + ", " + std::to_string(until) +
             "]; ignored");
        continue;
      }
      state = std::move(d.state);
      scanned_from = d.next_offset;
      break;
    }
  }
  engine::offset at(scanned_from);
  while (at.value() < until) {
    auto r = log.read(at, 4u << 20, engine::offset(until - 1), {.verify_checksums = false});
    if (!r) {
      warn("producer state rebuild: " + r.err().describe());
      return false;
    }
    if (r->batches().empty()) return false;  // not written up to `until` yet
    for (const engine::batch_view& v : r->batches()) {
      if (v.header.type != data_type) continue;
      auto h = net::kafka::parse_header(v.payload());
      if (!h || h->producer_id < 0) continue;
      state.record(h->producer_id, h->producer_epoch, h->base_sequence, h->last_offset_delta,
                   v.header.base_offset.value());
    }
    at = r->next_offset;
  }
  return true;
}

}  // namespace keel::server

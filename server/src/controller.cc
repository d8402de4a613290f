#include "keel/server/controller.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "keel/net/wire.h"

namespace keel::server {

namespace {

constexpr uint64_t snapshot_magic = 0x50414E5341544D45ULL;

std::vector<std::byte> encode_snapshot_file(const raft::shared_bytes& image) {
  std::vector<std::byte> file;
  net::wire_writer w(file);
  w.put<uint64_t>(snapshot_magic);
  w.put_bytes(std::span(image.data(), image.size()));
  w.put<uint64_t>(XXH3_64bits(file.data(), file.size()));
  return file;
}

// Reads the snapshot file; empty when there is none. Start-up only.
engine::result<std::vector<std::byte>> read_snapshot_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::vector<std::byte>();
    return engine::make_sys_error(errno, "open " + path);
  }
  std::vector<std::byte> all;
  std::byte buf[1 << 16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0)
    all.insert(all.end(), buf, buf + n);
  ::close(fd);
  net::wire_reader r(all);
  const bool ok = r.get<uint64_t>() == snapshot_magic;
  auto image = r.get_bytes(256u << 20);
  const uint64_t sum = r.get<uint64_t>();
  if (!ok || !r.ok() || !r.at_end() || sum != XXH3_64bits(all.data(), all.size() - 8))
    return engine::make_error(engine::errc::corrupt, path + " is damaged");
  return std::vector<std::byte>(image.begin(), image.end());
}

}  // namespace

engine::result<std::unique_ptr<controller>> controller::open(
    engine::log& log, engine::io_ring& ring, raft::core_options core, raft::membership voters,
    partition_host::message_sink sink, raft::random_source& random, std::string snapshot_path,
    int64_t snapshot_every) {
  std::unique_ptr<controller> c(new controller());
  c->log_ = &log;
  c->snapshot_path_ = std::move(snapshot_path);
  c->snapshot_every_ = snapshot_every;
  c->snapshotter_.owner = c.get();
  c->ring_ = &ring;
  const size_t slash = c->snapshot_path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : c->snapshot_path_.substr(0, slash);
  c->snapshot_directory_fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (c->snapshot_directory_fd_ < 0) return engine::make_sys_error(errno, "open " + dir);
  c->snapshot_file_ =
      std::make_unique<engine::file_replace>(ring, c->snapshot_directory_fd_, c->snapshot_path_);
  // A temporary file left by a crash mid-write.
  ::unlink((c->snapshot_path_ + ".tmp").c_str());
  auto saved = read_snapshot_file(c->snapshot_path_);
  if (!saved) return std::move(saved).err();
  if (!saved->empty()) {
    if (!c->restore_image(*saved))
      return engine::make_error(engine::errc::corrupt,
                                c->snapshot_path_ + " holds a snapshot that does not decode");
    c->snapshot_image_ = raft::shared_bytes(std::move(saved).value());
  }
  partition_host_options o;
  o.core = core;
  o.initial_config = std::move(voters);
  o.snapshots = &c->snapshotter_;
  controller* self = c.get();
  o.on_snapshot = [self](const raft::shared_bytes& image,
                         std::function<void(const std::string&)> done) {
    // A log-start reset from the leader: its snapshot replaces our state, and is kept (durably,
    // before the host lets the log forget what it replaces).
    if (self->closing_) {
      done("the controller is closing");
      return;
    }
    if (!self->restore_image(std::span(image.data(), image.size()))) {
      // Resetting the log without the state it replaces would skip the leader's metadata.
      done("the leader's metadata snapshot does not decode");
      return;
    }
    self->save_snapshot(std::move(done));
  };
  auto h = partition_host::open(log, ring, std::move(o), std::move(sink), random);
  if (!h) return std::move(h).err();
  c->host_ = std::move(h).value();
  c->host_->on_commit([self](raft::offset hw) { self->apply_committed(hw); });
  // What was committed before a restart applies again, from the snapshot on.
  c->apply_committed(c->host_->high_watermark());
  return c;
}

raft::shared_bytes controller::image() const {
  std::vector<std::byte> out;
  net::wire_writer(out).put<int64_t>(applied_.value());
  const auto state = state_.snapshot();
  out.insert(out.end(), state.begin(), state.end());
  return raft::shared_bytes(std::move(out));
}

bool controller::restore_image(std::span<const std::byte> image) {
  net::wire_reader r(image);
  const raft::offset at(r.get<int64_t>());
  metadata_state next;
  if (!r.ok() || !next.restore(image.subspan(8))) {
    std::fprintf(stderr, "keel: controller: a metadata snapshot does not decode\n");
    return false;
  }
  state_ = std::move(next);
  applied_ = at;
  snapshot_offset_ = at;
  if (on_change_) on_change_();
  return true;
}

controller::~controller() {
  // The host goes first: its destructor lets a Ready in flight finish, which may call back into
  // this controller (apply_committed does nothing once closing_). Then the snapshot write.
  closing_ = true;
  on_change_ = nullptr;
  host_.reset();
  while (snapshot_file_ && !snapshot_file_->idle())
    ring_->wait();
  if (snapshot_directory_fd_ >= 0) ::close(snapshot_directory_fd_);
}

raft::shared_bytes controller::snapshotter::snapshot_at(raft::offset through) {
  // The log starts right after the last snapshot, so a reset always asks for exactly that one.
  if (through != owner->snapshot_offset_)
    std::fprintf(stderr, "keel: controller: snapshot asked at %lld, held at %lld\n",
                 static_cast<long long>(through.value()),
                 static_cast<long long>(owner->snapshot_offset_.value()));
  return owner->snapshot_image_;
}

void controller::save_snapshot(std::function<void(const std::string& error)> done) {
  if (closing_) {
    if (done) done("the controller is closing");
    return;
  }
  // Written whole, synced and renamed into place: a crash leaves the old or the new one.
  raft::shared_bytes img = image();
  const raft::offset at = applied_;
  snapshot_file_->start(
      encode_snapshot_file(img), [this, img, at, done = std::move(done)](const engine::status& st) {
        if (!st) {
          std::fprintf(stderr, "keel: controller: cannot write the snapshot: %s\n",
                       st.err().describe().c_str());
        } else if (at >= snapshot_offset_) {
          snapshot_image_ = img;
          snapshot_offset_ = at;
        }
        if (done) done(st ? std::string() : st.err().describe());
      });
}

int32_t controller::leader() const {
  const raft::node_id l = host_->core().leader();
  return l.is_none() ? -1 : static_cast<int32_t>(l.value());
}

void controller::apply_committed(raft::offset high_watermark) {
  if (closing_) return;
  bool changed = false;
  while (applied_ < high_watermark) {
    const engine::offset from = to_engine(applied_.next());
    if (from < log_->log_start()) {
      applied_ = to_raft(log_->log_start()).prev();
      continue;
    }
    auto r = log_->read(from, 4 << 20, to_engine(high_watermark));
    if (!r || r->batches().empty()) {
      std::fprintf(stderr, "keel: controller: cannot read committed metadata at %lld: %s\n",
                   static_cast<long long>(from.value()),
                   r ? "nothing written yet" : r.err().describe().c_str());
      return;  // retried at the next commit
    }
    for (const engine::batch_view& b : r->batches()) {
      apply_result result;
      if (b.header.type == static_cast<uint8_t>(raft::batch_type::data)) {
        result = state_.apply(b.payload());
        changed = changed || result.ok;
        if (!result.ok)
          std::fprintf(stderr, "keel: controller: command at offset %lld rejected: %s\n",
                       static_cast<long long>(b.header.base_offset.value()), result.error.c_str());
      }
      applied_ = to_raft(b.header.last_offset);
      // Only the command this controller proposed (same offset and term) answers its requester.
      auto range = waiting_.equal_range(to_raft(b.header.base_offset));
      std::vector<reply> replies;
      for (auto it = range.first; it != range.second; ++it)
        if (it->second.first.value() == b.header.term.value())
          replies.push_back(std::move(it->second.second));
      waiting_.erase(range.first, range.second);
      for (auto& rep : replies)
        rep(result);
    }
  }
  if (changed && on_change_) on_change_();
  // Snapshot, then drop the log before it once the snapshot is durable.
  if (!compacting_ && applied_.value() - snapshot_offset_.value() >= snapshot_every_) {
    compacting_ = true;
    const raft::offset at = applied_;
    save_snapshot([this, at](const std::string& error) {
      if (!error.empty() || closing_ || snapshot_offset_ != at) {
        compacting_ = false;  // retried at the next commit (or a reset moved past it)
        return;
      }
      host_->compact(at.next(), [this](const std::string& error) {
        compacting_ = false;
        if (!error.empty())
          std::fprintf(stderr, "keel: controller: compaction: %s\n", error.c_str());
      });
    });
  }
}

void controller::submit(std::vector<std::byte> command, reply done) {
  auto payload = raft::shared_bytes(std::move(command));
  auto b = host_->propose(raft::batch_type::data, 1, payload, [this](const proposal_outcome& o) {
    if (o.committed) return;  // answered when it applies
    // Not committed in our term: it may never apply, or apply later under another leader; the
    // requester hears the failure now and no one waits for it any more.
    auto range = waiting_.equal_range(o.base);
    std::vector<reply> failed;
    for (auto it = range.first; it != range.second; ++it)
      failed.push_back(std::move(it->second.second));
    waiting_.erase(range.first, range.second);
    for (auto& f : failed)
      f(apply_result{false, "not committed: " + o.error, {}});
  });
  if (!b) {
    if (done) done(apply_result{false, "not the controller: " + b.err().describe(), {}});
    return;
  }
  if (done) waiting_.emplace(b->base, std::make_pair(b->term, std::move(done)));
}

void controller::create_topic(const std::string& name, int32_t partitions,
                              int16_t replication_factor,
                              const std::map<std::string, std::string>& configs,
                              const std::vector<int32_t>& live, reply done) {
  if (!valid_topic_name(name))
    return done(apply_result{false, "invalid topic name '" + name + "'", {}});
  if (state_.topic(name)) return done(apply_result{false, "topic " + name + " already exists", {}});
  std::string error;
  auto plan = state_.plan_partitions(partitions, replication_factor, live, error);
  if (!plan) return done(apply_result{false, error, {}});
  topic_info t;
  t.name = name;
  std::random_device rd;
  for (auto& b : t.id)
    b = static_cast<uint8_t>(rd());
  t.replication_factor = replication_factor;
  t.configs = configs;
  t.partitions = std::move(*plan);
  submit(encode_create_topic(t), std::move(done));
}

void controller::create_partitions(const std::string& name, int32_t total,
                                   const std::vector<int32_t>& live, reply done) {
  const topic_info* t = state_.topic(name);
  if (!t) return done(apply_result{false, "no topic " + name, {}});
  const auto current = static_cast<int32_t>(t->partitions.size());
  if (total <= current)
    return done(apply_result{false,
                             "invalid partitions: topic " + name + " has " +
                                 std::to_string(current) + " partitions, asked for " +
                                 std::to_string(total),
                             {}});
  std::string error;
  auto plan = state_.plan_partitions(total - current, t->replication_factor, live, error);
  if (!plan) return done(apply_result{false, error, {}});
  submit(encode_create_partitions(name, *plan), std::move(done));
}

}  // namespace keel::server

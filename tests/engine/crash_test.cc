// Crash tests (label "crash", release build only): a child process appends with every append
// durable and reports each acknowledged offset through a pipe; the parent kills it with SIGKILL
// at random moments, reopens the log and checks that every acknowledged batch is present and
// intact with nothing after a gap. Then damage: random truncations and byte flips of segment
// files, after which the log recovers to the last valid batch before the damage, or refuses to
// serve the damaged batch, and never serves corrupt bytes.
//
// Seeds: KEEL_CRASH_SEED=<n> replays one run of the randomized tests.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "test_util.h"

namespace keel::engine::test {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSalt = 42;

uint64_t seed_from_env(uint64_t fallback) {
  const char* v = std::getenv("KEEL_CRASH_SEED");
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

// The payload size of the batch at `base`: a function of the offset alone, so any process can
// check any batch.
size_t size_for(int64_t base) {
  const uint64_t h = static_cast<uint64_t>(base) * 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(20 + (h >> 40) % 3000);
}

log_config crash_config(flush_policy flush = flush_policy::every_append()) {
  log_config c;
  c.segment_bytes = 64 << 10;  // rolls every few dozen batches: kills land inside rolls too
  c.index_interval_bytes = 1024;
  c.index_max_bytes = 4096;
  c.preallocate_bytes = 16 << 10;
  c.flush = flush;
  return c;
}

// The child: appends forever with up to 16 appends in flight, writing each base offset
// acknowledged durable to `report_fd`. Under every_append every acknowledgement must say
// durable; under a lazier policy (rolled segments' syncs deferred) only some do. Exits only when
// killed, or with a code naming what went wrong.
[[noreturn]] void run_appender(const std::string& dir, int report_fd, flush_policy flush) {
  auto ring = io_ring::create(64);
  if (!ring) ::_exit(10);
  const bool every_append = flush.kind == flush_policy::mode::every_append;
  auto opened = log::open(dir, crash_config(flush), **ring);
  if (!opened) ::_exit(11);
  log& l = **opened;
  int in_flight = 0;
  std::vector<std::string> payloads;  // kept alive until appended (append copies them)
  for (;;) {
    while (in_flight >= 16)
      (*ring)->wait();
    const int64_t base = l.next_offset().value();
    const std::string p = payload_for(base, size_for(base), kSalt);
    ++in_flight;
    auto r = l.append(spec_of(p, 1), [&](const result<append_ack>& a) {
      --in_flight;
      if (!a.ok()) ::_exit(12);
      if (!a->durable && every_append) ::_exit(13);
      if (!a->durable) return;
      const int64_t o = a->base.value();
      if (::write(report_fd, &o, sizeof o) != sizeof o) ::_exit(14);
    });
    if (!r) ::_exit(15);
    (*ring)->poll();
  }
}

// Every batch of the log, checked against what the appender wrote; returns the next offset.
int64_t check_log(const log& l) {
  int64_t expect = l.log_start().value();
  auto all = read_all(l, l.log_start(), 256 << 10, true);
  EXPECT_TRUE(all.ok()) << all.err().describe();
  if (!all.ok()) return -1;
  for (const stored_batch& b : *all) {
    EXPECT_EQ(b.header.base_offset.value(), expect) << "a gap in the recovered log";
    if (b.header.base_offset.value() != expect) return -1;
    EXPECT_TRUE(b.payload == payload_for(expect, size_for(expect), kSalt))
        << "payload of offset " << expect;
    expect = b.header.last_offset.value() + 1;
  }
  EXPECT_EQ(expect, l.next_offset().value());
  return expect;
}

void sigkill_rounds(flush_policy flush) {
  const uint64_t seed = seed_from_env(std::random_device{}());
  SCOPED_TRACE("replay with KEEL_CRASH_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  temp_dir d;
  const std::string dir = d.sub("log");
  int64_t acked_total = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(fds[0]);
      run_appender(dir, fds[1], flush);
    }
    ::close(fds[1]);
    std::this_thread::sleep_for(
        std::chrono::microseconds(std::uniform_int_distribution<int>(2'000, 60'000)(rng)));
    ::kill(child, SIGKILL);
    std::vector<int64_t> acked;
    int64_t o;
    while (::read(fds[0], &o, sizeof o) == sizeof o)
      acked.push_back(o);
    ::close(fds[0]);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "the appender stopped by itself, exit code "
        << (WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
    for (size_t i = 1; i < acked.size(); ++i)
      ASSERT_GT(acked[i], acked[i - 1]) << "acknowledgements out of order";
    acked_total += static_cast<int64_t>(acked.size());

    auto ring = io_ring::create(64);
    ASSERT_TRUE(ring.ok());
    auto opened = log::open(dir, crash_config(flush), **ring);
    ASSERT_TRUE(opened.ok()) << opened.err().describe();
    const int64_t next = check_log(**opened);
    ASSERT_GE(next, 0);
    if (!acked.empty()) {
      ASSERT_LT(acked.back(), next) << "acknowledged offset " << acked.back() << " was lost";
    }
    if (round % 2 == 0) {
      ASSERT_TRUE((*opened)->close().ok());  // the next child opens through the marker
    }
  }
  EXPECT_GT(acked_total, 0);
  std::printf("crash test: 20 rounds, %lld acknowledged appends checked\n",
              static_cast<long long>(acked_total));
}

TEST(CrashTest, SigkillDuringDurableAppendsLosesNothingAcknowledged) {
  sigkill_rounds(flush_policy::every_append());
}

// Syncs every 256 KiB: rolls (every 64 KiB) defer their segment's sync to the next of them, so
// kills land with closed segments unsynced and unsealed, which recovery must scan.
TEST(CrashTest, SigkillWithDeferredSealsLosesNothingAcknowledged) {
  sigkill_rounds(flush_policy::every_n_bytes(256 << 10));
}

struct written_batch {
  int64_t base;
  std::string payload;
};

// Writes `count` batches of random sizes and returns them; small segments, so several roll.
std::vector<written_batch> write_batches(const std::string& dir, std::mt19937_64& rng, int count,
                                         bool close_cleanly) {
  auto ring = io_ring::create(64);
  EXPECT_TRUE(ring.ok());
  log_config c = crash_config();
  c.segment_bytes = 32 << 10;
  c.flush = flush_policy::none();
  auto opened = log::open(dir, c, **ring);
  EXPECT_TRUE(opened.ok());
  std::vector<written_batch> out;
  for (int i = 0; i < count; ++i) {
    const int64_t base = (*opened)->next_offset().value();
    out.push_back(
        {base, payload_for(base, std::uniform_int_distribution<size_t>(0, 2000)(rng), kSalt)});
    auto a = append_wait(**opened, **ring, spec_of(out.back().payload, 1, 1000 + i));
    EXPECT_TRUE(a.ok());
  }
  if (close_cleanly) {
    EXPECT_TRUE((*opened)->close().ok());
  }
  return out;
}

int64_t last_segment_base(const std::string& dir) {
  int64_t base = -1;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 24 && name.ends_with(".log"))
      base = std::max<int64_t>(base, std::stoll(name.substr(0, 20)));
  }
  return base;
}

// Reads batch by batch from the log start: every batch served must be what was written. Returns
// the offset where serving stopped (an error, or the end).
int64_t serve_until_error(const log& l, const std::vector<written_batch>& written,
                          errc* stopped_by) {
  *stopped_by = errc{};
  int64_t at = l.log_start().value();
  for (;;) {
    auto r = l.read(offset(at), 1, offset(INT64_MAX), read_options{true});
    if (!r.ok()) {
      *stopped_by = r.err().code;
      return at;
    }
    if (r->batches().empty()) return at;
    const batch_view& v = r->batches().front();
    EXPECT_LT(static_cast<size_t>(at), written.size());
    if (static_cast<size_t>(at) >= written.size()) return at;
    EXPECT_EQ(v.header.base_offset.value(), at);
    EXPECT_TRUE(string_of(v.payload()) == written[static_cast<size_t>(at)].payload)
        << "served corrupt data at offset " << at;
    at = r->next_offset.value();
  }
}

TEST(CrashTest, TruncatedOrFlippedActiveSegmentRecoversToTheLastValidBatch) {
  const uint64_t seed = seed_from_env(1234);
  SCOPED_TRACE("replay with KEEL_CRASH_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int iteration = 0; iteration < 60; ++iteration) {
    SCOPED_TRACE("iteration " + std::to_string(iteration));
    temp_dir d;
    const std::string dir = d.sub("log");
    const bool clean = iteration % 3 == 2;  // a clean close: the marker is trusted, no scan
    const auto written =
        write_batches(dir, rng, std::uniform_int_distribution<int>(5, 80)(rng), clean);
    const int64_t active_base = last_segment_base(dir);
    ASSERT_GE(active_base, 0);
    // Batch positions inside the active segment.
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // [position, end) of each active batch
    uint64_t position = 0;
    for (size_t i = static_cast<size_t>(active_base); i < written.size(); ++i) {
      const uint64_t size = batch_header_size + written[i].payload.size();
      spans.emplace_back(position, position + size);
      position += size;
    }
    const uint64_t content = position;
    if (content == 0) continue;  // an empty active segment: nothing to damage
    const std::string path = dir + "/" + segment_file_stem(offset(active_base)) + ".log";
    const bool truncate = std::uniform_int_distribution<int>(0, 1)(rng) == 0;
    const uint64_t at = std::uniform_int_distribution<uint64_t>(0, content - 1)(rng);
    if (truncate) {
      ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(at)), 0);
    } else {
      const int fd = ::open(path.c_str(), O_RDWR);
      ASSERT_GE(fd, 0);
      unsigned char byte = 0;
      ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(at)), 1);
      byte ^= static_cast<unsigned char>(1u << std::uniform_int_distribution<int>(0, 7)(rng));
      ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(at)), 1);
      ::close(fd);
    }
    // The first damaged batch: cut (truncation) or containing the flipped byte.
    size_t damaged = 0;
    while (damaged < spans.size() &&
           (truncate ? spans[damaged].second <= at : spans[damaged].second <= at))
      ++damaged;
    const int64_t first_bad = active_base + static_cast<int64_t>(damaged);
    SCOPED_TRACE(std::string(truncate ? "truncated to " : "flipped a bit at ") +
                 std::to_string(at) + " of " + std::to_string(content) + ", first damaged offset " +
                 std::to_string(first_bad) + (clean ? ", after a clean close" : ""));

    auto ring = io_ring::create(64);
    ASSERT_TRUE(ring.ok());
    ::testing::internal::CaptureStderr();
    auto opened = log::open(dir, crash_config(), **ring);
    ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(opened.ok()) << opened.err().describe();
    log& l = **opened;
    errc stopped_by{};
    const int64_t served = serve_until_error(l, written, &stopped_by);
    if (HasFailure()) return;
    if (!clean || truncate || damaged + 1 == spans.size()) {
      // Recovery ran (no marker, or the marker's last batch or size no longer checks out): the
      // log ends right before the damage and everything before it is served.
      EXPECT_EQ(l.next_offset().value(), first_bad);
      EXPECT_EQ(served, first_bad);
      EXPECT_EQ(stopped_by, errc{});
    } else {
      // The trusted marker skipped the scan: the damaged batch is refused, never served.
      EXPECT_EQ(l.next_offset().value(), static_cast<int64_t>(written.size()));
      EXPECT_EQ(served, first_bad);
      EXPECT_EQ(stopped_by, errc::corrupt);
    }
    if (l.next_offset().value() == first_bad) {
      // The log continues after the cut.
      const std::string p = payload_for(first_bad, 10, kSalt);
      ASSERT_TRUE(append_wait(l, **ring, spec_of(p, 1)).ok());
      EXPECT_EQ(l.next_offset().value(), first_bad + 1);
    }
  }
}

TEST(CrashTest, DamageInAClosedSegmentIsRefusedNotSkipped) {
  const uint64_t seed = seed_from_env(99);
  std::mt19937_64 rng(seed);
  for (int iteration = 0; iteration < 20; ++iteration) {
    SCOPED_TRACE("iteration " + std::to_string(iteration) + " seed " + std::to_string(seed));
    temp_dir d;
    const std::string dir = d.sub("log");
    const auto written = write_batches(dir, rng, 120, iteration % 2 == 0);
    // The last closed segment: the one before the active segment.
    std::vector<int64_t> bases;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.size() == 24 && name.ends_with(".log"))
        bases.push_back(std::stoll(name.substr(0, 20)));
    }
    std::sort(bases.begin(), bases.end());
    ASSERT_GE(bases.size(), 3u);
    const int64_t seg_base = bases[bases.size() - 2], seg_end = bases.back();
    // Flip a bit in a random batch of it (often its last, past the last index entry).
    const int64_t victim = iteration % 2
                               ? seg_end - 1
                               : std::uniform_int_distribution<int64_t>(seg_base, seg_end - 1)(rng);
    uint64_t position = 0;
    for (int64_t o = seg_base; o < victim; ++o)
      position += batch_header_size + written[static_cast<size_t>(o)].payload.size();
    const uint64_t size = batch_header_size + written[static_cast<size_t>(victim)].payload.size();
    const uint64_t at = position + std::uniform_int_distribution<uint64_t>(0, size - 1)(rng);
    const std::string path = dir + "/" + segment_file_stem(offset(seg_base)) + ".log";
    const int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    unsigned char byte = 0;
    ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(at)), 1);
    byte ^= 0x10;
    ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(at)), 1);
    ::close(fd);

    auto ring = io_ring::create(64);
    ASSERT_TRUE(ring.ok());
    ::testing::internal::CaptureStderr();
    auto opened = log::open(dir, crash_config(), **ring);
    ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(opened.ok()) << opened.err().describe();
    errc stopped_by{};
    const int64_t served = serve_until_error(**opened, written, &stopped_by);
    EXPECT_EQ(served, victim) << "the damaged batch must stop the read, not be skipped";
    EXPECT_EQ(stopped_by, errc::corrupt);
    EXPECT_EQ((*opened)->next_offset().value(), static_cast<int64_t>(written.size()));
    if (HasFailure()) return;
  }
}

}  // namespace
}  // namespace keel::engine::test

// keel_engine_compare: each engine case beside a raw baseline on the same filesystem, in the
// same run, alternating engine and baseline runs so noise hits both. Ends with one line per
// comparison: `ratio <name> = <engine throughput / baseline throughput>`.
//
// Usage: keel_engine_compare <scratch dir on the real disk> [--full] [--only <comparison>]
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "keel/engine/engine.h"

using namespace keel::engine;
namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;

struct run_result {
  double seconds = 0;
  uint64_t bytes = 0;
  uint64_t ops = 0;
};

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "keel_engine_compare: %s\n", what.c_str());
  std::exit(1);
}

template <class T>
T must(result<T> r, const char* what) {
  if (!r) die(std::string(what) + ": " + r.err().describe());
  return std::move(r).value();
}

std::string g_root;
bool g_full = false;
std::string g_only;  // run only the comparison of this name (profiling one case)

std::string fresh_dir(const std::string& name) {
  const std::string d = g_root + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void drop_dir(const std::string& d) {
  fs::remove_all(d);
}

std::vector<std::byte> pattern(size_t n) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<std::byte>((i * 131 + 7) & 0xff);
  return v;
}

// ---- appends -------------------------------------------------------------------------------

// `appenders` appenders, each with one append of `size` bytes outstanding, each issuing its next
// append when the previous one is acknowledged; runs for `seconds`.
run_result engine_appends(size_t size, int appenders, double seconds, flush_policy policy,
                          const char* name) {
  const std::string dir = fresh_dir(name);
  auto ring = must(io_ring::create(256), "io_ring");
  log_config c;
  c.flush = policy;
  auto l = must(log::open(dir + "/log", c, *ring), "open");
  const auto payload = pattern(size);
  batch_spec b;
  b.term = term_id(1);
  b.payload = payload;
  std::vector<int> ready;
  for (int i = 0; i < appenders; ++i)
    ready.push_back(i);
  uint64_t done = 0;
  bool durable_ok = true;
  const bool want_durable = policy.kind == flush_policy::mode::every_append;
  const auto t0 = clock_type::now();
  bool stop = false;
  while (!stop || ready.size() < static_cast<size_t>(appenders)) {
    if (!stop) {
      for (int id : std::exchange(ready, {})) {
        auto r = l->append(b, [&, id](const result<append_ack>& a) {
          if (!a) die("append: " + a.err().describe());
          if (want_durable && !a->durable) durable_ok = false;
          ++done;
          ready.push_back(id);
        });
        if (!r) die("append: " + r.err().describe());
      }
      stop = seconds_since(t0) >= seconds;
    }
    ring->wait();
  }
  const double s = seconds_since(t0);
  if (!durable_ok) die("an append meant to be durable was acknowledged without a sync");
  if (auto st = l->close(); !st) die(st.err().describe());
  l.reset();
  drop_dir(dir);
  return {s, done * size, done};
}

// How a shard's event loop appends: one turn handles many produce requests, appending each,
// and polls the ring once at the end of the turn. A burst is `burst_appends` appends, or fewer
// when the log's staged bytes reach `burst_bytes` first.
constexpr uint64_t burst_appends = 64;
constexpr uint64_t burst_bytes = 64 << 10;

// Appends `b` until the log accepts it, waiting on the ring while the log is busy (its staged
// bytes at their bound).
void append_or_wait(log& l, io_ring& ring, const batch_spec& b) {
  auto r = l.append(b);
  while (!r && r.err().code == errc::busy) {
    ring.wait();
    r = l.append(b);
  }
  if (!r) die("append: " + r.err().describe());
}

// 1 KiB appends with no sync, as fast as the caller can stage them; the caller's event loop
// appends a burst (see burst_appends) between polls of the ring, as a shard does.
run_result engine_appends_nosync(size_t size, uint64_t total_bytes, const char* name) {
  const std::string dir = fresh_dir(name);
  auto ring = must(io_ring::create(256), "io_ring");
  log_config c;
  c.flush = flush_policy::none();
  auto l = must(log::open(dir + "/log", c, *ring), "open");
  const auto payload = pattern(size);
  batch_spec b;
  b.term = term_id(1);
  b.payload = payload;
  const uint64_t n = total_bytes / size;
  const auto t0 = clock_type::now();
  for (uint64_t i = 0; i < n;) {
    const uint64_t burst_end = std::min(n, i + burst_appends);
    do {
      append_or_wait(*l, *ring, b);
      ++i;
    } while (i < burst_end && l->staged_bytes() < burst_bytes);
    ring->poll();
  }
  ring->drain();
  const double s = seconds_since(t0);
  if (l->written_offset().value() != static_cast<int64_t>(n) - 1) die("not everything written");
  l.reset();
  drop_dir(dir);
  return {s, n * size, n};
}

// pwrite (+ fdatasync) of `size` bytes at the end of a fresh file, for `seconds` or `total_bytes`.
run_result raw_writes(size_t size, bool sync, double seconds, uint64_t total_bytes,
                      const char* name) {
  const std::string dir = fresh_dir(name);
  const std::string path = dir + "/raw";
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + path);
  const auto payload = pattern(size);
  uint64_t done = 0, position = 0;
  const auto t0 = clock_type::now();
  for (;;) {
    if (::pwrite(fd, payload.data(), size, static_cast<off_t>(position)) !=
        static_cast<ssize_t>(size))
      die("pwrite");
    if (sync && ::fdatasync(fd) != 0) die("fdatasync");
    position += size;
    ++done;
    if (total_bytes ? position >= total_bytes : seconds_since(t0) >= seconds) break;
  }
  const double s = seconds_since(t0);
  ::close(fd);
  drop_dir(dir);
  return {s, done * size, done};
}

// ---- reads ---------------------------------------------------------------------------------

struct read_setup {
  std::string dir;
  std::unique_ptr<io_ring> ring;
  std::unique_ptr<log> l;
  uint64_t bytes = 0;
};

// A log of `total` bytes of stored batches of 1 KiB each (header included).
read_setup make_read_log(uint64_t total) {
  read_setup r;
  r.dir = fresh_dir("read");
  r.ring = must(io_ring::create(256), "io_ring");
  log_config c;
  c.flush = flush_policy::none();
  r.l = must(log::open(r.dir + "/log", c, *r.ring), "open");
  const auto payload = pattern(1024 - batch_header_size);
  batch_spec b;
  b.term = term_id(1);
  b.payload = payload;
  for (uint64_t done = 0; done < total;) {
    const uint64_t burst_end = std::min(total, done + burst_appends * 1024);
    do {
      append_or_wait(*r.l, *r.ring, b);
      done += 1024;
    } while (done < burst_end && r.l->staged_bytes() < burst_bytes);
    r.ring->poll();
  }
  r.ring->drain();
  r.bytes = total;
  return r;
}

// Where a read's views land in the destination: at the same offset within a 64-byte line as their
// source, so the copies of contiguous views keep the source's layout (the memcpy baseline copies
// line-aligned to line-aligned). Without it the copy speed swung with the destination's
// misalignment (8-18 GB/s measured), which is the consumer's buffer, not the engine.
size_t line_skew(const read_result& got, const std::byte* destination) {
  if (got.ranges.empty()) return 0;
  const auto src = reinterpret_cast<uintptr_t>(got.ranges.front().bytes.data()) % 64;
  const auto dst = reinterpret_cast<uintptr_t>(destination) % 64;
  return (src + 64 - dst) % 64;
}

// Reads everything in 1 MiB reads and copies the views (a range of whole batches per segment
// touched) into a 1 MiB buffer.
run_result engine_read(const read_setup& r, std::vector<std::byte>& buffer, bool verify) {
  const auto t0 = clock_type::now();
  offset from = r.l->log_start();
  uint64_t copied = 0;
  while (from < r.l->next_offset()) {
    auto got = r.l->read(from, 1 << 20, r.l->written_offset(), read_options{verify});
    if (!got) die("read: " + got.err().describe());
    size_t at = line_skew(*got, buffer.data());
    for (const batch_range& v : got->ranges) {
      std::memcpy(buffer.data() + at, v.bytes.data(), v.bytes.size());
      at += v.bytes.size();
    }
    copied += got->bytes;
    from = got->next_offset;
  }
  const double s = seconds_since(t0);
  if (copied != r.bytes) die("read back " + std::to_string(copied) + " bytes");
  return {s, copied, copied / 1024};  // 1 KiB batches
}

// The consumer's own share of engine_read: the views of every read taken beforehand (and held),
// then only the copy of each view (range) timed. No engine code runs in the timed part, so this
// bounds what engine_read can reach whatever read() costs. Reported as an info line, not a ratio.
run_result copy_views_only(const read_setup& r, std::vector<std::byte>& buffer) {
  std::vector<read_result> reads;
  for (offset from = r.l->log_start(); from < r.l->next_offset();) {
    auto got = r.l->read(from, 1 << 20, r.l->written_offset(), read_options{false});
    if (!got) die("read: " + got.err().describe());
    from = got->next_offset;
    reads.push_back(std::move(got).value());
  }
  const auto t0 = clock_type::now();
  uint64_t copied = 0;
  for (const read_result& got : reads) {
    size_t at = line_skew(got, buffer.data());
    for (const batch_range& v : got.ranges) {
      std::memcpy(buffer.data() + at, v.bytes.data(), v.bytes.size());
      at += v.bytes.size();
    }
    copied += got.bytes;
  }
  const double s = seconds_since(t0);
  if (copied != r.bytes) die("copied " + std::to_string(copied) + " bytes");
  return {s, copied, copied / 1024};  // 1 KiB batches
}

// memcpy of the same bytes: the segment files mapped, copied in 1 MiB pieces.
run_result memcpy_baseline(const read_setup& r, std::vector<std::byte>& buffer) {
  struct mapped {
    const std::byte* data;
    size_t size;
  };
  std::vector<mapped> maps;
  for (const auto& e : fs::directory_iterator(r.dir + "/log")) {
    // Segments only (a 20-digit base offset), not the next segment's files made ahead.
    if (e.path().extension() != ".log" || e.path().stem().string().size() != 20) continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    ::fstat(fd, &st);
    // The active segment is preallocated beyond its content: copy only content.
    const size_t size = std::min<size_t>(static_cast<size_t>(st.st_size), r.bytes);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) die("mmap");
    maps.push_back({static_cast<const std::byte*>(p), size});
  }
  uint64_t total = 0;
  for (const auto& m : maps)
    total += m.size;
  const uint64_t limit = r.bytes;
  const auto t0 = clock_type::now();
  uint64_t copied = 0;
  for (const auto& m : maps) {
    for (size_t at = 0; at < m.size && copied < limit; at += 1 << 20) {
      const size_t n = std::min<size_t>({size_t{1} << 20, m.size - at, limit - copied});
      std::memcpy(buffer.data(), m.data + at, n);
      copied += n;
    }
  }
  const double s = seconds_since(t0);
  for (const auto& m : maps)
    ::munmap(const_cast<std::byte*>(m.data), m.size);
  (void)total;
  return {s, copied, copied / 1024};
}

// ---- comparison ----------------------------------------------------------------------------

struct totals {
  double seconds = 0;
  uint64_t bytes = 0, ops = 0;
  void add(const run_result& r) {
    seconds += r.seconds;
    bytes += r.bytes;
    ops += r.ops;
  }
  double mb_per_s() const { return static_cast<double>(bytes) / 1e6 / seconds; }
  double ops_per_s() const { return static_cast<double>(ops) / seconds; }
};

void print_run(const char* who, int round, const run_result& r) {
  std::printf("  %-8s run %d: %9.1f MB/s %12.0f ops/s  (%.3f s)\n", who, round,
              static_cast<double>(r.bytes) / 1e6 / r.seconds,
              static_cast<double>(r.ops) / r.seconds, r.seconds);
  std::fflush(stdout);
}

struct ratio_line {
  std::string name;
  double value;
};
std::vector<ratio_line> g_ratios;

void compare(const std::string& name, int rounds, const std::function<run_result()>& engine,
             const std::function<run_result()>& baseline) {
  if (!g_only.empty() && name != g_only) return;
  std::printf("%s\n", name.c_str());
  totals e, b;
  for (int i = 1; i <= rounds; ++i) {
    const run_result re = engine();
    print_run("engine", i, re);
    e.add(re);
    const run_result rb = baseline();
    print_run("baseline", i, rb);
    b.add(rb);
  }
  std::printf("  engine %.1f MB/s (%.0f ops/s), baseline %.1f MB/s (%.0f ops/s)\n", e.mb_per_s(),
              e.ops_per_s(), b.mb_per_s(), b.ops_per_s());
  g_ratios.push_back({name, e.mb_per_s() / b.mb_per_s()});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: keel_engine_compare <scratch dir on the real disk> [--full] "
                 "[--only <comparison>]\n");
    return 2;
  }
  g_root = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--full") {
      g_full = true;
    } else if (a == "--only" && i + 1 < argc) {
      g_only = argv[++i];
    } else {
      std::fprintf(stderr, "keel_engine_compare: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  fs::create_directories(g_root);
  const int rounds = g_full ? 5 : 2;
  const double secs = g_full ? 3.0 : 1.0;

  compare(
      "append_1MiB_durable_vs_raw", rounds,
      [&] { return engine_appends(1 << 20, 1, secs, flush_policy::every_append(), "append_1mib"); },
      [&] { return raw_writes(1 << 20, true, secs, 0, "raw_1mib"); });

  compare(
      "append_16KiB_durable_x16_vs_raw", rounds,
      [&] {
        return engine_appends(16 << 10, 16, secs, flush_policy::every_append(), "append_16kib");
      },
      [&] { return raw_writes(16 << 10, true, secs, 0, "raw_16kib"); });

  const uint64_t nosync_bytes = g_full ? (1ull << 30) : (256ull << 20);
  compare(
      "append_1KiB_nosync_vs_pwrite", rounds,
      [&] { return engine_appends_nosync(1024, nosync_bytes, "append_1kib"); },
      [&] { return raw_writes(1024, false, 0, nosync_bytes, "raw_1kib"); });

  if (g_only.empty() || g_only == "read_sequential_vs_memcpy") {
    read_setup r = make_read_log(1ull << 30);
    std::vector<std::byte> buffer((1 << 20) + 4096);  // room for a read's line skew
    memcpy_baseline(r, buffer);  // warm the page cache and the page tables of both sides
    engine_read(r, buffer, false);
    const run_result verified = engine_read(r, buffer, true);
    std::printf("read_sequential with checksums verified: %.1f MB/s (not part of the ratio)\n",
                static_cast<double>(verified.bytes) / 1e6 / verified.seconds);
    compare(
        "read_sequential_vs_memcpy", g_full ? 5 : 3, [&] { return engine_read(r, buffer, false); },
        [&] { return memcpy_baseline(r, buffer); });
    compare(
        "info: copy_each_view_only_vs_memcpy (the ceiling of read_sequential_vs_memcpy)",
        g_full ? 5 : 3, [&] { return copy_views_only(r, buffer); },
        [&] { return memcpy_baseline(r, buffer); });
    r.l.reset();
    drop_dir(r.dir);
  }

  for (const ratio_line& r : g_ratios)
    if (r.name.rfind("info: ", 0) == 0) std::printf("(%s: %.2f)\n", r.name.c_str() + 6, r.value);
  for (const ratio_line& r : g_ratios)
    if (r.name.rfind("info: ", 0) != 0) std::printf("ratio %s = %.2f\n", r.name.c_str(), r.value);
  return 0;
}

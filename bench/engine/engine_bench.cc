// Micro-benchmarks of the engine: 1 KiB appends without sync, offset index lookups, and reads.
// Files live under $KEEL_BENCH_DIR (default: ./bench-tmp), on the real disk.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "keel/engine/engine.h"
#include "keel/engine/offset_index.h"

using namespace keel::engine;
namespace fs = std::filesystem;

namespace {

std::string scratch(const std::string& name) {
  const char* root = std::getenv("KEEL_BENCH_DIR");
  const std::string d = std::string(root ? root : "./bench-tmp") + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

template <class T>
T must(result<T> r) {
  if (!r) {
    std::fprintf(stderr, "keel_engine_bench: %s\n", r.err().describe().c_str());
    std::abort();
  }
  return std::move(r).value();
}

void BM_AppendNosync1KiB(benchmark::State& state) {
  const std::string dir = scratch("append");
  auto ring = must(io_ring::create(256));
  log_config c;
  c.flush = flush_policy::none();
  auto l = must(log::open(dir + "/log", c, *ring));
  std::vector<std::byte> payload(1024, std::byte{7});
  batch_spec b;
  b.term = term_id(1);
  b.payload = payload;
  // A shard appends a burst of produce requests per event-loop turn, then polls the ring.
  uint64_t appended = 0;
  for (auto _ : state) {
    auto r = l->append(b);
    while (!r && r.err().code == errc::busy) {
      ring->wait();
      r = l->append(b);
    }
    benchmark::DoNotOptimize(r);
    if (++appended % 64 == 0) ring->poll();
  }
  ring->drain();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 1024);
  l.reset();
  fs::remove_all(dir);
}
BENCHMARK(BM_AppendNosync1KiB);

void BM_OffsetIndexLookup(benchmark::State& state) {
  const std::string dir = scratch("index");
  const size_t entries = static_cast<size_t>(state.range(0));
  auto file = must(index_file::open(dir + "/x.index", 8, entries * 8, true));
  offset_index index(std::move(file), offset(0));
  for (size_t i = 0; i < entries; ++i)
    index.append(offset(static_cast<int64_t>(4 * i + 4)), static_cast<uint32_t>(4096 * (i + 1)));
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> pick(0, static_cast<int64_t>(4 * entries + 8));
  for (auto _ : state) {
    auto e = index.floor(offset(pick(rng)));
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  fs::remove_all(dir);
}
BENCHMARK(BM_OffsetIndexLookup)->Arg(512)->Arg(32768);

// 1 MiB reads of 1 KiB batches from a 64 MiB log in the page cache, with and without checksums.
void BM_Read1MiB(benchmark::State& state) {
  const bool verify = state.range(0) != 0;
  const std::string dir = scratch("read");
  auto ring = must(io_ring::create(256));
  log_config c;
  c.flush = flush_policy::none();
  auto l = must(log::open(dir + "/log", c, *ring));
  std::vector<std::byte> payload(1024 - batch_header_size, std::byte{3});
  batch_spec b;
  b.term = term_id(1);
  b.payload = payload;
  for (int i = 0; i < 64 * 1024; ++i) {
    auto r = l->append(b);
    while (!r && r.err().code == errc::busy) {
      ring->wait();
      r = l->append(b);
    }
    ring->poll();
  }
  ring->drain();
  offset from = l->log_start();
  uint64_t bytes = 0;
  for (auto _ : state) {
    auto r = must(l->read(from, 1 << 20, l->written_offset(), read_options{verify}));
    bytes += r.bytes;
    from = r.next_offset < l->next_offset() ? r.next_offset : l->log_start();
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  l.reset();
  fs::remove_all(dir);
}
BENCHMARK(BM_Read1MiB)->Arg(0)->Arg(1);

}  // namespace

BENCHMARK_MAIN();

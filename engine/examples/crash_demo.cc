// keel-engine-demo: appends durably, crashes itself with SIGKILL, reopens and reads back.
//
// A child process appends batches with the default flush policy (every append durable) and
// reports each acknowledged offset through a pipe; after a while it kills itself mid-stream.
// The parent then reopens the log, which recovers from the unclean stop, and checks that every
// acknowledged batch is there, intact, in order.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "keel/engine/engine.h"

using namespace keel::engine;

namespace {

std::string payload_for(int64_t offset) {
  return "record " + std::to_string(offset) + " " +
         std::string(static_cast<size_t>(offset % 200), 'k');
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "keel-engine-demo: %s\n", what.c_str());
  std::exit(1);
}

[[noreturn]] void run_child(const std::string& dir, int report_fd, int crash_after) {
  auto ring = io_ring::create();
  if (!ring) die(ring.err().describe());
  log_config config;
  config.segment_bytes = 256 << 10;  // small segments, so the demo rolls a few
  auto opened = log::open(dir, config, **ring);
  if (!opened) die(opened.err().describe());
  log& l = **opened;
  int acked = 0;
  for (int i = 0;; ++i) {
    // Keep a few appends in flight; each reports its offset when it is durable.
    while (l.next_offset().value() - l.durable_offset().value() > 8)
      (*ring)->wait();
    const std::string p = payload_for(l.next_offset().value());
    batch_spec b;
    b.term = term_id(1);
    b.payload = std::as_bytes(std::span(p));
    auto r = l.append(b, [&](const result<append_ack>& ack) {
      if (!ack || !ack->durable) die("append not durable");
      const int64_t o = ack->base.value();
      if (::write(report_fd, &o, sizeof o) != sizeof o) die("report pipe");
      if (++acked == crash_after) ::kill(::getpid(), SIGKILL);  // crash mid-stream
    });
    if (!r) die(r.err().describe());
    (*ring)->poll();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "./data/engine-demo";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path().empty()
                                          ? std::filesystem::path(".")
                                          : std::filesystem::path(dir).parent_path());
  int fds[2];
  if (::pipe(fds) != 0) die("pipe");
  const int crash_after = 3000;
  std::printf("appending durably to %s in a child process that will SIGKILL itself...\n",
              dir.c_str());
  std::fflush(stdout);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(fds[0]);
    run_child(dir, fds[1], crash_after);
  }
  ::close(fds[1]);
  std::vector<int64_t> acked;
  int64_t o;
  while (::read(fds[0], &o, sizeof o) == sizeof o)
    acked.push_back(o);
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  if (!WIFSIGNALED(wstatus) || WTERMSIG(wstatus) != SIGKILL)
    die("the child did not crash as planned");
  std::printf("child killed by SIGKILL after %zu acknowledged appends (last offset %lld)\n",
              acked.size(), acked.empty() ? -1LL : static_cast<long long>(acked.back()));

  auto ring = io_ring::create();
  if (!ring) die(ring.err().describe());
  auto opened = log::open(dir, log_config{}, **ring);
  if (!opened) die(opened.err().describe());
  log& l = **opened;
  std::printf("reopened: log start %lld, next offset %lld, %zu segments\n",
              static_cast<long long>(l.log_start().value()),
              static_cast<long long>(l.next_offset().value()), l.segment_count());
  int64_t expect = 0;
  offset at(0);
  while (at < l.next_offset()) {
    auto r = l.read(at, 1 << 20, l.written_offset());
    if (!r) die("read: " + r.err().describe());
    for (const batch_view& v : r->batches()) {
      if (v.header.base_offset.value() != expect) die("a gap in the recovered log");
      const std::string want = payload_for(expect);
      if (v.payload().size() != want.size() ||
          std::memcmp(v.payload().data(), want.data(), want.size()) != 0)
        die("recovered payload differs at offset " + std::to_string(expect));
      ++expect;
    }
    at = r->next_offset;
  }
  for (int64_t a : acked)
    if (a >= expect) die("acknowledged offset " + std::to_string(a) + " was lost");
  std::printf("read back %lld batches, checksums verified; all %zu acknowledged appends present\n",
              static_cast<long long>(expect), acked.size());
  if (auto s = l.close(); !s) die(s.err().describe());
  std::printf("closed cleanly; the next open skips the recovery scan\n");
  return 0;
}

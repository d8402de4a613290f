// Append three records durably, then read them back. Build: link keel::engine.
#include <cstdio>
#include <string>

#include "keel/engine/engine.h"

int main() {
  using namespace keel::engine;
  auto ring = io_ring::create();  // one per thread; carries every write and fdatasync
  if (!ring) return std::fprintf(stderr, "%s\n", ring.err().describe().c_str()), 1;
  auto opened = log::open("/tmp/keel-embed-example", log_config{}, **ring);
  if (!opened) return std::fprintf(stderr, "%s\n", opened.err().describe().c_str()), 1;
  log& events = **opened;

  for (std::string text : {"first", "second", "third"}) {
    batch_spec batch{.term = term_id(1), .payload = std::as_bytes(std::span(text))};
    auto appended = events.append(batch, [](const result<append_ack>& ack) {
      if (ack) std::printf("offset %lld durable=%d\n", (long long)ack->base.value(), ack->durable);
    });
    if (!appended) return std::fprintf(stderr, "%s\n", appended.err().describe().c_str()), 1;
  }
  while (events.durable_offset() < events.appended_offset())
    (*ring)->wait();

  auto read = events.read(events.log_start(), 1 << 20, events.durable_offset());
  if (!read) return std::fprintf(stderr, "%s\n", read.err().describe().c_str()), 1;
  for (const batch_view& batch : read->batches()) {
    auto text = batch.payload();
    std::printf("%lld: %.*s\n", (long long)batch.header.base_offset.value(), (int)text.size(),
                reinterpret_cast<const char*>(text.data()));
  }
  return events.close() ? 0 : 1;
}

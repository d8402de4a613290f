// The adapter between raft's log port and the engine log keeps raft's contract.
#include "keel/server/raft_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace keel::server {
namespace {

TEST(raft_log, reads_stop_after_the_batch_whose_cost_reaches_max_bytes) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("keel-raft-log-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto ring = engine::io_ring::create();
  ASSERT_TRUE(ring.ok());
  auto l = engine::log::open(dir.string(), engine::log_config{}, **ring);
  ASSERT_TRUE(l.ok());
  raft_persistent_state initial;
  initial.start_config.voters = {raft::node_id(1)};
  auto store = raft_state_store::open(dir.string(), **ring, initial);
  ASSERT_TRUE(store.ok());
  const std::string payload(100, 'p');
  for (int i = 0; i < 10; ++i) {
    engine::batch_spec b;
    b.type = static_cast<uint8_t>(raft::batch_type::data);
    b.term = engine::term_id(1 + i / 5);
    b.offset_count = 2;
    b.payload = std::as_bytes(std::span(payload));
    ASSERT_TRUE((*l)->append(b).ok());
  }
  (*ring)->drain();
  raft_log port(**l, **store);
  EXPECT_EQ(port.first_offset(), raft::offset(0));
  EXPECT_EQ(port.last_offset(), raft::offset(19));
  // Each batch costs 100 + 32; 150 is reached by the second batch, which is included.
  auto r = port.read(raft::offset(1), raft::offset(19), 150);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].base, raft::offset(0));
  EXPECT_EQ((*r)[1].last, raft::offset(3));
  // Up to `to` when the bound is large; terms and types come through.
  r = port.read(raft::offset(0), raft::offset(19), 1 << 20);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 10u);
  EXPECT_EQ((*r)[9].term, raft::term_id(2));
  EXPECT_EQ((*r)[9].type, raft::batch_type::data);
  EXPECT_EQ(port.term_at(raft::offset(7)).value(), raft::term_id(1));
  EXPECT_EQ(port.term_at(raft::offset(12)).value(), raft::term_id(2));
  EXPECT_EQ(port.term_at(raft::offset(-1)).value(), raft::term_id(0));
  EXPECT_EQ(port.term_at(raft::offset(20)).err().code, raft::errc::unavailable);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace keel::server

// The controller leader's heartbeat tracker (KIP-631 fencing): silent brokers are fenced after a
// session timeout, never during a new leader's grace, never the leader itself; a heartbeat from
// a fenced broker unfences it; a controlled shutdown fences at once; one proposal at a time.
#include "keel/server/liveness.h"

#include <gtest/gtest.h>

namespace keel::server {
namespace {

using namespace std::chrono_literals;
using clock = broker_liveness::clock;

metadata_state with_brokers(int n) {
  metadata_state m;
  for (int i = 1; i <= n; ++i)
    EXPECT_TRUE(m.apply(encode_register_broker({i, {"h", 1}, {"h", 2}, 1})).ok);
  return m;
}

TEST(broker_liveness, a_new_leader_fences_nobody_during_its_grace) {
  auto m = with_brokers(3);
  broker_liveness l(3000ms);
  const auto t0 = clock::time_point() + 1h;
  l.elected(t0);
  // Nobody has heartbeated to this leader yet: still no fencing within the session timeout.
  EXPECT_TRUE(l.to_fence(m, 1, t0).empty());
  EXPECT_TRUE(l.to_fence(m, 1, t0 + 2999ms).empty());
  l.heartbeat(m, 2, false, t0 + 1000ms);
  // Past the grace: broker 3 never heartbeated, broker 2 did within its session, broker 1 is the
  // leader itself.
  EXPECT_EQ(l.to_fence(m, 1, t0 + 3000ms), (std::vector<int32_t>{3}));
}

TEST(broker_liveness, a_silent_broker_is_fenced_once_and_unfenced_by_its_heartbeat) {
  auto m = with_brokers(3);
  broker_liveness l(3000ms);
  const auto t0 = clock::time_point() + 1h;
  l.elected(t0);
  // Brokers 1 and 3 heartbeat every 500 ms throughout; broker 2 stops after t0 + 500 ms, so its
  // session ends at t0 + 3500 ms (the grace ended at t0 + 3000 ms).
  for (auto t = t0; t < t0 + 3500ms; t += 500ms) {
    l.heartbeat(m, 1, false, t);
    l.heartbeat(m, 3, false, t);
    if (t <= t0 + 500ms) l.heartbeat(m, 2, false, t);
    EXPECT_TRUE(l.to_fence(m, 1, t).empty()) << (t - t0).count();
  }
  l.heartbeat(m, 3, false, t0 + 3400ms);
  EXPECT_TRUE(l.to_fence(m, 1, t0 + 3499ms).empty());
  EXPECT_EQ(l.to_fence(m, 1, t0 + 3500ms), (std::vector<int32_t>{2}));
  // In flight: not proposed again until done() (or a session without an answer).
  EXPECT_TRUE(l.to_fence(m, 1, t0 + 3600ms).empty());
  ASSERT_TRUE(m.apply(encode_fence_broker(2)).ok);
  l.done(2);
  EXPECT_TRUE(l.to_fence(m, 1, t0 + 3700ms).empty());  // fenced already
  // Its heartbeat resumes: one unfence proposal, not one per heartbeat.
  EXPECT_TRUE(l.heartbeat(m, 2, false, t0 + 5000ms));
  EXPECT_FALSE(l.heartbeat(m, 2, false, t0 + 5500ms));
  ASSERT_TRUE(m.apply(encode_unfence_broker(2)).ok);
  l.done(2);
  EXPECT_FALSE(l.heartbeat(m, 2, false, t0 + 6000ms));  // unfenced already
}

TEST(broker_liveness, the_leader_itself_is_never_fenced_for_silence) {
  auto m = with_brokers(2);
  broker_liveness l(1000ms);
  const auto t0 = clock::time_point() + 1h;
  l.elected(t0);
  l.heartbeat(m, 2, false, t0 + 9000ms);
  EXPECT_TRUE(l.to_fence(m, 1, t0 + 9500ms).empty());
  // Fenced by an earlier leader while cut off, then elected: its own heartbeat unfences it.
  ASSERT_TRUE(m.apply(encode_fence_broker(1)).ok);
  EXPECT_TRUE(l.heartbeat(m, 1, false, t0 + 9600ms));
}

TEST(broker_liveness, a_controlled_shutdown_fences_at_once_and_only_a_restart_unfences) {
  auto m = with_brokers(3);
  broker_liveness l(3000ms);
  const auto t0 = clock::time_point() + 1h;
  l.elected(t0);
  // Even within the grace, and the leader's own broker too.
  EXPECT_FALSE(l.heartbeat(m, 3, true, t0 + 100ms));
  EXPECT_FALSE(l.heartbeat(m, 1, true, t0 + 100ms));
  EXPECT_EQ(l.to_fence(m, 1, t0 + 100ms), (std::vector<int32_t>{1, 3}));
  ASSERT_TRUE(m.apply(encode_fence_broker(3)).ok);
  l.done(3);
  // The broker, started again, heartbeats normally: unfenced.
  EXPECT_TRUE(l.heartbeat(m, 3, false, t0 + 2000ms));
}

TEST(broker_liveness, a_new_term_forgets_the_old_one) {
  auto m = with_brokers(2);
  broker_liveness l(1000ms);
  const auto t0 = clock::time_point() + 1h;
  l.elected(t0);
  EXPECT_EQ(l.to_fence(m, 1, t0 + 1000ms), (std::vector<int32_t>{2}));  // in flight now
  // Leadership lost and won again before the answer: the proposal's fate is the old term's.
  l.elected(t0 + 1100ms);
  EXPECT_TRUE(l.to_fence(m, 1, t0 + 1200ms).empty());
  EXPECT_EQ(l.to_fence(m, 1, t0 + 2100ms), (std::vector<int32_t>{2}));
  // A proposal that never answers is forgotten after a session.
  EXPECT_TRUE(l.to_fence(m, 1, t0 + 3000ms).empty());
  EXPECT_EQ(l.to_fence(m, 1, t0 + 3100ms), (std::vector<int32_t>{2}));
  // Unregistered brokers' heartbeats are noted but fence and unfence nothing.
  EXPECT_FALSE(l.heartbeat(m, 77, false, t0 + 3200ms));
}

TEST(broker_heartbeat, round_trips_from_the_broker_it_names) {
  std::string error;
  const auto bytes = encode_broker_heartbeat({2, true});
  const auto h = decode_broker_heartbeat(bytes, 2, error);
  ASSERT_TRUE(h) << error;
  EXPECT_EQ(h->broker, 2);
  EXPECT_TRUE(h->shutting_down);
  const auto plain = decode_broker_heartbeat(encode_broker_heartbeat({3, false}), 3, error);
  ASSERT_TRUE(plain) << error;
  EXPECT_FALSE(plain->shutting_down);
}

TEST(broker_heartbeat, is_refused_when_it_names_another_broker_than_its_link) {
  // Broker 3's link carries a heartbeat claiming to be broker 2: refused, so it cannot keep
  // broker 2 unfenced (nor fence it with a forged shutting-down flag).
  std::string error;
  EXPECT_FALSE(decode_broker_heartbeat(encode_broker_heartbeat({2, false}), 3, error));
  EXPECT_NE(error.find("heartbeat for broker 2 arrived from broker 3"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(decode_broker_heartbeat(encode_broker_heartbeat({2, true}), 3, error));
  EXPECT_FALSE(error.empty());
}

TEST(broker_heartbeat, is_refused_when_malformed) {
  std::string error;
  auto bytes = encode_broker_heartbeat({2, false});
  bytes.push_back(std::byte{0});  // trailing garbage
  EXPECT_FALSE(decode_broker_heartbeat(bytes, 2, error));
  EXPECT_EQ(error, "malformed heartbeat");
  bytes.resize(4);  // no flag
  EXPECT_FALSE(decode_broker_heartbeat(bytes, 2, error));
  bytes = encode_broker_heartbeat({2, false});
  bytes[4] = std::byte{2};  // a flag is 0 or 1
  EXPECT_FALSE(decode_broker_heartbeat(bytes, 2, error));
}

}  // namespace
}  // namespace keel::server

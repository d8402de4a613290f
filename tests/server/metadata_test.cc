// The controller's state machine: commands apply deterministically, bad ones change nothing,
// snapshots round-trip, plans spread leaders and shards evenly, and garbage never crashes it.
#include "keel/server/metadata.h"

#include <gtest/gtest.h>

#include <random>

namespace keel::server {
namespace {

metadata_state with_brokers(int n, uint32_t shards = 2) {
  metadata_state m;
  for (int i = 1; i <= n; ++i) {
    auto r = m.apply(encode_register_broker({i,
                                             {"127.0.0.1", static_cast<uint16_t>(9091 + i)},
                                             {"127.0.0.1", static_cast<uint16_t>(19091 + i)},
                                             shards}));
    EXPECT_TRUE(r.ok) << r.error;
  }
  return m;
}

topic_info make_topic(const metadata_state& m, const std::string& name, int partitions,
                      int16_t rf) {
  std::string error;
  auto plan = m.plan_partitions(partitions, rf, {1, 2, 3}, error);
  EXPECT_TRUE(plan) << error;
  topic_info t;
  t.name = name;
  t.id[0] = 7;
  t.replication_factor = rf;
  t.configs["retention.ms"] = "1000";
  t.partitions = plan.value_or(std::vector<std::vector<replica>>{});
  return t;
}

TEST(metadata, topics_are_created_altered_and_deleted) {
  auto m = with_brokers(3);
  const topic_info t = make_topic(m, "orders", 6, 3);
  ASSERT_TRUE(m.apply(encode_create_topic(t)).ok);
  ASSERT_NE(m.topic("orders"), nullptr);
  EXPECT_EQ(m.topic("orders")->partitions, t.partitions);
  EXPECT_EQ(m.topic("orders")->groups, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  auto again = m.apply(encode_create_topic(t));
  EXPECT_FALSE(again.ok);
  EXPECT_NE(again.error.find("already exists"), std::string::npos);

  ASSERT_TRUE(m.apply(encode_set_topic_config("orders", "segment.bytes", "1048576")).ok);
  EXPECT_EQ(m.topic("orders")->configs.at("segment.bytes"), "1048576");
  ASSERT_TRUE(m.apply(encode_set_topic_config("orders", "retention.ms", "")).ok);
  EXPECT_EQ(m.topic("orders")->configs.count("retention.ms"), 0u);

  std::string error;
  auto more = m.plan_partitions(2, 3, {1, 2, 3}, error);
  ASSERT_TRUE(more);
  ASSERT_TRUE(m.apply(encode_create_partitions("orders", *more)).ok);
  EXPECT_EQ(m.topic("orders")->partitions.size(), 8u);
  EXPECT_EQ(m.topic("orders")->groups.back(), 8u);

  ASSERT_TRUE(m.apply(encode_delete_topic("orders")).ok);
  EXPECT_EQ(m.topic("orders"), nullptr);
  EXPECT_FALSE(m.apply(encode_delete_topic("orders")).ok);
}

TEST(metadata, commands_that_do_not_fit_change_nothing) {
  auto m = with_brokers(3);
  const auto before = m;
  topic_info t = make_topic(m, "bad name!", 1, 1);
  EXPECT_FALSE(m.apply(encode_create_topic(t)).ok);
  t = make_topic(m, "t", 1, 1);
  t.partitions[0][0].broker = 42;
  EXPECT_FALSE(m.apply(encode_create_topic(t)).ok);
  t = make_topic(m, "t", 1, 2);
  t.partitions[0][1] = t.partitions[0][0];
  EXPECT_FALSE(m.apply(encode_create_topic(t)).ok);
  t = make_topic(m, "t", 1, 1);
  t.partitions[0][0].shard = 9;
  EXPECT_FALSE(m.apply(encode_create_topic(t)).ok);
  EXPECT_FALSE(m.apply(encode_allocate_producer_ids(99, 1000)).ok);
  EXPECT_EQ(m, before);
}

TEST(metadata, producer_id_blocks_never_overlap) {
  auto m = with_brokers(2);
  auto a = m.apply(encode_allocate_producer_ids(1, 1000));
  auto b = m.apply(encode_allocate_producer_ids(2, 500));
  ASSERT_TRUE(a.allocated && b.allocated);
  EXPECT_EQ(a.allocated->first + a.allocated->size, b.allocated->first);
}

TEST(metadata, snapshots_round_trip_and_bad_snapshots_are_refused) {
  auto m = with_brokers(3);
  ASSERT_TRUE(m.apply(encode_create_topic(make_topic(m, "a", 3, 2))).ok);
  ASSERT_TRUE(m.apply(encode_create_topic(make_topic(m, "b", 5, 3))).ok);
  ASSERT_TRUE(m.apply(encode_allocate_producer_ids(1, 100)).ok);
  const auto snap = m.snapshot();
  metadata_state copy;
  ASSERT_TRUE(copy.restore(snap));
  EXPECT_EQ(copy, m);
  for (size_t cut = 0; cut < snap.size(); cut += 7) {
    metadata_state other = with_brokers(1);
    const auto keep = other;
    EXPECT_FALSE(other.restore(std::span(snap).first(cut)));
    EXPECT_EQ(other, keep);
  }
}

TEST(metadata, brokers_are_fenced_and_unfenced_by_records) {
  auto m = with_brokers(3);
  EXPECT_EQ(m.unfenced_brokers(), (std::vector<int32_t>{1, 2, 3}));
  ASSERT_TRUE(m.apply(encode_fence_broker(2)).ok);
  EXPECT_TRUE(m.brokers().at(2).fenced);
  EXPECT_FALSE(m.broker_unfenced(2));
  EXPECT_EQ(m.unfenced_brokers(), (std::vector<int32_t>{1, 3}));
  // Fencing twice (two leaders' proposals racing) is the same as once.
  ASSERT_TRUE(m.apply(encode_fence_broker(2)).ok);
  EXPECT_TRUE(m.brokers().at(2).fenced);
  // A restarted broker re-registers (here with a new address): it stays fenced until the
  // controller unfences it on its heartbeats.
  ASSERT_TRUE(
      m.apply(encode_register_broker({2, {"127.0.0.1", 7777}, {"127.0.0.1", 17777}, 4})).ok);
  EXPECT_TRUE(m.brokers().at(2).fenced);
  EXPECT_EQ(m.brokers().at(2).kafka.port, 7777);
  EXPECT_EQ(m.brokers().at(2).shards, 4u);
  ASSERT_TRUE(m.apply(encode_unfence_broker(2)).ok);
  EXPECT_TRUE(m.broker_unfenced(2));
  // A broker that registers for the first time starts unfenced.
  ASSERT_TRUE(m.apply(encode_register_broker({9, {"h", 1}, {"h", 2}, 1})).ok);
  EXPECT_TRUE(m.broker_unfenced(9));
  // Unknown brokers and malformed records change nothing, the same way everywhere.
  const auto before = m;
  EXPECT_FALSE(m.apply(encode_fence_broker(42)).ok);
  EXPECT_FALSE(m.apply(encode_unfence_broker(42)).ok);
  auto truncated = encode_fence_broker(1);
  truncated.pop_back();
  EXPECT_FALSE(m.apply(truncated).ok);
  auto longer = encode_unfence_broker(1);
  longer.push_back(std::byte{0});
  EXPECT_FALSE(m.apply(longer).ok);
  EXPECT_EQ(m, before);
  EXPECT_FALSE(m.broker_unfenced(42));
}

TEST(metadata, snapshots_keep_fencing_and_version_1_still_restores) {
  auto m = with_brokers(3);
  ASSERT_TRUE(m.apply(encode_create_topic(make_topic(m, "a", 3, 2))).ok);
  ASSERT_TRUE(m.apply(encode_fence_broker(3)).ok);
  const auto snap = m.snapshot();
  metadata_state copy;
  ASSERT_TRUE(copy.restore(snap));
  EXPECT_EQ(copy, m);
  EXPECT_TRUE(copy.brokers().at(3).fenced);
  EXPECT_FALSE(copy.brokers().at(1).fenced);

  // Version 2 (before barriers): the same layout without the barriers' count at the end (none
  // here).
  ASSERT_EQ(m.barrier_of(1), 0u);
  std::vector<std::byte> v2(snap.begin(), snap.end() - 4);
  v2[0] = std::byte{2};
  metadata_state older;
  ASSERT_TRUE(older.restore(v2));
  EXPECT_EQ(older, m);

  // Version 1 (before fencing): version 2 without each broker's fenced byte. Header: u32
  // version, i64, u64, u32 broker count = 24 bytes; each broker here is 38 bytes (two 9-byte
  // hosts) and was followed by its flag in version 2.
  std::vector<std::byte> v1(v2);
  v1[0] = std::byte{1};
  constexpr size_t header = 24, broker_bytes = 38;
  for (size_t k = 3; k-- > 0;) {
    const size_t flag = header + k * (broker_bytes + 1) + broker_bytes;
    ASSERT_LE(v1[flag], std::byte{1});
    v1.erase(v1.begin() + static_cast<std::ptrdiff_t>(flag));
  }
  metadata_state old;
  ASSERT_TRUE(old.restore(v1));
  EXPECT_EQ(old.brokers().size(), 3u);
  for (const auto& [id, b] : old.brokers())
    EXPECT_FALSE(b.fenced) << "broker " << id;
  EXPECT_EQ(old.topics(), m.topics());
  EXPECT_EQ(old.next_group_id(), m.next_group_id());
  // An image read as another version does not decode.
  metadata_state other;
  for (uint8_t version : {1, 2}) {
    std::vector<std::byte> wrong(snap.begin(), snap.end());
    wrong[0] = std::byte{version};
    EXPECT_FALSE(other.restore(wrong)) << "version " << int(version);
  }
  v2[0] = std::byte{3};
  EXPECT_FALSE(other.restore(v2));
  std::vector<std::byte> bad_flag(snap.begin(), snap.end());
  bad_flag[header + broker_bytes] = std::byte{2};
  EXPECT_FALSE(other.restore(bad_flag));
  std::vector<std::byte> unknown(snap.begin(), snap.end());
  unknown[0] = std::byte{4};
  EXPECT_FALSE(other.restore(unknown));
}

TEST(metadata, a_brokers_barrier_is_applied_everywhere_and_kept_by_snapshots) {
  auto m = with_brokers(2);
  EXPECT_EQ(m.barrier_of(2), 0u);
  ASSERT_TRUE(m.apply(encode_metadata_barrier(2, 77)).ok);
  // Not registered yet: a broker that has just started may need one before it registers.
  ASSERT_TRUE(m.apply(encode_metadata_barrier(9, 5)).ok);
  EXPECT_EQ(m.barrier_of(2), 77u);
  EXPECT_EQ(m.barrier_of(9), 5u);
  ASSERT_TRUE(m.apply(encode_metadata_barrier(2, 78)).ok);  // the broker restarted
  EXPECT_EQ(m.barrier_of(2), 78u);
  const auto before = m;
  auto zero = encode_metadata_barrier(2, 1);
  zero[zero.size() - 8] = std::byte{0};  // the nonce's low byte (little-endian): nonce 0
  EXPECT_FALSE(m.apply(zero).ok);
  auto shorter = encode_metadata_barrier(2, 1);
  shorter.pop_back();
  EXPECT_FALSE(m.apply(shorter).ok);
  EXPECT_EQ(m, before);

  metadata_state copy;
  ASSERT_TRUE(copy.restore(m.snapshot()));
  EXPECT_EQ(copy, m);
  EXPECT_EQ(copy.barrier_of(2), 78u);
  // A barrier of nonce 0 (meaning none) in an image is refused.
  auto snap = m.snapshot();
  for (size_t i = 0; i < 8; ++i)
    snap[snap.size() - 1 - i] = std::byte{0};
  EXPECT_FALSE(copy.restore(snap));
}

TEST(metadata, plans_spread_leaders_and_shards_evenly) {
  auto m = with_brokers(3, 2);
  ASSERT_TRUE(m.apply(encode_create_topic(make_topic(m, "x", 6, 3))).ok);
  ASSERT_TRUE(m.apply(encode_create_topic(make_topic(m, "y", 6, 3))).ok);
  std::map<int32_t, int> leaders;
  std::map<std::pair<int32_t, uint32_t>, int> shards;
  for (const auto& [name, t] : m.topics())
    for (const auto& reps : t.partitions) {
      ++leaders[reps[0].broker];
      for (auto& r : reps)
        ++shards[{r.broker, r.shard}];
    }
  for (int b = 1; b <= 3; ++b)
    EXPECT_EQ(leaders[b], 4) << "broker " << b;
  for (auto& [key, n] : shards)
    EXPECT_EQ(n, 6) << key.first << "/" << key.second;
  std::string error;
  EXPECT_FALSE(m.plan_partitions(1, 4, {1, 2, 3}, error));
  EXPECT_NE(error.find("more than the 3 alive brokers"), std::string::npos) << error;
}

TEST(metadata, default_replication_factor_counts_registered_brokers_and_fenced_ones_refuse_it) {
  metadata_state none;
  EXPECT_EQ(none.default_replication_factor(3), 1);
  auto one = with_brokers(1);
  EXPECT_EQ(one.default_replication_factor(3), 1);  // a cluster smaller than the default
  auto m = with_brokers(3);
  EXPECT_EQ(m.default_replication_factor(3), 3);
  EXPECT_EQ(m.default_replication_factor(2), 2);
  EXPECT_EQ(m.check_replication_factor(3, m.unfenced_brokers()), "");
  // Broker 2 is fenced: the default stays 3 (a broker fenced for a while does not shrink the
  // topics created meanwhile for good), and 3 replicas no longer fit: refused, naming the
  // factor, the alive brokers and the fenced one, by the check and by the placement alike.
  ASSERT_TRUE(m.apply(encode_fence_broker(2)).ok);
  EXPECT_EQ(m.default_replication_factor(3), 3);
  const std::string want =
      "replication factor 3 is more than the 2 alive brokers (3 registered; "
      "fenced: 2)";
  EXPECT_EQ(m.check_replication_factor(m.default_replication_factor(3), m.unfenced_brokers()),
            want);
  std::string error;
  EXPECT_FALSE(m.plan_partitions(1, 3, m.unfenced_brokers(), error));
  EXPECT_EQ(error, want);
  // Two replicas fit, on the alive brokers only.
  EXPECT_EQ(m.check_replication_factor(2, m.unfenced_brokers()), "");
  auto plan = m.plan_partitions(6, 2, m.unfenced_brokers(), error);
  ASSERT_TRUE(plan) << error;
  for (const auto& reps : *plan)
    for (const replica& r : reps)
      EXPECT_NE(r.broker, 2);
  // Unknown ids in the candidates count for nothing; a factor below 1 is refused.
  EXPECT_NE(m.check_replication_factor(3, {1, 3, 9}), "");
  EXPECT_EQ(m.check_replication_factor(0, {1, 3}), "replication factor 0 is less than 1");
}

TEST(metadata, random_and_mutated_commands_never_crash) {
  auto m = with_brokers(3);
  const auto good = encode_create_topic(make_topic(m, "fuzz", 4, 3));
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> cmd = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f)
      cmd[rng() % cmd.size()] = static_cast<std::byte>(rng());
    if (rng() % 4 == 0) cmd.resize(rng() % cmd.size());
    metadata_state copy = m;
    (void)copy.apply(cmd);
    std::vector<std::byte> junk(rng() % 64);
    for (auto& b : junk)
      b = static_cast<std::byte>(rng());
    (void)copy.apply(junk);
    (void)copy.restore(junk);
  }
}

}  // namespace
}  // namespace keel::server

// The raft state file: a save is durable and found again; a staged change (the commit index
// alone) is written only when asked or at close; a damaged newer slot loses to the older one.
#include "keel/server/raft_state_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace keel::server {
namespace {

struct StateStoreTest : ::testing::Test {
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("keel-raft-state-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto r = engine::io_ring::create();
    ASSERT_TRUE(r.ok());
    ring = std::move(*r);
    initial.start_config.voters = {raft::node_id(1), raft::node_id(2), raft::node_id(3)};
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  std::unique_ptr<raft_state_store> open() {
    auto s = raft_state_store::open(dir.string(), *ring, initial);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.err().describe());
    return s.ok() ? std::move(*s) : nullptr;
  }
  // What a restart would find on disk now, read by a second store on the same file.
  raft::hard_state on_disk() { return open()->state().hard; }

  std::filesystem::path dir;
  std::unique_ptr<engine::io_ring> ring;
  raft_persistent_state initial;
};

raft_persistent_state with_hard(raft_persistent_state s, uint64_t term, uint64_t vote,
                                int64_t commit) {
  s.hard.term = raft::term_id(term);
  s.hard.vote = raft::node_id(vote);
  s.hard.commit = raft::offset(commit);
  return s;
}

TEST_F(StateStoreTest, ASaveIsDurableWhenItsCallbackRuns) {
  auto store = open();
  bool done = false;
  store->save(with_hard(store->state(), 3, 2, 10), [&](const engine::status& st) {
    EXPECT_TRUE(st.ok());
    done = true;
  });
  ring->drain();
  ASSERT_TRUE(done);
  const auto hard = on_disk();
  EXPECT_EQ(hard.term, raft::term_id(3));
  EXPECT_EQ(hard.vote, raft::node_id(2));
  EXPECT_EQ(hard.commit, raft::offset(10));
}

TEST_F(StateStoreTest, AStagedCommitIsWrittenOnlyWhenAskedOrAtClose) {
  auto store = open();
  store->save(with_hard(store->state(), 3, 2, 10), {});
  ring->drain();
  store->stage(with_hard(store->state(), 3, 2, 20));
  ring->drain();
  EXPECT_EQ(store->state().hard.commit, raft::offset(20));
  EXPECT_EQ(on_disk().commit, raft::offset(10));  // not written yet
  store->write_staged();
  ring->drain();
  EXPECT_EQ(on_disk().commit, raft::offset(20));
  store->write_staged();  // nothing staged: nothing written
  EXPECT_EQ(ring->in_flight(), 0u);
  // A durable save carries the staged change with it.
  store->stage(with_hard(store->state(), 3, 2, 30));
  store->save(with_hard(store->state(), 4, 0, 30), {});
  ring->drain();
  EXPECT_EQ(on_disk().term, raft::term_id(4));
  EXPECT_EQ(on_disk().commit, raft::offset(30));
  // Closing writes what is staged.
  store->stage(with_hard(store->state(), 4, 0, 40));
  store.reset();
  EXPECT_EQ(on_disk().commit, raft::offset(40));
}

TEST_F(StateStoreTest, ASaveDuringAStagedWriteFollowsItAndIsDurable) {
  auto store = open();
  store->stage(with_hard(store->state(), 1, 0, 5));
  store->write_staged();  // in flight, unsynced
  bool done = false;
  store->save(with_hard(store->state(), 2, 3, 5), [&](const engine::status& st) {
    EXPECT_TRUE(st.ok());
    done = true;
  });
  ring->drain();
  ASSERT_TRUE(done);
  EXPECT_EQ(on_disk().term, raft::term_id(2));
  EXPECT_EQ(on_disk().vote, raft::node_id(3));
}

TEST_F(StateStoreTest, ADamagedNewerSlotLosesToTheOlderOne) {
  {
    auto store = open();
    store->save(with_hard(store->state(), 5, 1, 50), {});
    ring->drain();
    store->stage(with_hard(store->state(), 5, 1, 60));
    store->write_staged();
    ring->drain();
  }
  // Flip a byte in each slot in turn and reopen.
  const auto path = dir / "raft_state";
  for (int slot = 0; slot < 2; ++slot) {
    const std::filesystem::path copy = dir / "saved";
    std::filesystem::copy_file(path, copy, std::filesystem::copy_options::overwrite_existing);
    const int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    std::byte b{};
    const off_t at = slot * raft_state_store::slot_bytes + 20;
    ASSERT_EQ(::pread(fd, &b, 1, at), 1);
    b ^= std::byte{0x40};
    ASSERT_EQ(::pwrite(fd, &b, 1, at), 1);
    ::close(fd);
    const auto hard = on_disk();
    EXPECT_EQ(hard.term, raft::term_id(5));  // either slot holds term 5 and vote 1
    EXPECT_EQ(hard.vote, raft::node_id(1));
    // The new group's state went to slot 0, the save to slot 1, the staged write to slot 0.
    EXPECT_EQ(hard.commit, raft::offset(slot == 0 ? 50 : 60)) << "damaged slot " << slot;
    std::filesystem::copy_file(copy, path, std::filesystem::copy_options::overwrite_existing);
  }
}

// The slot holding the last synced state is never written over by unsynced writes: a power
// loss may lose or tear them, and the synced term and vote must survive that.
TEST_F(StateStoreTest, UnsyncedWritesNeverReplaceTheLastSyncedSlot) {
  auto store = open();
  store->save(with_hard(store->state(), 7, 2, 10), {});
  ring->drain();
  const auto path = dir / "raft_state";
  auto read_slots = [&] {
    std::vector<std::byte> bytes(2 * raft_state_store::slot_bytes);
    const int fd = ::open(path.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
    return bytes;
  };
  const auto synced = read_slots();
  int synced_slot = -1;
  for (int i = 0; i < 2; ++i) {
    raft_persistent_state s;
    uint64_t seq = 0;
    if (decode_raft_state(std::span(synced).subspan(i * raft_state_store::slot_bytes,
                                                    raft_state_store::slot_bytes),
                          s, seq) &&
        s.hard.commit == raft::offset(10))
      synced_slot = i;
  }
  ASSERT_GE(synced_slot, 0);
  for (int64_t commit : {20, 30, 40}) {
    store->stage(with_hard(store->state(), 7, 2, commit));
    store->write_staged();
    ring->drain();
    const auto now = read_slots();
    const auto at = static_cast<std::ptrdiff_t>(synced_slot * raft_state_store::slot_bytes);
    EXPECT_TRUE(std::equal(synced.begin() + at, synced.begin() + at + raft_state_store::slot_bytes,
                           now.begin() + at))
        << "an unsynced write of commit " << commit << " replaced the synced slot";
    EXPECT_EQ(on_disk().commit, raft::offset(commit));
  }
}

}  // namespace
TEST_F(StateStoreTest, AStateOfAnotherGroupIsRefusedAndAnOlderOneAdoptsItsGroup) {
  // A broker that was down while a topic was deleted and created again under the same name
  // finds the old replica's state under the new group's log name.
  initial.group = 7;
  {
    auto store = open();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->state().group, 7u);
  }
  EXPECT_EQ(raft_state_store::stored_group(dir.string()), std::optional<uint64_t>(7));
  initial.group = 9;
  auto refused = raft_state_store::open(dir.string(), *ring, initial);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.err().code, engine::errc::already_exists);
  EXPECT_NE(refused.err().describe().find("group 7, not to group 9"), std::string::npos)
      << refused.err().describe();

  // A state written before groups were recorded (0 there) takes the group that opens it, and
  // keeps it from its next save on.
  std::filesystem::remove_all(dir / "raft_state");
  initial.group = 0;
  open().reset();
  EXPECT_EQ(raft_state_store::stored_group(dir.string()), std::optional<uint64_t>(0));
  initial.group = 9;
  auto store = open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->state().group, 9u);
  store->save(with_hard(store->state(), 2, 1, 0), nullptr);
  ring->drain();
  store.reset();
  EXPECT_EQ(raft_state_store::stored_group(dir.string()), std::optional<uint64_t>(9));
  EXPECT_EQ(raft_state_store::stored_group((dir / "nowhere").string()), std::nullopt);
}

}  // namespace keel::server

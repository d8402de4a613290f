// A shard runs its io_context on its own thread and receives its ring's disk completions
// through the eventfd: a log appended on the shard becomes durable without anyone polling.
#include "keel/server/shard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>

#include "keel/engine/log.h"

namespace keel::server {
namespace {

TEST(shard, disk_completions_arrive_through_the_event_loop) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("keel-shard-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  shard s(0, std::chrono::milliseconds(5));
  s.start();
  std::promise<int64_t> durable;
  std::unique_ptr<engine::log> l;
  s.post([&] {
    ASSERT_TRUE(s.on_shard_thread());
    auto opened = engine::log::open(dir.string(), engine::log_config{}, s.ring());
    ASSERT_TRUE(opened.ok());
    l = std::move(opened).value();
    const std::string text = "through the shard";
    engine::batch_spec b;
    b.term = engine::term_id(1);
    b.payload = std::as_bytes(std::span(text));
    auto r = l->append(b, [&](const engine::result<engine::append_ack>& ack) {
      ASSERT_TRUE(ack.ok());
      EXPECT_TRUE(ack->durable);
      durable.set_value(ack->last.value());
    });
    ASSERT_TRUE(r.ok());
  });
  auto f = durable.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(f.get(), 0);
  s.stop([&] {
    ASSERT_TRUE(l->close().ok());
    l.reset();
  });
  std::filesystem::remove_all(dir);
}

TEST(shard, ticks_run_on_the_shard_thread_and_posts_cross_threads) {
  shard s(3, std::chrono::milliseconds(1));
  std::atomic<int> ticks{0};
  std::atomic<bool> wrong_thread{false};
  s.on_tick([&] {
    if (!s.on_shard_thread()) wrong_thread = true;
    ++ticks;
  });
  s.start();
  std::promise<void> seen;
  s.post([&] { seen.set_value(); });
  ASSERT_EQ(seen.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (ticks < 5 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.stop();
  EXPECT_GE(ticks.load(), 5);
  EXPECT_FALSE(wrong_thread.load());
}

}  // namespace
}  // namespace keel::server

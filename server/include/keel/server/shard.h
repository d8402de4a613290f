// shard: one thread of a broker, with its own asio::io_context and its own io_ring.
//
// Everything a shard owns (partition logs, Raft groups, fetch waiters) is touched only on its
// thread. The ring's completions reach the io_context through the ring's eventfd, so the thread
// never blocks in the ring: it waits in the io_context for sockets, timers and disk alike. Other
// threads reach a shard only by post(), never by sharing a lock.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "keel/engine/io_ring.h"

namespace keel::server {

class shard {
 public:
  using tick_handler = std::function<void()>;

  // Creates the ring and the io_context; the thread starts with start(). Throws on failure
  // (start-up only).
  shard(unsigned id, std::chrono::milliseconds tick_interval, unsigned ring_entries = 1024);
  ~shard();
  shard(const shard&) = delete;
  shard& operator=(const shard&) = delete;

  unsigned id() const { return id_; }
  boost::asio::io_context& io() { return io_; }
  engine::io_ring& ring() { return *ring_; }

  // Runs `fn` on every tick of this shard's timer (Raft ticks, log flush timers).
  void on_tick(tick_handler fn) { tick_handlers_.push_back(std::move(fn)); }
  // Runs `fn` on this shard's thread. Safe from any thread.
  void post(std::function<void()> fn);
  // True on this shard's own thread.
  bool on_shard_thread() const { return std::this_thread::get_id() == thread_id_; }

  void start();
  // Stops the io_context after running `before_stop` on the shard thread; joins the thread.
  void stop(std::function<void()> before_stop = {});

  uint64_t ticks() const { return ticks_; }

 private:
  void wait_for_completions();
  void schedule_tick();

  unsigned id_;
  std::chrono::milliseconds tick_interval_;
  boost::asio::io_context io_;
  std::unique_ptr<engine::io_ring> ring_;
  boost::asio::posix::stream_descriptor completions_;
  boost::asio::steady_timer tick_timer_;
  std::vector<tick_handler> tick_handlers_;
  std::thread thread_;
  std::thread::id thread_id_;
  uint64_t ticks_ = 0;
  bool stopping_ = false;
};

}  // namespace keel::server

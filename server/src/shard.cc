#include "keel/server/shard.h"

#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <stdexcept>

namespace keel::server {

namespace asio = boost::asio;

namespace {
std::unique_ptr<engine::io_ring> make_ring(unsigned entries) {
  auto r = engine::io_ring::create(entries);
  if (!r) throw std::runtime_error("shard: cannot create its io_uring: " + r.err().describe());
  return std::move(r).value();
}
}  // namespace

shard::shard(unsigned id, std::chrono::milliseconds tick_interval, unsigned ring_entries)
    : id_(id),
      tick_interval_(tick_interval),
      ring_(make_ring(ring_entries)),
      completions_(io_, ::dup(ring_->event_fd())),
      tick_timer_(io_) {
  // Appends only stage their bytes (engine/log.h): once a turn of the loop has staged some, hand
  // them to the kernel at the end of the turn, after the handlers already queued, so every
  // append of the turn leaves in one write.
  ring_->set_staged_listener([this] {
    asio::post(io_, [this] {
      if (!stopping_) ring_->submit();
    });
  });
}

shard::~shard() {
  stop();
}

void shard::start() {
  wait_for_completions();
  schedule_tick();
  thread_ = std::thread([this] {
    thread_id_ = std::this_thread::get_id();
    io_.run();
  });
}

void shard::post(std::function<void()> fn) {
  asio::post(io_, std::move(fn));
}

void shard::wait_for_completions() {
  completions_.async_wait(
      asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec || stopping_) return;
        uint64_t count;
        // Reset the eventfd's counter, then run every completion there is.
        while (::read(completions_.native_handle(), &count, sizeof count) < 0 && errno == EINTR) {
        }
        ring_->poll();
        wait_for_completions();
      });
}

void shard::schedule_tick() {
  tick_timer_.expires_after(tick_interval_);
  tick_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    ++ticks_;
    for (auto& fn : tick_handlers_)
      fn();
    ring_->poll();  // completions that raced the eventfd wait
    schedule_tick();
  });
}

void shard::stop(std::function<void()> before_stop) {
  if (!thread_.joinable()) return;
  post([this, before_stop = std::move(before_stop)] {
    if (before_stop) before_stop();
    stopping_ = true;
    ring_->drain();  // no operation may complete into freed memory
    boost::system::error_code ignored;
    completions_.cancel(ignored);
    tick_timer_.cancel();
    io_.stop();
  });
  thread_.join();
}

}  // namespace keel::server

#include "keel/engine/segment_cache.h"

#include "keel/engine/segment.h"

namespace keel::engine {

void segment_cache::touch(segment* s) {
  KEEL_ASSERT(!s->active(), "only closed segments are cached");
  if (auto it = where_.find(s); it != where_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.push_front(s);
  where_[s] = lru_.begin();
  while (lru_.size() > capacity_ && lru_.size() > 1) {
    segment* victim = lru_.back();
    lru_.pop_back();
    where_.erase(victim);
    victim->unmap();
  }
}

void segment_cache::forget(segment* s) {
  if (auto it = where_.find(s); it != where_.end()) {
    lru_.erase(it->second);
    where_.erase(it);
  }
}

}  // namespace keel::engine

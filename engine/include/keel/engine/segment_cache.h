// segment_cache: bounds how many closed segments keep their files mapped, across every log of
// one thread. Closed segments are mapped on first read and unmapped least-recently-used first;
// a reader's views keep their own reference to the pages, so eviction never invalidates them.
#pragma once

#include <cstddef>
#include <list>
#include <unordered_map>

namespace keel::engine {

class segment;

class segment_cache {
 public:
  explicit segment_cache(size_t mapped_segments_max) : capacity_(mapped_segments_max) {}
  // `s` (mapped, closed) was used now; unmaps the least recently used beyond the bound.
  void touch(segment* s);
  // `s` is going away or becoming active: stop tracking it.
  void forget(segment* s);
  size_t mapped() const { return lru_.size(); }

 private:
  size_t capacity_;
  std::list<segment*> lru_;  // most recent first
  std::unordered_map<segment*, std::list<segment*>::iterator> where_;
};

}  // namespace keel::engine

// raft_log: raft's read-only log port (raft::log_reader) over a partition's engine log.
//
// Offsets and terms map one to one (raft::offset == engine::offset: the Kafka offset); a batch's
// engine type byte is its raft::batch_type. The term before the log start and the configuration
// batches come from the group's raft_state_store, so neither needs a scan of the log.
#pragma once

#include <algorithm>

#include "keel/engine/log.h"
#include "keel/raft/log.h"
#include "keel/server/raft_state_store.h"

namespace keel::server {

inline engine::offset to_engine(raft::offset o) {
  return engine::offset(o.value());
}
inline raft::offset to_raft(engine::offset o) {
  return raft::offset(o.value());
}

class raft_log final : public raft::log_reader {
 public:
  raft_log(const engine::log& log, const raft_state_store& state) : log_(log), state_(state) {}

  // The raft state's record of the log start moves first (a compaction or reset saves it, then
  // truncates the log): from then on the record speaks for the log start, as term_at(start - 1)
  // already does.
  raft::offset first_offset() const override {
    return std::max(to_raft(log_.log_start()), state_.state().log_start);
  }
  raft::offset last_offset() const override { return to_raft(log_.appended_offset()); }
  raft::result<raft::term_id> term_at(raft::offset at) const override;
  raft::result<std::vector<raft::batch>> read(raft::offset from, raft::offset to,
                                              uint64_t max_bytes) const override;
  std::vector<raft::batch> config_batches(raft::offset from, raft::offset to) const override;

 private:
  const engine::log& log_;
  const raft_state_store& state_;
};

}  // namespace keel::server

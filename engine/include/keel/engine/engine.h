// The public header set of Keel's storage engine, for programs that embed it:
//   io_ring.h     the per-thread io_uring that carries every write and fdatasync
//   log.h         a partition log: append, read, truncate, retention, close
//   log_config.h  segment size, index interval, flush policy, retention, page-cache bound
//   log_manager.h every log under one data directory, one io_ring per thread
//   result.h      errors as values
//   types.h       offset, term_id, timestamp_ms
#pragma once

#include "keel/engine/batch_format.h"
#include "keel/engine/io_ring.h"
#include "keel/engine/log.h"
#include "keel/engine/log_config.h"
#include "keel/engine/log_manager.h"
#include "keel/engine/result.h"
#include "keel/engine/types.h"

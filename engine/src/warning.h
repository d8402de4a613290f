// warning: how the engine reports a fault it handled (a cut tail, a stray file, a failed cut of
// an index): one line on stderr, prefixed so an operator can grep for it.
#pragma once

#include <cstdio>
#include <string>

namespace keel::engine {

inline void warn(const std::string& message) {
  std::fprintf(stderr, "keel: warning: %s\n", message.c_str());
}

}  // namespace keel::engine

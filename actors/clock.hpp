#pragma once
// The clock of cell timings (cellDone started/finished) across actors.

#include <chrono>
#include <cstdint>

namespace kvflow {

/// Monotonic nanoseconds; only differences are meaningful.
inline std::uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace kvflow

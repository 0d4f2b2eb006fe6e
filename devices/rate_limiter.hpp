#pragma once
// A token bucket on real bytes: paces reads and writes of a tier to a link's
// bandwidth (1, 10, 25, 40 Gbit/s ...) while the bytes still move.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace kvflow::devices {

/// Paces byte transfers to `bytes_per_second`. Thread-safe: concurrent callers
/// share one budget. A rate of 0 means unlimited.
class rate_limiter {
 public:
  using clock = std::chrono::steady_clock;

  /// `burst_bytes` is the credit an idle limiter may accumulate. Lateness of
  /// up to 50 ms between calls is caught up (a 50 ms bucket).
  explicit rate_limiter(double bytes_per_second = 0, std::size_t burst_bytes = 0);

  /// Bytes per second of a link of `gbit` Gbit/s (1 Gbit = 1e9 bits).
  static double gbit_per_s(double gbit) { return gbit * 1e9 / 8; }

  /// Changes the rate (0 = unlimited); takes effect for the next acquire.
  void set_rate(double bytes_per_second);
  double rate() const;

  /// Blocks the calling thread until `bytes` fit the set rate, counting them
  /// as moved when it returns. Call it once per real transfer of that size.
  /// Never call it from an actor's thread: tier I/O runs on its own threads.
  void acquire(std::size_t bytes);

  /// Total bytes that went through acquire.
  std::uint64_t total_bytes() const;

 private:
  mutable std::mutex mutex_;
  double rate_;
  std::size_t burst_;
  clock::time_point next_;  // when the bytes granted so far are due at the set rate
  std::uint64_t total_ = 0;
  bool started_ = false;  // the first acquire starts the clock
};

}  // namespace kvflow::devices

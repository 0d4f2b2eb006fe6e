#pragma once
// A link's clock on real bytes: paces reads and writes of a tier to a link's
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

  /// `burst_bytes` is the credit an idle link has when a transfer starts (0:
  /// none; a real link carries no more than its rate however long it idled).
  explicit rate_limiter(double bytes_per_second = 0, std::size_t burst_bytes = 0);

  /// Bytes per second of a link of `gbit` Gbit/s (1 Gbit = 1e9 bits).
  static double gbit_per_s(double gbit) { return gbit * 1e9 / 8; }

  /// Changes the rate (0 = unlimited); takes effect for the next reservation.
  void set_rate(double bytes_per_second);
  double rate() const;

  /// Books `bytes` on the link, after every transfer booked before: returns
  /// when they will have crossed it at the set rate (now if unlimited).
  /// Book before doing the real transfer and wait for the returned time
  /// after it, so that the work overlaps the link time as on a real link.
  clock::time_point reserve(std::size_t bytes);

  /// reserve() then wait: blocks the calling thread until `bytes` fit the
  /// set rate. Never call it from an actor's thread: tier I/O runs on its
  /// own threads.
  void acquire(std::size_t bytes);

  /// Total bytes booked (reserve() and acquire()).
  std::uint64_t total_bytes() const;

 private:
  mutable std::mutex mutex_;
  double rate_;
  std::size_t burst_;
  clock::time_point next_;  // when the bytes booked so far will have crossed at the set rate
  std::uint64_t total_ = 0;
};

}  // namespace kvflow::devices

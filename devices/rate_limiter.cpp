#include "devices/rate_limiter.hpp"

#include <algorithm>
#include <thread>

namespace kvflow::devices {
namespace {
// Longer than any scheduling hiccup of a busy thread, shorter than a pause
// between transfers.
constexpr std::chrono::milliseconds idle_gap{50};
}  // namespace

rate_limiter::rate_limiter(double bytes_per_second, std::size_t burst_bytes)
    : rate_(bytes_per_second), burst_(burst_bytes), next_(clock::now()) {}

void rate_limiter::set_rate(double bytes_per_second) {
  std::lock_guard<std::mutex> lock(mutex_);
  rate_ = bytes_per_second;
  started_ = false;
}

double rate_limiter::rate() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rate_;
}

std::uint64_t rate_limiter::total_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return total_;
}

void rate_limiter::acquire(std::size_t bytes) {
  clock::time_point due;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    total_ += bytes;
    if (rate_ <= 0) return;
    // Virtual clock: `next_` is when every byte granted so far would have
    // finished at the set rate. A caller that wakes late or spends time
    // between calls catches up (the limiter paces the sustained rate, not
    // each call); only after an idle gap does it restart from now, keeping at
    // most `burst_` credit, so a transfer measures bytes / rate.
    const auto now = clock::now();
    if (!started_ || now - next_ > idle_gap) {
      started_ = true;
      const auto credit = std::chrono::duration_cast<clock::duration>(
          std::chrono::duration<double>(static_cast<double>(burst_) / rate_));
      next_ = now - credit;
    }
    next_ +=
        std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(static_cast<double>(bytes) / rate_));
    due = next_;
  }
  // Pacing a real transfer: the caller's bytes may not be counted as moved
  // before the link could have carried them.
  std::this_thread::sleep_until(due);
}

}  // namespace kvflow::devices

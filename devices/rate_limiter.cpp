#include "devices/rate_limiter.hpp"

#include <thread>

namespace kvflow::devices {
namespace {
// A caller that books its next transfer right after waking from the last one
// is that much late without the link having idled (thread wake-up latency);
// longer gaps are idle link time and give no credit.
constexpr std::chrono::microseconds wake_slack{200};
}  // namespace

rate_limiter::rate_limiter(double bytes_per_second, std::size_t burst_bytes)
    : rate_(bytes_per_second), burst_(burst_bytes), next_(clock::now()) {}

void rate_limiter::set_rate(double bytes_per_second) {
  std::lock_guard<std::mutex> lock(mutex_);
  rate_ = bytes_per_second;
}

double rate_limiter::rate() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rate_;
}

std::uint64_t rate_limiter::total_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return total_;
}

rate_limiter::clock::time_point rate_limiter::reserve(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  total_ += bytes;
  const auto now = clock::now();
  if (rate_ <= 0) return now;
  // Virtual clock: `next_` is when every byte booked so far will have
  // crossed the link. A caller up to wake_slack past it is one waking from
  // its last transfer and catches up; later than that the link idled, and it
  // starts again from now (less the configured burst, 0 by default): an idle
  // link banks no credit, so the transfer measures at least bytes / rate.
  if (now - next_ > wake_slack)
    next_ = now - std::chrono::duration_cast<clock::duration>(
                      std::chrono::duration<double>(static_cast<double>(burst_) / rate_));
  next_ +=
      std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(static_cast<double>(bytes) / rate_));
  return next_;
}

void rate_limiter::acquire(std::size_t bytes) {
  // Pacing a real transfer: the caller's bytes may not be counted as moved
  // before the link could have carried them.
  std::this_thread::sleep_until(reserve(bytes));
}

}  // namespace kvflow::devices

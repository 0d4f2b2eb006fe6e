#pragma once
// Admission control of `kvflow serve`: at most `max_running` requests run in
// the runtime at once, at most `max_waiting` more wait for a slot in arrival
// order, and anything beyond is refused (429) instead of queueing without
// bound.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

namespace kvflow::frontend {

class admission {
 public:
  enum class outcome { admitted, queue_full, closed };

  /// max_running >= 1; max_waiting may be 0 (refuse whenever all slots run).
  admission(std::size_t max_running, std::size_t max_waiting);

  /// Takes a running slot, waiting for one (first come, first served) when
  /// all are taken and the queue has room. Thread-safe.
  outcome acquire();
  /// Gives a slot back (once per admitted acquire).
  void release();
  /// Refuses every later acquire and wakes the waiting ones with `closed`.
  void close();
  /// Waits until nothing runs, up to `timeout`; true when idle.
  bool wait_idle(std::chrono::steady_clock::duration timeout);

  std::size_t running() const;
  std::size_t waiting() const;
  std::size_t max_running() const { return max_running_; }
  std::size_t max_waiting() const { return max_waiting_; }

 private:
  const std::size_t max_running_, max_waiting_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::size_t running_ = 0;
  std::deque<std::uint64_t> queue_;  // tickets of waiting acquires, oldest first
  std::uint64_t next_ticket_ = 0;
  bool closed_ = false;
};

}  // namespace kvflow::frontend

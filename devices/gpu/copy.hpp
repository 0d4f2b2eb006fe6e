#pragma once
// Host <-> device copies of chunk spans on a caller's stream; completion is an
// event the caller polls, so actors never block on a copy.

#include <cstddef>

#include <cuda_runtime.h>

namespace kvflow::devices {

/// Completion of one enqueued copy. Move-only; owns its event. A block counts
/// as loaded only once ready() is true: a block read before its copy's
/// stream finished is garbled output.
class copy_ticket {
 public:
  copy_ticket() = default;
  explicit copy_ticket(cudaEvent_t event) : event_(event) {}
  ~copy_ticket();
  copy_ticket(copy_ticket&& other) noexcept;
  copy_ticket& operator=(copy_ticket&& other) noexcept;
  copy_ticket(const copy_ticket&) = delete;
  copy_ticket& operator=(const copy_ticket&) = delete;

  /// Non-blocking poll; true once the copy finished (and for an empty ticket).
  /// Throws kvflow::error(cuda_failure) if the stream failed.
  bool ready() const;
  /// Blocks until the copy finished (tests, benchmarks; never in actors).
  void wait() const;
  cudaEvent_t event() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

/// Enqueues one cudaMemcpyAsync of `bytes` from host span `src` (pinned for
/// full speed) to device span `dst` on `stream` and records an event after it.
copy_ticket copy_to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t stream);
/// The same, device to host.
copy_ticket copy_to_host(void* dst, const void* src, std::size_t bytes, cudaStream_t stream);

}  // namespace kvflow::devices

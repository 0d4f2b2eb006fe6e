#pragma once
// The one way kvflow copies between host and device: asynchronous copies on
// a caller's stream, and tickets that say when they are done, so actors never
// block on a copy. CUDA builds only.

#include <cstddef>

#include <cuda_runtime_api.h>

namespace kvflow::platform {

/// Completion of the work enqueued on a stream up to a point (a copy, or
/// whatever came before it). Move-only; owns its event. A block counts as
/// loaded only once ready() is true: a block read before its copy's stream
/// finished is garbled output.
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
  /// Blocks until the copy finished (tests, benchmarks, synchronous APIs;
  /// never in actors).
  void wait() const;
  /// Makes work enqueued on `stream` from now on wait for this ticket,
  /// without blocking the host.
  void order_before(cudaStream_t stream) const;
  cudaEvent_t event() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

/// A ticket for everything enqueued on `stream` so far.
copy_ticket ticket_after(cudaStream_t stream);

/// Enqueues one cudaMemcpyAsync of `bytes` from `src` to `dst` on `stream`
/// (`kind` says which sides are host; host memory pinned for full speed),
/// without a ticket: for callers that order by stream or record their own
/// event. Throws kvflow::error(cuda_failure) naming the bytes and direction.
void enqueue_copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);

/// Enqueues one strided cudaMemcpy2DAsync: `height` rows of `width` bytes,
/// `src_pitch` bytes apart in `src` and `dst_pitch` apart in `dst`. Throws
/// as enqueue_copy does.
void enqueue_copy_2d(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch, std::size_t width,
                     std::size_t height, cudaMemcpyKind kind, cudaStream_t stream);

/// enqueue_copy from host to device, then ticket_after(stream).
copy_ticket copy_to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t stream);
/// The same, device to host.
copy_ticket copy_to_host(void* dst, const void* src, std::size_t bytes, cudaStream_t stream);

/// enqueue_copy on the legacy default stream, then waits until the bytes
/// landed: for tests, benchmarks and set-up code that need the data now
/// (never in actors). Throws as enqueue_copy does, or when the stream failed.
void copy_now(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);

}  // namespace kvflow::platform

#include "devices/host/pinned_buffer.hpp"

#include <atomic>
#include <cstdlib>
#include <string>
#include <utility>

#include "messages/error.hpp"
#include "messages/log.hpp"
#include "platform/aligned_heap.hpp"

#ifdef KVFLOW_HAVE_CUDA
#include "platform/cuda.hpp"
#include "platform/cuda_memory.hpp"
#endif

namespace kvflow::devices {

namespace {

std::atomic<std::int64_t> live_buffers{0}, live_buffer_bytes{0};

bool free_aligned(void* p) noexcept {
  platform::aligned_heap_free(p);
  return true;
}

}  // namespace

std::int64_t pinned_buffer::live_count() { return live_buffers.load(); }
std::int64_t pinned_buffer::live_bytes() { return live_buffer_bytes.load(); }

pinned_buffer::live_token::live_token(std::size_t bytes) : bytes_(bytes) {
  ++live_buffers;
  live_buffer_bytes += static_cast<std::int64_t>(bytes);
}

pinned_buffer::live_token::~live_token() {
  if (bytes_ == 0) return;
  --live_buffers;
  live_buffer_bytes -= static_cast<std::int64_t>(bytes_);
}

pinned_buffer::live_token::live_token(live_token&& other) noexcept : bytes_(std::exchange(other.bytes_, 0)) {}

pinned_buffer::live_token& pinned_buffer::live_token::operator=(live_token&& other) noexcept {
  if (this != &other) {
    live_token gone(std::move(*this));
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

pinned_buffer::pinned_buffer(std::size_t bytes, bool page_lock) {
  (void)page_lock;  // without CUDA there is nothing to lock with
  if (bytes == 0) return;
#ifdef KVFLOW_HAVE_CUDA
  // No device is a normal state (CPU CI): aligned memory serves it.
  static const bool have_device = platform::cuda_device_available();
  if (page_lock && have_device) {
    if (void* p = platform::try_pinned_alloc(bytes)) {
      mem_ = platform::owned_memory(p, bytes, platform::pinned_free);
      pinned_ = true;
      live_ = live_token(bytes);
      return;
    }
  }
#endif
  // Not posix_memalign: disk stores make one per request, and glibc hardly
  // reuses memalign'd memory (aligned_heap.hpp).
  void* p = platform::aligned_heap_alloc(align_up(bytes), io_alignment);
  if (p == nullptr) throw error(errc::io_failure, "pinned_buffer: cannot allocate " + std::to_string(bytes) + " bytes");
  mem_ = platform::owned_memory(p, bytes, free_aligned);
  live_ = live_token(bytes);
}

}  // namespace kvflow::devices

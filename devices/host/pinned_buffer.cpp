#include "devices/host/pinned_buffer.hpp"

#include <cstdlib>
#include <string>
#include <utility>

#include "messages/error.hpp"
#include "messages/log.hpp"

#ifdef KVFLOW_HAVE_CUDA
#include "platform/cuda.hpp"
#include "platform/cuda_memory.hpp"
#endif

namespace kvflow::devices {

pinned_buffer::pinned_buffer(std::size_t bytes, bool page_lock) : size_(bytes) {
  (void)page_lock;  // without CUDA there is nothing to lock with
  if (bytes == 0) return;
#ifdef KVFLOW_HAVE_CUDA
  // No device is a normal state (CPU CI): aligned memory serves it.
  static const bool have_device = platform::cuda_device_available();
  if (page_lock && have_device) {
    if (void* p = platform::try_pinned_alloc(bytes)) {
      data_ = static_cast<std::uint8_t*>(p);
      pinned_ = true;
      return;
    }
  }
#endif
  void* p2 = nullptr;
  if (posix_memalign(&p2, io_alignment, align_up(bytes)) != 0 || p2 == nullptr)
    throw error(errc::io_failure, "pinned_buffer: cannot allocate " + std::to_string(bytes) + " bytes");
  data_ = static_cast<std::uint8_t*>(p2);
}

pinned_buffer::~pinned_buffer() { release(); }

pinned_buffer::pinned_buffer(pinned_buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      pinned_(std::exchange(other.pinned_, false)) {}

pinned_buffer& pinned_buffer::operator=(pinned_buffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    pinned_ = std::exchange(other.pinned_, false);
  }
  return *this;
}

void pinned_buffer::release() noexcept {
  if (data_ == nullptr) return;
#ifdef KVFLOW_HAVE_CUDA
  if (pinned_) {
    platform::pinned_free(data_);
    data_ = nullptr;
    return;
  }
#endif
  std::free(data_);
  data_ = nullptr;
}

}  // namespace kvflow::devices

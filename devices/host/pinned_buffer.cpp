#include "devices/host/pinned_buffer.hpp"

#include <cstdlib>
#include <string>

#include "messages/error.hpp"
#include "messages/log.hpp"

#ifdef KVFLOW_HAVE_CUDA
#include "platform/cuda.hpp"
#include "platform/cuda_memory.hpp"
#endif

namespace kvflow::devices {

namespace {

bool free_aligned(void* p) noexcept {
  std::free(p);
  return true;
}

}  // namespace

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
      return;
    }
  }
#endif
  void* p = nullptr;
  if (posix_memalign(&p, io_alignment, align_up(bytes)) != 0 || p == nullptr)
    throw error(errc::io_failure, "pinned_buffer: cannot allocate " + std::to_string(bytes) + " bytes");
  mem_ = platform::owned_memory(p, bytes, free_aligned);
}

}  // namespace kvflow::devices

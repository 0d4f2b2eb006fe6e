#pragma once
// The one owner of CUDA memory: device allocations and page-locked host
// buffers, for the engine, the GPU tier's pool, the host buffers of the tiers
// and the benchmarks alike. Names no CUDA type. CUDA builds only.
//
// Errors say what was asked for: running out of memory is
// kvflow::error(capacity_exceeded) naming the bytes, the device and what the
// device has free, so a request that cannot get its memory fails with a
// reason and leaves everything else usable; any other failure is
// (cuda_failure).

#include <cstddef>

#include "platform/owned_memory.hpp"

namespace kvflow::platform {

/// The calling thread's current CUDA device (where device -1 allocates).
int current_cuda_device();

/// `bytes` (at least 1) of device memory on `device` (-1: the current
/// device), which becomes the calling thread's current device. Free it with
/// device_free. Throws as the header says.
void* device_alloc(std::size_t bytes, int device = -1);

/// Frees device_alloc's memory (nullptr: nothing). cudaFree waits for the
/// device: free only memory no stream still uses. Logs a failure (logger
/// "cuda") and returns false instead of throwing, so destructors may call it.
bool device_free(void* p) noexcept;

/// `bytes` (at least 1) of page-locked host memory, portable across devices
/// (full-speed async copies). Free it with pinned_free. Throws as the header
/// says.
void* pinned_alloc(std::size_t bytes);

/// pinned_alloc that logs a failure and returns nullptr, for callers with a
/// fallback (pageable memory).
void* try_pinned_alloc(std::size_t bytes) noexcept;

/// Frees pinned_alloc's memory (nullptr: nothing); logs a failure.
bool pinned_free(void* p) noexcept;

/// Device memory owned: device_alloc on construction, device_free on
/// destruction.
class device_buffer : public owned_memory {
 public:
  device_buffer() = default;
  /// device_alloc(bytes, device).
  explicit device_buffer(std::size_t bytes, int device = -1)
      : owned_memory(device_alloc(bytes, device), bytes, device_free) {}
};

/// Page-locked host memory owned: pinned_alloc on construction, pinned_free
/// on destruction.
class pinned_host_buffer : public owned_memory {
 public:
  pinned_host_buffer() = default;
  /// pinned_alloc(bytes).
  explicit pinned_host_buffer(std::size_t bytes) : owned_memory(pinned_alloc(bytes), bytes, pinned_free) {}
};

}  // namespace kvflow::platform

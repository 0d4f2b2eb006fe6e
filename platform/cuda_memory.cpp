#include "platform/cuda_memory.hpp"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

#include "messages/error.hpp"
#include "messages/log.hpp"
#include "platform/cuda_check.hpp"

namespace kvflow::platform {
namespace {

std::string gib(std::size_t bytes) {
  char text[48];
  std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / static_cast<double>(1ull << 30));
  return text;
}

// Out of memory is the caller's capacity running out (capacity_exceeded);
// anything else is a CUDA failure. Either way the error is cleared, so the
// next call is not blamed for it.
[[noreturn]] void alloc_failed(cudaError_t e, const std::string& what) {
  cudaGetLastError();
  const bool oom = e == cudaErrorMemoryAllocation;
  throw error(oom ? errc::capacity_exceeded : errc::cuda_failure,
              what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

}  // namespace

int current_cuda_device() {
  int d = 0;
  KVFLOW_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void* device_alloc(std::size_t bytes, int device) {
  if (device < 0) {
    device = current_cuda_device();
  } else if (const cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    alloc_failed(e, "device_alloc: " + std::to_string(bytes) + " bytes on CUDA device " + std::to_string(device));
  }
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<std::size_t>(bytes, 1));
  if (e == cudaSuccess) return p;
  std::string what =
      "device_alloc: " + std::to_string(bytes) + " bytes (" + gib(bytes) + ") on CUDA device " + std::to_string(device);
  std::size_t free_b = 0, total_b = 0;
  cudaGetLastError();
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) what += " (" + gib(free_b) + " free of " + gib(total_b) + ")";
  alloc_failed(e, what);
}

bool device_free(void* p) noexcept { return p == nullptr || KVFLOW_CUDA_OK(cudaFree(p)); }

void* pinned_alloc(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, std::max<std::size_t>(bytes, 1), cudaHostAllocPortable);
  if (e == cudaSuccess) return p;
  alloc_failed(e, "pinned_alloc: " + std::to_string(bytes) + " bytes (" + gib(bytes) + ") of page-locked host memory");
}

void* try_pinned_alloc(std::size_t bytes) noexcept {
  void* p = nullptr;
  if (KVFLOW_CUDA_OK(cudaHostAlloc(&p, std::max<std::size_t>(bytes, 1), cudaHostAllocPortable))) return p;
  return nullptr;
}

bool pinned_free(void* p) noexcept { return p == nullptr || KVFLOW_CUDA_OK(cudaFreeHost(p)); }

}  // namespace kvflow::platform

#include "platform/cuda.hpp"

#ifdef KVFLOW_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvflow::platform {

bool built_with_cuda() noexcept {
#ifdef KVFLOW_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() noexcept {
#ifdef KVFLOW_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) == cudaSuccess) return n;
  cudaGetLastError();  // no driver or no device: not sticky, clear it
#endif
  return 0;
}

}  // namespace kvflow::platform

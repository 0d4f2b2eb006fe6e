#include "devices/gpu/cuda_check.hpp"

#include <string>

#include "messages/error.hpp"
#include "messages/log.hpp"

namespace kvflow::devices {

void cuda_check(cudaError_t status, const char* expr, const char* func, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw error(errc::cuda_failure, std::string(expr) + " failed in " + func + " (" + file + ":" + std::to_string(line) +
                                      "): " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
}

bool cuda_ok(cudaError_t status, const char* expr, const char* func, const char* file, int line) noexcept {
  if (status == cudaSuccess) return true;
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed
  try {
    logger("tiers")->warn("{} failed in {} ({}:{}): {}: {}", expr, func, file, line, cudaGetErrorName(status),
                          cudaGetErrorString(status));
  } catch (...) {
  }
  return false;
}

bool cuda_device_available() {
  int n = 0;
  return KVFLOW_CUDA_OK(cudaGetDeviceCount(&n)) && n > 0;
}

}  // namespace kvflow::devices

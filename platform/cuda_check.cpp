#include "platform/cuda_check.hpp"

#include "messages/error.hpp"
#include "messages/log.hpp"

namespace kvflow::platform {

std::string call_site(const char* expr, const char* func, const char* file, int line) {
  return std::string(expr) + " in " + func + " (" + file + ":" + std::to_string(line) + ")";
}

void cuda_check(cudaError_t status, const char* expr, const char* func, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw error(errc::cuda_failure,
              call_site(expr, func, file, line) + ": " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
}

bool cuda_ok(cudaError_t status, const char* expr, const char* func, const char* file, int line) noexcept {
  if (status == cudaSuccess) return true;
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed
  try {
    logger("cuda")->warn("{}: {}: {}", call_site(expr, func, file, line), cudaGetErrorName(status),
                         cudaGetErrorString(status));
  } catch (...) {
  }
  return false;
}

}  // namespace kvflow::platform

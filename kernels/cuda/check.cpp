#include "kernels/cuda/check.hpp"

#include "messages/error.hpp"

namespace kvflow::cuda {

void check_cublas(cublasStatus_t status, const char* expr, const char* func, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw error(errc::cuda_failure, platform::call_site(expr, func, file, line) + ": " + cublasGetStatusName(status));
}

}  // namespace kvflow::cuda

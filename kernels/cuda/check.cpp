#include "kernels/cuda/check.hpp"

#include <string>

#include "messages/error.hpp"

namespace kvflow::cuda {
namespace {

std::string where(const char* expr, const char* func, const char* file, int line) {
  return std::string(expr) + " in " + func + " (" + file + ":" + std::to_string(line) + ")";
}

}  // namespace

void check_cuda(cudaError_t status, const char* expr, const char* func, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw error(errc::cuda_failure,
              where(expr, func, file, line) + ": " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
}

void check_cublas(cublasStatus_t status, const char* expr, const char* func, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw error(errc::cuda_failure, where(expr, func, file, line) + ": " + cublasGetStatusName(status));
}

}  // namespace kvflow::cuda

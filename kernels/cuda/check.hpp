#pragma once
// One check macro family for CUDA runtime and cuBLAS/cuBLASLt calls. A
// failure throws kvflow::error(cuda_failure) naming the expression, the
// function, the file and the line. Host code only: device code never throws.

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace kvflow::cuda {

/// Throws kvflow::error(cuda_failure) when `status` is not cudaSuccess.
void check_cuda(cudaError_t status, const char* expr, const char* func, const char* file, int line);
/// Throws kvflow::error(cuda_failure) when `status` is not CUBLAS_STATUS_SUCCESS.
void check_cublas(cublasStatus_t status, const char* expr, const char* func, const char* file, int line);

}  // namespace kvflow::cuda

#define KVFLOW_CUDA_CHECK(expr) ::kvflow::cuda::check_cuda((expr), #expr, __func__, __FILE__, __LINE__)
#define KVFLOW_CUBLAS_CHECK(expr) ::kvflow::cuda::check_cublas((expr), #expr, __func__, __FILE__, __LINE__)
/// After a launcher: checks its returned status and the launch error.
#define KVFLOW_LAUNCH_CHECK(expr) ::kvflow::cuda::check_cuda((expr), #expr, __func__, __FILE__, __LINE__)

#pragma once
// kvflow's CUDA check family (platform/cuda_check.hpp: KVFLOW_CUDA_CHECK,
// KVFLOW_CUDA_OK) plus its cuBLAS/cuBLASLt member. A failure throws
// kvflow::error(cuda_failure) naming the expression, the function, the file
// and the line. Host code only: device code never throws.

#include <cublasLt.h>
#include <cublas_v2.h>

#include "platform/cuda_check.hpp"

namespace kvflow::cuda {

/// Throws kvflow::error(cuda_failure) when `status` is not CUBLAS_STATUS_SUCCESS.
void check_cublas(cublasStatus_t status, const char* expr, const char* func, const char* file, int line);

}  // namespace kvflow::cuda

#define KVFLOW_CUBLAS_CHECK(expr) ::kvflow::cuda::check_cublas((expr), #expr, __func__, __FILE__, __LINE__)
/// After a launcher: checks its returned status and the launch error.
#define KVFLOW_LAUNCH_CHECK(expr) KVFLOW_CUDA_CHECK(expr)

#pragma once
// The one check macro family for CUDA calls (kernels/cuda/check.hpp adds
// cuBLAS to it). A failure names the expression, the function, the file and
// the line. Host code only: device code never throws. CUDA builds only.

#include <string>

#include <cuda_runtime_api.h>

namespace kvflow::platform {

/// "expr in func (file:line)": where a failed call was made.
std::string call_site(const char* expr, const char* func, const char* file, int line);

/// Throws kvflow::error(errc::cuda_failure) when `status` is not cudaSuccess.
void cuda_check(cudaError_t status, const char* expr, const char* func, const char* file, int line);

/// The same check for destructors and fallbacks: logs the failure (logger
/// "cuda"), clears the error and returns false instead of throwing.
bool cuda_ok(cudaError_t status, const char* expr, const char* func, const char* file, int line) noexcept;

}  // namespace kvflow::platform

#define KVFLOW_CUDA_CHECK(expr) ::kvflow::platform::cuda_check((expr), #expr, __func__, __FILE__, __LINE__)
#define KVFLOW_CUDA_OK(expr) ::kvflow::platform::cuda_ok((expr), #expr, __func__, __FILE__, __LINE__)

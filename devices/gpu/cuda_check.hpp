#pragma once
// The one check macro of devices/ for CUDA runtime calls: a failure throws
// kvflow::error(cuda_failure) naming the expression, function, file and line.

#include <cuda_runtime.h>

namespace kvflow::devices {

/// Throws kvflow::error(errc::cuda_failure) when `status` is not cudaSuccess.
void cuda_check(cudaError_t status, const char* expr, const char* func, const char* file, int line);

/// The same check for destructors and fallbacks: logs the failure (logger
/// "tiers"), clears the error and returns false instead of throwing.
bool cuda_ok(cudaError_t status, const char* expr, const char* func, const char* file, int line) noexcept;

/// True when the CUDA runtime sees at least one device (CPU CI sees none).
bool cuda_device_available();

}  // namespace kvflow::devices

#define KVFLOW_CUDA_CHECK(expr) ::kvflow::devices::cuda_check((expr), #expr, __func__, __FILE__, __LINE__)
#define KVFLOW_CUDA_OK(expr) ::kvflow::devices::cuda_ok((expr), #expr, __func__, __FILE__, __LINE__)

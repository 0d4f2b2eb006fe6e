#pragma once
// RMSNorm over rows of the fp32 residual stream:
//   y = x / sqrt(mean(x^2) + eps) * w
// accumulated in fp32 with a fixed reduction order per row (one block per
// row), so a row's result never depends on how many rows a launch holds.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace kvflow::cuda {

/// bf16 output, the input of the next matrix product.
cudaError_t launch_rms_norm(const float* x,  // [rows][n]
                            const float* w,  // [n]
                            float eps, int rows, int n,
                            __nv_bfloat16* y,  // [rows][n]
                            cudaStream_t stream);

/// fp32 output (the final norm before the logits).
cudaError_t launch_rms_norm_f32(const float* x,  // [rows][n]
                                const float* w,  // [n]
                                float eps, int rows, int n,
                                float* y,  // [rows][n]
                                cudaStream_t stream);

}  // namespace kvflow::cuda

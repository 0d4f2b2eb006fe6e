#pragma once
// SwiGLU activation on the fused gate|up projection output:
//   out[t][i] = silu(gate[t][i]) * up[t][i], computed in fp32.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace kvflow::cuda {

cudaError_t launch_swiglu(const __nv_bfloat16* gate_up,  // [count][2 * inter]: gate columns, then up columns
                          int count, int inter,
                          __nv_bfloat16* out,  // [count][inter]
                          cudaStream_t stream);

}  // namespace kvflow::cuda

#pragma once
// Last-position logits: out[v] = dot(x, w[v]) over hidden, x already through
// the final RMSNorm; one warp per vocabulary row, fp32 accumulation.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace kvflow::cuda {

cudaError_t launch_logits(const float* x,          // [hidden]
                          const __nv_bfloat16* w,  // [vocab][hidden]
                          int vocab, int hidden,
                          float* out,  // [vocab]
                          cudaStream_t stream);

}  // namespace kvflow::cuda

#pragma once
// Embedding lookup: one row of the bf16 table per token into the fp32
// residual stream. Token ids outside [0, vocab) give zero rows (the engine
// rejects them on the host before launching).

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvflow::cuda {

cudaError_t launch_embedding(const std::int32_t* tokens,  // [count], device
                             int count,
                             const __nv_bfloat16* table,  // [vocab][hidden]
                             int vocab, int hidden,
                             float* out,  // [count][hidden]
                             cudaStream_t stream);

}  // namespace kvflow::cuda

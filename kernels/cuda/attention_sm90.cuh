#pragma once
// Hopper (sm_90a) prefill attention, head_dim 128: wgmma + warp
// specialisation + ping-pong softmax (FlashAttention-3's design). Same
// contract and the same invariance rule as launch_attention (attention.cuh);
// launch_attention picks it for head_dim 128 on a compute-capability-9.0
// device. Its bits differ from the mma.sync kernel's (other tiles, 128 keys
// wide), so one device always uses one of the two for a given head_dim.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/attention.cuh"

namespace kvflow::cuda {

/// True when the current device is compute capability 9.0 and this build
/// holds the sm_90a kernel (cached per device).
bool attention_sm90_available();

/// launch_attention for head_dim 128 on sm_90a (queries at pos0 + token), or
/// launch_attention_at with one split when `positions` (device, ascending)
/// is given; cudaErrorNotSupported when attention_sm90_available() is false.
cudaError_t launch_attention_sm90(const __nv_bfloat16* q,  // [count][heads * 128]
                                  int count, int pos0, const int* positions, const attn_block* blocks, int num_blocks,
                                  int layer, int heads, int kv_heads, float scale,
                                  __nv_bfloat16* out,  // [count][heads * 128]
                                  cudaStream_t stream);

}  // namespace kvflow::cuda

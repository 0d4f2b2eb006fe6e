#pragma once
// Hopper (sm_90a) prefill attention, head_dim 64 and 128: wgmma + warp
// specialisation + ping-pong softmax (FlashAttention-3's design). Same
// contract and the same invariance rule as launch_attention (attention.cuh);
// launch_attention picks it for those head dims on a compute-capability-9.0
// device. Its bits differ from the mma.sync kernel's (other tiles, 128 keys
// wide), so one device always uses one of the two for a given head_dim.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/attention.cuh"

namespace kvflow::cuda {

/// True when the current device is compute capability 9.0 and this build
/// holds the sm_90a kernel (cached per device).
bool attention_sm90_available();

/// The head dims the kernel is built for (64 and 128).
inline bool attention_sm90_supports(int head_dim) { return head_dim == 64 || head_dim == 128; }

/// launch_attention on sm_90a (queries at pos0 + token), or
/// launch_attention_at with one split when `positions` (device, ascending)
/// is given; cudaErrorNotSupported when attention_sm90_available() is false,
/// cudaErrorInvalidValue for a head_dim it lacks.
cudaError_t launch_attention_sm90(const __nv_bfloat16* q,  // [count][heads * head_dim]
                                  int count, int pos0, const int* positions, const attn_block* blocks, int num_blocks,
                                  int layer, int heads, int kv_heads, int head_dim, float scale,
                                  __nv_bfloat16* out,  // [count][heads * head_dim]
                                  cudaStream_t stream);

}  // namespace kvflow::cuda

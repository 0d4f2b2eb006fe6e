#pragma once
// Moving cached K to a new position on the GPU (non-prefix reuse): one more
// RoPE rotation by the position delta, R(p + d) = R(d) R(p), applied in
// place to a KV block's K rows. CPU reference: kernels/cpu/rope_delta.hpp.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace kvflow::cuda {

/// Rotates K of tokens [token_begin, token_begin + count) in every layer of
/// a block by `delta` positions (HF rotate-half pairs; angle delta *
/// inv_freq[i] in fp32, sin/cos with full range reduction, as launch_qkv_rope).
/// Returns cudaErrorInvalidValue for a range outside the block.
cudaError_t launch_rope_delta(__nv_bfloat16* block,  // [layers][2][kv_heads][tokens][head_dim]
                              int layers, int kv_heads, int tokens, int head_dim, int token_begin, int count, int delta,
                              const float* inv_freq,  // [head_dim / 2], device
                              cudaStream_t stream);

}  // namespace kvflow::cuda

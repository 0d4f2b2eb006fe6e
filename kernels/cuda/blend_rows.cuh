#pragma once
// Row kernels of the document path on the GPU (non-prefix reuse,
// actors/document_cuda.hpp): CacheBlend's per-token deviation between a
// layer's recomputed and cached K and V, and the gather of selected rows of
// a hidden state. CPU counterparts: kernels/model/blend.cpp (add_deviation,
// the memcpy of rows in blend_prefill).

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace kvflow::cuda {

/// out[t] = sum over K and V, kv heads and head_dim of (now - cached)^2 in
/// fp32, for t in [0, tokens): both are one layer of a block,
/// [2][kv_heads][tokens][head_dim] bf16. Returns cudaErrorInvalidValue for
/// empty shapes.
cudaError_t launch_kv_deviation(const __nv_bfloat16* now, const __nv_bfloat16* cached, int kv_heads, int tokens,
                                int head_dim, float* out, cudaStream_t stream);

/// dst[i] = src[rows[i]] for i in [0, count), rows of `width` floats
/// (rows: device memory). Returns cudaErrorInvalidValue for empty shapes.
cudaError_t launch_gather_rows(const float* src, const int* rows, int count, int width, float* dst,
                               cudaStream_t stream);

}  // namespace kvflow::cuda

#pragma once
// Weights made on the device: deterministic uniform values from (seed,
// tensor id, element index) through splitmix64, so the large presets need no
// host copy. Also fills and the fp32 -> bf16 conversion used by uploads.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace kvflow::cuda {

/// p[i] = uniform in [-scale, scale), a function of (seed, tensor, i) only.
cudaError_t launch_fill_uniform(__nv_bfloat16* p, std::size_t n, std::uint64_t seed, std::uint64_t tensor, float scale,
                                cudaStream_t stream);
/// p[i] = value.
cudaError_t launch_fill(float* p, std::size_t n, float value, cudaStream_t stream);
/// dst[i] = bf16(src[i]), round to nearest even.
cudaError_t launch_to_bf16(const float* src, __nv_bfloat16* dst, std::size_t n, cudaStream_t stream);

}  // namespace kvflow::cuda

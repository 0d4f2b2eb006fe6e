#pragma once
// Weights made on the device, the same values as model::random_weights()
// (kernels/model/weights.cpp) makes on the host: element i of tensor t is
// center + scale * (2u - 1), u the top 24 bits of splitmix64 output number
// i + 2 of the stream seeded with seed ^ (t * 0xd1b54a32d192ed03), in fp32
// without contraction. Also the fp32 -> bf16 conversion used by uploads.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace kvflow::cuda {

/// p[i] = bf16(center + scale * (2u - 1)), u as above.
cudaError_t launch_fill_uniform(__nv_bfloat16* p, std::size_t n, std::uint64_t seed, std::uint64_t tensor, float center,
                                float scale, cudaStream_t stream);
/// The same values in fp32 (norm weights).
cudaError_t launch_fill_uniform_f32(float* p, std::size_t n, std::uint64_t seed, std::uint64_t tensor, float center,
                                    float scale, cudaStream_t stream);
/// dst[i] = bf16(src[i]), round to nearest even.
cudaError_t launch_to_bf16(const float* src, __nv_bfloat16* dst, std::size_t n, cudaStream_t stream);

}  // namespace kvflow::cuda

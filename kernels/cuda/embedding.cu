#include "kernels/cuda/common.cuh"
#include "kernels/cuda/embedding.cuh"

namespace kvflow::cuda {
namespace {

__global__ void embedding_kernel(const std::int32_t* tokens, const bf16* table, int vocab, int hidden, float* out) {
  const int row = blockIdx.x;
  const int id = tokens[row];
  float* dst = out + static_cast<std::size_t>(row) * hidden;
  if (id < 0 || id >= vocab) {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = 0.0f;
    return;
  }
  const bf16* src = table + static_cast<std::size_t>(id) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

}  // namespace

cudaError_t launch_embedding(const std::int32_t* tokens, int count, const bf16* table, int vocab, int hidden,
                             float* out, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  embedding_kernel<<<count, 256, 0, stream>>>(tokens, table, vocab, hidden, out);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda

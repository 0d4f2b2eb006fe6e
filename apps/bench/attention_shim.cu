// A C entry point to the Hopper attention kernel for sdpa_probe.py (ctypes),
// so that it runs in the same process, on the same tensors and under the
// same load as torch's scaled_dot_product_attention. Built by hand:
//   nvcc -std=c++17 -O3 -arch=sm_90a -I. -Xcompiler -fPIC -shared \
//     apps/bench/attention_shim.cu kernels/cuda/attention_sm90.cu -o libkvflow_attention.so

#include "kernels/cuda/attention_sm90.cuh"

extern "C" int kvflow_attention_sm90(const void* q, int count, int pos0, const void* blocks, int num_blocks, int heads,
                                     int kv_heads, float scale, void* out, void* stream) {
  return static_cast<int>(kvflow::cuda::launch_attention_sm90(
      static_cast<const __nv_bfloat16*>(q), count, pos0, nullptr, static_cast<const kvflow::cuda::attn_block*>(blocks),
      num_blocks, 0, heads, kv_heads, 128, scale, static_cast<__nv_bfloat16*>(out), static_cast<cudaStream_t>(stream)));
}

#pragma once
// Matrix products through cuBLASLt: y[m][n] (+)= x[m][k] * w[n][k]^T with
// bf16 inputs and fp32 accumulation, bf16 or fp32 output.
//
// Row invariance (needed for chunked == one-shot prefill, bitwise): for each
// (n, k, output type, accumulate) the algorithm is chosen ONCE, by the
// heuristic at a reference m, with split-K reductions excluded, and that
// same algorithm runs for every m. A fixed tiled kernel reduces each output
// element over k in the same order whatever m is, so a row's result does not
// depend on how many rows a call holds (tests/kernels/cuda check it).

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <string>
#include <tuple>

#include "platform/cuda_memory.hpp"

namespace kvflow::cuda {

class gemm_runner {
 public:
  /// `reference_m`: the row count the algorithms are chosen for.
  explicit gemm_runner(int reference_m = 4096);
  ~gemm_runner();
  gemm_runner(const gemm_runner&) = delete;
  gemm_runner& operator=(const gemm_runner&) = delete;

  /// y = x w^T (accumulate: y += x w^T). y_f32 selects fp32 output, else
  /// bf16. Enqueued on `stream`; throws kvflow::error(cuda_failure) when
  /// cuBLASLt has no algorithm for the shape.
  void run(const __nv_bfloat16* x,  // [m][k]
           const __nv_bfloat16* w,  // [n][k]
           void* y,                 // [m][n], bf16 or fp32
           int m, int n, int k, bool y_f32, bool accumulate, cudaStream_t stream);

  /// The cached algorithm's configuration for a shape, for logs and tests.
  std::string describe(int n, int k, bool y_f32, bool accumulate);

 private:
  struct plan {
    cublasLtMatmulAlgo_t algo;
    bool valid = false;
  };
  plan& plan_for(int n, int k, bool y_f32, bool accumulate);

  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  std::size_t workspace_bytes_ = 32u << 20;
  platform::device_buffer workspace_;  // cuBLASLt scratch, workspace_bytes_
  int reference_m_;
  std::map<std::tuple<int, int, bool, bool>, plan> plans_;
};

}  // namespace kvflow::cuda

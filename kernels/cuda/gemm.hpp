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
//
// Tuning (off unless KVFLOW_GEMM_TUNE=1; see below): the heuristic's first
// algorithm is the reference. Other candidates (the heuristic's top results at 1024, the
// reference m and 4x it, split-K excluded) are run on random data, whole and
// in row pieces; only those whose sampled output rows are bitwise equal to
// the reference's are kept, and the fastest of those (time at 1024 rows x4 +
// at the reference m + at 4x it / 4, best of three rounds after a warm-up)
// is used. So tuning changes the speed,
// never a bit of any result, and engines in different processes that pick
// different (equal) candidates still agree bitwise. KVFLOW_GEMM_LOG=1 prints
// every candidate to stderr. Off by default: on the H200 (llama-3-8b) every
// candidate (11-19 a shape) had equal bits, but the heuristic's pick already
// ran the four products at 690-790 TFLOP/s and the first tuner's choices,
// timed without a warm-up, were not faster
// (apps/bench/results/h200/prefill_speed.md).
//
// Row classes (on unless KVFLOW_GEMM_ROWS=0): calls of at most 1536 and of
// at most 3072 rows (a runtime forward of one or two 1024-token chunks) run
// the fastest equal-bit candidate timed at 1024 and 2048 rows, others the
// reference (or the tuned choice). The equal-bit check is the tuner's, so a
// row's bits still do not depend on the call's rows. On the H200
// (apps/bench/results/h200/gemm_rows/): the four products 7.5% faster at
// 1024 rows and 3% at 2048; the engine's 16k prefill in 1024-token chunks
// 0.544 -> 0.519 s (one shot 0.505 s). Every candidate had equal bits.

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "platform/cuda_memory.hpp"

namespace kvflow::cuda {

class gemm_runner {
 public:
  /// `reference_m`: the row count the algorithms are chosen for.
  /// `tune`: time the equal-bit candidates and keep the fastest (default:
  /// off unless the environment has KVFLOW_GEMM_TUNE=1).
  /// `rows`: row classes (default: on unless KVFLOW_GEMM_ROWS=0).
  explicit gemm_runner(int reference_m = 4096, int tune = -1, int rows = -1);
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

  /// Chooses (and tunes) the algorithm for a shape now, on `stream`, so the
  /// first forward does not pay for it.
  void prepare(int n, int k, bool y_f32, bool accumulate, cudaStream_t stream);

 private:
  struct plan {
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulAlgo_t by_rows[2];  // row classes: up to 1536 and 3072 rows
    bool has_rows = false;
    bool valid = false;
    std::string tuning;  // what tuning found, for describe()
  };
  plan& plan_for(int n, int k, bool y_f32, bool accumulate, cudaStream_t stream);
  void tune(plan& p, const std::vector<cublasLtMatmulAlgo_t>& candidates, int n, int k, bool y_f32, bool accumulate,
            cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  std::size_t workspace_bytes_ = 32u << 20;
  platform::device_buffer workspace_;  // cuBLASLt scratch, workspace_bytes_
  int reference_m_;
  bool tune_;
  bool rows_;
  std::map<std::tuple<int, int, bool, bool>, plan> plans_;
};

}  // namespace kvflow::cuda

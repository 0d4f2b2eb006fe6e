#include "kernels/cuda/gemm.hpp"

#include <cstring>
#include <sstream>

#include "kernels/cuda/check.hpp"
#include "messages/error.hpp"

namespace kvflow::cuda {
namespace {

// Layouts for cuBLASLt's column-major view: our row-major y[m][n] is its
// n x m matrix, w[n][k] is a k x n matrix used transposed, x[m][k] is k x m.
struct layouts {
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  layouts(int m, int n, int k, bool y_f32) {
    KVFLOW_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, k, n, k));
    KVFLOW_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, k, m, k));
    KVFLOW_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c, y_f32 ? CUDA_R_32F : CUDA_R_16BF, n, m, n));
  }
  ~layouts() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
  layouts(const layouts&) = delete;
  layouts& operator=(const layouts&) = delete;
};

}  // namespace

gemm_runner::gemm_runner(int reference_m) : reference_m_(reference_m) {
  KVFLOW_CUBLAS_CHECK(cublasLtCreate(&handle_));
  KVFLOW_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  KVFLOW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  KVFLOW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  workspace_ = platform::device_buffer(workspace_bytes_);
}

gemm_runner::~gemm_runner() {
  workspace_.reset();
  if (desc_) cublasLtMatmulDescDestroy(desc_);
  if (handle_) cublasLtDestroy(handle_);
}

gemm_runner::plan& gemm_runner::plan_for(int n, int k, bool y_f32, bool accumulate) {
  plan& p = plans_[std::make_tuple(n, k, y_f32, accumulate)];
  if (p.valid) return p;
  layouts l(reference_m_, n, k, y_f32);
  cublasLtMatmulPreference_t pref = nullptr;
  KVFLOW_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::uint32_t no_reduction = CUBLASLT_REDUCTION_SCHEME_NONE;
  KVFLOW_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                           &no_reduction, sizeof(no_reduction)));
  KVFLOW_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &workspace_bytes_, sizeof(workspace_bytes_)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, desc_, l.a, l.b, l.c, l.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw error(errc::cuda_failure, "cuBLASLt has no algorithm for n=" + std::to_string(n) + " k=" + std::to_string(k) +
                                        (y_f32 ? " (fp32 out)" : " (bf16 out)"));
  p.algo = result.algo;
  p.valid = true;
  return p;
}

void gemm_runner::run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, int m, int n, int k, bool y_f32,
                      bool accumulate, cudaStream_t stream) {
  if (m <= 0) return;
  plan& p = plan_for(n, k, y_f32, accumulate);
  layouts l(m, n, k, y_f32);
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  KVFLOW_CUBLAS_CHECK(cublasLtMatmul(handle_, desc_, &alpha, w, l.a, x, l.b, &beta, y, l.c, y, l.c, &p.algo,
                                     workspace_.data(), workspace_bytes_, stream));
}

std::string gemm_runner::describe(int n, int k, bool y_f32, bool accumulate) {
  plan& p = plan_for(n, k, y_f32, accumulate);
  auto get = [&](cublasLtMatmulAlgoConfigAttributes_t attr) -> long long {
    std::size_t size = 0;  // the attribute's own width (16, 32 or 64 bits)
    cublasLtMatmulAlgoConfigGetAttribute(&p.algo, attr, nullptr, 0, &size);
    unsigned char buf[8] = {};
    if (size == 0 || size > sizeof(buf)) return -1;
    std::size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&p.algo, attr, buf, size, &written) != CUBLAS_STATUS_SUCCESS) return -1;
    unsigned long long v = 0;
    std::memcpy(&v, buf, size);  // little-endian
    return static_cast<long long>(v);
  };
  std::ostringstream os;
  os << "n=" << n << " k=" << k << " algo=" << get(CUBLASLT_ALGO_CONFIG_ID)
     << " tile=" << get(CUBLASLT_ALGO_CONFIG_TILE_ID) << " splitk=" << get(CUBLASLT_ALGO_CONFIG_SPLITK_NUM)
     << " reduction=" << get(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME)
     << " swizzle=" << get(CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING) << " custom=" << get(CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION)
     << " stages=" << get(CUBLASLT_ALGO_CONFIG_STAGES_ID) << " cluster=" << get(CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID);
  return os.str();
}

}  // namespace kvflow::cuda

#include "kernels/cuda/gemm.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/random_init.cuh"
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

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return fallback;
  return !(v[0] == '0' && v[1] == 0);
}

std::string algo_text(const cublasLtMatmulAlgo_t& algo) {
  auto get = [&](cublasLtMatmulAlgoConfigAttributes_t attr) -> long long {
    std::size_t size = 0;  // the attribute's own width (16, 32 or 64 bits)
    cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, nullptr, 0, &size);
    unsigned char buf[8] = {};
    if (size == 0 || size > sizeof(buf)) return -1;
    std::size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, buf, size, &written) != CUBLAS_STATUS_SUCCESS) return -1;
    unsigned long long v = 0;
    std::memcpy(&v, buf, size);  // little-endian
    return static_cast<long long>(v);
  };
  std::ostringstream os;
  os << "algo=" << get(CUBLASLT_ALGO_CONFIG_ID) << " tile=" << get(CUBLASLT_ALGO_CONFIG_TILE_ID)
     << " splitk=" << get(CUBLASLT_ALGO_CONFIG_SPLITK_NUM)
     << " reduction=" << get(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME)
     << " swizzle=" << get(CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING) << " custom=" << get(CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION)
     << " stages=" << get(CUBLASLT_ALGO_CONFIG_STAGES_ID) << " cluster=" << get(CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID);
  return os.str();
}

// Tuned choices shared by every runner of the process (engines made one
// after another tune once): (device, reference m, n, k, fp32, accumulate).
struct tuned_entry {
  cublasLtMatmulAlgo_t algo;
  cublasLtMatmulAlgo_t by_rows[2];
  bool has_rows;
  std::string tuning;
};
// (device, reference m, n, k, fp32, accumulate, tuned, row classes)
using tuned_key = std::tuple<int, int, int, int, bool, bool, bool, bool>;
std::mutex tuned_mutex;
std::map<tuned_key, tuned_entry>& tuned_cache() {
  static std::map<tuned_key, tuned_entry> cache;
  return cache;
}

bool same_algo(const cublasLtMatmulAlgo_t& a, const cublasLtMatmulAlgo_t& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

gemm_runner::gemm_runner(int reference_m, int tune, int rows)
    : reference_m_(reference_m),
      tune_(tune < 0 ? env_flag("KVFLOW_GEMM_TUNE", false) : tune != 0),
      rows_(rows < 0 ? env_flag("KVFLOW_GEMM_ROWS", true) : rows != 0) {
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

gemm_runner::plan& gemm_runner::plan_for(int n, int k, bool y_f32, bool accumulate, cudaStream_t stream) {
  plan& p = plans_[std::make_tuple(n, k, y_f32, accumulate)];
  if (p.valid) return p;
  // The heuristic's top results for m rows (split-K reductions excluded).
  auto heuristics = [&](int m, int want) {
    layouts l(m, n, k, y_f32);
    cublasLtMatmulPreference_t pref = nullptr;
    KVFLOW_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::uint32_t no_reduction = CUBLASLT_REDUCTION_SCHEME_NONE;
    KVFLOW_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                             &no_reduction, sizeof(no_reduction)));
    KVFLOW_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &workspace_bytes_, sizeof(workspace_bytes_)));
    std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<std::size_t>(want));
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle_, desc_, l.a, l.b, l.c, l.c, pref, want, results.data(), &found);
    cublasLtMatmulPreferenceDestroy(pref);
    std::vector<cublasLtMatmulAlgo_t> algos;
    if (st != CUBLAS_STATUS_SUCCESS) return algos;
    for (int i = 0; i < found; ++i)
      if (results[static_cast<std::size_t>(i)].state == CUBLAS_STATUS_SUCCESS)
        algos.push_back(results[static_cast<std::size_t>(i)].algo);
    return algos;
  };
  const bool search = tune_ || rows_;
  std::vector<cublasLtMatmulAlgo_t> candidates = heuristics(reference_m_, search ? 8 : 1);
  if (candidates.empty())
    throw error(errc::cuda_failure, "cuBLASLt has no algorithm for n=" + std::to_string(n) + " k=" + std::to_string(k) +
                                        (y_f32 ? " (fp32 out)" : " (bf16 out)"));
  p.algo = candidates.front();  // the reference: what an untuned runner uses
  int device = 0;
  KVFLOW_CUDA_CHECK(cudaGetDevice(&device));
  const auto key = std::make_tuple(device, reference_m_, n, k, y_f32, accumulate, tune_, rows_);
  if (search) {
    std::lock_guard<std::mutex> lock(tuned_mutex);
    auto it = tuned_cache().find(key);
    if (it != tuned_cache().end()) {
      p.algo = it->second.algo;
      std::copy(std::begin(it->second.by_rows), std::end(it->second.by_rows), std::begin(p.by_rows));
      p.has_rows = it->second.has_rows;
      p.tuning = it->second.tuning + " (cached)";
      p.valid = true;
      return p;
    }
  }
  if (search) {
    std::vector<int> more;
    if (tune_) more = {1024, 4 * reference_m_};
    if (rows_) more.insert(more.end(), {1024, 2048});
    for (int m : more)
      for (const auto& a : heuristics(m, 8))
        if (std::none_of(candidates.begin(), candidates.end(), [&](const auto& c) { return same_algo(a, c); }))
          candidates.push_back(a);
    tune(p, candidates, n, k, y_f32, accumulate, stream);
    std::lock_guard<std::mutex> lock(tuned_mutex);
    tuned_entry e{p.algo, {p.by_rows[0], p.by_rows[1]}, p.has_rows, p.tuning};
    tuned_cache()[key] = e;
  }
  p.valid = true;
  return p;
}

void gemm_runner::tune(plan& p, const std::vector<cublasLtMatmulAlgo_t>& candidates, int n, int k, bool y_f32,
                       bool accumulate, cudaStream_t stream) {
  const bool log = env_flag("KVFLOW_GEMM_LOG", false);
  const std::size_t esz = y_f32 ? 4 : 2;
  const int ref = reference_m_;
  int big = 4 * ref;
  platform::device_buffer x, w, y;
  try {
    x = platform::device_buffer(static_cast<std::size_t>(big) * k * 2);
    y = platform::device_buffer(static_cast<std::size_t>(big) * n * esz);
  } catch (const error& e) {
    if (e.code() != errc::capacity_exceeded) throw;
    big = ref;  // time at the reference m only
    x = platform::device_buffer(static_cast<std::size_t>(big) * k * 2);
    y = platform::device_buffer(static_cast<std::size_t>(big) * n * esz);
  }
  w = platform::device_buffer(static_cast<std::size_t>(n) * k * 2);
  auto* xp = x.as<__nv_bfloat16>();
  auto* wp = w.as<__nv_bfloat16>();
  auto* yp = static_cast<unsigned char*>(y.data());
  KVFLOW_CUDA_CHECK(launch_fill_uniform(xp, static_cast<std::size_t>(big) * k, 0x9e37, 0, 0.0f, 1.0f, stream));
  KVFLOW_CUDA_CHECK(launch_fill_uniform(wp, static_cast<std::size_t>(n) * k, 0x9e37, 1, 0.0f, 0.05f, stream));

  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  auto matmul = [&](const cublasLtMatmulAlgo_t& a, int row0, int m) {
    layouts l(m, n, k, y_f32);
    void* out = yp + static_cast<std::size_t>(row0) * n * esz;
    return cublasLtMatmul(handle_, desc_, &alpha, wp, l.a, xp + static_cast<std::size_t>(row0) * k, l.b, &beta, out,
                          l.c, out, l.c, &a, workspace_.data(), workspace_bytes_, stream);
  };
  // Row pieces of the reference m, and the rows compared: every piece's
  // first and last row and 32 spread over the rest.
  std::vector<int> pieces = ref >= 2048 ? std::vector<int>{1, 255, 1024, ref - 1280} : std::vector<int>{1, ref - 1};
  std::vector<int> rows;
  for (int r = 0, i = 0; i < static_cast<int>(pieces.size()); r += pieces[static_cast<std::size_t>(i)], ++i) {
    rows.push_back(r);
    rows.push_back(r + pieces[static_cast<std::size_t>(i)] - 1);
  }
  for (int i = 0; i < 32; ++i) rows.push_back(std::min(ref - 1, i * (ref / 32) + 7));
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  const std::size_t row_bytes = static_cast<std::size_t>(n) * esz;
  // The sampled rows of one result (whole or in pieces); nullopt when the
  // candidate cannot run this shape.
  auto output = [&](const cublasLtMatmulAlgo_t& a, bool in_pieces) -> std::optional<std::vector<unsigned char>> {
    KVFLOW_CUDA_CHECK(cudaMemsetAsync(yp, 0, static_cast<std::size_t>(ref) * row_bytes, stream));
    if (in_pieces) {
      int r = 0;
      for (int len : pieces) {
        if (matmul(a, r, len) != CUBLAS_STATUS_SUCCESS) return std::nullopt;
        r += len;
      }
    } else if (matmul(a, 0, ref) != CUBLAS_STATUS_SUCCESS) {
      return std::nullopt;
    }
    std::vector<unsigned char> host(rows.size() * row_bytes);
    for (std::size_t i = 0; i < rows.size(); ++i)
      KVFLOW_CUDA_CHECK(cudaMemcpyAsync(host.data() + i * row_bytes, yp + static_cast<std::size_t>(rows[i]) * row_bytes,
                                        row_bytes, cudaMemcpyDeviceToHost, stream));
    KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream));
    return host;
  };
  struct event_pair {  // destroyed on every way out
    cudaEvent_t start = nullptr, stop = nullptr;
    ~event_pair() {
      if (start) cudaEventDestroy(start);
      if (stop) cudaEventDestroy(stop);
    }
  } ev;
  KVFLOW_CUDA_CHECK(cudaEventCreate(&ev.start));
  KVFLOW_CUDA_CHECK(cudaEventCreate(&ev.stop));
  cudaEvent_t start = ev.start, stop = ev.stop;
  // Median of 3 timed calls after a warm one, in ms.
  auto time_ms = [&](const cublasLtMatmulAlgo_t& a, int m) {
    float t[3] = {0, 0, 0};
    if (matmul(a, 0, m) != CUBLAS_STATUS_SUCCESS) return -1.0f;
    for (float& v : t) {
      KVFLOW_CUDA_CHECK(cudaEventRecord(start, stream));
      matmul(a, 0, m);
      KVFLOW_CUDA_CHECK(cudaEventRecord(stop, stream));
      KVFLOW_CUDA_CHECK(cudaEventSynchronize(stop));
      KVFLOW_CUDA_CHECK(cudaEventElapsedTime(&v, start, stop));
    }
    std::sort(t, t + 3);
    return t[1];
  };
  // Cost of 4*ref rows: in 1024-row calls, in ref-row calls and (when it
  // fits) in one call of 4*ref rows.
  auto cost = [&](const cublasLtMatmulAlgo_t& a) {
    const float small = time_ms(a, 1024), mid = time_ms(a, ref), large = big > ref ? time_ms(a, big) : 0.0f;
    if (small < 0 || mid < 0 || large < 0) return -1.0f;
    return small * (ref / 1024.0f) + mid + large * (static_cast<float>(ref) / static_cast<float>(big));
  };
  const auto reference = output(candidates.front(), false);
  // Equal bits first (whole and in pieces); the reference is always kept.
  std::vector<std::size_t> equal;
  for (std::size_t i = 0; reference && i < candidates.size(); ++i) {
    const auto& a = candidates[i];
    const char* verdict = "equal";
    if (i > 0 && output(a, false) != reference)
      verdict = "differs whole";
    else if (i > 0 && output(a, true) != reference)
      verdict = "differs in pieces";
    else
      equal.push_back(i);
    if (log)
      std::fprintf(stderr, "gemm tune n=%d k=%d %s #%zu %s: %s\n", n, k, y_f32 ? "fp32" : "bf16", i,
                   algo_text(a).c_str(), verdict);
  }
  // Then the times. A cold GPU ramps its clock up and a hot one throttles
  // (on the H200 the same kernel ran 21% slower late in one run), so: a
  // warm-up of reference calls first, then three rounds over every equal
  // candidate, each keeping its best round.
  std::vector<float> best(candidates.size(), -1.0f);
  if (!equal.empty()) {
    for (int i = 0; i < 20; ++i) matmul(candidates.front(), 0, ref);
    KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  if (!equal.empty() && rows_) {
    // Row classes: the fastest equal candidate at 1024 and at 2048 rows,
    // best of three rounds each.
    const int class_m[2] = {1024, 2048};
    std::ostringstream os;
    for (int cls = 0; cls < 2; ++cls) {
      std::vector<float> t(candidates.size(), -1.0f);
      for (int round = 0; round < 3; ++round)
        for (std::size_t i : equal) {
          const float v = time_ms(candidates[i], class_m[cls]);
          if (v >= 0 && (t[i] < 0 || v < t[i])) t[i] = v;
        }
      std::size_t pick = 0;
      for (std::size_t i : equal)
        if (t[i] >= 0 && (t[pick] < 0 || t[i] < t[pick])) pick = i;
      p.by_rows[cls] = candidates[pick];
      os << " rows " << class_m[cls] << ": #" << pick << " " << t[pick] << " ms vs reference " << t[0] << " ms;";
      if (log)
        std::fprintf(stderr, "gemm rows n=%d k=%d %s m=%d: #%zu %.3f ms (reference %.3f ms)\n", n, k,
                     y_f32 ? "fp32" : "bf16", class_m[cls], pick, t[pick], t[0]);
    }
    p.has_rows = true;
    p.tuning += os.str();
  }
  if (!equal.empty() && tune_) {
    for (int round = 0; round < 3; ++round)
      for (std::size_t i : equal) {
        const float c = cost(candidates[i]);
        if (c >= 0 && (best[i] < 0 || c < best[i])) best[i] = c;
      }
  }
  int chosen = 0, timed = 0;
  for (std::size_t i : equal) {
    if (best[i] < 0) continue;
    ++timed;
    if (best[static_cast<std::size_t>(chosen)] < 0 || best[i] < best[static_cast<std::size_t>(chosen)])
      chosen = static_cast<int>(i);
    if (log) std::fprintf(stderr, "gemm tune n=%d k=%d %s #%zu: %.3f ms\n", n, k, y_f32 ? "fp32" : "bf16", i, best[i]);
  }
  const float chosen_cost = best[static_cast<std::size_t>(chosen)], reference_cost = best[0];
  const std::size_t equal_count = equal.size();
  p.algo = candidates[static_cast<std::size_t>(chosen)];
  std::ostringstream os;
  if (!reference) {
    os << " untuned (the reference algorithm could not run)";
  } else if (tune_) {
    os << " tuned: " << candidates.size() << " candidates, " << equal_count << " equal bits, " << timed
       << " timed, chose #" << chosen << " (" << chosen_cost << " ms vs reference " << reference_cost << " ms)";
  } else {
    os << " " << candidates.size() << " candidates, " << equal_count << " equal bits;";
  }
  p.tuning = os.str() + p.tuning;
}

void gemm_runner::prepare(int n, int k, bool y_f32, bool accumulate, cudaStream_t stream) {
  plan_for(n, k, y_f32, accumulate, stream);
}

void gemm_runner::run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, int m, int n, int k, bool y_f32,
                      bool accumulate, cudaStream_t stream) {
  if (m <= 0) return;
  plan& p = plan_for(n, k, y_f32, accumulate, stream);
  layouts l(m, n, k, y_f32);
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  const cublasLtMatmulAlgo_t* algo = &p.algo;
  if (p.has_rows && m <= 3072) algo = &p.by_rows[m <= 1536 ? 0 : 1];
  KVFLOW_CUBLAS_CHECK(cublasLtMatmul(handle_, desc_, &alpha, w, l.a, x, l.b, &beta, y, l.c, y, l.c, algo,
                                     workspace_.data(), workspace_bytes_, stream));
}

std::string gemm_runner::describe(int n, int k, bool y_f32, bool accumulate) {
  plan& p = plan_for(n, k, y_f32, accumulate, nullptr);
  return "n=" + std::to_string(n) + " k=" + std::to_string(k) + " " + algo_text(p.algo) + p.tuning;
}

}  // namespace kvflow::cuda

// Every CUDA kernel against the fp32 CPU reference kernels (kernels/cpu) on
// the same bf16-rounded inputs, and the row-invariance rules that make
// chunked prefill bitwise equal to one-shot prefill.
#define BOOST_TEST_MODULE kernels_cuda
#define BOOST_TEST_NO_MAIN
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/logits.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/swiglu.hpp"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/logits.cuh"
#include "kernels/cuda/random_init.cuh"
#include "kernels/cuda/rms_norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "kernels/model/config.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

namespace {

using bf16 = __nv_bfloat16;
using namespace kvflow;

// A typed device array on platform::device_buffer, the one owner of CUDA
// memory.
template <typename T>
struct dbuf {
  platform::device_buffer mem;
  T* p = nullptr;
  std::size_t n = 0;
  explicit dbuf(std::size_t count) : mem(std::max<std::size_t>(count, 1) * sizeof(T)), p(mem.as<T>()), n(count) {
    // Poison: 0xFF bytes are NaN in bf16 and fp32, so unwritten outputs show.
    KVFLOW_CUDA_CHECK(cudaMemset(p, 0xFF, mem.size()));
  }
  void put(const std::vector<T>& v) { platform::copy_now(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    KVFLOW_CUDA_CHECK(cudaDeviceSynchronize());
    platform::copy_now(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
};

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16(v[i]);
  return out;
}

std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// Rounds through bf16, as the GPU sees its inputs.
std::vector<float> round_bf16(const std::vector<float>& v) { return to_f32(to_bf16(v)); }

// ||a - b|| / ||b||, and no NaN anywhere.
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return 1e30;
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

BOOST_AUTO_TEST_CASE(embedding_matches_cpu) {
  const int vocab = 1000, hidden = 576, count = 37;
  const auto table = round_bf16(random_floats(static_cast<std::size_t>(vocab) * hidden, 1));
  std::vector<std::int32_t> tokens(count);
  for (int i = 0; i < count; ++i) tokens[i] = (i * 7919) % vocab;
  dbuf<bf16> d_table(table.size());
  d_table.put(to_bf16(table));
  dbuf<std::int32_t> d_tok(count);
  d_tok.put(tokens);
  dbuf<float> d_out(static_cast<std::size_t>(count) * hidden);
  KVFLOW_LAUNCH_CHECK(cuda::launch_embedding(d_tok.p, count, d_table.p, vocab, hidden, d_out.p, nullptr));
  std::vector<float> ref(d_out.n);
  cpu::embedding(table.data(), vocab, hidden, tokens.data(), count, ref.data());
  BOOST_TEST(same_bits(d_out.get(), ref));
}

BOOST_AUTO_TEST_CASE(rms_norm_matches_cpu) {
  // 4096 and 8192: whole rows in registers (4 and 8 float4s a thread); 576:
  // one float4 a thread, 160 threads; 100 and 12288: the scalar kernel (not
  // a multiple of 4, wider than the registers hold).
  for (int n : {4096, 8192, 576, 100, 12288}) {
    const int rows = 33;
    const auto x = random_floats(static_cast<std::size_t>(rows) * n, 2, -3.0f, 3.0f);
    const auto w = random_floats(n, 3, 0.5f, 1.5f);
    dbuf<float> d_x(x.size()), d_w(w.size()), d_y32(x.size());
    dbuf<bf16> d_y(x.size());
    d_x.put(x);
    d_w.put(w);
    KVFLOW_LAUNCH_CHECK(cuda::launch_rms_norm(d_x.p, d_w.p, 1e-5f, rows, n, d_y.p, nullptr));
    KVFLOW_LAUNCH_CHECK(cuda::launch_rms_norm_f32(d_x.p, d_w.p, 1e-5f, rows, n, d_y32.p, nullptr));
    std::vector<float> ref(x.size());
    cpu::rmsnorm(x.data(), w.data(), rows, n, 1e-5f, ref.data());
    const double e16 = rel_err(to_f32(d_y.get()), ref);
    const double e32 = rel_err(d_y32.get(), ref);
    BOOST_TEST_MESSAGE("rms_norm n " << n << " rel err bf16 " << e16 << " fp32 " << e32);
    BOOST_TEST_INFO("n " << n);
    BOOST_TEST(e16 < 5e-3);
    BOOST_TEST_INFO("n " << n);
    BOOST_TEST(e32 < 1e-5);
  }
}

// A row's norm depends on that row alone: rows [5, 17) normalised by
// themselves equal the same rows of a 33-row launch, bit for bit (chunked
// prefill == one-shot).
BOOST_AUTO_TEST_CASE(rms_norm_is_row_invariant) {
  for (int n : {4096, 576, 100}) {
    const int rows = 33, first = 5, count = 12;
    const auto x = random_floats(static_cast<std::size_t>(rows) * n, 4, -3.0f, 3.0f);
    const auto w = random_floats(n, 5, 0.5f, 1.5f);
    dbuf<float> d_x(x.size()), d_w(w.size());
    dbuf<bf16> d_all(x.size()), d_part(static_cast<std::size_t>(count) * n);
    d_x.put(x);
    d_w.put(w);
    KVFLOW_LAUNCH_CHECK(cuda::launch_rms_norm(d_x.p, d_w.p, 1e-5f, rows, n, d_all.p, nullptr));
    KVFLOW_LAUNCH_CHECK(
        cuda::launch_rms_norm(d_x.p + static_cast<std::size_t>(first) * n, d_w.p, 1e-5f, count, n, d_part.p, nullptr));
    const auto all = d_all.get();
    const std::vector<bf16> rows_of_all(all.begin() + static_cast<std::ptrdiff_t>(first) * n,
                                        all.begin() + static_cast<std::ptrdiff_t>(first + count) * n);
    BOOST_TEST_INFO("n " << n);
    BOOST_TEST(same_bits(d_part.get(), rows_of_all));
  }
}

BOOST_AUTO_TEST_CASE(rope_inv_freq_matches_cpu) {
  for (const char* name : {"llama-2-7b", "llama-3-8b", "smollm2-135m"}) {
    const auto c = model::preset(name);
    const auto mine = cuda::rope_inv_freq(c);
    const auto ref = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
    BOOST_TEST_INFO(name);
    BOOST_TEST(rel_err(mine, ref) < 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(qkv_rope_matches_cpu) {
  // llama-3-8b: scaled RoPE, GQA, head_dim 128; smollm2: head_dim 64.
  for (const char* name : {"llama-3-8b", "smollm2-135m"}) {
    auto c = model::preset(name);
    const int count = 19, pos0 = 9000;
    const int heads = c.heads, kvh = c.kv_heads, hd = c.head_dim;
    const int width = (heads + 2 * kvh) * hd;
    const auto qkv = round_bf16(random_floats(static_cast<std::size_t>(count) * width, 4));
    const auto inv = cuda::rope_inv_freq(c);
    dbuf<bf16> d_qkv(qkv.size()), d_q(static_cast<std::size_t>(count) * heads * hd),
        d_k(static_cast<std::size_t>(count) * kvh * hd), d_v(static_cast<std::size_t>(count) * kvh * hd);
    dbuf<float> d_inv(inv.size());
    d_qkv.put(to_bf16(qkv));
    d_inv.put(inv);
    KVFLOW_LAUNCH_CHECK(
        cuda::launch_qkv_rope(d_qkv.p, count, pos0, d_inv.p, heads, kvh, hd, d_q.p, d_k.p, d_v.p, nullptr));
    std::vector<float> ref = qkv;
    cpu::rope(ref.data(), count, width, heads + kvh, hd, pos0, inv.data());
    std::vector<float> q_ref, k_ref(d_k.n), v_ref(d_v.n);
    for (int t = 0; t < count; ++t) {
      const float* row = ref.data() + static_cast<std::size_t>(t) * width;
      q_ref.insert(q_ref.end(), row, row + heads * hd);
      for (int h = 0; h < kvh; ++h)
        for (int d = 0; d < hd; ++d) {
          k_ref[(static_cast<std::size_t>(h) * count + t) * hd + d] = row[(heads + h) * hd + d];
          v_ref[(static_cast<std::size_t>(h) * count + t) * hd + d] = row[(heads + kvh + h) * hd + d];
        }
    }
    const double eq = rel_err(to_f32(d_q.get()), q_ref), ek = rel_err(to_f32(d_k.get()), k_ref);
    BOOST_TEST_MESSAGE(name << " rope rel err q " << eq << " k " << ek);
    BOOST_TEST_INFO(name);
    BOOST_TEST(eq < 5e-3);
    BOOST_TEST_INFO(name);
    BOOST_TEST(ek < 5e-3);
    BOOST_TEST_INFO(name);
    BOOST_TEST(same_bits(to_f32(d_v.get()), v_ref));
  }
}

// The 16-byte kernel (aligned pointers) and the element kernel (an input
// one bf16 off alignment) give the same bits: the same fp32 arithmetic.
BOOST_AUTO_TEST_CASE(qkv_rope_vector_and_scalar_paths_agree) {
  auto c = model::preset("llama-3-8b");
  const int count = 23, pos0 = 31000;
  const int heads = c.heads, kvh = c.kv_heads, hd = c.head_dim;
  const int width = (heads + 2 * kvh) * hd;
  const auto qkv = to_bf16(random_floats(static_cast<std::size_t>(count) * width, 6, -2.0f, 2.0f));
  std::vector<bf16> shifted(qkv.size() + 1);
  std::copy(qkv.begin(), qkv.end(), shifted.begin() + 1);
  const auto inv = cuda::rope_inv_freq(c);
  const std::size_t nq = static_cast<std::size_t>(count) * heads * hd, nk = static_cast<std::size_t>(count) * kvh * hd;
  dbuf<bf16> d_a(qkv.size()), d_b(shifted.size()), q1(nq), k1(nk), v1(nk), q2(nq), k2(nk), v2(nk);
  dbuf<float> d_inv(inv.size());
  d_a.put(qkv);
  d_b.put(shifted);
  d_inv.put(inv);
  KVFLOW_LAUNCH_CHECK(cuda::launch_qkv_rope(d_a.p, count, pos0, d_inv.p, heads, kvh, hd, q1.p, k1.p, v1.p, nullptr));
  KVFLOW_LAUNCH_CHECK(
      cuda::launch_qkv_rope(d_b.p + 1, count, pos0, d_inv.p, heads, kvh, hd, q2.p, k2.p, v2.p, nullptr));
  BOOST_TEST(same_bits(q1.get(), q2.get()));
  BOOST_TEST(same_bits(k1.get(), k2.get()));
  BOOST_TEST(same_bits(v1.get(), v2.get()));
}

// The jobs of a fused forward in one launch give each job the bits of its
// own launch_qkv_rope (chunks of one request and of another, odd counts),
// on the 16-byte kernel (head_dim 128) and the element kernel (head_dim 24).
BOOST_AUTO_TEST_CASE(qkv_rope_jobs_equal_one_launch_per_job) {
  for (int hd : {128, 24}) {
    const int heads = 8, kvh = 2, layers = 3, layer = 2;
    const int width = (heads + 2 * kvh) * hd;
    const std::vector<int> counts{5, 16, 2, 9}, pos0s{0, 5, 21, 7000};
    int rows = 0;
    for (int c : counts) rows += c;
    const auto qkv = to_bf16(random_floats(static_cast<std::size_t>(rows) * width, 8, -2.0f, 2.0f));
    std::vector<float> inv(static_cast<std::size_t>(hd / 2));
    for (int i = 0; i < hd / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / hd);
    dbuf<bf16> d_qkv(qkv.size()), q_fused(static_cast<std::size_t>(rows) * heads * hd),
        q_each(static_cast<std::size_t>(rows) * heads * hd);
    dbuf<float> d_inv(inv.size());
    d_qkv.put(qkv);
    d_inv.put(inv);
    std::vector<std::unique_ptr<dbuf<bf16>>> fused_kv, each_kv;
    std::vector<cuda::rope_job> jobs;
    int row0 = 0;
    for (std::size_t j = 0; j < counts.size(); ++j) {
      const std::size_t block = static_cast<std::size_t>(layers) * 2 * kvh * counts[j] * hd;
      fused_kv.push_back(std::make_unique<dbuf<bf16>>(block));
      each_kv.push_back(std::make_unique<dbuf<bf16>>(block));
      jobs.push_back({fused_kv.back()->p, row0, counts[j], pos0s[j], 0});
      const std::size_t half_layer = static_cast<std::size_t>(kvh) * counts[j] * hd;
      bf16* k = each_kv.back()->p + static_cast<std::size_t>(layer) * 2 * half_layer;
      KVFLOW_LAUNCH_CHECK(cuda::launch_qkv_rope(
          d_qkv.p + static_cast<std::size_t>(row0) * width, counts[j], pos0s[j], d_inv.p, heads, kvh, hd,
          q_each.p + static_cast<std::size_t>(row0) * heads * hd, k, k + half_layer, nullptr));
      row0 += counts[j];
    }
    dbuf<cuda::rope_job> d_jobs(jobs.size());
    d_jobs.put(jobs);
    KVFLOW_LAUNCH_CHECK(cuda::launch_qkv_rope_jobs(d_qkv.p, rows, d_jobs.p, jobs.data(), static_cast<int>(jobs.size()),
                                                   layer, d_inv.p, heads, kvh, hd, q_fused.p, nullptr));
    BOOST_TEST_INFO("head_dim " << hd);
    BOOST_TEST(same_bits(q_fused.get(), q_each.get()));
    for (std::size_t j = 0; j < counts.size(); ++j) {
      BOOST_TEST_INFO("head_dim " << hd << " job " << j);
      BOOST_TEST(same_bits(fused_kv[j]->get(), each_kv[j]->get()));
    }
  }
}

BOOST_AUTO_TEST_CASE(swiglu_matches_cpu) {
  for (int inter : {1536, 100}) {
    const int count = 21;
    const auto gu = round_bf16(random_floats(static_cast<std::size_t>(count) * 2 * inter, 5, -4.0f, 4.0f));
    dbuf<bf16> d_gu(gu.size()), d_out(static_cast<std::size_t>(count) * inter);
    d_gu.put(to_bf16(gu));
    KVFLOW_LAUNCH_CHECK(cuda::launch_swiglu(d_gu.p, count, inter, d_out.p, nullptr));
    std::vector<float> ref(d_out.n);
    cpu::swiglu(gu.data(), gu.data() + inter, count, inter, 2 * inter, ref.data(), inter);
    const double e = rel_err(to_f32(d_out.get()), ref);
    BOOST_TEST_INFO("inter " << inter);
    BOOST_TEST(e < 5e-3);
  }
}

// The 16-byte kernel and the element kernel (output one bf16 off
// alignment) give the same bits.
BOOST_AUTO_TEST_CASE(swiglu_vector_and_scalar_paths_agree) {
  const int count = 37, inter = 14336;
  const auto gu = to_bf16(random_floats(static_cast<std::size_t>(count) * 2 * inter, 7, -6.0f, 6.0f));
  const std::size_t n = static_cast<std::size_t>(count) * inter;
  dbuf<bf16> d_gu(gu.size()), d_vec(n), d_scalar(n + 1);
  d_gu.put(gu);
  KVFLOW_LAUNCH_CHECK(cuda::launch_swiglu(d_gu.p, count, inter, d_vec.p, nullptr));
  KVFLOW_LAUNCH_CHECK(cuda::launch_swiglu(d_gu.p, count, inter, d_scalar.p + 1, nullptr));
  const auto scalar = d_scalar.get();
  BOOST_TEST(same_bits(d_vec.get(), std::vector<bf16>(scalar.begin() + 1, scalar.end())));
}

BOOST_AUTO_TEST_CASE(logits_matches_cpu) {
  const int vocab = 4999, hidden = 576;
  const auto x = random_floats(hidden, 6);
  const auto w = round_bf16(random_floats(static_cast<std::size_t>(vocab) * hidden, 7));
  dbuf<float> d_x(x.size()), d_out(vocab);
  dbuf<bf16> d_w(w.size());
  d_x.put(x);
  d_w.put(to_bf16(w));
  KVFLOW_LAUNCH_CHECK(cuda::launch_logits(d_x.p, d_w.p, vocab, hidden, d_out.p, nullptr));
  std::vector<float> ref(vocab);
  cpu::logits(x.data(), w.data(), vocab, hidden, ref.data());
  BOOST_TEST(rel_err(d_out.get(), ref) < 1e-5);
}

namespace {

// Rows [0, m) of x w^T by `whole` in one call and by `pieces` in calls of
// `lens` rows (summing to m): both outputs, fp32 or bf16 bytes.
struct gemm_outputs {
  std::vector<unsigned char> whole, pieces;
};
gemm_outputs whole_and_pieces(cuda::gemm_runner& whole, cuda::gemm_runner& pieces, const bf16* x, const bf16* w, int m,
                              int n, int k, bool f32, std::initializer_list<int> lens) {
  const std::size_t esz = f32 ? 4 : 2;
  const std::size_t out_bytes = static_cast<std::size_t>(m) * n * esz;
  dbuf<unsigned char> a(out_bytes), b(out_bytes);
  KVFLOW_CUDA_CHECK(cudaMemset(a.p, 0, out_bytes));
  KVFLOW_CUDA_CHECK(cudaMemset(b.p, 0, out_bytes));
  whole.run(x, w, a.p, m, n, k, f32, f32, nullptr);
  int r = 0;
  for (int len : lens) {
    pieces.run(x + static_cast<std::size_t>(r) * k, w, b.p + static_cast<std::size_t>(r) * n * esz, len, n, k, f32, f32,
               nullptr);
    r += len;
  }
  BOOST_REQUIRE_EQUAL(r, m);
  return {a.get(), b.get()};
}

}  // namespace

// Products against a double-precision loop on a few rows, then row
// invariance: any split of the rows gives the same bits as one call. The
// pieces go up to 4096 rows (a fused grant of the runtime) against 8192 at
// once (a one-shot prefill is longer still).
BOOST_AUTO_TEST_CASE(gemm_matches_reference_and_is_row_invariant) {
  cuda::gemm_runner gemm;
  struct shape {
    int n, k;
  };
  for (shape s : {shape{6144, 4096}, shape{4096, 4096}, shape{28672, 4096}, shape{4096, 14336}, shape{1728, 576}}) {
    const int m = 8192;
    dbuf<bf16> x(static_cast<std::size_t>(m) * s.k), w(static_cast<std::size_t>(s.n) * s.k);
    KVFLOW_LAUNCH_CHECK(cuda::launch_fill_uniform(x.p, x.n, 11, 0, 0.0f, 1.0f, nullptr));
    KVFLOW_LAUNCH_CHECK(cuda::launch_fill_uniform(w.p, w.n, 11, 1, 0.0f, 0.05f, nullptr));
    for (bool f32 : {false, true}) {
      BOOST_TEST_MESSAGE("gemm plan " << gemm.describe(s.n, s.k, f32, f32) << (f32 ? " fp32 accumulate" : " bf16"));
      const auto out = whole_and_pieces(gemm, gemm, x.p, w.p, m, s.n, s.k, f32, {1, 63, 100, 256, 1000, 1, 2675, 4096});
      const auto& a = out.whole;
      const auto& b = out.pieces;
      BOOST_TEST_INFO("n " << s.n << " k " << s.k << (f32 ? " fp32" : " bf16"));
      BOOST_TEST(same_bits(a, b));
      // Reference on rows 0, 1234, 4095.
      const auto xh = to_f32(std::vector<bf16>(x.get()));
      const auto wh = to_f32(std::vector<bf16>(w.get()));
      std::vector<float> got, ref;
      for (int row : {0, 1234, 8191})
        for (int j = 0; j < s.n; j += 7) {
          double acc = 0;
          for (int i = 0; i < s.k; ++i)
            acc += static_cast<double>(xh[static_cast<std::size_t>(row) * s.k + i]) *
                   wh[static_cast<std::size_t>(j) * s.k + i];
          ref.push_back(static_cast<float>(acc));
          const std::size_t at = static_cast<std::size_t>(row) * s.n + j;
          float v;
          if (f32) {
            std::memcpy(&v, a.data() + at * 4, 4);
          } else {
            bf16 hv;
            std::memcpy(&hv, a.data() + at * 2, 2);
            v = __bfloat162float(hv);
          }
          got.push_back(v);
        }
      BOOST_TEST(rel_err(got, ref) < (f32 ? 1e-4 : 5e-3));
    }
  }
}

// Tuning (KVFLOW_GEMM_TUNE=1) and row classes (KVFLOW_GEMM_ROWS=1) may pick
// other algorithms, never other bits: their products equal the heuristic
// runner's bit for bit, in one call and split into rows (700 and 2299 rows:
// both row classes), with bf16 and fp32-accumulate output.
BOOST_AUTO_TEST_CASE(tuned_gemm_equals_heuristic_bitwise) {
  cuda::gemm_runner plain(4096, 0, 0), tuned(4096, 1, 0), rows(4096, 0, 1);
  struct shape {
    int n, k;
  };
  for (shape s : {shape{6144, 4096}, shape{1728, 576}}) {
    const int m = 3000;
    dbuf<bf16> x(static_cast<std::size_t>(m) * s.k), w(static_cast<std::size_t>(s.n) * s.k);
    KVFLOW_LAUNCH_CHECK(cuda::launch_fill_uniform(x.p, x.n, 23, 0, 0.0f, 1.0f, nullptr));
    KVFLOW_LAUNCH_CHECK(cuda::launch_fill_uniform(w.p, w.n, 23, 1, 0.0f, 0.05f, nullptr));
    for (bool f32 : {false, true}) {
      for (auto* other : {&tuned, &rows}) {
        BOOST_TEST_MESSAGE((other == &tuned ? "tuned" : "rows") << " plan " << other->describe(s.n, s.k, f32, f32));
        const auto out = whole_and_pieces(plain, *other, x.p, w.p, m, s.n, s.k, f32, {700, 1, 2299});
        BOOST_TEST_INFO((other == &tuned ? "tuned" : "rows")
                        << " n " << s.n << " k " << s.k << (f32 ? " fp32" : " bf16"));
        BOOST_TEST(same_bits(out.whole, out.pieces));
      }
    }
  }
}

namespace {

// Keys and values of `total` positions for one layer, cut into blocks of the
// given sizes (the layout of a chunk block with layers = 1).
struct kv_set {
  int kvh, hd, total;
  std::vector<float> k, v;  // [kvh][total][hd], bf16-rounded
};

std::vector<bf16> block_of(const kv_set& s, int start, int tokens) {
  std::vector<bf16> b(static_cast<std::size_t>(2) * s.kvh * tokens * s.hd);
  for (int kv = 0; kv < 2; ++kv)
    for (int h = 0; h < s.kvh; ++h)
      for (int t = 0; t < tokens; ++t)
        for (int d = 0; d < s.hd; ++d) {
          const auto& src = kv == 0 ? s.k : s.v;
          b[((static_cast<std::size_t>(kv) * s.kvh + h) * tokens + t) * s.hd + d] =
              __float2bfloat16(src[(static_cast<std::size_t>(h) * s.total + start + t) * s.hd + d]);
        }
  return b;
}

// Runs the GPU kernel for queries [q0, q0 + count) with the keys cut into
// `sizes` blocks (covering [0, q0 + count)); returns out [count][heads*hd].
std::vector<bf16> run_attention(const kv_set& s, const std::vector<float>& q, int heads, int q0, int count,
                                const std::vector<int>& sizes,
                                cuda::attention_kind kind = cuda::attention_kind::automatic) {
  std::vector<std::unique_ptr<dbuf<bf16>>> blocks;
  std::vector<cuda::attn_block> table;
  int pos = 0;
  for (int sz : sizes) {
    auto b = block_of(s, pos, sz);
    blocks.push_back(std::make_unique<dbuf<bf16>>(b.size()));
    blocks.back()->put(b);
    table.push_back({blocks.back()->p, pos, sz});
    pos += sz;
  }
  BOOST_REQUIRE_EQUAL(pos, q0 + count);
  dbuf<cuda::attn_block> d_table(table.size());
  d_table.put(table);
  const std::size_t w = static_cast<std::size_t>(heads) * s.hd;
  std::vector<float> qs(q.begin() + static_cast<std::ptrdiff_t>(q0 * w),
                        q.begin() + static_cast<std::ptrdiff_t>((q0 + count) * w));
  dbuf<bf16> d_q(qs.size()), d_out(qs.size());
  d_q.put(to_bf16(qs));
  KVFLOW_LAUNCH_CHECK(cuda::launch_attention(d_q.p, count, q0, d_table.p, static_cast<int>(table.size()), 0, heads,
                                             s.kvh, s.hd, 1.0f / std::sqrt(static_cast<float>(s.hd)), d_out.p, nullptr,
                                             kind));
  return d_out.get();
}

// launch_attention_at with one split for queries at `positions` (ascending),
// keys [0, positions.back()] in one block; returns out [n][heads*hd].
std::vector<bf16> run_attention_at(const kv_set& s, const std::vector<float>& q, int heads,
                                   const std::vector<int>& positions) {
  const int kv_end = positions.back() + 1;
  auto b = block_of(s, 0, kv_end);
  dbuf<bf16> d_kv(b.size());
  d_kv.put(b);
  const std::vector<cuda::attn_block> table{{d_kv.p, 0, kv_end}};
  dbuf<cuda::attn_block> d_table(1);
  d_table.put(table);
  const int n = static_cast<int>(positions.size());
  const std::size_t w = static_cast<std::size_t>(heads) * s.hd;
  std::vector<float> qs;
  for (int pos : positions)
    qs.insert(qs.end(), q.begin() + static_cast<std::ptrdiff_t>(pos * w),
              q.begin() + static_cast<std::ptrdiff_t>((pos + 1) * w));
  dbuf<bf16> d_q(qs.size()), d_out(qs.size());
  d_q.put(to_bf16(qs));
  dbuf<int> d_pos(positions.size());
  d_pos.put(positions);
  KVFLOW_LAUNCH_CHECK(cuda::launch_attention_at(d_q.p, n, d_pos.p, kv_end, d_table.p, 1, 0, heads, s.kvh, s.hd,
                                                1.0f / std::sqrt(static_cast<float>(s.hd)), 1, nullptr, d_out.p,
                                                nullptr));
  return d_out.get();
}

}  // namespace

BOOST_AUTO_TEST_CASE(attention_matches_cpu_and_is_invariant) {
  struct shape {
    int heads, kvh, hd, total;
  };
  // 64 and 128: the Hopper wgmma kernel on an H200 (the mma.sync one
  // elsewhere); 32/8 x 128 is llama-3-8b's shape, 9/3 x 64 SmolLM2's (its
  // group of 3 splits tokens across the kernel's 128-row blocks).
  for (shape sh : {shape{8, 2, 128, 700}, shape{9, 3, 64, 333}, shape{4, 2, 16, 150}, shape{4, 4, 128, 200},
                   shape{32, 8, 128, 300}, shape{8, 2, 64, 520}}) {
    kv_set s{sh.kvh, sh.hd, sh.total, {}, {}};
    s.k = round_bf16(random_floats(static_cast<std::size_t>(sh.kvh) * sh.total * sh.hd, 20, -2.0f, 2.0f));
    s.v = round_bf16(random_floats(s.k.size(), 21));
    const std::size_t w = static_cast<std::size_t>(sh.heads) * sh.hd;
    const auto q = round_bf16(random_floats(w * sh.total, 22, -2.0f, 2.0f));

    // One shot: queries [0, total), keys in one block.
    const auto one = run_attention(s, q, sh.heads, 0, sh.total, {sh.total});
    // CPU reference on the same (rounded) inputs.
    cpu::kv_segment seg{s.k.data(), s.v.data(), sh.total};
    std::vector<float> ref(w * sh.total);
    cpu::attention(nullptr, q.data(), sh.total, static_cast<int>(w), 0, &seg, 1, sh.heads, sh.kvh, sh.hd, ref.data(),
                   static_cast<int>(w));
    const double e = rel_err(to_f32(one), ref);
    BOOST_TEST_MESSAGE("attention heads " << sh.heads << "/" << sh.kvh << " hd " << sh.hd << " rel err " << e);
    BOOST_TEST(e < 1e-2);
    if (sh.hd >= 64) {  // the mma.sync kernel stays right too (benchmarks compare the two)
      const auto old_kernel = run_attention(s, q, sh.heads, 0, sh.total, {sh.total}, cuda::attention_kind::mma_sync);
      const double eo = rel_err(to_f32(old_kernel), ref);
      BOOST_TEST_MESSAGE("  mma.sync kernel rel err " << eo);
      BOOST_TEST(eo < 1e-2);
    }

    // Chunked: the same queries in chunks of several sizes, earlier keys in
    // blocks that straddle the 64-key tiles; bits must match one shot.
    for (int chunk : {1, 37, 64, 100, 256}) {
      std::vector<bf16> got;
      std::vector<int> sizes;
      for (int q0 = 0; q0 < sh.total; q0 += chunk) {
        const int n = std::min(chunk, sh.total - q0);
        sizes.push_back(n);
        if (chunk == 1 && q0 > 40 && q0 < sh.total - 3) {  // decode: many 1-token blocks, skip most
          continue;
        }
        auto part = run_attention(s, q, sh.heads, q0, n, sizes);
        // Compare this chunk's rows right away.
        const auto* ref_rows = one.data() + q0 * w;
        BOOST_TEST_INFO("hd " << sh.hd << " chunk " << chunk << " q0 " << q0);
        BOOST_TEST(std::memcmp(part.data(), ref_rows, part.size() * sizeof(bf16)) == 0);
      }
    }
  }
}

// Selective recompute with one split walks the tiles launch_attention walks:
// rows at scattered positions equal a full prefill's rows bitwise (through
// the Hopper kernel on an H200).
BOOST_AUTO_TEST_CASE(attention_at_one_split_equals_prefill_rows) {
  for (int hd : {128, 64}) {
    const int heads = 8, kvh = 2, total = 400;
    kv_set s{kvh, hd, total, {}, {}};
    s.k = round_bf16(random_floats(static_cast<std::size_t>(kvh) * total * hd, 30, -2.0f, 2.0f));
    s.v = round_bf16(random_floats(s.k.size(), 31));
    const std::size_t w = static_cast<std::size_t>(heads) * hd;
    const auto q = round_bf16(random_floats(w * total, 32, -2.0f, 2.0f));
    std::vector<int> positions;
    for (int p = 5; p < total; p += 7) positions.push_back(p);
    const auto one = run_attention(s, q, heads, 0, positions.back() + 1, {positions.back() + 1});
    const auto at = run_attention_at(s, q, heads, positions);
    for (std::size_t i = 0; i < positions.size(); ++i) {
      BOOST_TEST_INFO("hd " << hd << " position " << positions[i]);
      BOOST_TEST(std::memcmp(at.data() + i * w, one.data() + static_cast<std::size_t>(positions[i]) * w,
                             w * sizeof(bf16)) == 0);
    }
  }
}

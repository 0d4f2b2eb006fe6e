// kvflow_prefill_bench: compute-only prefill time of the CUDA engine on the
// large presets with weights made on the device, one shot and in chunks.
// Writes JSON records (model, context_tokens, impl, chunk_tokens, seconds,
// tflops, device); apps/bench/prefill_reference.py runs transformers on the
// same shapes and merges both into results/prefill.json and prefill.md.

#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/cuda_engine.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/random_init.cuh"
#include "messages/error.hpp"
#include "platform/cuda.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"

namespace {

using namespace kvflow;
using namespace kvflow::model;

// Model FLOPs of a causal prefill of s tokens (multiply-add = 2), the same
// formula for every implementation: projections and MLP for every token,
// attention over the causal half (QK^T and PV), the logits of one row.
double prefill_flops(const config& c, double s) {
  const double h = c.hidden, q = static_cast<double>(c.heads) * c.head_dim;
  const double kv = static_cast<double>(c.kv_heads) * c.head_dim;
  const double per_token = h * (q + 2 * kv) + q * h + 3.0 * h * c.intermediate;
  const double linear = 2.0 * s * c.layers * per_token;
  const double attention = 2.0 * 2.0 * c.layers * q * s * (s + 1) / 2.0;
  return linear + attention + 2.0 * h * c.vocab_size;
}

struct chunk_buffers {
  engine* e;
  std::vector<kv_block> blocks;
  void* hidden = nullptr;
  int hidden_tokens = 0;
  ~chunk_buffers() {
    for (auto& b : blocks) e->release(b.data);
    e->release(hidden);
  }
};

// Seconds of the median of `reps` prefills of `tokens` in chunks of `chunk`
// (0: one shot), timed with events on the engine's stream. With `logits`,
// each prefill ends with the last row's logits copied to the host (the
// first token's work, which a runtime's TTFT and transformers'
// logits_to_keep=1 also hold).
double time_prefill(cuda_engine& e, const std::vector<std::int32_t>& tokens, int chunk, int warmup, int reps,
                    bool logits) {
  const int total = static_cast<int>(tokens.size());
  const int step = chunk > 0 ? chunk : total;
  chunk_buffers buf{&e, {}, nullptr, 0};
  for (int p = 0; p < total; p += step) {
    const int n = std::min(step, total - p);
    kv_block b;
    b.shape = kv_shape_of(e.cfg(), n, dtype::bf16);
    b.data = e.allocate(b.shape.bytes());
    buf.blocks.push_back(b);
  }
  buf.hidden_tokens = std::min(step, total);
  buf.hidden = e.allocate(static_cast<std::size_t>(buf.hidden_tokens) * e.cfg().hidden * sizeof(float));
  cudaEvent_t start, stop;
  KVFLOW_CUDA_CHECK(cudaEventCreate(&start));
  KVFLOW_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  std::vector<float> row;
  for (int r = 0; r < warmup + reps; ++r) {
    KVFLOW_CUDA_CHECK(cudaEventRecord(start, e.stream()));
    int i = 0;
    for (int p = 0; p < total; p += step, ++i) {
      const int n = std::min(step, total - p);
      chunk_job job;
      job.tokens = tokens.data() + p;
      job.count = n;
      job.pos0 = p;
      job.layer_begin = 0;
      job.layer_end = e.cfg().layers;
      job.past = {buf.blocks.data(), i};
      job.out = buf.blocks[static_cast<std::size_t>(i)];
      job.hidden = {buf.hidden, n};
      e.run(job);
    }
    // Enqueued on the stream and waited for: the stop event follows it.
    if (logits) e.logits({buf.hidden, std::min(step, total - (total - 1) / step * step)}, row);
    KVFLOW_CUDA_CHECK(cudaEventRecord(stop, e.stream()));
    KVFLOW_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    KVFLOW_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (r >= warmup) times.push_back(ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// The attention kernel alone (one layer), old (mma.sync) against the
// launch_attention default (the Hopper wgmma kernel on an H200), in the same
// process: `count` queries at [len - count, len) over keys [0, len) in one
// block (count == len: a full causal prefill; less: a chunk of new rows over
// a cached prefix). FLOPs: 4 d heads per (query, key) pair the mask keeps.
// Returns one JSON record per kernel; the outputs of the two are compared.
nlohmann::json time_attention(int heads, int kv_heads, int hd, int len, int count, const std::string& device) {
  const std::size_t qn = static_cast<std::size_t>(count) * heads * hd;
  const std::size_t kvn = static_cast<std::size_t>(2) * kv_heads * len * hd;
  platform::device_buffer q_mem(qn * 2), out_mem(qn * 2), out_old_mem(qn * 2), kv_mem(kvn * 2),
      table_mem(sizeof(cuda::attn_block));
  auto* q = q_mem.as<__nv_bfloat16>();
  auto* out = out_mem.as<__nv_bfloat16>();
  auto* out_old = out_old_mem.as<__nv_bfloat16>();
  auto* kv = kv_mem.as<__nv_bfloat16>();
  auto* table = table_mem.as<cuda::attn_block>();
  KVFLOW_CUDA_CHECK(cuda::launch_fill_uniform(q, qn, 3, 0, 0.0f, 2.0f, nullptr));
  KVFLOW_CUDA_CHECK(cuda::launch_fill_uniform(kv, kvn, 3, 1, 0.0f, 2.0f, nullptr));
  cuda::attn_block b{kv, 0, len};
  platform::copy_now(table, &b, sizeof(b), cudaMemcpyHostToDevice);
  cudaEvent_t start, stop;
  KVFLOW_CUDA_CHECK(cudaEventCreate(&start));
  KVFLOW_CUDA_CHECK(cudaEventCreate(&stop));
  const int pos0 = len - count;
  const double pairs = static_cast<double>(count) * pos0 + static_cast<double>(count) * (count + 1) / 2.0;
  const double flops = 4.0 * heads * hd * pairs;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  nlohmann::json recs = nlohmann::json::array();
  for (auto kind : {cuda::attention_kind::mma_sync, cuda::attention_kind::automatic}) {
    const bool old = kind == cuda::attention_kind::mma_sync;
    __nv_bfloat16* o = old ? out_old : out;
    std::vector<float> ms(7);
    for (auto& m : ms) {
      KVFLOW_CUDA_CHECK(cudaEventRecord(start, nullptr));
      KVFLOW_CUDA_CHECK(
          cuda::launch_attention(q, count, pos0, table, 1, 0, heads, kv_heads, hd, scale, o, nullptr, kind));
      KVFLOW_CUDA_CHECK(cudaEventRecord(stop, nullptr));
      KVFLOW_CUDA_CHECK(cudaEventSynchronize(stop));
      KVFLOW_CUDA_CHECK(cudaEventElapsedTime(&m, start, stop));
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2] / 1e3;
    const char* name =
        old ? "mma_sync"
            : (cuda::attention_sm90_supports(hd) && cuda::attention_sm90_available() ? "wgmma_sm90" : "mma_sync");
    std::printf("attention %-10s heads %d/%d hd %3d len %6d queries %6d: %8.3f ms %7.1f TFLOP/s\n", name, heads,
                kv_heads, hd, len, count, med * 1e3, flops / med / 1e12);
    std::fflush(stdout);
    recs.push_back({{"kernel", name},
                    {"heads", heads},
                    {"kv_heads", kv_heads},
                    {"head_dim", hd},
                    {"context_tokens", len},
                    {"query_tokens", count},
                    {"seconds", med},
                    {"tflops", flops / med / 1e12},
                    {"device", device}});
  }
  // The two kernels' outputs agree (bf16 rounding apart): a large-shape
  // check beside the unit tests' CPU reference.
  std::vector<__nv_bfloat16> a(qn), c(qn);
  platform::copy_now(a.data(), out, qn * 2, cudaMemcpyDeviceToHost);
  platform::copy_now(c.data(), out_old, qn * 2, cudaMemcpyDeviceToHost);
  double num = 0, den = 0, worst = 0;
  for (std::size_t i = 0; i < qn; ++i) {
    const double x = __bfloat162float(a[i]), y = __bfloat162float(c[i]);
    num += (x - y) * (x - y);
    den += y * y;
    worst = std::max(worst, std::abs(x - y));
  }
  const double rel = den > 0 ? std::sqrt(num / den) : (num > 0 ? 1.0 : 0.0);
  std::printf("  new vs old: rel err %.3g, max abs diff %.3g\n", rel, worst);
  for (auto& r : recs) {
    r["rel_err_vs_mma_sync"] = rel;
    r["max_abs_diff_vs_mma_sync"] = worst;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return recs;
}

// TFLOP/s of llama-3-8b's four products at each row count, with the
// heuristic's algorithm (untuned) and the tuned one (gemm.hpp: equal bits,
// fastest), both chosen at 4096 rows as the engine does. Also the products'
// share of one forward: per-layer sum x layers.
nlohmann::json time_gemms(const std::vector<int>& row_counts, const std::string& device) {
  struct shape {
    const char* name;
    int n, k;
    bool f32;
  };
  const shape shapes[] = {{"qkv", 6144, 4096, false},
                          {"wo", 4096, 4096, true},
                          {"gate_up", 28672, 4096, false},
                          {"down", 4096, 14336, true}};
  const int m_max = *std::max_element(row_counts.begin(), row_counts.end());
  platform::device_buffer x_mem(static_cast<std::size_t>(m_max) * 14336 * 2),
      w_mem(static_cast<std::size_t>(28672) * 4096 * 2), y_mem(static_cast<std::size_t>(m_max) * 28672 * 4);
  auto* x = x_mem.as<__nv_bfloat16>();
  auto* w = w_mem.as<__nv_bfloat16>();
  void* y = y_mem.data();
  KVFLOW_CUDA_CHECK(cuda::launch_fill_uniform(x, static_cast<std::size_t>(m_max) * 14336, 5, 0, 0.0f, 1.0f, nullptr));
  KVFLOW_CUDA_CHECK(cuda::launch_fill_uniform(w, static_cast<std::size_t>(28672) * 4096, 5, 1, 0.0f, 0.02f, nullptr));
  KVFLOW_CUDA_CHECK(cudaMemset(y, 0, static_cast<std::size_t>(m_max) * 28672 * 4));
  cudaEvent_t start, stop;
  KVFLOW_CUDA_CHECK(cudaEventCreate(&start));
  KVFLOW_CUDA_CHECK(cudaEventCreate(&stop));
  nlohmann::json recs = nlohmann::json::array();
  // Both runners time each (m, product) back to back, so that a clock that
  // drifts during the run (ramp-up, power throttling) weighs on both alike.
  cuda::gemm_runner runners[3] = {cuda::gemm_runner(4096, 0, 0), cuda::gemm_runner(4096, 1, 0),
                                  cuda::gemm_runner(4096, 0, 1)};
  const char* runner_names[3] = {"heuristic", "tuned", "rows"};
  for (int tuned : {0, 1, 2})
    for (const auto& sh : shapes)
      std::printf("gemm plan %s %s: %s\n", runner_names[tuned], sh.name,
                  runners[tuned].describe(sh.n, sh.k, sh.f32, sh.f32).c_str());
  for (int m : row_counts) {
    double layer_s[3] = {0, 0, 0}, layer_flops = 0;
    for (const auto& sh : shapes) {
      const double flops = 2.0 * m * static_cast<double>(sh.n) * sh.k;
      layer_flops += flops;
      for (int tuned : {0, 1, 2}) {
        cuda::gemm_runner& g = runners[tuned];
        std::vector<float> ms(5);
        g.run(x, w, y, m, sh.n, sh.k, sh.f32, sh.f32, nullptr);  // warm
        for (auto& t : ms) {
          KVFLOW_CUDA_CHECK(cudaEventRecord(start, nullptr));
          g.run(x, w, y, m, sh.n, sh.k, sh.f32, sh.f32, nullptr);
          KVFLOW_CUDA_CHECK(cudaEventRecord(stop, nullptr));
          KVFLOW_CUDA_CHECK(cudaEventSynchronize(stop));
          KVFLOW_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
        }
        std::sort(ms.begin(), ms.end());
        layer_s[tuned] += ms[2] / 1e3;
        std::printf("gemm %-9s m %6d %-8s %8.3f ms %6.1f TFLOP/s\n", runner_names[tuned], m, sh.name, ms[2],
                    flops / (ms[2] / 1e3) / 1e12);
        recs.push_back({{"kind", "gemm"},
                        {"algorithm", runner_names[tuned]},
                        {"product", sh.name},
                        {"m", m},
                        {"n", sh.n},
                        {"k", sh.k},
                        {"seconds", ms[2] / 1e3},
                        {"tflops", flops / (ms[2] / 1e3) / 1e12},
                        {"plan", g.describe(sh.n, sh.k, sh.f32, sh.f32)},
                        {"device", device}});
      }
    }
    for (int tuned : {0, 1, 2}) {
      std::printf("gemm %-9s m %6d all four: %8.3f ms a layer, %6.1f TFLOP/s, x32 layers %.4f s\n", runner_names[tuned],
                  m, layer_s[tuned] * 1e3, layer_flops / layer_s[tuned] / 1e12, 32 * layer_s[tuned]);
      recs.push_back({{"kind", "gemm_layer"},
                      {"algorithm", runner_names[tuned]},
                      {"m", m},
                      {"seconds", layer_s[tuned]},
                      {"seconds_32_layers", 32 * layer_s[tuned]},
                      {"tflops", layer_flops / layer_s[tuned] / 1e12},
                      {"device", device}});
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return recs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvflow_prefill_bench: compute-only prefill time of the CUDA engine (random weights on the device)"};
  std::vector<std::string> models{"llama-3-8b", "llama-2-7b"};
  std::vector<int> lengths{4096, 8192, 16384, 32768};
  std::vector<int> chunks{0, 8192};
  int warmup = 1, reps = 3;
  std::uint64_t seed = 1;
  std::string out_path;
  app.add_option("--models", models, "model presets")->delimiter(',');
  app.add_option("--lengths", lengths, "context lengths in tokens")->delimiter(',');
  app.add_option("--chunks", chunks, "chunk sizes in tokens, 0 = one shot")->delimiter(',');
  app.add_option("--warmup", warmup, "untimed runs first");
  app.add_option("--reps", reps, "timed runs (the median is reported)");
  app.add_option("--seed", seed, "weight seed");
  app.add_option("--json", out_path, "write the records to this file");
  bool attention_only = false;
  bool gemm_only = false;
  bool logits = false;
  app.add_flag("--logits", logits,
               "end each prefill with the last row's logits on the host (the work of a prompt's prefill up to its "
               "first token)");
  app.add_flag(
      "--gemm", gemm_only,
      "time llama-3-8b's four products at each of --lengths rows, heuristic against tuned algorithm, and exit");
  app.add_flag("--attention", attention_only,
               "time the attention kernels alone (old mma.sync against the default; 32/8 x 128, 9/3 x 64) and exit");
  CLI11_PARSE(app, argc, argv);
  if (reps < 1) reps = 1;
  try {
    if (!platform::cuda_device_available()) {
      std::fprintf(stderr, "no CUDA device found\n");
      return 2;
    }
    cudaDeviceProp prop{};
    KVFLOW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    if (gemm_only) {
      const nlohmann::json recs = time_gemms(lengths, prop.name);
      if (!out_path.empty()) std::ofstream(out_path) << recs.dump(1) << "\n";
      return 0;
    }
    if (attention_only) {
      // llama-3-8b (32/8 x 128) full causal and with a chunk of 1024 and a
      // quarter of the context as new rows; SmolLM2 (9/3 x 64) full causal.
      nlohmann::json recs = nlohmann::json::array();
      auto add = [&](const nlohmann::json& r) { recs.insert(recs.end(), r.begin(), r.end()); };
      for (int len : lengths) {
        add(time_attention(32, 8, 128, len, len, prop.name));
        add(time_attention(32, 8, 128, len, std::min(len, 1024), prop.name));
        if (len / 4 > 1024) add(time_attention(32, 8, 128, len, len / 4, prop.name));
        add(time_attention(9, 3, 64, len, len, prop.name));
      }
      if (!out_path.empty()) std::ofstream(out_path) << recs.dump(1) << "\n";
      return 0;
    }
    nlohmann::json records = nlohmann::json::array();
    std::printf("%-12s %8s %8s %10s %8s\n", "model", "tokens", "chunk", "seconds", "TFLOP/s");
    for (const auto& name : models) {
      const config c = preset(name);
      auto e = make_cuda_engine_random(c, seed);
      std::vector<std::int32_t> tokens;
      for (int len : lengths) {
        tokens.resize(static_cast<std::size_t>(len));
        for (int i = 0; i < len; ++i) tokens[i] = static_cast<std::int32_t>((i * 2654435761u + 7u) % c.vocab_size);
        for (int chunk : chunks) {
          if (chunk >= len) continue;  // same as one shot
          const double s = time_prefill(*e, tokens, chunk, warmup, reps, logits);
          const double tf = prefill_flops(c, len) / s / 1e12;
          std::printf("%-12s %8d %8d %10.4f %8.1f\n", name.c_str(), len, chunk, s, tf);
          std::fflush(stdout);
          records.push_back({{"model", name},
                             {"context_tokens", len},
                             {"impl", "kvflow"},
                             {"chunk_tokens", chunk},
                             {"logits", logits},
                             {"seconds", s},
                             {"tflops", tf},
                             {"device", prop.name}});
        }
      }
    }
    if (!out_path.empty()) {
      std::ofstream f(out_path);
      f << records.dump(1) << "\n";
    }
  } catch (const kvflow::error& ex) {
    std::fprintf(stderr, "kvflow_prefill_bench: %s\n", ex.what());
    return 1;
  }
  return 0;
}

#include "kernels/model/cpu_engine.hpp"

#include <cstring>
#include <new>
#include <string>

#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/logits.hpp"
#include "kernels/cpu/matmul.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/swiglu.hpp"
#include "kernels/cpu/thread_pool.hpp"
#include "messages/error.hpp"
#include "platform/aligned_heap.hpp"

namespace kvflow::model {
namespace {

constexpr std::align_val_t host_alignment{64};

struct packed_layer {
  cpu::packed_matrix qkv;  // [q | k | v] rows
  cpu::packed_matrix wo;
  cpu::packed_matrix gate_up;  // [gate | up] rows
  cpu::packed_matrix down;
};

void release_matrix(std::vector<float>& v) { std::vector<float>().swap(v); }

class cpu_engine final : public engine {
 public:
  cpu_engine(weights w, int threads, layer_range held) : w_(std::move(w)), pool_(threads) {
    check_shapes(w_, "cpu engine weights (" + w_.cfg.name + ")");
    bool unset = true;
    for (auto b : w_.fingerprint) unset = unset && b == 0;
    // The whole model's digest, before any layer is dropped.
    if (unset) compute_fingerprint(w_);
    const config& c = w_.cfg;
    if (held.end < 0) held.end = c.layers;
    if (held.begin < 0 || held.begin >= held.end || held.end > c.layers)
      throw error(errc::invalid_argument, "cpu engine: layer range [" + std::to_string(held.begin) + ", " +
                                              std::to_string(held.end) + ") of a model of " + std::to_string(c.layers) +
                                              " layers");
    held_ = held;
    const bool first = held.begin == 0, last = held.end == c.layers;
    if (!first && !(last && c.tie_embeddings)) release_matrix(w_.embedding);
    if (!last) {
      release_matrix(w_.final_norm);
      release_matrix(w_.output);
    }
    inv_freq_ = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
    layers_.resize(w_.layers.size());
    for (int li = 0; li < c.layers; ++li) {
      auto& l = w_.layers[static_cast<std::size_t>(li)];
      if (li < held.begin || li >= held.end) {
        l = layer_weights{};
        continue;
      }
      packed_layer p;
      p.qkv = cpu::pack_matrix(l.wq.data(), c.heads * c.head_dim, c.hidden);
      cpu::pack_rows(p.qkv, l.wk.data(), c.kv_heads * c.head_dim);
      cpu::pack_rows(p.qkv, l.wv.data(), c.kv_heads * c.head_dim);
      p.wo = cpu::pack_matrix(l.wo.data(), c.hidden, c.heads * c.head_dim);
      p.gate_up = cpu::pack_matrix(l.w_gate.data(), c.intermediate, c.hidden);
      cpu::pack_rows(p.gate_up, l.w_up.data(), c.intermediate);
      p.down = cpu::pack_matrix(l.w_down.data(), c.hidden, c.intermediate);
      for (auto* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) release_matrix(*m);
      layers_[static_cast<std::size_t>(li)] = std::move(p);
    }
  }

  const config& cfg() const override { return w_.cfg; }
  dtype kv_type() const override { return dtype::f32; }
  const std::array<std::uint8_t, 32>& fingerprint() const override { return w_.fingerprint; }

  // Workspaces take and give back blocks with every request: aligned new
  // (memalign) would fragment glibc's arena without bound (aligned_heap.hpp).
  void* allocate(std::size_t bytes) override {
    void* p = platform::aligned_heap_alloc(bytes, static_cast<std::size_t>(host_alignment));
    if (p == nullptr) throw error(errc::io_failure, "cpu engine: cannot allocate " + std::to_string(bytes) + " bytes");
    return p;
  }
  void release(void* p) override { platform::aligned_heap_free(p); }
  void to_backend(void* dst, const void* src, std::size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, std::size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void synchronize() override {}
  void when_done(std::function<void()> fn) override { fn(); }

  void run(const chunk_job& job) override;
  // The reference: every job checked before any runs, then one after
  // another (the CPU kernels compute each row alone, so fusing gains nothing).
  void run_fused(const std::vector<chunk_job>& jobs) override {
    check_fused(jobs);
    for (const auto& j : jobs) check_job(j);
    for (const auto& j : jobs) run(j);
  }
  void logits(const hidden_state& h, std::vector<float>& out) override;
  void run_selected(const selected_job& job) override;
  layer_range layers_held() const override { return held_; }
  std::size_t weight_bytes() const override {
    std::size_t floats = w_.embedding.size() + w_.final_norm.size() + w_.output.size();
    for (const auto& l : w_.layers) floats += l.attn_norm.size() + l.ffn_norm.size();
    for (const auto& p : layers_)
      for (const auto* m : {&p.qkv, &p.wo, &p.gate_up, &p.down}) floats += m->panels.size();
    return floats * sizeof(float);
  }

 private:
  void check_held(int begin, int end, const char* what) const;
  void check_job(const chunk_job& job) const;
  void check_block(const kv_shape& s, const std::string& what) const;
  void layer_tail(int l, int n, float* h);

  weights w_;
  layer_range held_;
  cpu::thread_pool pool_;
  std::vector<float> inv_freq_;
  std::vector<packed_layer> layers_;
  // Scratch reused across calls, sized for the largest chunk so far.
  std::vector<float> normed_, qkv_, attn_, proj_, gate_up_, act_;
};

void cpu_engine::check_block(const kv_shape& s, const std::string& what) const {
  const config& c = w_.cfg;
  if (s.layers != c.layers || s.kv_heads != c.kv_heads || s.head_dim != c.head_dim || s.type != dtype::f32 ||
      s.tokens < 0) {
    throw error(errc::invalid_argument,
                "cpu engine: " + what + " has shape layers " + std::to_string(s.layers) + ", kv_heads " +
                    std::to_string(s.kv_heads) + ", head_dim " + std::to_string(s.head_dim) + ", tokens " +
                    std::to_string(s.tokens) + ", type " + std::to_string(static_cast<int>(s.type)) +
                    "; the model needs " + std::to_string(c.layers) + " layers, " + std::to_string(c.kv_heads) +
                    " kv heads, head_dim " + std::to_string(c.head_dim) + ", f32");
  }
}

void cpu_engine::check_held(int begin, int end, const char* what) const {
  if (begin < held_.begin || end > held_.end)
    throw error(errc::invalid_argument, std::string("cpu engine: ") + what + " of layers [" + std::to_string(begin) +
                                            ", " + std::to_string(end) + ") on an engine holding layers [" +
                                            std::to_string(held_.begin) + ", " + std::to_string(held_.end) + ")");
}

void cpu_engine::check_job(const chunk_job& job) const {
  const config& c = w_.cfg;
  auto bad = [](const std::string& what) { throw error(errc::invalid_argument, "cpu engine: chunk job " + what); };
  if (job.count <= 0) bad("count = " + std::to_string(job.count));
  if (job.pos0 < 0) bad("pos0 = " + std::to_string(job.pos0));
  if (job.layer_begin < 0 || job.layer_end > c.layers || job.layer_begin >= job.layer_end) {
    bad("layers [" + std::to_string(job.layer_begin) + ", " + std::to_string(job.layer_end) + ") of " +
        std::to_string(c.layers));
  }
  check_held(job.layer_begin, job.layer_end, "chunk job");
  if (job.layer_begin == 0 && !job.tokens) bad("has no tokens for layer 0");
  if (!job.hidden.data || job.hidden.tokens != job.count) {
    bad("hidden state of " + std::to_string(job.hidden.tokens) + " tokens for a chunk of " + std::to_string(job.count));
  }
  if (!job.out.data) bad("has no output block");
  check_block(job.out.shape, "output block");
  if (job.out.shape.tokens != job.count) {
    bad("output block of " + std::to_string(job.out.shape.tokens) + " tokens for a chunk of " +
        std::to_string(job.count));
  }
  if (job.past.count < 0 || (job.past.count > 0 && !job.past.blocks)) bad("past view is invalid");
  long long past_tokens = 0;
  for (int b = 0; b < job.past.count; ++b) {
    const kv_block& blk = job.past.blocks[b];
    if (!blk.data && blk.shape.tokens > 0) bad("past block " + std::to_string(b) + " has no data");
    check_block(blk.shape, "past block " + std::to_string(b));
    past_tokens += blk.shape.tokens;
  }
  if (past_tokens != job.pos0) {
    bad("past view holds " + std::to_string(past_tokens) + " tokens, pos0 = " + std::to_string(job.pos0));
  }
}

void cpu_engine::run(const chunk_job& job) {
  check_job(job);
  const config& c = w_.cfg;
  const int n = job.count;
  const int hidden = c.hidden;
  const int q_width = c.heads * c.head_dim;
  const int kv_width = c.kv_heads * c.head_dim;
  const int qkv_width = q_width + 2 * kv_width;
  auto sized = [](std::vector<float>& v, std::size_t elems) {
    if (v.size() < elems) v.resize(elems);
    return v.data();
  };
  const std::size_t rows = static_cast<std::size_t>(n);
  float* h = static_cast<float*>(job.hidden.data);  // [n][hidden]
  float* normed = sized(normed_, rows * hidden);    // [n][hidden]
  float* qkv = sized(qkv_, rows * qkv_width);       // [n][q | k | v]
  float* attn = sized(attn_, rows * q_width);       // [n][heads * head_dim]
  // layer_tail's scratch: proj [n][hidden], gate_up [n][gate | up], act [n][intermediate].
  sized(proj_, rows * hidden);
  sized(gate_up_, rows * 2 * c.intermediate);
  sized(act_, rows * c.intermediate);

  if (job.layer_begin == 0) cpu::embedding(w_.embedding.data(), c.vocab_size, hidden, job.tokens, n, h);

  std::vector<cpu::kv_segment> segments(job.past.count + 1);
  float* out_base = static_cast<float*>(job.out.data);
  const kv_shape& os = job.out.shape;
  for (int l = job.layer_begin; l < job.layer_end; ++l) {
    const layer_weights& lw = w_.layers[l];
    const packed_layer& pl = layers_[l];

    cpu::rmsnorm(h, lw.attn_norm.data(), n, hidden, c.rms_eps, normed);
    cpu::matmul(&pool_, normed, n, hidden, pl.qkv, qkv, qkv_width);
    cpu::rope(qkv, n, qkv_width, c.heads, c.head_dim, job.pos0, inv_freq_.data());
    cpu::rope(qkv + q_width, n, qkv_width, c.kv_heads, c.head_dim, job.pos0, inv_freq_.data());

    // This chunk's K (post-RoPE) and V into the block: [K|V][kv_head][token][dim].
    for (int kv = 0; kv < 2; ++kv) {
      for (int g = 0; g < c.kv_heads; ++g) {
        float* dst = out_base + os.offset(l, kv, g, 0, 0);
        const float* src =
            qkv + q_width + static_cast<std::size_t>(kv) * kv_width + static_cast<std::size_t>(g) * c.head_dim;
        for (int t = 0; t < n; ++t) {
          std::memcpy(dst + static_cast<std::size_t>(t) * c.head_dim, src + static_cast<std::size_t>(t) * qkv_width,
                      sizeof(float) * c.head_dim);
        }
      }
    }
    for (int b = 0; b < job.past.count; ++b) {
      const kv_block& blk = job.past.blocks[b];
      const float* base = static_cast<const float*>(blk.data);
      segments[b] = {base + blk.shape.offset(l, 0, 0, 0, 0), base + blk.shape.offset(l, 1, 0, 0, 0), blk.shape.tokens};
    }
    segments[job.past.count] = {out_base + os.offset(l, 0, 0, 0, 0), out_base + os.offset(l, 1, 0, 0, 0), n};
    cpu::attention(&pool_, qkv, n, qkv_width, job.pos0, segments.data(), static_cast<int>(segments.size()), c.heads,
                   c.kv_heads, c.head_dim, attn, q_width);
    layer_tail(l, n, h);
  }
}

void cpu_engine::logits(const hidden_state& h, std::vector<float>& out) {
  const config& c = w_.cfg;
  if (!h.data || h.tokens <= 0) {
    throw error(errc::invalid_argument,
                "cpu engine: logits of a hidden state with " + std::to_string(h.tokens) + " tokens");
  }
  check_held(c.layers - 1, c.layers, "logits (the final norm)");
  const float* last = static_cast<const float*>(h.data) + static_cast<std::size_t>(h.tokens - 1) * c.hidden;
  std::vector<float> normed(c.hidden);
  cpu::rmsnorm(last, w_.final_norm.data(), 1, c.hidden, c.rms_eps, normed.data());
  out.resize(c.vocab_size);
  cpu::logits(normed.data(), w_.lm_head().data(), c.vocab_size, c.hidden, out.data());
}

// Selective recompute: as run(), with a RoPE position per row and attention
// over the prompt's block as it stands. Rows are grouped into runs of
// consecutive positions so that a run's keys are read once.
void cpu_engine::run_selected(const selected_job& job) {
  const config& c = w_.cfg;
  auto bad = [](const std::string& what) { throw error(errc::invalid_argument, "cpu engine: selected job " + what); };
  if (job.count <= 0 || !job.positions) bad("has no rows");
  if (job.layer_begin < 0 || job.layer_end > c.layers || job.layer_begin >= job.layer_end) bad("has no layers");
  check_held(job.layer_begin, job.layer_end, "selected job");
  if (job.layer_begin == 0 && !job.tokens) bad("has no tokens for layer 0");
  if (!job.hidden.data || job.hidden.tokens != job.count) bad("hidden state does not match its rows");
  if (!job.kv.data) bad("has no KV block");
  if (job.rope_offset < 0) bad("has a negative rope_offset");
  check_block(job.kv.shape, "selected job's KV block");
  for (int r = 0; r < job.count; ++r)
    if (job.positions[r] < 0 || job.positions[r] >= job.kv.shape.tokens ||
        (r > 0 && job.positions[r] <= job.positions[r - 1]))
      bad("position " + std::to_string(job.positions[r]) + " at row " + std::to_string(r) +
          " is not ascending within a block of " + std::to_string(job.kv.shape.tokens));
  const int n = job.count, hidden = c.hidden;
  const int q_width = c.heads * c.head_dim, kv_width = c.kv_heads * c.head_dim;
  const int qkv_width = q_width + 2 * kv_width;
  const std::size_t rows = static_cast<std::size_t>(n);
  auto sized = [](std::vector<float>& v, std::size_t elems) {
    if (v.size() < elems) v.resize(elems);
    return v.data();
  };
  float* h = static_cast<float*>(job.hidden.data);  // [n][hidden]
  float* normed = sized(normed_, rows * hidden);
  float* qkv = sized(qkv_, rows * qkv_width);
  float* attn = sized(attn_, rows * q_width);
  sized(proj_, rows * hidden);
  sized(gate_up_, rows * 2 * c.intermediate);
  sized(act_, rows * c.intermediate);
  if (job.layer_begin == 0) cpu::embedding(w_.embedding.data(), c.vocab_size, hidden, job.tokens, n, h);
  float* kv = static_cast<float*>(job.kv.data);  // [layers][2][kv_heads][tokens][head_dim]
  const kv_shape& ks = job.kv.shape;
  for (int l = job.layer_begin; l < job.layer_end; ++l) {
    const layer_weights& lw = w_.layers[l];
    const packed_layer& pl = layers_[l];
    cpu::rmsnorm(h, lw.attn_norm.data(), n, hidden, c.rms_eps, normed);
    cpu::matmul(&pool_, normed, n, hidden, pl.qkv, qkv, qkv_width);
    for (int r = 0; r < n; ++r) {
      float* row = qkv + static_cast<std::size_t>(r) * qkv_width;
      cpu::rope(row, 1, qkv_width, c.heads + c.kv_heads, c.head_dim, job.positions[r] + job.rope_offset,
                inv_freq_.data());
      for (int kvi = 0; kvi < 2; ++kvi)
        for (int g = 0; g < c.kv_heads; ++g)
          std::memcpy(
              kv + ks.offset(l, kvi, g, job.positions[r], 0),
              row + q_width + static_cast<std::size_t>(kvi) * kv_width + static_cast<std::size_t>(g) * c.head_dim,
              sizeof(float) * c.head_dim);
    }
    const cpu::kv_segment all{kv + ks.offset(l, 0, 0, 0, 0), kv + ks.offset(l, 1, 0, 0, 0), ks.tokens};
    for (int r0 = 0; r0 < n;) {
      int r1 = r0 + 1;
      while (r1 < n && job.positions[r1] == job.positions[r1 - 1] + 1) ++r1;
      cpu::attention(&pool_, qkv + static_cast<std::size_t>(r0) * qkv_width, r1 - r0, qkv_width, job.positions[r0],
                     &all, 1, c.heads, c.kv_heads, c.head_dim, attn + static_cast<std::size_t>(r0) * q_width, q_width);
      r0 = r1;
    }
    layer_tail(l, n, h);
  }
}

// After attention (attn_ holds its n rows): output projection, residual,
// MLP, residual, on the scratch sized by the caller.
void cpu_engine::layer_tail(int l, int n, float* h) {
  const config& c = w_.cfg;
  const layer_weights& lw = w_.layers[l];
  const packed_layer& pl = layers_[l];
  const int hidden = c.hidden, q_width = c.heads * c.head_dim;
  const std::size_t elems = static_cast<std::size_t>(n) * hidden;
  float *attn = attn_.data(), *proj = proj_.data(), *normed = normed_.data();
  float *gate_up = gate_up_.data(), *act = act_.data();
  cpu::matmul(&pool_, attn, n, q_width, pl.wo, proj, hidden);
  for (std::size_t i = 0; i < elems; ++i) h[i] = h[i] + proj[i];

  cpu::rmsnorm(h, lw.ffn_norm.data(), n, hidden, c.rms_eps, normed);
  cpu::matmul(&pool_, normed, n, hidden, pl.gate_up, gate_up, 2 * c.intermediate);
  cpu::swiglu(gate_up, gate_up + c.intermediate, n, c.intermediate, 2 * c.intermediate, act, c.intermediate);
  cpu::matmul(&pool_, act, n, c.intermediate, pl.down, proj, hidden);
  for (std::size_t i = 0; i < elems; ++i) h[i] = h[i] + proj[i];
}

}  // namespace

std::unique_ptr<engine> make_cpu_engine(weights w, int threads, layer_range held) {
  return std::make_unique<cpu_engine>(std::move(w), threads, held);
}

}  // namespace kvflow::model

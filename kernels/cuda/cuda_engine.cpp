#include "kernels/cuda/cuda_engine.hpp"

#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/logits.cuh"
#include "kernels/cuda/random_init.cuh"
#include "kernels/cuda/rms_norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "messages/digest.hpp"
#include "messages/error.hpp"
#include "platform/block_cache.hpp"
#include "platform/cuda.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"

namespace kvflow::model {

using cuda::attn_block;
using bf16 = __nv_bfloat16;

namespace {

// A device allocation (platform::device_buffer) of `n` T on the current
// device that frees itself.
template <typename T>
struct dev_buf {
  T* ptr = nullptr;
  std::size_t n = 0;
  platform::device_buffer mem;
  dev_buf() = default;
  dev_buf(dev_buf&& o) noexcept : ptr(std::exchange(o.ptr, nullptr)), n(std::exchange(o.n, 0)), mem(std::move(o.mem)) {}
  void reset() {
    mem.reset();
    ptr = nullptr;
    n = 0;
  }
  void alloc(std::size_t count) {
    reset();
    if (count == 0) return;
    mem = platform::device_buffer(count * sizeof(T));
    ptr = mem.as<T>();
    n = count;
  }
};

struct layer_dev {
  dev_buf<float> attn_norm;  // [hidden]
  dev_buf<bf16> wqkv;        // [(heads + 2 kv_heads) * head_dim][hidden]: wq rows, wk rows, wv rows
  dev_buf<bf16> wo;          // [hidden][heads * head_dim]
  dev_buf<float> ffn_norm;   // [hidden]
  dev_buf<bf16> w_gate_up;   // [2 * intermediate][hidden]: gate rows, then up rows
  dev_buf<bf16> w_down;      // [hidden][intermediate]
};

// Host data of one run() (tokens, block table) goes through a ring of pinned
// slots, so run() never waits for the device unless the ring wraps.
struct upload_slot {
  platform::pinned_host_buffer host;
  platform::device_buffer dev;
  std::size_t bytes = 0;
  cudaEvent_t copied = nullptr;
};

std::string config_text(const config& c) {
  return c.name + "|" + std::to_string(c.vocab_size) + "|" + std::to_string(c.hidden) + "|" +
         std::to_string(c.intermediate) + "|" + std::to_string(c.layers) + "|" + std::to_string(c.heads) + "|" +
         std::to_string(c.kv_heads) + "|" + std::to_string(c.head_dim) + "|" + std::to_string(c.rms_eps) + "|" +
         std::to_string(c.rope_theta) + "|" + std::to_string(c.scaling.enabled) + "|" +
         std::to_string(c.scaling.factor) + "|" + std::to_string(c.scaling.low_freq_factor) + "|" +
         std::to_string(c.scaling.high_freq_factor) + "|" + std::to_string(c.scaling.original_max_positions) + "|" +
         std::to_string(c.tie_embeddings);
}

// KVFLOW_ENGINE_PROFILE=1: events between the kernels of run()'s and run_fused()'s forwards;
// the time of each kind of step is summed per row count and printed to
// stderr when the engine goes (where a forward's time goes: products,
// attention, elementwise). Each forward then ends with a wait, so profile
// runs are for the breakdown, not the total.
class op_profile {
 public:
  enum kind { embed, norm, qkv, rope, attention, o_proj, gate_up, swiglu, down, kinds };
  op_profile() {
    const char* v = std::getenv("KVFLOW_ENGINE_PROFILE");
    on_ = v != nullptr && v[0] == '1';
  }
  ~op_profile() {
    if (!on_) return;
    static const char* names[kinds] = {"embed",  "norm",    "qkv",    "rope", "attention",
                                       "o_proj", "gate_up", "swiglu", "down"};
    for (const auto& [rows, t] : totals_) {
      double all = 0;
      for (double v : t.ms) all += v;
      std::fprintf(stderr, "engine profile: %d rows, %d forwards, ms per forward:", rows, t.runs);
      for (int k = 0; k < kinds; ++k)
        if (t.ms[k] > 0) std::fprintf(stderr, " %s %.3f (%.1f%%)", names[k], t.ms[k] / t.runs, 100.0 * t.ms[k] / all);
      std::fprintf(stderr, " | all %.3f\n", all / t.runs);
    }
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  }
  /// Starts a forward of `rows` rows on `s`.
  void begin(int rows, cudaStream_t s) {
    if (!on_) return;
    rows_ = rows;
    marks_.clear();
    mark(kinds, s);
  }
  /// The step of `k` enqueued just now on `s` ends here.
  void mark(int k, cudaStream_t s) {
    if (!on_) return;
    if (marks_.size() == pool_.size()) {
      cudaEvent_t e = nullptr;
      KVFLOW_CUDA_CHECK(cudaEventCreate(&e));
      pool_.push_back(e);
    }
    KVFLOW_CUDA_CHECK(cudaEventRecord(pool_[marks_.size()], s));
    marks_.push_back(k);
  }
  /// Waits for the forward and adds its steps' times.
  void end() {
    if (!on_ || marks_.empty()) return;
    KVFLOW_CUDA_CHECK(cudaEventSynchronize(pool_[marks_.size() - 1]));
    entry& t = totals_[rows_];
    ++t.runs;
    for (std::size_t i = 1; i < marks_.size(); ++i) {
      float ms = 0;
      KVFLOW_CUDA_CHECK(cudaEventElapsedTime(&ms, pool_[i - 1], pool_[i]));
      t.ms[marks_[i]] += ms;
    }
  }

 private:
  struct entry {
    int runs = 0;
    std::array<double, kinds> ms{};
  };
  bool on_ = false;
  int rows_ = 0;
  std::vector<cudaEvent_t> pool_;
  std::vector<int> marks_;
  std::map<int, entry> totals_;
};

}  // namespace

class cuda_engine_impl {
 public:
  cuda_engine_impl(const config& c, int device, layer_range held) : cfg_(c), device_(device), held_(held) {
    validate(c, "cuda_engine");
    if (held_.end < 0) held_.end = c.layers;
    if (held_.begin < 0 || held_.begin >= held_.end || held_.end > c.layers)
      throw error(errc::invalid_argument, "cuda_engine: layer range [" + std::to_string(held.begin) + ", " +
                                              std::to_string(held.end) + ") of a model of " + std::to_string(c.layers) +
                                              " layers");
    if (!cuda::attention_supports(c.head_dim))
      throw error(errc::unsupported,
                  "cuda_engine: head_dim " + std::to_string(c.head_dim) + " has no attention kernel (16, 32, 64, 128)");
    const int n = platform::cuda_device_count();
    if (device < 0 || device >= n)
      throw error(errc::cuda_failure,
                  "cuda_engine: no CUDA device " + std::to_string(device) + " (" + std::to_string(n) + " visible)");
    KVFLOW_CUDA_CHECK(cudaSetDevice(device_));
    KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    gemm_ = std::make_unique<cuda::gemm_runner>();
    // The four products' algorithms (tuned: gemm.hpp) before any forward.
    const int hid = c.hidden, inter = c.intermediate;
    gemm_->prepare(static_cast<int>(qkv_width()), hid, false, false, stream_);
    gemm_->prepare(hid, static_cast<int>(q_width()), true, true, stream_);
    gemm_->prepare(2 * inter, hid, false, false, stream_);
    gemm_->prepare(hid, inter, true, true, stream_);
    const std::vector<float> inv = cuda::rope_inv_freq(c);
    inv_freq_.alloc(inv.size());
    // Uploads go on stream_, never through cudaMemcpy: a pageable
    // host-to-device cudaMemcpy may return before the data lands, and
    // stream_ does not wait for the legacy stream.
    platform::enqueue_copy(inv_freq_.ptr, inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice, stream_);
    KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));
    layers_.resize(static_cast<std::size_t>(c.layers));
    if (holds_last()) {
      norm_row_.alloc(static_cast<std::size_t>(c.hidden));
      logits_.alloc(static_cast<std::size_t>(c.vocab_size));
    }
    for (auto& s : slots_) KVFLOW_CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
    // Requests' blocks and hidden states come and go with every restore:
    // cudaFree waits for the whole device (other requests' forwards and
    // loads included), so freed blocks are kept for the next request, up to
    // an eighth of the device's memory.
    std::size_t free_bytes = 0, total_bytes = 0;
    KVFLOW_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const int dev = device_;
    blocks_ =
        std::make_unique<platform::block_cache>([dev](std::size_t bytes) { return platform::device_alloc(bytes, dev); },
                                                [](void* p) { platform::device_free(p); }, total_bytes / 8);
  }

  ~cuda_engine_impl() {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
    blocks_.reset();
    for (auto& s : slots_) {
      s.host.reset();
      s.dev.reset();
      if (s.copied) cudaEventDestroy(s.copied);
    }
    gemm_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::size_t q_width() const { return static_cast<std::size_t>(cfg_.heads) * cfg_.head_dim; }
  std::size_t qkv_width() const { return static_cast<std::size_t>(cfg_.heads + 2 * cfg_.kv_heads) * cfg_.head_dim; }

  // Whether the engine runs the model's last layer (and so logits()).
  bool holds_last() const { return held_.end == cfg_.layers; }
  // The embedding runs at layer 0, and is the output projection of a model
  // with tied embeddings.
  bool needs_embedding() const { return held_.begin == 0 || (holds_last() && cfg_.tie_embeddings); }

  // Throws unless layers [begin, end) are held (`what` names the call).
  void check_held(int begin, int end, const std::string& what) const {
    if (begin < held_.begin || end > held_.end)
      throw error(errc::invalid_argument, "cuda_engine::" + what + " of layers [" + std::to_string(begin) + ", " +
                                              std::to_string(end) + ") on an engine holding layers [" +
                                              std::to_string(held_.begin) + ", " + std::to_string(held_.end) + ")");
  }

  // Only the held layers' weights (plus the embedding, final norm and
  // output where the range needs them): a stage of a model too large for
  // one device fits on it.
  void alloc_weights() {
    const std::size_t h = static_cast<std::size_t>(cfg_.hidden);
    const std::size_t inter = static_cast<std::size_t>(cfg_.intermediate);
    if (needs_embedding()) embedding_.alloc(static_cast<std::size_t>(cfg_.vocab_size) * h);
    if (holds_last()) {
      final_norm_.alloc(h);
      if (!cfg_.tie_embeddings) output_.alloc(static_cast<std::size_t>(cfg_.vocab_size) * h);
    }
    for (int li = held_.begin; li < held_.end; ++li) {
      auto& l = layers_[static_cast<std::size_t>(li)];
      l.attn_norm.alloc(h);
      l.wqkv.alloc(qkv_width() * h);
      l.wo.alloc(h * q_width());
      l.ffn_norm.alloc(h);
      l.w_gate_up.alloc(2 * inter * h);
      l.w_down.alloc(h * inter);
    }
  }

  const bf16* lm_head() const { return cfg_.tie_embeddings ? embedding_.ptr : output_.ptr; }

  std::size_t weight_bytes() const {
    std::size_t b = embedding_.n * 2 + final_norm_.n * 4 + output_.n * 2;
    for (auto& l : layers_)
      b += (l.attn_norm.n + l.ffn_norm.n) * 4 + (l.wqkv.n + l.wo.n + l.w_gate_up.n + l.w_down.n) * 2;
    return b;
  }

  // Weights drawn on the device: the values of model::random_weights(cfg,
  // seed) (same tensor ids, centers and scales), made in place.
  void init_random(std::uint64_t seed) {
    alloc_weights();
    const config& c = cfg_;
    auto amp = [](int fan_in) { return std::sqrt(3.0f / static_cast<float>(fan_in)); };
    const float residual = 1.0f / std::sqrt(2.0f * static_cast<float>(c.layers));
    const int q_w = c.heads * c.head_dim;
    const std::size_t kv_rows = static_cast<std::size_t>(c.kv_heads) * c.head_dim;
    const std::size_t hid = static_cast<std::size_t>(c.hidden);
    // Tensor ids follow random_weights' order over the whole model, also
    // for tensors this engine does not hold (drawn nowhere, id skipped), so
    // a held tensor gets the values it has in the all-layer engine.
    std::uint64_t id = 0;
    auto mat = [&](bf16* p, std::size_t n, float scale) {
      if (p != nullptr) KVFLOW_LAUNCH_CHECK(cuda::launch_fill_uniform(p, n, seed, id, 0.0f, scale, stream_));
      ++id;
    };
    auto norm = [&](dev_buf<float>& b) {
      if (b.ptr != nullptr)
        KVFLOW_LAUNCH_CHECK(cuda::launch_fill_uniform_f32(b.ptr, b.n, seed, id, 1.0f, 0.1f, stream_));
      ++id;
    };
    mat(embedding_.ptr, embedding_.n, 1.0f);
    norm(final_norm_);
    if (!c.tie_embeddings) mat(output_.ptr, output_.n, amp(c.hidden));
    for (auto& l : layers_) {
      if (l.wqkv.ptr == nullptr) {
        id += 9;  // the layer's tensors below: attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down
        continue;
      }
      norm(l.attn_norm);
      // wqkv holds wq rows, then wk rows, then wv rows: three tensors.
      mat(l.wqkv.ptr, static_cast<std::size_t>(q_w) * hid, amp(c.hidden));
      mat(l.wqkv.ptr + static_cast<std::size_t>(q_w) * hid, kv_rows * hid, amp(c.hidden));
      mat(l.wqkv.ptr + (static_cast<std::size_t>(q_w) + kv_rows) * hid, kv_rows * hid, amp(c.hidden));
      mat(l.wo.ptr, l.wo.n, amp(q_w) * residual);
      norm(l.ffn_norm);
      const std::size_t inter = static_cast<std::size_t>(c.intermediate) * hid;
      mat(l.w_gate_up.ptr, inter, amp(c.hidden));
      mat(l.w_gate_up.ptr + inter, inter, amp(c.hidden));
      mat(l.w_down.ptr, l.w_down.n, amp(c.intermediate) * residual);
    }
    KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));
    sha256 h;
    const std::string text = "kvflow-cuda-random-v2|" + config_text(cfg_) + "|" + std::to_string(seed);
    h.update(text.data(), text.size());
    fingerprint_ = h.finish();
  }

  // Upload through one fp32 staging buffer, converting to bf16 on the device.
  void init_from(const weights& w) {
    check_shapes(w, "cuda_engine upload");
    alloc_weights();
    // Staging as large as the largest tensor uploaded (a held one).
    std::size_t largest = 0;
    auto note = [&](std::size_t n) { largest = std::max(largest, n); };
    if (embedding_.ptr) note(w.embedding.size());
    if (output_.ptr) note(w.output.size());
    for (int li = held_.begin; li < held_.end; ++li) {
      const auto& l = w.layers[static_cast<std::size_t>(li)];
      note(l.wq.size() + l.wk.size() + l.wv.size());
      note(l.wo.size());
      note(l.w_gate.size() + l.w_up.size());
      note(l.w_down.size());
    }
    dev_buf<float> staging;
    staging.alloc(largest);
    auto put = [&](dev_buf<bf16>& dst, std::initializer_list<const std::vector<float>*> parts) {
      std::size_t off = 0;
      for (auto* v : parts) {
        platform::enqueue_copy(staging.ptr + off, v->data(), v->size() * sizeof(float), cudaMemcpyHostToDevice,
                               stream_);
        off += v->size();
      }
      KVFLOW_LAUNCH_CHECK(cuda::launch_to_bf16(staging.ptr, dst.ptr, off, stream_));
      KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));
    };
    auto put_f32 = [&](dev_buf<float>& dst, const std::vector<float>& v) {
      platform::enqueue_copy(dst.ptr, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice, stream_);
    };
    if (embedding_.ptr) put(embedding_, {&w.embedding});
    if (final_norm_.ptr) put_f32(final_norm_, w.final_norm);
    if (output_.ptr) put(output_, {&w.output});
    for (auto i = static_cast<std::size_t>(held_.begin); i < static_cast<std::size_t>(held_.end); ++i) {
      auto& s = w.layers[i];
      auto& d = layers_[i];
      put_f32(d.attn_norm, s.attn_norm);
      put(d.wqkv, {&s.wq, &s.wk, &s.wv});
      put(d.wo, {&s.wo});
      put_f32(d.ffn_norm, s.ffn_norm);
      put(d.w_gate_up, {&s.w_gate, &s.w_up});
      put(d.w_down, {&s.w_down});
    }
    KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));
    fingerprint_ = w.fingerprint;
  }

  void ensure_scratch(int count) {
    if (count <= scratch_tokens_) return;
    KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));  // old buffers may be in use
    const std::size_t t = static_cast<std::size_t>(count);
    const std::size_t h = static_cast<std::size_t>(cfg_.hidden);
    const std::size_t inter = static_cast<std::size_t>(cfg_.intermediate);
    act_a_.alloc(t * std::max(h, q_width()));
    act_q_.alloc(t * q_width());
    act_big_.alloc(t * std::max(qkv_width(), 2 * inter));
    act_ffn_.alloc(t * inter);
    resid_.alloc(t * h);
    scratch_tokens_ = count;
  }

  // Copies `bytes` of host data to device memory valid for this run's
  // kernels (stream order) and returns the device pointer.
  void* upload(const void* src, std::size_t bytes) {
    upload_slot& s = slots_[next_slot_];
    next_slot_ = (next_slot_ + 1) % slots_.size();
    KVFLOW_CUDA_CHECK(cudaEventSynchronize(s.copied));  // the previous copy out of s.host is done
    if (bytes > s.bytes) {
      KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));
      s.host.reset();
      s.dev.reset();
      s.bytes = 0;
      const std::size_t cap = std::max<std::size_t>(bytes, 4096);
      s.host = platform::pinned_host_buffer(cap);
      s.dev = platform::device_buffer(cap);
      s.bytes = cap;
    }
    std::memcpy(s.host.data(), src, bytes);
    platform::enqueue_copy(s.dev.data(), s.host.data(), bytes, cudaMemcpyHostToDevice, stream_);
    KVFLOW_CUDA_CHECK(cudaEventRecord(s.copied, stream_));
    return s.dev.data();
  }

  void check_block(const kv_block& b, const std::string& what) const {
    const kv_shape& s = b.shape;
    if (b.data == nullptr || s.type != dtype::bf16 || s.layers != cfg_.layers || s.kv_heads != cfg_.kv_heads ||
        s.head_dim != cfg_.head_dim || s.tokens <= 0)
      throw error(errc::invalid_argument, "cuda_engine::run: " + what + " is not a bf16 block of this model (layers " +
                                              std::to_string(s.layers) + ", kv_heads " + std::to_string(s.kv_heads) +
                                              ", head_dim " + std::to_string(s.head_dim) + ", tokens " +
                                              std::to_string(s.tokens) + ")");
  }

  // Checks a job against the model and returns its attention block table:
  // the past blocks, then its own out block.
  std::vector<attn_block> prepare(const chunk_job& job) const {
    const int count = job.count;
    if (count <= 0) throw error(errc::invalid_argument, "cuda_engine::run: count " + std::to_string(count));
    if (job.pos0 < 0) throw error(errc::invalid_argument, "cuda_engine::run: pos0 " + std::to_string(job.pos0));
    if (job.layer_begin < 0 || job.layer_end > cfg_.layers || job.layer_begin >= job.layer_end)
      throw error(errc::invalid_argument, "cuda_engine::run: layers [" + std::to_string(job.layer_begin) + ", " +
                                              std::to_string(job.layer_end) + ")");
    check_held(job.layer_begin, job.layer_end, "run: chunk job");
    check_block(job.out, "out block");
    if (job.out.shape.tokens != count)
      throw error(errc::invalid_argument, "cuda_engine::run: out block holds " + std::to_string(job.out.shape.tokens) +
                                              " tokens, job has " + std::to_string(count));
    if (job.past.count < 0 || (job.past.count > 0 && job.past.blocks == nullptr))
      throw error(errc::invalid_argument, "cuda_engine::run: past view without blocks");
    std::vector<attn_block> table;
    table.reserve(static_cast<std::size_t>(job.past.count) + 1);
    int pos = 0;
    for (int i = 0; i < job.past.count; ++i) {
      const kv_block& b = job.past.blocks[i];
      check_block(b, "past block " + std::to_string(i));
      table.push_back({static_cast<const bf16*>(b.data), pos, b.shape.tokens});
      pos += b.shape.tokens;
    }
    if (pos != job.pos0)
      throw error(errc::invalid_argument, "cuda_engine::run: past blocks hold " + std::to_string(pos) +
                                              " tokens, pos0 is " + std::to_string(job.pos0));
    table.push_back({static_cast<const bf16*>(job.out.data), pos, count});
    if (job.layer_begin > 0 && (job.hidden.data == nullptr || job.hidden.tokens != count))
      throw error(errc::invalid_argument, "cuda_engine::run: layers from " + std::to_string(job.layer_begin) +
                                              " need the hidden state of " + std::to_string(count) + " tokens");
    if (job.hidden.data != nullptr && job.hidden.tokens != count)
      throw error(errc::invalid_argument, "cuda_engine::run: hidden state of " + std::to_string(job.hidden.tokens) +
                                              " tokens for a chunk of " + std::to_string(count));
    if (job.layer_begin == 0) {
      if (job.tokens == nullptr) throw error(errc::invalid_argument, "cuda_engine::run: no tokens");
      for (int i = 0; i < count; ++i)
        if (job.tokens[i] < 0 || job.tokens[i] >= cfg_.vocab_size)
          throw error(errc::invalid_argument, "cuda_engine::run: token " + std::to_string(job.tokens[i]) +
                                                  " at index " + std::to_string(i) + " outside the vocabulary of " +
                                                  std::to_string(cfg_.vocab_size));
    }
    return table;
  }

  void run(const chunk_job& job) {
    KVFLOW_CUDA_CHECK(cudaSetDevice(device_));
    const int count = job.count;
    const std::vector<attn_block> table = prepare(job);
    ensure_scratch(count);
    // One upload: the block table, then the tokens.
    const std::size_t table_bytes = table.size() * sizeof(attn_block);
    const std::size_t tok_bytes = job.layer_begin == 0 ? static_cast<std::size_t>(count) * 4 : 0;
    std::vector<unsigned char> host(table_bytes + tok_bytes);
    std::memcpy(host.data(), table.data(), table_bytes);
    if (tok_bytes) std::memcpy(host.data() + table_bytes, job.tokens, tok_bytes);
    auto* dev = static_cast<unsigned char*>(upload(host.data(), host.size()));
    const auto* d_table = reinterpret_cast<const attn_block*>(dev);
    const auto* d_tokens = reinterpret_cast<const std::int32_t*>(dev + table_bytes);

    float* resid = job.hidden.data ? static_cast<float*>(job.hidden.data) : resid_.ptr;
    prof_.begin(count, stream_);
    const int hidden = cfg_.hidden;
    const int hd = cfg_.head_dim;
    if (job.layer_begin == 0)
      KVFLOW_LAUNCH_CHECK(
          cuda::launch_embedding(d_tokens, count, embedding_.ptr, cfg_.vocab_size, hidden, resid, stream_));
    prof_.mark(op_profile::embed, stream_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::size_t half_layer = static_cast<std::size_t>(cfg_.kv_heads) * count * hd;
    for (int li = job.layer_begin; li < job.layer_end; ++li) {
      const layer_dev& L = layers_[static_cast<std::size_t>(li)];
      bf16* k_out = static_cast<bf16*>(job.out.data) + static_cast<std::size_t>(li) * 2 * half_layer;
      bf16* v_out = k_out + half_layer;
      KVFLOW_LAUNCH_CHECK(
          cuda::launch_rms_norm(resid, L.attn_norm.ptr, cfg_.rms_eps, count, hidden, act_a_.ptr, stream_));
      prof_.mark(op_profile::norm, stream_);
      gemm_->run(act_a_.ptr, L.wqkv.ptr, act_big_.ptr, count, static_cast<int>(qkv_width()), hidden, false, false,
                 stream_);
      prof_.mark(op_profile::qkv, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_qkv_rope(act_big_.ptr, count, job.pos0, inv_freq_.ptr, cfg_.heads, cfg_.kv_heads,
                                                hd, act_q_.ptr, k_out, v_out, stream_));
      prof_.mark(op_profile::rope, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_attention(act_q_.ptr, count, job.pos0, d_table, static_cast<int>(table.size()),
                                                 li, cfg_.heads, cfg_.kv_heads, hd, scale, act_a_.ptr, stream_));
      prof_.mark(op_profile::attention, stream_);
      gemm_->run(act_a_.ptr, L.wo.ptr, resid, count, hidden, static_cast<int>(q_width()), true, true, stream_);
      prof_.mark(op_profile::o_proj, stream_);
      KVFLOW_LAUNCH_CHECK(
          cuda::launch_rms_norm(resid, L.ffn_norm.ptr, cfg_.rms_eps, count, hidden, act_a_.ptr, stream_));
      prof_.mark(op_profile::norm, stream_);
      gemm_->run(act_a_.ptr, L.w_gate_up.ptr, act_big_.ptr, count, 2 * cfg_.intermediate, hidden, false, false,
                 stream_);
      prof_.mark(op_profile::gate_up, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_swiglu(act_big_.ptr, count, cfg_.intermediate, act_ffn_.ptr, stream_));
      prof_.mark(op_profile::swiglu, stream_);
      gemm_->run(act_ffn_.ptr, L.w_down.ptr, resid, count, hidden, cfg_.intermediate, true, true, stream_);
      prof_.mark(op_profile::down, stream_);
    }
    prof_.end();
  }

  // Whether job b is the chunk right after job a of the same request: it
  // starts where a ends and its past is a's past followed by a's block.
  static bool continues(const chunk_job& a, const chunk_job& b) {
    if (b.pos0 != a.pos0 + a.count || b.past.count != a.past.count + 1) return false;
    for (int i = 0; i < a.past.count; ++i)
      if (b.past.blocks[i].data != a.past.blocks[i].data) return false;
    return b.past.blocks[a.past.count].data == a.out.data;
  }

  // Rows of all jobs in one forward (engine::run_fused). Products, norms and
  // the activation run once over every row; RoPE and the KV writes too (one
  // launch, each row at its job's positions and into its job's block);
  // attention once per run of consecutive chunks
  // of one request (a segment: its queries are consecutive positions over
  // one block table). Each kernel computes a row from that row alone
  // (gemm.hpp, attention.cuh), so a job's bits equal run(job)'s.
  void run_fused(const std::vector<chunk_job>& jobs) {
    if (jobs.empty()) return;
    if (jobs.size() == 1) return run(jobs[0]);
    KVFLOW_CUDA_CHECK(cudaSetDevice(device_));
    const int lb = jobs[0].layer_begin, le = jobs[0].layer_end;
    std::vector<std::vector<attn_block>> tables;
    std::vector<int> row0;
    int rows = 0;
    for (const auto& j : jobs) {
      if (j.layer_begin != lb || j.layer_end != le)
        throw error(errc::invalid_argument, "cuda_engine::run_fused: jobs of layers [" + std::to_string(lb) + ", " +
                                                std::to_string(le) + ") and [" + std::to_string(j.layer_begin) + ", " +
                                                std::to_string(j.layer_end) + ")");
      tables.push_back(prepare(j));
      row0.push_back(rows);
      rows += j.count;
    }
    struct segment {
      std::size_t first, last;
      std::size_t table_offset = 0;  // bytes into the upload
    };
    std::vector<segment> segs;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      if (i > 0 && segs.back().last == i - 1 && continues(jobs[i - 1], jobs[i]))
        segs.back().last = i;
      else
        segs.push_back({i, i});
    }
    ensure_scratch(rows);
    // One upload: each segment's block table (its last job's: every earlier
    // chunk of the segment is in that job's past), then every job's tokens.
    std::vector<unsigned char> host;
    for (auto& sg : segs) {
      const auto& t = tables[sg.last];
      sg.table_offset = host.size();
      const auto* p = reinterpret_cast<const unsigned char*>(t.data());
      host.insert(host.end(), p, p + t.size() * sizeof(attn_block));
    }
    // The jobs' rows for RoPE and the KV writes: one launch a layer.
    std::vector<cuda::rope_job> rope_jobs;
    for (std::size_t i = 0; i < jobs.size(); ++i)
      rope_jobs.push_back({static_cast<bf16*>(jobs[i].out.data), row0[i], jobs[i].count, jobs[i].pos0, 0});
    const std::size_t rope_offset = host.size();
    {
      const auto* p = reinterpret_cast<const unsigned char*>(rope_jobs.data());
      host.insert(host.end(), p, p + rope_jobs.size() * sizeof(cuda::rope_job));
    }
    const std::size_t tok_offset = host.size();
    if (lb == 0)
      for (const auto& j : jobs) {
        const auto* p = reinterpret_cast<const unsigned char*>(j.tokens);
        host.insert(host.end(), p, p + static_cast<std::size_t>(j.count) * 4);
      }
    auto* dev = static_cast<unsigned char*>(upload(host.data(), host.size()));

    const int hidden = cfg_.hidden;
    const int hd = cfg_.head_dim;
    const std::size_t hrow = static_cast<std::size_t>(hidden);
    float* resid = resid_.ptr;
    prof_.begin(rows, stream_);
    if (lb == 0) {
      KVFLOW_LAUNCH_CHECK(cuda::launch_embedding(reinterpret_cast<const std::int32_t*>(dev + tok_offset), rows,
                                                 embedding_.ptr, cfg_.vocab_size, hidden, resid, stream_));
    } else {
      for (std::size_t i = 0; i < jobs.size(); ++i)
        platform::enqueue_copy(resid + row0[i] * hrow, jobs[i].hidden.data,
                               static_cast<std::size_t>(jobs[i].count) * hrow * sizeof(float), cudaMemcpyDeviceToDevice,
                               stream_);
    }
    prof_.mark(op_profile::embed, stream_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::size_t qkv_w = qkv_width(), q_w = q_width();
    for (int li = lb; li < le; ++li) {
      const layer_dev& L = layers_[static_cast<std::size_t>(li)];
      KVFLOW_LAUNCH_CHECK(
          cuda::launch_rms_norm(resid, L.attn_norm.ptr, cfg_.rms_eps, rows, hidden, act_a_.ptr, stream_));
      prof_.mark(op_profile::norm, stream_);
      gemm_->run(act_a_.ptr, L.wqkv.ptr, act_big_.ptr, rows, static_cast<int>(qkv_w), hidden, false, false, stream_);
      prof_.mark(op_profile::qkv, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_qkv_rope_jobs(
          act_big_.ptr, rows, reinterpret_cast<const cuda::rope_job*>(dev + rope_offset), rope_jobs.data(),
          static_cast<int>(rope_jobs.size()), li, inv_freq_.ptr, cfg_.heads, cfg_.kv_heads, hd, act_q_.ptr, stream_));
      prof_.mark(op_profile::rope, stream_);
      for (const auto& sg : segs) {
        const int r0 = row0[sg.first];
        const int n = row0[sg.last] + jobs[sg.last].count - r0;
        KVFLOW_LAUNCH_CHECK(cuda::launch_attention(act_q_.ptr + r0 * q_w, n, jobs[sg.first].pos0,
                                                   reinterpret_cast<const attn_block*>(dev + sg.table_offset),
                                                   static_cast<int>(tables[sg.last].size()), li, cfg_.heads,
                                                   cfg_.kv_heads, hd, scale, act_a_.ptr + r0 * q_w, stream_));
      }
      prof_.mark(op_profile::attention, stream_);
      gemm_->run(act_a_.ptr, L.wo.ptr, resid, rows, hidden, static_cast<int>(q_w), true, true, stream_);
      prof_.mark(op_profile::o_proj, stream_);
      KVFLOW_LAUNCH_CHECK(
          cuda::launch_rms_norm(resid, L.ffn_norm.ptr, cfg_.rms_eps, rows, hidden, act_a_.ptr, stream_));
      prof_.mark(op_profile::norm, stream_);
      gemm_->run(act_a_.ptr, L.w_gate_up.ptr, act_big_.ptr, rows, 2 * cfg_.intermediate, hidden, false, false, stream_);
      prof_.mark(op_profile::gate_up, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_swiglu(act_big_.ptr, rows, cfg_.intermediate, act_ffn_.ptr, stream_));
      prof_.mark(op_profile::swiglu, stream_);
      gemm_->run(act_ffn_.ptr, L.w_down.ptr, resid, rows, hidden, cfg_.intermediate, true, true, stream_);
      prof_.mark(op_profile::down, stream_);
    }
    prof_.end();
    for (std::size_t i = 0; i < jobs.size(); ++i)
      if (jobs[i].hidden.data)
        platform::enqueue_copy(jobs[i].hidden.data, resid + row0[i] * hrow,
                               static_cast<std::size_t>(jobs[i].count) * hrow * sizeof(float), cudaMemcpyDeviceToDevice,
                               stream_);
  }

  // Selective recompute (engine::run_selected): the selected rows as one
  // forward per layer. Products over all rows at once (gemm_runner: a row
  // never depends on its neighbours), RoPE at each row's own position with
  // K/V written to that position of the prompt's block, and attention of
  // queries at scattered positions over the whole block, its keys split
  // across blocks when the rows alone cannot fill the device.
  void run_selected(const selected_job& job) {
    KVFLOW_CUDA_CHECK(cudaSetDevice(device_));
    auto bad = [](const std::string& what) {
      throw error(errc::invalid_argument, "cuda_engine::run_selected: selected job " + what);
    };
    if (job.count <= 0 || !job.positions) bad("has no rows");
    if (job.layer_begin < 0 || job.layer_end > cfg_.layers || job.layer_begin >= job.layer_end) bad("has no layers");
    check_held(job.layer_begin, job.layer_end, "run_selected: selected job");
    if (job.layer_begin == 0 && !job.tokens) bad("has no tokens for layer 0");
    if (!job.hidden.data || job.hidden.tokens != job.count) bad("hidden state does not match its rows");
    if (job.rope_offset != 0) bad("has a rope_offset, which only the CPU backend takes");
    check_block(job.kv, "selected job's KV block");
    for (int r = 0; r < job.count; ++r)
      if (job.positions[r] < 0 || job.positions[r] >= job.kv.shape.tokens ||
          (r > 0 && job.positions[r] <= job.positions[r - 1]))
        bad("position " + std::to_string(job.positions[r]) + " at row " + std::to_string(r) +
            " is not ascending within a block of " + std::to_string(job.kv.shape.tokens));
    const int n = job.count, hidden = cfg_.hidden, hd = cfg_.head_dim, T = job.kv.shape.tokens;
    const int kv_end = job.positions[n - 1] + 1;
    ensure_scratch(n);
    const int splits = cuda::attention_splits(n, cfg_.heads, cfg_.kv_heads, kv_end);
    if (splits > 1) {
      const std::size_t need = static_cast<std::size_t>(splits) * n * cfg_.heads * (hd + 2);
      if (part_.n < need) {
        KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the old buffer may be in use
        part_.alloc(need);
      }
    }
    // One upload: the block table (the whole block), positions, tokens.
    const attn_block whole{static_cast<const bf16*>(job.kv.data), 0, T};
    const std::size_t pos_off = sizeof(attn_block), tok_off = pos_off + static_cast<std::size_t>(n) * 4;
    std::vector<unsigned char> host(tok_off + (job.layer_begin == 0 ? static_cast<std::size_t>(n) * 4 : 0));
    std::memcpy(host.data(), &whole, sizeof whole);
    std::memcpy(host.data() + pos_off, job.positions, static_cast<std::size_t>(n) * 4);
    if (job.layer_begin == 0) std::memcpy(host.data() + tok_off, job.tokens, static_cast<std::size_t>(n) * 4);
    auto* dev = static_cast<unsigned char*>(upload(host.data(), host.size()));
    const auto* d_table = reinterpret_cast<const attn_block*>(dev);
    const auto* d_pos = reinterpret_cast<const int*>(dev + pos_off);

    float* resid = static_cast<float*>(job.hidden.data);
    if (job.layer_begin == 0)
      KVFLOW_LAUNCH_CHECK(cuda::launch_embedding(reinterpret_cast<const std::int32_t*>(dev + tok_off), n,
                                                 embedding_.ptr, cfg_.vocab_size, hidden, resid, stream_));
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::size_t half_layer = static_cast<std::size_t>(cfg_.kv_heads) * T * hd;
    const std::size_t qkv_w = qkv_width(), q_w = q_width();
    for (int li = job.layer_begin; li < job.layer_end; ++li) {
      const layer_dev& L = layers_[static_cast<std::size_t>(li)];
      bf16* k_base = static_cast<bf16*>(job.kv.data) + static_cast<std::size_t>(li) * 2 * half_layer;
      KVFLOW_LAUNCH_CHECK(cuda::launch_rms_norm(resid, L.attn_norm.ptr, cfg_.rms_eps, n, hidden, act_a_.ptr, stream_));
      gemm_->run(act_a_.ptr, L.wqkv.ptr, act_big_.ptr, n, static_cast<int>(qkv_w), hidden, false, false, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_qkv_rope_at(act_big_.ptr, n, d_pos, T, inv_freq_.ptr, cfg_.heads, cfg_.kv_heads,
                                                   hd, act_q_.ptr, k_base, k_base + half_layer, stream_));
      KVFLOW_LAUNCH_CHECK(cuda::launch_attention_at(act_q_.ptr, n, d_pos, kv_end, d_table, 1, li, cfg_.heads,
                                                    cfg_.kv_heads, hd, scale, splits, part_.ptr, act_a_.ptr, stream_));
      gemm_->run(act_a_.ptr, L.wo.ptr, resid, n, hidden, static_cast<int>(q_w), true, true, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_rms_norm(resid, L.ffn_norm.ptr, cfg_.rms_eps, n, hidden, act_a_.ptr, stream_));
      gemm_->run(act_a_.ptr, L.w_gate_up.ptr, act_big_.ptr, n, 2 * cfg_.intermediate, hidden, false, false, stream_);
      KVFLOW_LAUNCH_CHECK(cuda::launch_swiglu(act_big_.ptr, n, cfg_.intermediate, act_ffn_.ptr, stream_));
      gemm_->run(act_ffn_.ptr, L.w_down.ptr, resid, n, hidden, cfg_.intermediate, true, true, stream_);
    }
  }

  void logits(const hidden_state& h, std::vector<float>& out) {
    KVFLOW_CUDA_CHECK(cudaSetDevice(device_));
    if (h.data == nullptr || h.tokens <= 0)
      throw error(errc::invalid_argument, "cuda_engine::logits: empty hidden state");
    if (!holds_last())
      throw error(errc::invalid_argument, "cuda_engine::logits: the engine holds layers [" +
                                              std::to_string(held_.begin) + ", " + std::to_string(held_.end) +
                                              "), not the last of " + std::to_string(cfg_.layers) +
                                              " (no final norm or output projection)");
    const float* last = static_cast<const float*>(h.data) + static_cast<std::size_t>(h.tokens - 1) * cfg_.hidden;
    KVFLOW_LAUNCH_CHECK(
        cuda::launch_rms_norm_f32(last, final_norm_.ptr, cfg_.rms_eps, 1, cfg_.hidden, norm_row_.ptr, stream_));
    KVFLOW_LAUNCH_CHECK(
        cuda::launch_logits(norm_row_.ptr, lm_head(), cfg_.vocab_size, cfg_.hidden, logits_.ptr, stream_));
    out.resize(static_cast<std::size_t>(cfg_.vocab_size));
    platform::enqueue_copy(out.data(), logits_.ptr, out.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_);
    KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  config cfg_;
  int device_;
  layer_range held_;
  cudaStream_t stream_ = nullptr;
  std::array<std::uint8_t, 32> fingerprint_{};
  std::unique_ptr<cuda::gemm_runner> gemm_;
  dev_buf<float> inv_freq_;
  dev_buf<bf16> embedding_;
  dev_buf<float> final_norm_;
  dev_buf<bf16> output_;
  std::vector<layer_dev> layers_;
  dev_buf<float> norm_row_;
  dev_buf<float> logits_;
  int scratch_tokens_ = 0;
  dev_buf<bf16> act_a_;    // [tokens][max(hidden, heads*hd)]: normed input, then attention output
  dev_buf<bf16> act_q_;    // [tokens][heads*hd]: roped queries
  dev_buf<bf16> act_big_;  // [tokens][max(qkv width, 2*intermediate)]
  dev_buf<bf16> act_ffn_;  // [tokens][intermediate]
  dev_buf<float> resid_;   // [tokens][hidden] when the job brings no hidden state
  dev_buf<float> part_;    // run_selected's split attention: partial outputs, maxima and sums
  std::unique_ptr<platform::block_cache> blocks_;  // allocate()/release(): device blocks kept for reuse
  std::array<upload_slot, 32> slots_{};
  std::size_t next_slot_ = 0;
  op_profile prof_;  // KVFLOW_ENGINE_PROFILE=1 only
};

cuda_engine::cuda_engine(std::unique_ptr<cuda_engine_impl> impl) : impl_(std::move(impl)) {}
cuda_engine::~cuda_engine() = default;

const config& cuda_engine::cfg() const { return impl_->cfg_; }
const std::array<std::uint8_t, 32>& cuda_engine::fingerprint() const { return impl_->fingerprint_; }

void* cuda_engine::allocate(std::size_t bytes) {
  KVFLOW_CUDA_CHECK(cudaSetDevice(impl_->device_));
  return impl_->blocks_->take(std::max<std::size_t>(bytes, 1));
}

void cuda_engine::release(void* p) {
  if (p == nullptr) return;
  KVFLOW_CUDA_CHECK(cudaSetDevice(impl_->device_));
  // Jobs enqueued before now may still use p: whoever takes it next waits
  // for this event first (usually long past), instead of everyone waiting
  // for the device now.
  cudaEvent_t used = nullptr;
  KVFLOW_CUDA_CHECK(cudaEventCreateWithFlags(&used, cudaEventDisableTiming));
  const cudaError_t e = cudaEventRecord(used, impl_->stream_);
  if (e != cudaSuccess) cudaEventDestroy(used);
  KVFLOW_CUDA_CHECK(e);
  const int dev = impl_->device_;
  impl_->blocks_->give(p, [used, dev] {
    // Runs on whichever thread takes or frees the block; errors are the
    // device's, which every later call reports.
    cudaSetDevice(dev);
    cudaEventSynchronize(used);
    cudaEventDestroy(used);
  });
}

namespace {

// One copy stream per (thread, device): a tier actor's loads run beside the
// compute stream instead of queueing behind it.
cudaStream_t copy_stream(int device) {
  struct streams {
    std::vector<std::pair<int, cudaStream_t>> by_device;
    ~streams() {
      for (auto& s : by_device) cudaStreamDestroy(s.second);  // may fail at exit: nothing left to do
    }
  };
  thread_local streams mine;
  for (auto& s : mine.by_device)
    if (s.first == device) return s.second;
  cudaStream_t s = nullptr;
  KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  mine.by_device.emplace_back(device, s);
  return s;
}

void host_trampoline(void* data) {
  std::unique_ptr<std::function<void()>> fn(static_cast<std::function<void()>*>(data));
  (*fn)();
}

}  // namespace

void cuda_engine::to_backend(void* dst, const void* src, std::size_t bytes) {
  KVFLOW_CUDA_CHECK(cudaSetDevice(impl_->device_));
  cudaStream_t s = copy_stream(impl_->device_);
  platform::enqueue_copy(dst, src, bytes, cudaMemcpyHostToDevice, s);
  KVFLOW_CUDA_CHECK(cudaStreamSynchronize(s));
}

void cuda_engine::to_host(void* dst, const void* src, std::size_t bytes) {
  KVFLOW_CUDA_CHECK(cudaSetDevice(impl_->device_));
  cudaStream_t s = copy_stream(impl_->device_);
  // Ordered after every job enqueued so far, without stopping the compute
  // stream for the copy.
  platform::ticket_after(impl_->stream_).order_before(s);
  platform::copy_to_host(dst, src, bytes, s).wait();
}

void cuda_engine::run(const chunk_job& job) { impl_->run(job); }
void cuda_engine::run_fused(const std::vector<chunk_job>& jobs) { impl_->run_fused(jobs); }
void cuda_engine::run_selected(const selected_job& job) { impl_->run_selected(job); }

void cuda_engine::synchronize() {
  KVFLOW_CUDA_CHECK(cudaSetDevice(impl_->device_));
  KVFLOW_CUDA_CHECK(cudaStreamSynchronize(impl_->stream_));
}

void cuda_engine::when_done(std::function<void()> fn) {
  KVFLOW_CUDA_CHECK(cudaSetDevice(impl_->device_));
  auto* heap = new std::function<void()>(std::move(fn));
  const cudaError_t e = cudaLaunchHostFunc(impl_->stream_, host_trampoline, heap);
  if (e != cudaSuccess) delete heap;
  KVFLOW_CUDA_CHECK(e);
}

void cuda_engine::logits(const hidden_state& h, std::vector<float>& out) { impl_->logits(h, out); }
cudaStream_t cuda_engine::stream() const { return impl_->stream_; }
int cuda_engine::device() const { return impl_->device_; }
std::size_t cuda_engine::weight_bytes() const { return impl_->weight_bytes(); }
layer_range cuda_engine::layers_held() const { return impl_->held_; }

std::unique_ptr<cuda_engine> make_cuda_engine(const weights& w, int device, layer_range held) {
  auto impl = std::make_unique<cuda_engine_impl>(w.cfg, device, held);
  impl->init_from(w);
  return std::unique_ptr<cuda_engine>(new cuda_engine(std::move(impl)));
}

std::unique_ptr<cuda_engine> make_cuda_engine_random(const config& c, std::uint64_t seed, int device,
                                                     layer_range held) {
  auto impl = std::make_unique<cuda_engine_impl>(c, device, held);
  impl->init_random(seed);
  return std::unique_ptr<cuda_engine>(new cuda_engine(std::move(impl)));
}

}  // namespace kvflow::model

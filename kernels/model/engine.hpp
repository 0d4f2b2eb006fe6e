#pragma once
// The forward API every backend implements (CPU reference, CUDA). The
// runtime restores KV by running chunks of a prompt through it; decode is a
// chunk of one token.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/model/config.hpp"
#include "kernels/model/kv_layout.hpp"

namespace kvflow::model {

/// One chunk's KV block: `shape.bytes()` bytes at `data`, in host memory for
/// the CPU backend and device memory for CUDA. Holds every layer; a forward
/// over a layer range writes only those layers' span.
struct kv_block {
  void* data = nullptr;  // [layers][2][kv_heads][tokens][head_dim] of shape.type
  kv_shape shape;
};

/// The earlier KV a chunk attends to: blocks in position order, the first at
/// position 0, each block's tokens following the previous one's.
struct kv_view {
  const kv_block* blocks = nullptr;
  int count = 0;
};

/// Activations of a chunk between layers: [tokens][hidden] in the backend's
/// memory and activation type (f32 on CPU).
struct hidden_state {
  void* data = nullptr;  // [tokens][hidden]
  int tokens = 0;
};

/// One unit of forward work: layers [layer_begin, layer_end) of a chunk of
/// `count` tokens at positions [pos0, pos0 + count).
struct chunk_job {
  const std::int32_t* tokens = nullptr;  ///< host memory; read when layer_begin == 0
  int count = 0;
  int pos0 = 0;
  int layer_begin = 0;
  int layer_end = 0;
  kv_view past;         ///< KV of positions [0, pos0) for at least these layers
  kv_block out;         ///< this chunk's block (shape.tokens == count)
  hidden_state hidden;  ///< input at layer_begin (unless 0), output after layer_end - 1
};

/// Selective recompute (non-prefix reuse, CacheBlend): layers [layer_begin,
/// layer_end) of `count` tokens at ascending, not necessarily consecutive,
/// positions of one prompt-long KV block. Per layer, each token's K and V
/// overwrite its row of `kv`, and it attends to rows [0, its position] of
/// `kv` as they stand: recomputed rows and reused (loaded, rotated) ones.
struct selected_job {
  const std::int32_t* tokens = nullptr;     ///< [count] host memory; read when layer_begin == 0
  const std::int32_t* positions = nullptr;  ///< [count] host memory, strictly ascending, < kv.shape.tokens
  int count = 0;
  int layer_begin = 0;
  int layer_end = 0;
  kv_block kv;          ///< the whole prompt's block, positions [0, kv.shape.tokens)
  hidden_state hidden;  ///< [count][hidden]: input at layer_begin (unless 0), output after layer_end - 1
  /// Added to every row's position for RoPE only (rows and attention stay
  /// at `positions`): a document computed alone as if it stood `rope_offset`
  /// tokens later, the independent check of a RoPE-delta placement. CPU
  /// backend; others refuse a non-zero offset.
  int rope_offset = 0;
};

/// The layers whose weights an engine holds, [begin, end); end < 0 means
/// every layer of the model. A pipeline stage's engine holds only its own
/// layers (plus the embedding on the first stage and the final norm and
/// output projection on the last), so that a model too large for one device
/// fits across several.
struct layer_range {
  int begin = 0;
  int end = -1;
};

/// Sampling settings of a decode step; temperature 0 means greedy.
struct sampling {
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::uint64_t seed = 0;
};

/// A model loaded on one device. Not thread-safe: one owner (the gpu actor)
/// drives it. Errors throw kvflow::error with context.
class engine {
 public:
  virtual ~engine() = default;

  virtual const config& cfg() const = 0;
  /// Storage type of KV blocks (f32 on CPU, bf16 on CUDA).
  virtual dtype kv_type() const = 0;
  /// A digest of config and weights, for chunk keys.
  virtual const std::array<std::uint8_t, 32>& fingerprint() const = 0;

  /// Backend memory for blocks and hidden states; freed with release().
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void release(void* p) = 0;
  /// Copies between host memory and backend memory (synchronous). Any
  /// thread may call these while the owner runs jobs: to_backend is NOT
  /// ordered after jobs already enqueued (CUDA copies on a stream of the
  /// calling thread, so loads overlap compute: write only memory that no
  /// enqueued job touches); to_host waits for every job enqueued before it.
  virtual void to_backend(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, std::size_t bytes) = 0;

  /// Runs one chunk job. The CPU backend finishes before returning; CUDA
  /// enqueues on its stream and returns (call synchronize() or wait on an
  /// event before reading the results).
  virtual void run(const chunk_job& job) = 0;
  /// Runs jobs of one layer range as one forward: layer by layer, every
  /// job's rows go through each weight's product together (one product per
  /// weight, so 256-token chunks run as fast as one long prefill), and
  /// attention runs per request over its own prefix. Jobs may belong to
  /// different requests; a job may attend to the out block of an earlier job
  /// of the list (the next chunk of the same request), since each layer's KV
  /// is written for every job before that layer's attention. Every job's KV
  /// and hidden state equal those of run(job) alone, bitwise: a row never
  /// depends on the rows it is batched with. Throws kvflow::error
  /// (invalid_argument) when the layer ranges differ or a job is invalid,
  /// having checked every job before running (enqueuing) any, so that a
  /// refused call changed nothing. The default runs the jobs one by one
  /// after checking the layer ranges only (backends override it).
  virtual void run_fused(const std::vector<chunk_job>& jobs) {
    check_fused(jobs);
    for (const auto& j : jobs) run(j);
  }
  virtual void synchronize() = 0;
  /// Calls `fn` once every job enqueued so far has finished: before
  /// returning on the CPU backend, from a driver thread on CUDA (so `fn`
  /// must be quick and must not call into the engine). Lets the owner keep
  /// the device busy instead of synchronizing per job.
  virtual void when_done(std::function<void()> fn) = 0;

  /// Runs a selected_job (synchronous like run() on the CPU backend).
  /// Backends without it throw kvflow::error(unsupported).
  virtual void run_selected(const selected_job& job);

  /// Logits [vocab] of the last row of `h` (after the final norm), to host.
  virtual void logits(const hidden_state& h, std::vector<float>& out) = 0;

  /// The layers this engine holds weights for; jobs outside them are
  /// refused (invalid_argument), and logits() needs the last layer. The
  /// default: every layer.
  virtual layer_range layers_held() const { return {0, cfg().layers}; }
  /// Bytes of weights this engine holds in its memory (after repacking);
  /// 0 where a backend does not report it.
  virtual std::size_t weight_bytes() const { return 0; }

 protected:
  /// Throws kvflow::error(invalid_argument) unless every job has the first one's layer range.
  static void check_fused(const std::vector<chunk_job>& jobs);
};

/// Picks the next token from logits: argmax when s.temperature == 0, else
/// temperature + top-p (nucleus) sampling with a generator seeded by s.seed
/// and `step`, so that a run is reproducible.
std::int32_t sample(const std::vector<float>& logits, const sampling& s, std::uint64_t step);

}  // namespace kvflow::model

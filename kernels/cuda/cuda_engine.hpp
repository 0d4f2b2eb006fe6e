#pragma once
// The CUDA backend of the forward API (kernels/model/engine.hpp).
//
// Storage: weights and KV blocks bf16 in device memory (KV layout
// [layer][K|V][kv_head][token][head_dim]); norms fp32. Activations: the
// residual stream (hidden_state) is fp32 [tokens][hidden], like the CPU
// backend's; the inputs of the matrix products are bf16; every product and
// reduction accumulates in fp32.
//
// Invariance: a token's KV and hidden state do not depend on how the prompt
// is cut into chunks, bitwise (see gemm.hpp and attention.cuh for the rules).

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <memory>

#include "kernels/model/engine.hpp"
#include "kernels/model/weights.hpp"

namespace kvflow::model {

class cuda_engine_impl;

/// A model on one CUDA device. run() enqueues on stream() and returns; the
/// other calls are synchronous. Not thread-safe: one owner drives it, except
/// to_backend/to_host, which any thread may call (each thread copies on its
/// own stream).
class cuda_engine : public engine {
 public:
  ~cuda_engine() override;

  const config& cfg() const override;
  dtype kv_type() const override { return dtype::bf16; }
  const std::array<std::uint8_t, 32>& fingerprint() const override;

  /// Device memory; release() keeps it for the next allocate() of the same
  /// size (platform::block_cache, up to an eighth of the device) instead of
  /// cudaFree, which waits for the whole device. Any thread may call these.
  void* allocate(std::size_t bytes) override;
  void release(void* p) override;
  void to_backend(void* dst, const void* src, std::size_t bytes) override;
  void to_host(void* dst, const void* src, std::size_t bytes) override;

  void run(const chunk_job& job) override;
  /// One forward over every job's rows (engine::run_fused), enqueued like run().
  void run_fused(const std::vector<chunk_job>& jobs) override;
  /// Selective recompute (engine::run_selected), enqueued like run(): one
  /// forward per layer over the selected rows; attention splits the keys
  /// across blocks when the rows are few (results then differ from a full
  /// prefill's by the merge's rounding, not bitwise).
  void run_selected(const selected_job& job) override;
  void synchronize() override;
  void when_done(std::function<void()> fn) override;
  void logits(const hidden_state& h, std::vector<float>& out) override;

  /// The stream every run() is enqueued on (record events on it to learn
  /// when a block is complete).
  cudaStream_t stream() const;
  /// The device ordinal the engine lives on.
  int device() const;
  /// Bytes of device memory held by the weights (the held layers' only).
  std::size_t weight_bytes() const override;
  /// The layers whose weights were allocated (engine::layers_held).
  layer_range layers_held() const override;

 private:
  friend std::unique_ptr<cuda_engine> make_cuda_engine(const weights& w, int device, layer_range held);
  friend std::unique_ptr<cuda_engine> make_cuda_engine_random(const config& c, std::uint64_t seed, int device,
                                                              layer_range held);
  explicit cuda_engine(std::unique_ptr<cuda_engine_impl> impl);
  std::unique_ptr<cuda_engine_impl> impl_;
};

/// Uploads host weights (fp32, HF order) once, as bf16 (norms fp32).
/// With `held` narrower than the model (a pipeline stage), only those
/// layers' weights reach the device, the embedding only when the range
/// starts at layer 0 (or ends at the last layer of a model with tied
/// embeddings) and the final norm and output projection only when it ends at
/// the last layer; jobs, selected jobs and logits() outside the range throw
/// kvflow::error(invalid_argument). The fingerprint stays the whole model's,
/// so chunk keys do not depend on the split. Throws kvflow::error
/// (cuda_failure) when the device or memory is missing, (unsupported) for a
/// head_dim without an attention kernel, (invalid_argument) for an empty or
/// out-of-model range.
std::unique_ptr<cuda_engine> make_cuda_engine(const weights& w, int device = 0, layer_range held = {});

/// Weights drawn on the device from `seed`: the values of
/// random_weights(c, seed) rounded to bf16 (norms fp32), with no host copy,
/// for the large presets; the KV equals make_cuda_engine(random_weights(c,
/// seed))'s bitwise. The fingerprint hashes the config, the seed and the
/// generator's name (not the weight bytes, which never reach the host), so
/// it differs from that engine's. `held` as make_cuda_engine's: each held
/// tensor is drawn from the same (seed, tensor id) as in the all-layer
/// engine, so a stage's layers equal that engine's bitwise.
std::unique_ptr<cuda_engine> make_cuda_engine_random(const config& c, std::uint64_t seed, int device = 0,
                                                     layer_range held = {});

}  // namespace kvflow::model

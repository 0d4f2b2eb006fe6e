#pragma once
// Host copies of a llama-architecture model's weights in fp32, in Hugging
// Face order: matrices row-major [out_features][in_features], Q and K rows
// in HF's rotate-half RoPE order (GGUF's llama.cpp permutation undone at
// load). Every backend uploads from this (or makes its own from a seed).

#include <cstdint>
#include <vector>

#include "kernels/model/config.hpp"
#include "messages/digest.hpp"

namespace kvflow::model {

struct layer_weights {
  std::vector<float> attn_norm;  // [hidden]
  std::vector<float> wq;         // [heads * head_dim][hidden]
  std::vector<float> wk;         // [kv_heads * head_dim][hidden]
  std::vector<float> wv;         // [kv_heads * head_dim][hidden]
  std::vector<float> wo;         // [hidden][heads * head_dim]
  std::vector<float> ffn_norm;   // [hidden]
  std::vector<float> w_gate;     // [intermediate][hidden]
  std::vector<float> w_up;       // [intermediate][hidden]
  std::vector<float> w_down;     // [hidden][intermediate]
};

struct weights {
  config cfg;
  std::vector<float> embedding;   // [vocab][hidden]
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> output;      // [vocab][hidden]; empty when cfg.tie_embeddings
  std::vector<layer_weights> layers;
  sha256_digest fingerprint{};  // SHA-256 over the config and every weight byte

  /// The output projection: `output`, or `embedding` when tied.
  const std::vector<float>& lm_head() const { return cfg.tie_embeddings ? embedding : output; }
};

/// Weights drawn from a seed (deterministic on every machine), scaled so that
/// activations stay in range through all layers; fingerprint set.
weights random_weights(const config& c, std::uint64_t seed);

/// Checks every tensor's size against cfg; throws kvflow::error(bad_file)
/// naming `where` and the tensor on a mismatch.
void check_shapes(const weights& w, const std::string& where);

/// Computes w.fingerprint from the config and the weight bytes.
void compute_fingerprint(weights& w);

}  // namespace kvflow::model

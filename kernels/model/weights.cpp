#include "kernels/model/weights.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include "messages/error.hpp"
#include "messages/mix.hpp"

namespace kvflow::model {
namespace {

// The next output of a splitmix64 stream (advances `state`).
std::uint64_t next_random(std::uint64_t& state) { return mix64(state += splitmix64_gamma); }

// Fills v with `count` values uniform in [center - scale, center + scale),
// from a stream of its own (seed, tensor id): identical bits everywhere.
void fill(std::vector<float>& v, std::size_t count, std::uint64_t seed, std::uint64_t tensor, float center,
          float scale) {
  std::uint64_t state = seed ^ (tensor * 0xd1b54a32d192ed03ull);
  next_random(state);
  v.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    float u = static_cast<float>(next_random(state) >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
    v[i] = center + scale * (2.0f * u - 1.0f);
  }
}

std::size_t sz(long long a, long long b) { return static_cast<std::size_t>(a) * static_cast<std::size_t>(b); }

}  // namespace

weights random_weights(const config& c, std::uint64_t seed) {
  validate(c, "random_weights(" + c.name + ")");
  weights w;
  w.cfg = c;
  const int q_width = c.heads * c.head_dim;
  const int kv_width = c.kv_heads * c.head_dim;
  // Uniform(-a, a) has variance a^2 / 3: a = sqrt(3 / fan_in) keeps unit
  // variance through each projection; the residual branches are scaled down
  // by sqrt(2 * layers) so the residual stream stays in range.
  auto amp = [](int fan_in) { return std::sqrt(3.0f / static_cast<float>(fan_in)); };
  const float residual = 1.0f / std::sqrt(2.0f * static_cast<float>(c.layers));
  std::uint64_t id = 0;
  fill(w.embedding, sz(c.vocab_size, c.hidden), seed, id++, 0.0f, 1.0f);
  fill(w.final_norm, c.hidden, seed, id++, 1.0f, 0.1f);
  if (!c.tie_embeddings) fill(w.output, sz(c.vocab_size, c.hidden), seed, id++, 0.0f, amp(c.hidden));
  w.layers.resize(c.layers);
  for (auto& l : w.layers) {
    fill(l.attn_norm, c.hidden, seed, id++, 1.0f, 0.1f);
    fill(l.wq, sz(q_width, c.hidden), seed, id++, 0.0f, amp(c.hidden));
    fill(l.wk, sz(kv_width, c.hidden), seed, id++, 0.0f, amp(c.hidden));
    fill(l.wv, sz(kv_width, c.hidden), seed, id++, 0.0f, amp(c.hidden));
    fill(l.wo, sz(c.hidden, q_width), seed, id++, 0.0f, amp(q_width) * residual);
    fill(l.ffn_norm, c.hidden, seed, id++, 1.0f, 0.1f);
    fill(l.w_gate, sz(c.intermediate, c.hidden), seed, id++, 0.0f, amp(c.hidden));
    fill(l.w_up, sz(c.intermediate, c.hidden), seed, id++, 0.0f, amp(c.hidden));
    fill(l.w_down, sz(c.hidden, c.intermediate), seed, id++, 0.0f, amp(c.intermediate) * residual);
  }
  compute_fingerprint(w);
  return w;
}

void check_shapes(const weights& w, const std::string& where) {
  const config& c = w.cfg;
  validate(c, where);
  auto expect = [&](const std::vector<float>& v, std::size_t n, const std::string& name) {
    if (v.size() != n) {
      throw error(errc::bad_file, where + ": tensor " + name + " has " + std::to_string(v.size()) +
                                      " elements, the config needs " + std::to_string(n));
    }
  };
  const int q_width = c.heads * c.head_dim;
  const int kv_width = c.kv_heads * c.head_dim;
  expect(w.embedding, sz(c.vocab_size, c.hidden), "embedding");
  expect(w.final_norm, c.hidden, "final_norm");
  if (!c.tie_embeddings || !w.output.empty()) expect(w.output, sz(c.vocab_size, c.hidden), "output");
  if (w.layers.size() != static_cast<std::size_t>(c.layers)) {
    throw error(errc::bad_file, where + ": " + std::to_string(w.layers.size()) + " layers, the config needs " +
                                    std::to_string(c.layers));
  }
  for (int i = 0; i < c.layers; ++i) {
    const layer_weights& l = w.layers[i];
    std::string p = "layers." + std::to_string(i) + ".";
    expect(l.attn_norm, c.hidden, p + "attn_norm");
    expect(l.wq, sz(q_width, c.hidden), p + "wq");
    expect(l.wk, sz(kv_width, c.hidden), p + "wk");
    expect(l.wv, sz(kv_width, c.hidden), p + "wv");
    expect(l.wo, sz(c.hidden, q_width), p + "wo");
    expect(l.ffn_norm, c.hidden, p + "ffn_norm");
    expect(l.w_gate, sz(c.intermediate, c.hidden), p + "w_gate");
    expect(l.w_up, sz(c.intermediate, c.hidden), p + "w_up");
    expect(l.w_down, sz(c.hidden, c.intermediate), p + "w_down");
  }
}

void compute_fingerprint(weights& w) {
  const config& c = w.cfg;
  sha256 h;
  const char tag[] = "kvflow-model-fingerprint-v1";
  h.update(tag, sizeof tag - 1);
  // The numeric config (not its display name), little-endian fixed width.
  auto put_u32 = [&](std::uint32_t v) {
    unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                          static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
    h.update(b, 4);
  };
  auto put_f32 = [&](float f) {
    std::uint32_t v;
    std::memcpy(&v, &f, 4);
    put_u32(v);
  };
  put_u32(static_cast<std::uint32_t>(c.vocab_size));
  put_u32(static_cast<std::uint32_t>(c.hidden));
  put_u32(static_cast<std::uint32_t>(c.intermediate));
  put_u32(static_cast<std::uint32_t>(c.layers));
  put_u32(static_cast<std::uint32_t>(c.heads));
  put_u32(static_cast<std::uint32_t>(c.kv_heads));
  put_u32(static_cast<std::uint32_t>(c.head_dim));
  put_f32(c.rms_eps);
  put_f32(c.rope_theta);
  put_u32(c.scaling.enabled ? 1u : 0u);
  put_f32(c.scaling.factor);
  put_f32(c.scaling.low_freq_factor);
  put_f32(c.scaling.high_freq_factor);
  put_u32(static_cast<std::uint32_t>(c.scaling.original_max_positions));
  put_u32(static_cast<std::uint32_t>(c.max_positions));
  put_u32(c.tie_embeddings ? 1u : 0u);
  // Each tensor with its length, so that bytes cannot shift between tensors.
  // (Hosts are little-endian; the floats are hashed as they lie in memory.)
  auto put_tensor = [&](const std::vector<float>& v) {
    std::uint64_t n = v.size();
    put_u32(static_cast<std::uint32_t>(n));
    put_u32(static_cast<std::uint32_t>(n >> 32));
    if (n) h.update(v.data(), n * sizeof(float));
  };
  put_tensor(w.embedding);
  put_tensor(w.final_norm);
  put_tensor(c.tie_embeddings ? std::vector<float>() : w.output);
  for (const auto& l : w.layers) {
    for (const auto* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      put_tensor(*t);
    }
  }
  w.fingerprint = h.finish();
}

}  // namespace kvflow::model

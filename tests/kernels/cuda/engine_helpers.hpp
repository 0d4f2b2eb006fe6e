#pragma once
// Helpers of the engine suites: one chunk's KV block and hidden state in an
// engine's memory, freed on scope exit, with host copies of their bytes; a
// fixed pseudo-random prompt; a relative error.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/model/engine.hpp"

namespace kvflow::model {

struct chunk_mem {
  engine* e;
  kv_block block;
  hidden_state hidden;
  chunk_mem(engine& eng, int tokens) : e(&eng) {
    block.shape = kv_shape_of(eng.cfg(), tokens, eng.kv_type());
    block.data = eng.allocate(block.shape.bytes());
    hidden.tokens = tokens;
    hidden.data = eng.allocate(hidden_bytes());
  }
  ~chunk_mem() {
    e->release(block.data);
    e->release(hidden.data);
  }
  chunk_mem(const chunk_mem&) = delete;
  chunk_mem& operator=(const chunk_mem&) = delete;
  std::size_t hidden_bytes() const { return static_cast<std::size_t>(hidden.tokens) * e->cfg().hidden * sizeof(float); }
  std::vector<unsigned char> kv_bytes() const {
    std::vector<unsigned char> v(block.shape.bytes());
    e->to_host(v.data(), block.data, v.size());
    return v;
  }
  /// Bytes of layers [lb, le) of the block (contiguous: layer is outermost).
  std::vector<unsigned char> kv_layers(int lb, int le) const {
    const std::size_t per_layer = block.shape.bytes() / static_cast<std::size_t>(block.shape.layers);
    std::vector<unsigned char> v(per_layer * static_cast<std::size_t>(le - lb));
    e->to_host(v.data(), static_cast<const unsigned char*>(block.data) + per_layer * lb, v.size());
    return v;
  }
  std::vector<float> hidden_rows() const {
    std::vector<float> v(static_cast<std::size_t>(hidden.tokens) * e->cfg().hidden);
    e->to_host(v.data(), hidden.data, v.size() * sizeof(float));
    return v;
  }
};

/// `n` tokens below `vocab`, the same on every run.
inline std::vector<std::int32_t> prompt(int n, int vocab) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    t[i] = static_cast<std::int32_t>((i * 2654435761u + 12345u) % static_cast<unsigned>(vocab));
  return t;
}

/// ||a - b|| / ||b||; 1e30 where `a` holds a NaN or an infinity.
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return 1e30;
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace kvflow::model

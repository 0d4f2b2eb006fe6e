#pragma once
// The KV chunk block layout shared by every backend, tier and transfer:
//   block [layer][K|V][kv_head][token][head_dim]
// so that any layer range of a chunk is one contiguous span, and a tier moves
// a layer range with one copy, read or send. A plain struct here (not in
// kernels/) so that devices/ and kernels/ both see it without depending on
// each other; kernels/model/kv_layout.hpp makes one from a model config.

#include <cstddef>
#include <cstdint>

namespace kvflow::model {

enum class dtype : std::uint8_t { f32 = 0, bf16 = 1 };

inline std::size_t dtype_size(dtype t) { return t == dtype::f32 ? 4 : 2; }

/// Shape of one chunk's block: every layer of the model, `tokens` tokens.
struct kv_shape {
  int layers = 0;
  int kv_heads = 0;
  int tokens = 0;
  int head_dim = 0;
  dtype type = dtype::f32;

  /// Elements of K (or V) for one layer: [kv_head][token][head_dim].
  std::size_t half_layer_elems() const {
    return static_cast<std::size_t>(kv_heads) * static_cast<std::size_t>(tokens) * static_cast<std::size_t>(head_dim);
  }
  std::size_t layer_elems() const { return 2 * half_layer_elems(); }
  std::size_t layer_bytes() const { return layer_elems() * dtype_size(type); }
  std::size_t bytes() const { return layer_bytes() * static_cast<std::size_t>(layers); }

  /// Element offset of (layer, kv: 0 = K / 1 = V, head, token, dim).
  std::size_t offset(int layer, int kv, int head, int token, int dim) const {
    return ((((static_cast<std::size_t>(layer) * 2 + kv) * kv_heads + head) * tokens + token) * head_dim) + dim;
  }
  /// Byte span of layers [begin, end): the unit of one copy, read or send.
  std::size_t span_offset_bytes(int layer_begin) const { return layer_bytes() * static_cast<std::size_t>(layer_begin); }
  std::size_t span_bytes(int layer_begin, int layer_end) const {
    return layer_bytes() * static_cast<std::size_t>(layer_end - layer_begin);
  }
};

}  // namespace kvflow::model

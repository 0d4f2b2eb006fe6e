#pragma once
// The KV block shape of a model (messages/kv_shape.hpp holds the layout).

#include "kernels/model/config.hpp"
#include "messages/kv_shape.hpp"

namespace kvflow::model {

/// The block shape of `tokens` tokens of model `c` stored as `t`.
inline kv_shape kv_shape_of(const config& c, int tokens, dtype t) {
  return {c.layers, c.kv_heads, tokens, c.head_dim, t};
}

}  // namespace kvflow::model

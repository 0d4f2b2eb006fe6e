#pragma once
// Types every tier shares: layer ranges, lookup answers, key hashing.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "messages/types.hpp"

namespace kvflow::devices {

/// Half-open layer range [begin, end) of a chunk block.
struct layer_range {
  std::uint32_t begin = 0, end = 0;
  bool empty() const { return end <= begin; }
  std::uint32_t size() const { return empty() ? 0 : end - begin; }
  bool covers(const layer_range& r) const { return begin <= r.begin && r.end <= end && !r.empty(); }
};
inline bool operator==(const layer_range& a, const layer_range& b) { return a.begin == b.begin && a.end == b.end; }
inline bool operator!=(const layer_range& a, const layer_range& b) { return !(a == b); }

/// One tier's answer to "which of these chunks do you hold", in one call.
struct tier_lookup {
  /// Per key: the layers held (empty when the chunk is not held).
  std::vector<layer_range> chunks;
  /// Number of leading keys held (any layers): the cached prefix in this tier.
  std::size_t prefix = 0;

  bool held(std::size_t i) const { return i < chunks.size() && !chunks[i].empty(); }

  /// The answer for `keys` of a tier that holds `layers_of(key)` of each
  /// (an empty range: not held).
  template <class LayersOf>
  static tier_lookup of(const std::vector<msg::chunk_key>& keys, LayersOf&& layers_of) {
    tier_lookup r;
    r.chunks.reserve(keys.size());
    for (const auto& k : keys) r.chunks.push_back(layers_of(k));
    while (r.held(r.prefix)) ++r.prefix;
    return r;
  }
  /// Number of leading keys whose held layers cover `need`.
  std::size_t prefix_covering(const layer_range& need) const {
    std::size_t n = 0;
    while (n < chunks.size() && chunks[n].covers(need)) ++n;
    return n;
  }
};

/// Hash of a chunk key for unordered containers (the key is already SHA-256).
struct chunk_key_hash {
  std::size_t operator()(const msg::chunk_key& k) const noexcept {
    std::size_t h;
    std::memcpy(&h, k.data(), sizeof h);
    return h;
  }
};

}  // namespace kvflow::devices

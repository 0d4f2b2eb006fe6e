#include "devices/document_store.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "messages/error.hpp"

namespace kvflow::devices {
namespace {

const model::kv_shape& chunk_shape(chunk_store& store) { return store.disk().options().shape; }

void check(chunk_store& store, const std::vector<msg::chunk_key>& keys, const model::kv_shape& doc) {
  const model::kv_shape& c = chunk_shape(store);
  const std::size_t blocks = c.tokens > 0 ? (static_cast<std::size_t>(doc.tokens) + c.tokens - 1) / c.tokens : 0;
  if (doc.layers != c.layers || doc.kv_heads != c.kv_heads || doc.head_dim != c.head_dim || doc.type != c.type ||
      doc.tokens <= 0 || keys.size() != blocks)
    throw error(errc::invalid_argument, "document entry of " + std::to_string(doc.tokens) + " tokens with " +
                                            std::to_string(keys.size()) + " keys does not fit chunks of " +
                                            std::to_string(c.tokens) + " tokens of this model");
}

// Copies tokens [t0, t0 + n) of a document block to or from rows [0, n) of a chunk block.
void move_rows(const model::kv_shape& doc, std::uint8_t* doc_data, const model::kv_shape& chunk,
               std::uint8_t* chunk_data, int t0, int n, bool to_chunk) {
  const std::size_t elem = model::dtype_size(doc.type);
  const std::size_t bytes = static_cast<std::size_t>(n) * doc.head_dim * elem;
  for (int l = 0; l < doc.layers; ++l)
    for (int k = 0; k < 2; ++k)
      for (int h = 0; h < doc.kv_heads; ++h) {
        std::uint8_t* d = doc_data + doc.offset(l, k, h, t0, 0) * elem;
        std::uint8_t* c = chunk_data + chunk.offset(l, k, h, 0, 0) * elem;
        if (to_chunk)
          std::memcpy(c, d, bytes);
        else
          std::memcpy(d, c, bytes);
      }
}

}  // namespace

void store_document(chunk_store& store, const std::vector<msg::chunk_key>& keys, const void* document,
                    const model::kv_shape& doc_shape) {
  check(store, keys, doc_shape);
  const model::kv_shape& c = chunk_shape(store);
  std::vector<std::uint8_t> block(c.bytes());
  auto* doc = static_cast<std::uint8_t*>(const_cast<void*>(document));
  for (std::size_t b = 0; b < keys.size(); ++b) {
    const int t0 = static_cast<int>(b) * c.tokens;
    std::fill(block.begin(), block.end(), 0);
    move_rows(doc_shape, doc, c, block.data(), t0, std::min(c.tokens, doc_shape.tokens - t0), true);
    store.store(keys[b], layer_range{0, static_cast<std::uint32_t>(c.layers)}, block.data());
  }
}

bool has_document(const chunk_store& store, const std::vector<msg::chunk_key>& keys) {
  const auto found = store.lookup(keys);
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (!found.held(i)) return false;
  return !keys.empty();
}

bool load_document(chunk_store& store, const std::vector<msg::chunk_key>& keys, void* document,
                   const model::kv_shape& doc_shape) {
  check(store, keys, doc_shape);
  const model::kv_shape& c = chunk_shape(store);
  const layer_range all{0, static_cast<std::uint32_t>(c.layers)};
  std::vector<std::uint8_t> block;
  auto* doc = static_cast<std::uint8_t*>(document);
  for (std::size_t b = 0; b < keys.size(); ++b) {
    const int t0 = static_cast<int>(b) * c.tokens;
    const int n = std::min(c.tokens, doc_shape.tokens - t0);
    // The host pool directly: a document read should not promote its own
    // blocks over each other.
    host_block lease = store.host().acquire(keys[b]);
    if (lease && lease.layers().covers(all)) {
      move_rows(doc_shape, doc, c, lease.data(), t0, n, false);
      continue;
    }
    block.resize(c.bytes());
    if (!store.disk().read(keys[b], all, block.data())) {
      // A block evicted from the host a moment ago is on its way to disk:
      // once the queued writes are done it is there, or it is gone.
      store.disk().flush();
      if (!store.disk().read(keys[b], all, block.data())) return false;
    }
    move_rows(doc_shape, doc, c, block.data(), t0, n, false);
  }
  return true;
}

}  // namespace kvflow::devices

#pragma once
// Document entries (non-prefix reuse): the KV of a text segment computed on
// its own (positions from 0, K after RoPE at those positions; placing it
// elsewhere rotates K by the position delta, kernels/cpu/rope_delta.hpp),
// kept in the same tiers as prefix chunks. A document of n tokens is
// ceil(n / C) blocks of the tiers' chunk shape (C tokens), keyed by
// document_block_keys; the last block is filled with zeros beyond n.

#include <cstdint>
#include <vector>

#include "devices/chunk_store.hpp"
#include "devices/keys.hpp"
#include "kernels/model/kv_layout.hpp"

namespace kvflow::devices {

/// Splits `document` (host memory, [layers][2][kv_heads][n][head_dim] of
/// doc_shape, n = doc_shape.tokens) into blocks and stores each under its
/// key (keys.size() == ceil(n / C)). Never waits for I/O (chunk_store::store).
/// Throws kvflow::error(invalid_argument) on a shape or key count mismatch.
void store_document(chunk_store& store, const std::vector<msg::chunk_key>& keys, const void* document,
                    const model::kv_shape& doc_shape);

/// Whether every block of a document is held by the host or the disk tier.
bool has_document(const chunk_store& store, const std::vector<msg::chunk_key>& keys);

/// Reads every block (host lease, else a disk read) into `document` (host
/// memory of doc_shape). False when a block is missing or fails its check:
/// the document is then computed instead. Blocking: call it off actor threads.
bool load_document(chunk_store& store, const std::vector<msg::chunk_key>& keys, void* document,
                   const model::kv_shape& doc_shape);

}  // namespace kvflow::devices

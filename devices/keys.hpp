#pragma once
// Chunk keys (DESIGN.md, "Chunk key"): a SHA-256 chain over token chunks,
//   key(c) = SHA-256(model fingerprint, tenant salt, key(c-1), tokens of c),
// and document keys for position-independent reuse.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "messages/types.hpp"

namespace kvflow::devices {

/// SHA-256 over a model's config and weights (kernels/model/weights.hpp).
using model_fingerprint = std::array<std::uint8_t, 32>;

/// Keys of the full chunks of `tokens` (a trailing partial chunk gets none).
/// `salt` comes from the server's tenant, never from the client.
/// Throws kvflow::error(invalid_argument) when chunk_tokens is 0.
std::vector<msg::chunk_key> chunk_keys(const model_fingerprint& fingerprint, const std::string& salt,
                                       const std::vector<std::int32_t>& tokens, std::size_t chunk_tokens);

/// Key of one chunk given the key of the chunk before it (all zero for chunk 0).
msg::chunk_key next_chunk_key(const model_fingerprint& fingerprint, const std::string& salt,
                              const msg::chunk_key& previous, const std::int32_t* tokens, std::size_t count);

/// Key of a document for non-prefix reuse: the hash of its tokens alone (plus
/// fingerprint and salt), independent of where it appears in a prompt. Its
/// chunks are keyed by chunk_keys over the document's tokens seeded with this
/// key, so they match at any position; K is stored before RoPE.
msg::chunk_key document_key(const model_fingerprint& fingerprint, const std::string& salt,
                            const std::vector<std::int32_t>& tokens);

/// Keys of a document's full chunks, chained from document_key instead of zero.
std::vector<msg::chunk_key> document_chunk_keys(const model_fingerprint& fingerprint, const std::string& salt,
                                                const std::vector<std::int32_t>& tokens, std::size_t chunk_tokens);

/// Keys of every block of a document entry: its full chunks as
/// document_chunk_keys, then (when the length is not a multiple of
/// chunk_tokens) one more for the partial tail, chained on. A document's
/// blocks match wherever it appears in a prompt; they never collide with a
/// prefix chain's (a different domain tag seeds them).
/// Throws kvflow::error(invalid_argument) when chunk_tokens is 0.
std::vector<msg::chunk_key> document_block_keys(const model_fingerprint& fingerprint, const std::string& salt,
                                                const std::vector<std::int32_t>& tokens, std::size_t chunk_tokens);

/// Lower-case hex of a key (file names, logs).
std::string key_hex(const msg::chunk_key& key);

}  // namespace kvflow::devices

#pragma once
// The chunk file format of the disk tier; a header or checksum mismatch is a
// miss, never a crash and never wrong output:
//   [0, 4096)            header, little-endian, ends with its own XXH3-64
//   [4096, 4096 + len)   the block's layers [layer_begin, layer_end), laid out
//                        [layer][K|V][kv_head][token][head_dim]
//   zero padding to a multiple of 4096, so every read can be O_DIRECT.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "devices/keys.hpp"
#include "devices/tier.hpp"
#include "messages/kv_shape.hpp"

namespace kvflow::devices {

constexpr std::uint32_t chunk_file_magic = 0x4346564bu;  // "KVFC"
constexpr std::uint32_t chunk_file_version = 1;
constexpr std::size_t chunk_header_bytes = 4096;
/// Per-layer checksums fill the header after 128 fixed bytes.
constexpr std::size_t chunk_file_max_layers = (chunk_header_bytes - 128 - 8) / 8;

/// A decoded, checked header.
struct chunk_header {
  model_fingerprint fingerprint{};
  msg::chunk_key key{};
  layer_range layers;
  model::kv_shape shape;                       // the whole chunk's shape (all model layers)
  std::uint64_t payload_bytes = 0;             // shape.span_bytes(layers)
  std::uint64_t payload_checksum = 0;          // XXH3-64 of the whole payload
  std::vector<std::uint64_t> layer_checksums;  // XXH3-64 of each stored layer
};

/// XXH3-64 (integrity, not security).
std::uint64_t chunk_checksum(const void* data, std::size_t size);

/// Fills header fields and checksums for layers of `block` (whole-chunk layout).
chunk_header make_chunk_header(const model_fingerprint& fingerprint, const msg::chunk_key& key,
                               const model::kv_shape& shape, layer_range layers, const void* block);

/// Writes `h` into out[0, chunk_header_bytes).
void encode_chunk_header(const chunk_header& h, std::uint8_t* out);

/// Decodes in[0, chunk_header_bytes) and checks magic, version, header
/// checksum and that the sizes agree. False with a reason on any mismatch;
/// never throws on bad bytes.
bool decode_chunk_header(const std::uint8_t* in, chunk_header& out, std::string& why);

/// Bytes of a chunk file holding `payload_bytes` (header + padded payload).
inline std::size_t chunk_file_bytes(std::size_t payload_bytes) {
  return chunk_header_bytes + (payload_bytes + 4095) / 4096 * 4096;
}

bool same_shape(const model::kv_shape& a, const model::kv_shape& b);

}  // namespace kvflow::devices

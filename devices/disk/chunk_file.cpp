#include "devices/disk/chunk_file.hpp"

#include <cstring>

#include <xxhash.h>

#include "messages/error.hpp"

namespace kvflow::devices {
namespace {

// Fixed header offsets (bytes).
constexpr std::size_t off_magic = 0, off_version = 4, off_fingerprint = 8, off_key = 40, off_layer_begin = 72,
                      off_layer_end = 76, off_dtype = 80, off_shape = 84, off_payload_bytes = 104,
                      off_payload_checksum = 112, off_layer_count = 120, off_layer_checksums = 128,
                      off_header_checksum = chunk_header_bytes - 8;

template <class T>
void put(std::uint8_t* p, std::size_t off, T v) {
  std::memcpy(p + off, &v, sizeof v);  // x86-64 and arm64 are little-endian
}
template <class T>
T get(const std::uint8_t* p, std::size_t off) {
  T v;
  std::memcpy(&v, p + off, sizeof v);
  return v;
}

}  // namespace

std::uint64_t chunk_checksum(const void* data, std::size_t size) { return XXH3_64bits(data, size); }

bool same_shape(const model::kv_shape& a, const model::kv_shape& b) {
  return a.layers == b.layers && a.kv_heads == b.kv_heads && a.tokens == b.tokens && a.head_dim == b.head_dim &&
         a.type == b.type;
}

chunk_header make_chunk_header(const model_fingerprint& fingerprint, const msg::chunk_key& key,
                               const model::kv_shape& shape, layer_range layers, const void* block) {
  if (layers.empty() || layers.end > static_cast<std::uint32_t>(shape.layers) || layers.size() > chunk_file_max_layers)
    throw error(errc::invalid_argument, "chunk file: layer range [" + std::to_string(layers.begin) + ", " +
                                            std::to_string(layers.end) + ") of a " + std::to_string(shape.layers) +
                                            "-layer chunk");
  chunk_header h;
  h.fingerprint = fingerprint;
  h.key = key;
  h.layers = layers;
  h.shape = shape;
  h.payload_bytes = shape.span_bytes(static_cast<int>(layers.begin), static_cast<int>(layers.end));
  const auto* base = static_cast<const std::uint8_t*>(block) + shape.span_offset_bytes(static_cast<int>(layers.begin));
  h.payload_checksum = chunk_checksum(base, h.payload_bytes);
  h.layer_checksums.reserve(layers.size());
  for (std::uint32_t l = 0; l < layers.size(); ++l)
    h.layer_checksums.push_back(chunk_checksum(base + l * shape.layer_bytes(), shape.layer_bytes()));
  return h;
}

void encode_chunk_header(const chunk_header& h, std::uint8_t* out) {
  std::memset(out, 0, chunk_header_bytes);
  put(out, off_magic, chunk_file_magic);
  put(out, off_version, chunk_file_version);
  std::memcpy(out + off_fingerprint, h.fingerprint.data(), 32);
  std::memcpy(out + off_key, h.key.data(), 32);
  put(out, off_layer_begin, h.layers.begin);
  put(out, off_layer_end, h.layers.end);
  put(out, off_dtype, static_cast<std::uint8_t>(h.shape.type));
  put(out, off_shape + 0, static_cast<std::uint32_t>(h.shape.layers));
  put(out, off_shape + 4, static_cast<std::uint32_t>(h.shape.kv_heads));
  put(out, off_shape + 8, static_cast<std::uint32_t>(h.shape.tokens));
  put(out, off_shape + 12, static_cast<std::uint32_t>(h.shape.head_dim));
  put(out, off_payload_bytes, h.payload_bytes);
  put(out, off_payload_checksum, h.payload_checksum);
  put(out, off_layer_count, static_cast<std::uint32_t>(h.layer_checksums.size()));
  for (std::size_t i = 0; i < h.layer_checksums.size() && i < chunk_file_max_layers; ++i)
    put(out, off_layer_checksums + 8 * i, h.layer_checksums[i]);
  put(out, off_header_checksum, chunk_checksum(out, off_header_checksum));
}

bool decode_chunk_header(const std::uint8_t* in, chunk_header& h, std::string& why) {
  if (get<std::uint32_t>(in, off_magic) != chunk_file_magic) return why = "bad magic", false;
  if (get<std::uint64_t>(in, off_header_checksum) != chunk_checksum(in, off_header_checksum))
    return why = "header checksum mismatch", false;
  const auto version = get<std::uint32_t>(in, off_version);
  if (version != chunk_file_version) return why = "foreign version " + std::to_string(version), false;
  std::memcpy(h.fingerprint.data(), in + off_fingerprint, 32);
  std::memcpy(h.key.data(), in + off_key, 32);
  h.layers.begin = get<std::uint32_t>(in, off_layer_begin);
  h.layers.end = get<std::uint32_t>(in, off_layer_end);
  const auto type = get<std::uint8_t>(in, off_dtype);
  if (type > static_cast<std::uint8_t>(model::dtype::bf16)) return why = "bad dtype", false;
  h.shape.type = static_cast<model::dtype>(type);
  const std::uint32_t dims[4] = {get<std::uint32_t>(in, off_shape), get<std::uint32_t>(in, off_shape + 4),
                                 get<std::uint32_t>(in, off_shape + 8), get<std::uint32_t>(in, off_shape + 12)};
  for (std::uint32_t d : dims)
    if (d == 0 || d > (1u << 20)) return why = "bad kv shape", false;
  h.shape.layers = static_cast<int>(dims[0]);
  h.shape.kv_heads = static_cast<int>(dims[1]);
  h.shape.tokens = static_cast<int>(dims[2]);
  h.shape.head_dim = static_cast<int>(dims[3]);
  if (h.layers.empty() || h.layers.end > dims[0]) return why = "bad layer range", false;
  h.payload_bytes = get<std::uint64_t>(in, off_payload_bytes);
  // Each dim is at most 2^20 but the product can still be huge: bound it.
  const double bytes = 2.0 * dims[1] * dims[2] * dims[3] * model::dtype_size(h.shape.type) * dims[0];
  if (bytes > 1e12 ||
      h.payload_bytes != h.shape.span_bytes(static_cast<int>(h.layers.begin), static_cast<int>(h.layers.end)))
    return why = "payload length does not match the shape", false;
  h.payload_checksum = get<std::uint64_t>(in, off_payload_checksum);
  const auto count = get<std::uint32_t>(in, off_layer_count);
  if (count != h.layers.size() || count > chunk_file_max_layers) return why = "bad layer checksum count", false;
  h.layer_checksums.resize(count);
  for (std::uint32_t i = 0; i < count; ++i) h.layer_checksums[i] = get<std::uint64_t>(in, off_layer_checksums + 8 * i);
  return true;
}

}  // namespace kvflow::devices

// Fuzz target: the disk tier's chunk file header reader
// (devices/disk/chunk_file.hpp). Byte 0's low bit says whether to stamp the
// header's XXH3 checksum over the fuzzed bytes first, so the checks behind
// the checksum are reached; the rest of the input is the 4096-byte header
// (zero-padded or cut).
// Properties: decode never throws or reads out of bounds; an accepted header
// has a non-empty layer range inside its shape, a payload length equal to the
// shape's span and one checksum per layer, and re-encodes to a header that
// decodes to the same fields.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "devices/disk/chunk_file.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace kvflow::devices;

namespace {

void check_same(const chunk_header& a, const chunk_header& b) {
  KVFLOW_FUZZ_CHECK(a.fingerprint == b.fingerprint && a.key == b.key, "re-decoded fingerprint or key");
  KVFLOW_FUZZ_CHECK(a.layers == b.layers, "re-decoded layer range");
  KVFLOW_FUZZ_CHECK(same_shape(a.shape, b.shape), "re-decoded shape");
  KVFLOW_FUZZ_CHECK(a.payload_bytes == b.payload_bytes && a.payload_checksum == b.payload_checksum,
                    "re-decoded payload fields");
  KVFLOW_FUZZ_CHECK(a.layer_checksums == b.layer_checksums, "re-decoded layer checksums");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool stamp = data[0] & 1;
  ++data, --size;
  std::vector<std::uint8_t> header(chunk_header_bytes, 0);
  std::memcpy(header.data(), data, std::min(size, chunk_header_bytes));
  if (stamp) {
    auto sum = chunk_checksum(header.data(), chunk_header_bytes - 8);
    std::memcpy(header.data() + chunk_header_bytes - 8, &sum, 8);
  }
  chunk_header h;
  std::string why;
  if (!decode_chunk_header(header.data(), h, why)) {
    KVFLOW_FUZZ_CHECK(!why.empty(), "refused header without a reason");
    return 0;
  }
  KVFLOW_FUZZ_CHECK(!h.layers.empty() && h.layers.end <= static_cast<std::uint32_t>(h.shape.layers),
                    "accepted layer range outside the shape");
  KVFLOW_FUZZ_CHECK(h.shape.kv_heads > 0 && h.shape.tokens > 0 && h.shape.head_dim > 0, "accepted empty shape");
  KVFLOW_FUZZ_CHECK(
      h.payload_bytes == h.shape.span_bytes(static_cast<int>(h.layers.begin), static_cast<int>(h.layers.end)),
      "payload length differs from the shape's span");
  KVFLOW_FUZZ_CHECK(h.layer_checksums.size() == h.layers.size() && h.layer_checksums.size() <= chunk_file_max_layers,
                    "layer checksum count");
  KVFLOW_FUZZ_CHECK(chunk_file_bytes(h.payload_bytes) >= chunk_header_bytes + h.payload_bytes, "file size overflows");

  std::vector<std::uint8_t> again(chunk_header_bytes, 0xa5);
  encode_chunk_header(h, again.data());
  chunk_header back;
  std::string why_back;
  KVFLOW_FUZZ_CHECK(decode_chunk_header(again.data(), back, why_back), "re-encoded header refused");
  check_same(h, back);
  return 0;
}

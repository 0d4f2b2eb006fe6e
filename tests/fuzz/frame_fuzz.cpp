// Fuzz target: network framing. A frame reaches a node as CAF's serialized
// msg::frame (actors/frame_type.hpp) inside a BASP payload and is then decoded
// with the node's limits. The first 16 input bytes choose small limits (so
// every cap is reachable); the rest is, by the low bit of byte 0, either the
// frame's bytes or CAF's serialization of a msg::frame.
// Properties: nothing crashes or throws; an oversized frame is refused as
// frame_too_large before parsing; a decoded message respects the limits and
// round-trips.

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "actors/frame_type.hpp"
#include "messages/codec.hpp"
#include "tests/fuzz/message_checks.hpp"

namespace {

constexpr std::size_t header_bytes = 16;

std::uint32_t u16(const std::uint8_t* p) { return p[0] | (std::uint32_t{p[1]} << 8); }

kvflow::msg::limits limits_from(const std::uint8_t* h) {
  kvflow::msg::limits lim;
  lim.max_frame_bytes = 8 * (std::size_t{u16(h + 1)} + 1);  // up to 512 KiB
  lim.traversal_words = u16(h + 3) + 1;
  lim.nesting = h[5] % 20;
  lim.max_tokens = h[6] * 16u;
  lim.max_list = h[7];
  lim.max_text = u16(h + 8);
  // Value caps stay at or below the defaults: encode() checks a message
  // against the defaults, so a decode under wider caps could not round-trip.
  lim.max_layers = std::min<std::uint32_t>(u16(h + 10), lim.max_layers);
  lim.max_chunks = std::min<std::uint32_t>(u16(h + 12), lim.max_chunks);
  lim.max_devices = std::min<std::uint32_t>(h[14] * 8u, lim.max_devices);
  return lim;
}

void decode_and_check(const char* data, std::size_t size, const kvflow::msg::limits& lim) {
  auto decoded = kvflow::msg::decode(data, size, lim);
  if (!decoded) {
    if (size > lim.max_frame_bytes) {
      const auto& e = decoded.error();
      KVFLOW_FUZZ_CHECK(e.code() == kvflow::errc::frame_too_large, "oversized frame refused with another error");
    }
    return;
  }
  KVFLOW_FUZZ_CHECK(size <= lim.max_frame_bytes, "oversized frame decoded");
  kvflow::fuzz::check_message(*decoded, lim);
  kvflow::fuzz::check_round_trip(*decoded, lim);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < header_bytes) return 0;
  auto lim = limits_from(data);
  const char* body = reinterpret_cast<const char*>(data + header_bytes);
  std::size_t body_size = size - header_bytes;
  if ((data[0] & 1) == 0) {
    decode_and_check(body, body_size, lim);
    return 0;
  }
  // As the middleman delivers it: CAF's deserializer fills a msg::frame.
  kvflow::msg::frame f;
  caf::binary_deserializer source{nullptr, body, body_size};
  if (auto err = source(f)) return 0;
  decode_and_check(f.bytes.data(), f.bytes.size(), lim);
  return 0;
}

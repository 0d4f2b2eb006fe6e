// Fuzz target: devices::net::wire_decode of arbitrary frames, as a receiver
// meets a piece shorter than it announced. The first 4 bytes (little-endian,
// at most 1 MiB) are the announced size, the rest the frame. Properties: a
// frame is refused with kvflow::error(malformed_frame) or decodes to exactly
// the announced bytes, writing nothing past them; what decoded re-encodes to
// a frame that decodes to the same bytes.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "devices/net/wire_codec.hpp"
#include "messages/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  std::size_t bytes = 0;
  for (int k = 0; k < 4; ++k) bytes |= std::size_t{data[k]} << (8 * k);
  bytes %= (1u << 20) + 1;
  std::vector<std::uint8_t> out(bytes + 16, 0xA5);
  try {
    kvflow::devices::net::wire_decode(data + 4, size - 4, out.data(), bytes);
  } catch (const kvflow::error& e) {
    if (e.code() != kvflow::errc::malformed_frame) std::abort();
    return 0;
  }
  for (std::size_t i = bytes; i < out.size(); ++i)
    if (out[i] != 0xA5) std::abort();
  for (std::size_t elem : {1u, 2u, 4u}) {
    auto frame = kvflow::devices::net::wire_encode(out.data(), bytes, elem);
    std::vector<std::uint8_t> back(bytes);
    kvflow::devices::net::wire_decode(frame.data(), frame.size(), back.data(), bytes);
    if (bytes && std::memcmp(back.data(), out.data(), bytes) != 0) std::abort();
  }
  return 0;
}

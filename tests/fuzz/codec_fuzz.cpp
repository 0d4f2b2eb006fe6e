// Fuzz target: msg::decode of arbitrary bytes with the default limits.
// Properties: decode never crashes or throws; a decoded message respects the
// limits, and encode(decoded) decodes to the same message.

#include <cstddef>
#include <cstdint>

#include "messages/codec.hpp"
#include "tests/fuzz/message_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const kvflow::msg::limits lim;
  auto decoded = kvflow::msg::decode(reinterpret_cast<const char*>(data), size, lim);
  if (!decoded) return 0;
  kvflow::fuzz::check_message(*decoded, lim);
  kvflow::fuzz::check_round_trip(*decoded, lim);
  return 0;
}

#pragma once
// Converts control messages to Cap'n Proto frames and back. Frames are what
// actors send each other (in-process and across nodes); decoding treats every
// frame as untrusted bytes.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "messages/expected.hpp"
#include "messages/types.hpp"

namespace kvflow::msg {

/// Caps applied before and while Cap'n Proto reads a frame.
struct limits {
  std::size_t max_frame_bytes = 8u << 20;      ///< checked before parsing
  std::uint64_t traversal_words = 2u << 20;    ///< total words a decode may visit
  int nesting = 16;                            ///< pointer depth
  std::size_t max_tokens = 1u << 21;           ///< tokens in one submit or result
  std::size_t max_list = 1u << 16;             ///< any other list
  std::size_t max_text = 1u << 24;             ///< bytes of one text field
  std::uint32_t max_layers = 1024;             ///< layer indices
  std::uint32_t max_chunks = 1u << 20;         ///< chunk indices
  std::uint32_t max_devices = 1024;            ///< GPU indices and inventory entries
  std::uint64_t max_chunk_bytes = 1ull << 36;  ///< bytes of one chunk's KV
  std::size_t max_peer_bytes = 4096;           ///< a UCX worker address
};

/// One encoded Envelope: flat, unpacked Cap'n Proto bytes (a multiple of 8).
struct frame {
  std::vector<char> bytes;
};

/// Equality of messages: the same kind and the same encoded bytes.
bool same(const message& a, const message& b);

/// Encodes any control message. Throws kvflow::error(out_of_range) for values
/// that decode() with default limits would reject (the built message is read
/// back through the same checks), so a bad frame is never produced.
frame encode(const message& m);

/// Decodes untrusted bytes. A malformed, truncated, oversized or too deeply
/// nested frame, or a value out of range, is an error naming what failed.
expected<message> decode(const char* data, std::size_t size, const limits& lim = {});
inline expected<message> decode(const frame& f, const limits& lim = {}) {
  return decode(f.bytes.data(), f.bytes.size(), lim);
}

/// Name of the message kind held by m ("submit", "grant", ...).
const char* kind_name(const message& m);

}  // namespace kvflow::msg

#pragma once
// Plain structs for the prefill/decode messages of messages/pd.capnp and
// their Cap'n Proto encoding. Decoding treats the bytes as untrusted: a size
// cap before parsing, Cap'n Proto's traversal limit while reading, and range
// checks on the shape afterwards.

#include <cstdint>
#include <string>
#include <vector>

#include "messages/expected.hpp"
#include "messages/kv_shape.hpp"

namespace kvflow::msg {

/// A KV transfer as announced (see KvAnnounce in pd.capnp).
struct kv_announce {
  std::uint64_t transfer_id = 0;
  std::uint64_t bytes = 0;
  std::uint64_t checksum = 0;
  model::kv_shape shape;  ///< tokens = the whole request's prompt
  int chunk_tokens = 0;
  int layer_begin = 0;
  int layer_end = 0;
  bool contiguous = true;
  std::uint32_t pieces = 0;
  std::vector<std::uint8_t> ipc_handle;
  std::vector<std::uint8_t> sender;
};

struct pd_handoff {
  std::uint64_t request_id = 0;
  std::vector<std::int32_t> prompt;
  std::int32_t first_token = -1;
  std::uint32_t max_new_tokens = 0;
  float temperature = 0;
  float top_p = 1;
  std::uint64_t seed = 0;
  std::vector<std::int32_t> stop_tokens;
  kv_announce kv;
};

struct pd_reply {
  std::uint64_t request_id = 0;
  bool ok = false;
  std::string why;
  std::vector<std::uint8_t> receiver;
  std::vector<std::int32_t> tokens;
  std::uint64_t transfer_ns = 0;
};

/// Largest encoded pd message accepted (a 128k-token prompt fits).
constexpr std::size_t max_pd_frame_bytes = 2u << 20;

std::vector<char> encode(const kv_announce& m);
std::vector<char> encode(const pd_handoff& m);
std::vector<char> encode(const pd_reply& m);
/// Each fails with malformed_frame, frame_too_large or out_of_range (a shape
/// whose sizes do not fit the announced bytes), naming what failed.
expected<kv_announce> decode_kv_announce(const std::vector<char>& bytes);
expected<pd_handoff> decode_pd_handoff(const std::vector<char>& bytes);
expected<pd_reply> decode_pd_reply(const std::vector<char>& bytes);

}  // namespace kvflow::msg

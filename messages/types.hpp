#pragma once
// Plain C++ forms of the control messages in kvflow.capnp. Policies and actors
// work on these; the codec converts them to and from Cap'n Proto frames.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace kvflow::msg {

enum class tier : std::uint8_t { gpu, host, disk, remote };
/// Number of tiers: the size of every per-tier array, indexed by tier.
constexpr std::size_t tier_count = 4;
static_assert(tier_count == static_cast<std::size_t>(tier::remote) + 1);
enum class action : std::uint8_t { compute, load };

/// Name of a tier as used in flags, logs and results ("gpu", "host", ...).
const char* to_string(tier t);
const char* to_string(action a);

/// A 32-byte SHA-256 chunk key, chained like a prefix tree over the model
/// fingerprint, the tenant salt, the previous chunk's key and the chunk's
/// tokens (devices/keys.hpp). Cryptographic, because a collision would serve
/// one prompt another's KV.
using chunk_key = std::array<std::uint8_t, 32>;

/// Half-open chunk x layer rectangle: the unit of planned restore work.
struct cell_range {
  std::uint32_t chunk_begin = 0, chunk_end = 0;
  std::uint32_t layer_begin = 0, layer_end = 0;
};
inline bool operator==(const cell_range& a, const cell_range& b) {
  return a.chunk_begin == b.chunk_begin && a.chunk_end == b.chunk_end && a.layer_begin == b.layer_begin &&
         a.layer_end == b.layer_end;
}

struct submit {
  std::uint64_t request_id = 0;
  std::string tenant;
  std::vector<std::int32_t> tokens;
  std::string text;
  std::uint32_t max_new_tokens = 0;
  float temperature = 0;
  float top_p = 1;
  std::string policy;
  std::uint64_t deadline_ns = 0;
};

struct register_request {
  std::uint64_t request_id = 0;
  std::uint32_t chunk_tokens = 0;
  std::uint32_t num_chunks = 0;
  std::uint32_t num_layers = 0;
  std::vector<tier> chunk_tiers;  // tier of each cached chunk [0, P)
  std::uint64_t chunk_bytes = 0;
  std::vector<std::uint16_t> chunk_links;  // link of each cached chunk in its tier; empty: all 0
};

struct grant {
  std::uint64_t request_id = 0;
  std::uint64_t grant_id = 0;
  action act = action::compute;
  cell_range cells;
  tier source = tier::gpu;
};

struct cell_done {
  std::uint64_t request_id = 0;
  std::uint64_t grant_id = 0;
  action act = action::compute;
  cell_range cells;
  std::uint64_t started_ns = 0, finished_ns = 0;
  std::uint64_t bytes = 0;
  std::uint32_t device = 0;
};

struct progress {
  std::uint64_t request_id = 0;
  std::uint32_t compute_pointer = 0;
  std::uint32_t load_pointer = 0;
  bool done = false;
};

struct lookup {
  std::uint64_t request_id = 0;
  std::vector<chunk_key> keys;
};

struct chunk_location {
  chunk_key key{};
  std::uint32_t chunk = 0;
  tier where = tier::host;
  std::uint64_t bytes = 0;
  /// Which link of the tier holds it: a remote tier's node index + 1; 0 where
  /// the tier has one link. The scheduler learns each link's rate apart.
  std::uint16_t link = 0;
};

struct chunk_located {
  std::uint64_t request_id = 0;
  std::vector<chunk_location> chunks;
};

struct load {
  std::uint64_t request_id = 0;
  chunk_key key{};
  std::uint32_t layer_begin = 0, layer_end = 0;
  tier source = tier::host;
  std::uint64_t handle = 0;  // destination block handle
  std::uint64_t deadline_ns = 0;
};

struct store {
  chunk_key key{};
  std::uint32_t layer_begin = 0, layer_end = 0;
  tier target = tier::host;
  std::uint64_t handle = 0;  // source block handle
};

struct rate_sample {
  tier source = tier::host;
  std::uint64_t bytes = 0;
  std::uint64_t elapsed_ns = 0;
  std::uint16_t link = 0;  ///< 0: the tier as a whole; else one of its links (chunk_location::link)
};

struct tier_bytes {
  tier where = tier::host;
  std::uint64_t bytes = 0;
};

struct result {
  std::uint64_t request_id = 0;
  std::int32_t first_token = -1;
  std::uint64_t ttft_ns = 0;
  std::uint32_t cells_computed = 0;
  std::uint32_t cells_loaded = 0;
  std::vector<tier_bytes> bytes_loaded;
  std::vector<std::int32_t> tokens;
  std::string text;
};

struct gpu_info {
  std::string name;
  std::uint64_t memory_bytes = 0;
};

struct tier_info {
  tier where = tier::host;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t used_bytes = 0;
};

struct node_inventory {
  std::string node_id;
  std::string host;
  std::uint16_t port = 0;
  std::vector<gpu_info> gpus;
  std::vector<tier_info> tiers;
};

struct error_report {
  std::uint16_t code = 0;
  std::string context;
  std::uint64_t request_id = 0;
};

/// Announces bulk KV bytes that travel beside the control messages (see
/// kvflow.capnp, Transfer).
struct transfer {
  std::uint64_t transfer_id = 0;
  std::vector<chunk_key> keys;
  std::uint32_t layer_begin = 0, layer_end = 0;
  std::uint64_t bytes = 0;
  std::uint64_t checksum = 0;      // XXH3-64; 0 where not known yet
  std::vector<std::uint8_t> peer;  // UCX worker address of the sender of this message
};

/// The KV layout of a cluster's chunks.
struct kv_layout {
  std::array<std::uint8_t, 32> fingerprint{};
  std::uint32_t layers = 0, kv_heads = 0, tokens = 0, head_dim = 0;
  std::uint8_t dtype = 0;
};

/// Any control message; the alternative order matches Envelope's union.
/// Two messages are equal when their encoded frames are (see codec.hpp).
using message = std::variant<submit, register_request, grant, cell_done, progress, lookup, chunk_located, load, store,
                             rate_sample, result, node_inventory, error_report, transfer, kv_layout>;

}  // namespace kvflow::msg

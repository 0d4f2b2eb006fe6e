#pragma once
// A kvflow node: the actor a process publishes to the cluster. It hosts a
// host-memory tier in front of a disk tier (a devices::chunk_store) that
// other processes reach as one remote tier (actors/interfaces.hpp), with KV
// bytes over UCX (devices/net).

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/interfaces.hpp"
#include "devices/chunk_store.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "devices/net/transport.hpp"
#include "devices/net/work_pool.hpp"
#include "messages/types.hpp"

namespace kvflow {

/// Whether a node sends fetched KV compressed (devices/net/wire_codec):
/// `on`, a piece goes as a frame whenever the frame is smaller; `automatic`,
/// when it saves at least a tenth (less does not pay for the decoding);
/// `off`, never. Chunks are compressed once, when they are stored.
enum class wire_compression : std::uint8_t { off, on, automatic };

/// Parses "off", "on" or "auto"; throws kvflow::error(invalid_argument).
wire_compression parse_wire_compression(const std::string& s);

/// A stored chunk's pieces as they go on the wire: pieces of
/// devices::net::piece_bytes_for(layer bytes), so any layer range is whole
/// pieces.
struct packed_chunk {
  std::uint64_t piece_bytes = 0;
  std::vector<std::vector<std::uint8_t>> frames;  ///< per piece; empty: the piece goes raw
  std::vector<std::uint64_t> checksums;           ///< XXH3-64 of each raw piece
  std::uint64_t bytes = 0;                        ///< of the frames kept
};

/// The packed chunks of a node, shared with the threads that make them.
/// Least recently stored or fetched out first past `capacity` bytes of
/// frames. Thread-safe.
class packed_cache {
 public:
  explicit packed_cache(std::uint64_t capacity) : capacity_(capacity) {}
  void put(const msg::chunk_key& key, std::shared_ptr<const packed_chunk> c);
  /// The chunk's frames (null if none), now the most recently used.
  std::shared_ptr<const packed_chunk> get(const msg::chunk_key& key);
  std::uint64_t bytes() const;

 private:
  struct entry {
    std::shared_ptr<const packed_chunk> chunk;
    std::list<msg::chunk_key>::iterator use;
  };
  mutable std::mutex m_;
  std::map<msg::chunk_key, entry> chunks_;
  std::list<msg::chunk_key> use_;  ///< least recently used first
  std::uint64_t capacity_, bytes_ = 0;
};

/// What a node hosts. The chunk store is made when the first client tells
/// the KV layout (layout_atom): a node serves one model's chunks.
struct node_options {
  double host_gb = 1;    ///< host tier capacity (at least one chunk)
  std::string disk_dir;  ///< chunk file folder; empty: no chunk store until set
  double disk_gb = 0;    ///< chunk files kept; 0: no limit
  devices::net::transport_options net;
  wire_compression compression = wire_compression::automatic;
  /// Threads that compress stored chunks (0: none; chunks go raw).
  std::size_t pack_threads = 4;
  /// An announced store whose bytes have not landed by then is withdrawn.
  std::chrono::milliseconds store_deadline{30000};
};

/// A fetch whose reads are in flight (node.cpp).
struct node_fetch;

/// An announced store: where its bytes land and what they are checked against.
struct node_store {
  std::shared_ptr<devices::pinned_buffer> buffer;
  msg::transfer t;
};

struct node_tier_state {
  node_options opts;
  std::string node_id;
  std::optional<msg::kv_layout> layout;
  std::shared_ptr<devices::chunk_store> store;
  std::shared_ptr<devices::net::transport> net;
  std::uint64_t next_job = 0;
  std::map<std::uint64_t, std::shared_ptr<node_fetch>> fetches;
  std::map<std::uint64_t, node_store> stores;  ///< announced, by transfer id
  std::vector<caf::response_promise> flushes;  ///< waiting for `stores` and `packing` to empty
  std::uint64_t fetched_bytes = 0, stored_bytes = 0, fetched_wire_bytes = 0;
  std::shared_ptr<packed_cache> packed;
  std::unique_ptr<devices::net::work_pool> packers;
  std::size_t packing = 0;  ///< chunks being compressed
  static inline const char* name = "kvflow.node_tier";
};

/// The node's tiers: handles node_actor's tier and layout messages (the
/// front below delegates to it) and the completions of its reads, sends and
/// receives. Reads and UCX transfers do not block it; spans leave from the
/// host leases or disk reads they lie in, hashed on the transport's lanes.
caf::behavior node_tier(caf::stateful_actor<node_tier_state>* self, node_options opts, std::string node_id);

struct node_state {
  msg::node_inventory inventory;
  caf::actor tiers;
  static inline const char* name = "kvflow.node";
};

/// The published node: answers inventory and echo frames itself and
/// delegates tier messages to a node_tier it spawns and links. See
/// node_actor in actors/interfaces.hpp for the protocol.
node_actor::behavior_type node(node_actor::stateful_pointer<node_state> self, msg::node_inventory inventory,
                               node_options opts = {});

}  // namespace kvflow

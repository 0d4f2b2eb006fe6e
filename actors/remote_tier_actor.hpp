#pragma once
// The remote tier: this process's proxy for the tiers of a cluster's nodes.
// Request actors talk to it as to a local tier (frames and workspace
// handles); it talks to the nodes through the typed node_actor interface
// and moves KV bytes over UCX, so nothing that names this process's memory
// leaves it.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "actors/workspace.hpp"
#include "devices/host/pinned_slab.hpp"
#include "devices/net/transport.hpp"

namespace kvflow {

/// One node of a cluster: its name (what placement hashes) and address.
struct cluster_member {
  std::string name;
  std::string host;
  std::uint16_t port = 0;
};

/// Parses "host:port" or "name host:port" (the name defaults to host:port).
/// Throws kvflow::error(invalid_argument) naming what is wrong.
cluster_member parse_member(const std::string& line);
/// Reads a cluster file: one member per line as parse_member takes it;
/// blank lines and lines starting with '#' are skipped. Throws
/// kvflow::error (io_failure, invalid_argument) with the file and line.
std::vector<cluster_member> read_cluster_file(const std::string& path);

struct remote_tier_options {
  std::vector<cluster_member> members;
  msg::kv_layout layout;
  /// Stores go to a chunk key's owner and this many next owners.
  std::size_t replicas = 0;
  /// A node that does not answer a lookup in this time is taken as silent:
  /// its chunks are misses until it answers again.
  std::chrono::milliseconds lookup_timeout{1000};
  /// A fetch's deadline: this plus its bytes at `deadline_gbps`.
  std::chrono::milliseconds transfer_timeout{2000};
  double deadline_gbps = 1;
  /// How often a node that is down is asked (or connected to) again.
  std::chrono::milliseconds retry_interval{1000};
  /// Page-locked landing memory for fetches, allocated once at start and
  /// lent in slots of one layer of one chunk (a one-cell grant's size); a
  /// fetch takes adjacent slots. A grant's fetch larger than a quarter of
  /// this is split by chunks, so the largest is one chunk of all layers:
  /// smaller values are raised to that. Fetches that find no room wait, in
  /// order, for earlier ones to land (their deadline runs from when they
  /// start); nothing is lost or overwritten. Nothing is
  /// page-locked or freed while restores run: page-locking takes
  /// milliseconds per buffer on the actor's thread and the CUDA driver's
  /// lock (H200, 16k at 25 Gbit/s: a 7.5 ms forward took 52 ms). 1 GiB is
  /// 256 ms of a 32 Gbit/s link: more than the scheduler's loads in flight.
  std::uint64_t landing_bytes = 1ull << 30;
  /// Where each node's own rate samples go (frame rateSample with link =
  /// node index + 1): the scheduler, which learns every node's link apart.
  /// None: not sent (the grants' cell_done still give the tier's rate).
  /// Weak: the remote tier must not keep the scheduler alive at shutdown.
  caf::actor_addr rates;
  /// A node's rate sample spans at least this much of its time (or ends when
  /// it has nothing more in flight).
  std::chrono::milliseconds rate_sample_min{50};
};

struct remote_node {
  cluster_member member;
  node_actor handle;    ///< null while not connected
  bool up = false;      ///< connected, layout accepted and not silent
  bool asking = false;  ///< a reconnect or probe is in flight
};

/// One fetch from one node for a grant: landed (UCX) and answered (CAF)
/// in either order; the bytes are checked against the answer's checksum.
struct remote_fetch {
  std::uint64_t grant = 0;
  std::size_t node = 0;
  std::uint32_t chunk_begin = 0, chunk_end = 0;
  std::shared_ptr<devices::pinned_slab::lease> staging;  ///< null while it waits for landing room
  std::uint64_t bytes = 0;
  std::vector<msg::chunk_key> keys;
  bool landed = false, answered = false;
  std::uint64_t checksum = 0;         ///< as the node announced it
  std::uint64_t landed_checksum = 0;  ///< as the bytes landed (hashed on the transport's lanes)
  std::uint64_t finished_ns = 0;
  /// Steady-clock times of its stages, for the debug log's per-fetch line:
  /// queued (waiting for landing room), announced and asked of the node,
  /// first piece landing, the node's answer here.
  std::uint64_t queued_ns = 0, started_ns = 0, first_ns = 0, answered_ns = 0;
};

struct remote_grant {
  caf::response_promise reply;
  msg::cell_done done;
  workspace_ptr ws;
  std::size_t left = 0;
  bool ready = false;  ///< every fetch in: answered once the grants before it are
  std::uint64_t issued_ns = 0;
  /// Per node: bytes landed and when its last fetch of this grant landed.
  std::map<std::size_t, std::pair<std::uint64_t, std::uint64_t>> by_node;
};

struct remote_tier_state {
  remote_tier_options opts;
  std::vector<remote_node> nodes;
  std::vector<std::string> names;
  std::shared_ptr<devices::net::transport> net;
  std::uint64_t next_id = 0;                      ///< transfer and grant ids (random start: ids are per receiver)
  std::map<std::uint64_t, remote_grant> grants;   ///< by id, in the order they came
  std::map<std::uint64_t, remote_fetch> fetches;  ///< by transfer id
  std::unique_ptr<devices::pinned_slab> landing;  ///< where fetches land
  std::deque<std::uint64_t> waiting;              ///< fetches (ids) waiting for landing room, in order
  std::uint64_t last_finished_ns = 0;
  /// Per node: its next rate sample, summed over answered grants.
  struct node_sample {
    std::uint64_t last_finished_ns = 0;  ///< when its last answered grant's bytes landed
    std::uint64_t bytes = 0, ns = 0;
  };
  std::vector<node_sample> node_acc;
  std::map<std::uint64_t, std::shared_ptr<std::vector<std::uint8_t>>> stores;  ///< sending, by transfer id
  std::vector<caf::response_promise> flushes;
  static inline const char* name = "kvflow.remote_tier";
};

/// Behaves as tier_actor (actors/tier_actor.hpp) towards request actors,
/// with tier `remote`:
///   frame lookup -> frame chunkLocated: asks each owner node once for the
///       keys it owns (a node down or silent: misses);
///   (frame grant{load}, workspace_ptr) -> frame cellDone: fetches each
///       owner's chunks as one announced transfer, checks its checksum and
///       copies the spans into the workspace (fetches land in the
///       landing slab, waiting for room when it is full). A node that dies, goes silent
///       or misses the deadline fails the grant with not_found (its chunks
///       were lost: the runtime restores again, computing them);
///   (store_atom, workspace_ptr, uint32 first, uint32 end): sends chunks
///       [first, end) to their owners (and replicas);
///   flush_atom -> bool: stores sent and written on every node up.
/// `nodes` are the members' handles that accepted the layout (null where
/// not): the actor monitors them and connects to the others, and asks the
/// silent ones again, every retry_interval.
/// Spawn it in the scheduler's pool, not detached: nodes keep references to
/// it while connected, and an actor system waits for the destruction of a
/// detached actor at shutdown (CAF 0.17).
caf::behavior remote_tier_proxy(caf::stateful_actor<remote_tier_state>* self, remote_tier_options opts,
                                std::vector<node_actor> nodes, std::shared_ptr<devices::net::transport> net);

}  // namespace kvflow

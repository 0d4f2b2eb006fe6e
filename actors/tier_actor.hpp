#pragma once
// Tier actors: one per storage tier of a chunk store (host_tier_actor,
// disk_tier_actor), behind one interface. Each answers lookups, carries out
// load grants into a request's workspace and stores a request's new chunks.
// Spawn detached: host copies and page-locking run on its thread.

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>
#include <caf/message_handler.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/frame_type.hpp"
#include "actors/workspace.hpp"
#include "devices/chunk_store.hpp"
#include "devices/host/pinned_slab.hpp"

namespace kvflow {

/// The interface of every tier actor, `T` its tier:
///   frame lookup -> frame chunkLocated: the keys T holds, all layers;
///   (frame grant{load from T}, workspace_ptr) -> frame cellDone: copies the
///       granted layer span of each chunk into the workspace's blocks (one
///       copy per chunk: a layer range is contiguous); a chunk gone since the
///       lookup is an error (not_found) naming it;
///   (store_atom, workspace_ptr, uint32 first, uint32 end): stores the
///       workspace's chunks [first, end) in T and writes them behind to the
///       disk; never waits for the disk;
///   flush_atom -> bool: waits until every store so far is written.

struct host_tier_state {
  std::shared_ptr<devices::chunk_store> store;
  std::uint64_t bytes_loaded = 0;
  static inline const char* name = "kvflow.host_tier";
};

/// The host tier (pinned host pool): a load grant is copied and answered at
/// once.
caf::behavior host_tier_actor(caf::stateful_actor<host_tier_state>* self, std::shared_ptr<devices::chunk_store> store);

/// The reads of one disk grant (disk_tier_actor.cpp): shared with the I/O
/// thread's completions, so that its workspace outlives the actor if it
/// stops first.
struct disk_reads;

/// A disk load grant whose reads are in flight.
struct pending_load {
  caf::response_promise reply;
  msg::cell_done done;  // started_ns: when the grant came in; finish time and bytes on landing
  std::shared_ptr<disk_reads> reads;
};

/// One chunk's read of a disk grant, waiting for room in the staging slab.
struct waiting_read {
  std::uint64_t id;  // the grant's key in disk_tier_state::pending
  std::uint32_t chunk;
  devices::layer_range layers;
};

struct disk_tier_state {
  std::shared_ptr<devices::chunk_store> store;
  std::uint64_t bytes_loaded = 0;
  std::map<std::uint64_t, pending_load> pending;  // grants by arrival
  // Read buffers, page-locked once when the actor starts: pinning or
  // unpinning while a restore runs (cudaHostAlloc, cudaFreeHost) holds the
  // driver and stalls the GPU's forwards and every copy with it.
  std::unique_ptr<devices::pinned_slab> staging;
  std::deque<waiting_read> waiting;  // reads not started for want of slab room, in grant order
  std::uint64_t next_load = 0;
  std::uint64_t last_finished_ns = 0;
  static inline const char* name = "kvflow.disk_tier";
};

/// The disk tier (chunk files). It does not wait for a grant's reads: the
/// next grant's reads queue behind them, and each grant is answered when its
/// last read has landed, checked and been copied. Reads land in one
/// page-locked slab of one-layer slots made when the actor starts, sized to
/// `staging_bytes` (the scheduler's cap on its loads in flight) and at least
/// a whole chunk; a read of several layers takes adjacent slots, and a read
/// that finds no room waits until earlier reads return theirs. Grants still
/// reading when the actor is told to exit are answered with an error
/// (peer_down).
caf::behavior disk_tier_actor(caf::stateful_actor<disk_tier_state>* self, std::shared_ptr<devices::chunk_store> store,
                              std::uint64_t staging_bytes);

/// What both tier actors share (tier_actor.cpp).
namespace tier_detail {

/// Disk load grants of this process whose reads are not all done and freed
/// (a pool counter: 0 when no load is in flight, also after a tier actor was
/// killed in the middle of one).
std::int64_t loads_in_flight();
/// Adds `delta` to loads_in_flight() (disk_reads' constructor and destructor).
void count_load_in_flight(int delta);

/// True when the store's fault plan (tests and soaks only) says this load
/// grant is never to be answered.
bool stall_grant(devices::chunk_store& store);

/// The handlers both tiers answer alike: lookup, flush_atom and store_atom
/// of the interface above, for tier `which` of `store`.
caf::message_handler shared_handlers(std::shared_ptr<devices::chunk_store> store, msg::tier which);

/// The chunkLocated answer of tier `which` to a lookup frame.
caf::expected<msg::frame> lookup(devices::chunk_store& store, msg::tier which, const msg::frame& f);

/// The load grant of a frame for tier `which`, checked against `ws`; its
/// cellDone is started (request, grant, cells, started_ns now).
struct load_grant {
  msg::grant grant;
  msg::cell_done done;
  devices::layer_range layers() const { return {grant.cells.layer_begin, grant.cells.layer_end}; }
};
caf::expected<load_grant> load_grant_of(const msg::frame& f, msg::tier which, workspace& ws);

/// Where layers of chunk c go in the workspace: device pointer, offset of
/// the span inside a whole-chunk block and its bytes.
struct span_target {
  std::uint8_t* dst;
  std::size_t offset, bytes;
};
span_target target_of(workspace& ws, std::uint32_t c, devices::layer_range layers);

/// Stores chunks [first, end) of `ws`: into the host pool when `which` is
/// the host tier, and behind to the disk either way. A failed chunk is
/// logged and skipped.
void store_chunks(devices::chunk_store& store, msg::tier which, workspace& ws, std::uint32_t first, std::uint32_t end);

}  // namespace tier_detail

}  // namespace kvflow

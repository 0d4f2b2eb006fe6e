#pragma once
// A tier actor: one storage tier (host or disk) of a chunk store. Answers
// lookups, carries out load grants into a request's workspace and stores a
// request's new chunks. Spawn detached: host copies and page-locking run on
// its thread.

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/workspace.hpp"
#include "devices/chunk_store.hpp"
#include "devices/host/pinned_buffer.hpp"

namespace kvflow {

/// The reads of one disk grant (tier_actor.cpp): shared with the I/O
/// thread's completions, so that its buffers and workspace outlive the actor
/// if it stops first.
struct disk_reads;

/// A disk load grant whose reads are in flight.
struct pending_load {
  caf::response_promise reply;
  msg::cell_done done;  // started_ns: when the grant came in; finish time and bytes on landing
  std::shared_ptr<disk_reads> reads;
};

struct tier_state {
  std::shared_ptr<devices::chunk_store> store;
  msg::tier which = msg::tier::host;
  std::uint64_t bytes_loaded = 0;
  std::map<std::uint64_t, pending_load> pending;             // disk grants by arrival
  std::multimap<std::size_t, devices::pinned_buffer> spare;  // staging buffers free, by size
  std::uint64_t spare_bytes = 0;
  std::uint64_t spare_cap = 0;  // spares beyond it are freed, largest first
  std::uint64_t next_load = 0;
  std::uint64_t last_finished_ns = 0;
  static inline const char* name = "kvflow.tier";
};

/// Messages:
///   frame lookup -> frame chunkLocated: the keys this tier holds, all layers;
///   (frame grant{load}, workspace_ptr) -> frame cellDone: copies the granted
///       layer span of each chunk into the workspace's blocks (one copy per
///       chunk: a layer range is contiguous); a chunk gone since the lookup
///       is an error naming it. The disk tier does not wait for a grant's
///       reads: the next grant's reads queue behind them, and each grant is
///       answered when its last read has landed, checked and been copied;
///   (store_atom, workspace_ptr, uint32 first, uint32 end): stores the
///       workspace's chunks [first, end) in the host tier and writes them
///       behind to disk; never waits for the disk.
///
/// A disk tier page-locks `staging_bytes` of one-layer read buffers when it
/// starts (the scheduler's cap on its loads in flight), so that restores of
/// one-layer grants (two_pointer's, load_only's) do not pay for it; buffers
/// of other sizes are made when grants need them and kept up to twice that.
/// Grants still reading when the actor is told to exit are answered with an
/// error (peer_down).
caf::behavior tier_actor(caf::stateful_actor<tier_state>* self, std::shared_ptr<devices::chunk_store> store,
                         msg::tier which, std::uint64_t staging_bytes);

}  // namespace kvflow

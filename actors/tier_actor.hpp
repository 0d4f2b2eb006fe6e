#pragma once
// A tier actor: one storage tier (host or disk) of a chunk store. Answers
// lookups, carries out load grants into a request's workspace and stores a
// request's new chunks. Spawn detached: reads and copies run on its thread.

#include <memory>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/workspace.hpp"
#include "devices/chunk_store.hpp"
#include "devices/host/pinned_buffer.hpp"

namespace kvflow {

struct tier_state {
  std::shared_ptr<devices::chunk_store> store;
  msg::tier which = msg::tier::host;
  devices::pinned_buffer staging;  ///< disk reads and device-to-host copies
  std::uint64_t bytes_loaded = 0;
  static inline const char* name = "kvflow.tier";
};

/// Messages:
///   frame lookup -> frame chunkLocated: the keys this tier holds, all layers;
///   (frame grant{load}, workspace_ptr) -> frame cellDone: copies the granted
///       layer span of each chunk into the workspace's blocks (one copy per
///       chunk: a layer range is contiguous); a chunk gone since the lookup
///       is an error naming it;
///   (store_atom, workspace_ptr, uint32 first, uint32 end): stores the
///       workspace's chunks [first, end) in the host tier and writes them
///       behind to disk; never waits for the disk.
caf::behavior tier_actor(caf::stateful_actor<tier_state>* self, std::shared_ptr<devices::chunk_store> store,
                         msg::tier which);

}  // namespace kvflow

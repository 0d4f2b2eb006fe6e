#pragma once
// The node actor: a process's entry point for other nodes of the cluster.

#include <string>
#include <vector>

#include <caf/event_based_actor.hpp>

#include "messages/types.hpp"

namespace kvflow {

struct node_state {
  msg::node_inventory inventory;
  static inline const char* name = "kvflow.node";
};

/// Answers `inventory_atom` with a frame holding this node's inventory, and
/// any frame with the same message decoded and re-encoded, or with the
/// decode error (so a peer learns why its frame was refused).
caf::behavior node_actor(caf::stateful_actor<node_state>* self, msg::node_inventory inventory);

}  // namespace kvflow

#pragma once
// The gpu actor: owns one device's engine (weights, streams, memory) and
// runs compute cells and decode steps on it.

#include <memory>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/workspace.hpp"
#include "kernels/model/engine.hpp"

namespace kvflow {

struct decode_job {
  workspace_ptr ws;
  int remaining = 0;
  model::sampling sampling;
  std::vector<std::int32_t> stop_tokens;
  caf::actor reply_to;  // receives (done_atom, request_id) when finished
};

struct gpu_state {
  std::shared_ptr<model::engine> engine;
  std::uint32_t device = 0;
  std::vector<decode_job> decoding;
  bool step_scheduled = false;
  static inline const char* name = "kvflow.gpu";
};

/// Spawn detached: compute is the actor's own work, and a detached actor's
/// thread is the only one that ever drives its engine.
///
///   (frame grant, workspace_ptr) -> frame cell_done
///       runs the granted compute cells in chunk order, layer range of the grant;
///   (first_atom, workspace_ptr, sampling) -> int32 token
///       samples from the last prompt chunk's hidden state;
///   (decode_atom, workspace_ptr, int n, sampling, vector<int32> stop, actor reply_to)
///       decodes up to n tokens (fewer when one of `stop` comes), interleaved with every other request's decode
///       steps and restore cells (continuous batching), then sends
///       (done_atom, request_id) to reply_to.
caf::behavior gpu_actor(caf::stateful_actor<gpu_state>* self, std::shared_ptr<model::engine> engine,
                        std::uint32_t device);

}  // namespace kvflow

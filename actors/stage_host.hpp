#pragma once
// A pipeline stage served to other processes: `kvflow node --stage-layers`
// publishes one, and a client's remote_stage uses it as one stage of its
// pipeline (protocol: stage_host_actor in actors/interfaces.hpp). Each
// request it serves has a session here: the prompt's tokens, KV blocks and
// one hidden state per chunk, in this process's memory.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include <caf/actor_addr.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/interfaces.hpp"
#include "actors/workspace.hpp"
#include "kernels/model/engine.hpp"

namespace kvflow {

struct stage_session {
  std::unique_ptr<workspace> ws;
  std::chrono::steady_clock::time_point used;
};

struct stage_host_state {
  std::shared_ptr<model::engine> engine;
  model::layer_range held;
  /// By client (the remote_stage actor that opened it) and request id:
  /// request ids are unique per client only.
  std::map<std::pair<caf::actor_addr, std::uint64_t>, stage_session> sessions;
  std::uint64_t grants = 0;
  static inline const char* name = "kvflow.stage_host";
};

/// Sessions a host keeps at once; a session unused for this long is dropped
/// when another opens (its client is gone without closing it).
constexpr std::size_t stage_host_max_sessions = 256;
constexpr std::chrono::minutes stage_host_idle{10};

/// Spawn detached: the actor's thread is the only one that drives `engine`,
/// whose layers_held() are the stage's layers.
stage_host_actor::behavior_type stage_host(stage_host_actor::stateful_pointer<stage_host_state> self,
                                           std::shared_ptr<model::engine> engine);

}  // namespace kvflow

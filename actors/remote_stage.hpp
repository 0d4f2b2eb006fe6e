#pragma once
// The client side of a pipeline stage that another process hosts
// (actors/stage_host, `kvflow node --stage-layers`). To its pipeline it is
// a stage_actor: compute grants arrive with the request's workspace, the
// upstream stage hands hidden states into this stage's buffers here, and
// the grant leaves (handed off, passed on or answered) in arrival order.
// What crosses to the host is bytes only: the chunks' input hidden states,
// the KV of earlier cells of the stage's layers the host has not seen (the
// ones loaded from tiers here), and back the part's KV and output hidden
// states, each bulk announced by a transfer frame with its checksum.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "actors/stage_actor.hpp"

namespace kvflow {

/// The host's answer to one grant's part, kept until the grant leaves.
struct remote_stage_answer {
  caf::error failed;
  msg::frame done, announced;
  msg::bulk bytes;
};

/// What the host holds of one request: which cells of the stage's layers
/// (computed there or sent) it has, [layer - layer_begin][chunk].
struct remote_stage_session {
  std::weak_ptr<workspace> ws;
  std::vector<std::vector<bool>> at_host;
};

struct remote_stage_state {
  stage_host_actor host;
  std::shared_ptr<model::engine> engine;  ///< memory of this stage's hidden states here
  stage_layout layout;
  stage_next next;
  std::chrono::milliseconds deadline{60000};
  std::deque<stage_entry> fifo;
  std::map<std::uint64_t, remote_stage_answer> answers;    ///< by entry id
  std::map<std::uint64_t, remote_stage_session> sessions;  ///< by request id
  std::uint64_t next_id = 0;
  std::uint64_t bytes_sent = 0, bytes_received = 0;
  static inline const char* name = "kvflow.remote_stage";
};

/// Spawn detached (it copies and checksums the bulk bytes). `engine` is
/// the client's engine whose memory holds this stage's hidden states
/// (ws->add_stages lists it for this stage); `host`'s layers must be
/// `layout`'s. Messages as stage_actor's:
///   (frame grant{compute}, workspace_ptr) -> frame cell_done: sends the
///       stage's part to the host (opening the request's session there on
///       its first grant) within `deadline`; the answer's KV lands in the
///       workspace's blocks and its hidden states in this stage's buffers;
///   (first_atom, workspace_ptr, sampling) -> int32: the host samples
///       (the last stage only).
/// A host that goes down (its process killed, its connection lost) fails
/// every grant waiting on it with peer_down and ends this actor with it, so
/// the requests that monitor it fail at once.
caf::behavior remote_stage(caf::stateful_actor<remote_stage_state>* self, stage_host_actor host,
                           std::shared_ptr<model::engine> engine, stage_layout layout, stage_next next,
                           std::chrono::milliseconds deadline);

}  // namespace kvflow

#pragma once
// The stage actor: one layer range of the model (a pipeline stage) on its
// own engine. Compute grants enter at the first stage and travel down the
// pipeline in order; each stage runs its own layers of a grant, hands the
// chunks' hidden states to the next stage over its stage_link (NCCL between
// GPUs, a host copy on the CPU backend) and passes the grant on.

#include <cstdint>
#include <deque>
#include <memory>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/frame_type.hpp"
#include "actors/workspace.hpp"
#include "kernels/model/engine.hpp"
#include "kernels/model/stage_link.hpp"
#include "messages/types.hpp"

namespace kvflow {

/// Where a stage sits in the pipeline.
struct stage_layout {
  int index = 0;        ///< stage number; its hidden states are workspace::stage_hidden(index, ...)
  int layer_begin = 0;  ///< first layer it runs
  int layer_end = 0;    ///< one past its last layer
  std::uint32_t device = 0;
};

/// The stage downstream of this one: its actor, its engine (the hand-off
/// writes into its memory) and the link that carries the hand-off.
struct stage_next {
  caf::actor actor;
  std::shared_ptr<model::engine> engine;
  std::shared_ptr<model::stage_link> link;
};

/// A grant in arrival order: it leaves the stage (answered, or passed on)
/// only after every grant that came before it, so that a chunk's hidden
/// state always reaches the next stage before any grant that needs it.
struct stage_entry {
  std::uint64_t id = 0;
  msg::grant grant;
  workspace_ptr ws;
  caf::response_promise reply;
  bool runs_here = false;  ///< the grant has layers in this stage
  bool finished = false;   ///< this stage's part (if any) has run
  std::uint64_t queued_ns = 0, started_ns = 0, finished_ns = 0;
};

struct stage_state {
  std::shared_ptr<model::engine> engine;
  stage_layout layout;
  stage_next next;
  std::deque<stage_entry> fifo;
  std::uint64_t next_id = 0;
  std::uint64_t last_finished_ns = 0;
  static inline const char* name = "kvflow.stage";
};

/// The compute grant in `f` for stage `layout` of `ws`: compute_grant_of's
/// checks, plus a grant that reaches the stage's layers and a workspace
/// with room for the stage's hidden states; else the error to answer with.
caf::expected<msg::grant> stage_grant_of(const msg::frame& f, const workspace& ws, const stage_layout& layout,
                                         int layers, const char* who);

/// The queue entry of grant `g` of `ws` arriving at stage `layout`: its
/// reply promised by `self`, runs_here when the grant has layers in the
/// stage, finished already when it has none.
stage_entry make_stage_entry(caf::event_based_actor* self, std::uint64_t id, const msg::grant& g, workspace_ptr ws,
                             const stage_layout& layout);

/// Lets the grant of entry `e` (its part of this stage run, if any) leave a
/// stage: hands its chunks' hidden states (stage `layout.index`'s, in
/// `eng`'s memory) to the next stage when the stage's last layer ran, then
/// passes the grant on when it reaches past the stage (answering with the
/// downstream answer, peer_down when none comes) or answers it here. Shared
/// by stage_actor and remote_stage.
void settle_stage_entry(caf::event_based_actor* self, const stage_layout& layout, const stage_next& next,
                        model::engine& eng, stage_entry& e);

/// Spawn detached: its thread is the only one that drives its engine.
///
///   (frame grant{compute}, workspace_ptr) -> frame cell_done
///       runs layers [max(grant, stage) begin, min(grant, stage) end) of the
///       grant's chunks as one forward (engine::run_fused), on this stage's
///       hidden states; hands a chunk's hidden state to the next stage when
///       the stage's last layer has run; passes a grant that reaches past the
///       stage on to the next stage and answers with the cell_done of the
///       stage where it ends (started when the first stage started it).
///       The grant's workspace must have add_stages() with every stage's
///       engine. Hand-offs are counted in ws->handoffs / ws->handoff_ns;
///   (first_atom, workspace_ptr, sampling) -> int32 token
///       (the last stage) samples from its hidden state of the last chunk.
/// A grant that fails here, or downstream, is answered with the error; a
/// downstream stage that is gone answers as peer_down.
caf::behavior stage_actor(caf::stateful_actor<stage_state>* self, std::shared_ptr<model::engine> engine,
                          stage_layout layout, stage_next next);

}  // namespace kvflow

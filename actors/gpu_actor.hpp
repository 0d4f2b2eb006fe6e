#pragma once
// The gpu actor: owns one device's engine (weights, streams, memory) and
// runs compute cells and decode steps on it.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/frame_type.hpp"
#include "actors/workspace.hpp"
#include "kernels/model/engine.hpp"
#include "messages/types.hpp"

namespace kvflow {

/// How a decode job reports as it goes and how it is stopped (in-process only).
struct decode_hooks {
  std::function<void(std::int32_t)> on_token;  ///< each decoded token, on the gpu actor's thread
  std::shared_ptr<std::atomic<bool>> cancel;   ///< set: the job ends before its next step
};

struct decode_job {
  workspace_ptr ws;
  int remaining = 0;
  model::sampling sampling;
  std::vector<std::int32_t> stop_tokens;
  caf::actor reply_to;  // receives (done_atom, request_id) when finished
  decode_hooks hooks;
};

/// A compute grant enqueued on the engine and not finished yet.
struct pending_grant {
  caf::response_promise reply;
  msg::cell_done done;  // filled in but for the times
};

/// Grants enqueued as one fused forward (engine::run_fused); they finish
/// together and share its device time in proportion to their cells.
struct pending_group {
  std::vector<pending_grant> grants;
  std::uint64_t queued_ns = 0;  // when it was enqueued
};

/// A compute grant received and not yet enqueued: grants that arrive
/// together are fused before they go to the engine.
struct queued_grant {
  msg::grant grant;
  workspace_ptr ws;
  caf::response_promise reply;
};

struct gpu_state {
  std::shared_ptr<model::engine> engine;
  std::uint32_t device = 0;
  std::map<std::uint64_t, pending_group> pending;  // by enqueue order
  std::vector<queued_grant> queued;                // arrived, not enqueued yet
  bool fuse_scheduled = false;
  std::uint64_t next_job = 0;
  std::uint64_t last_finished_ns = 0;
  std::vector<decode_job> decoding;
  bool step_scheduled = false;
  static inline const char* name = "kvflow.gpu";
};

/// Rows a fused forward gathers from grants that arrived together (a grant
/// larger than this runs alone): up to gpu_fuse_rows_free rows always, up
/// to gpu_fuse_rows while that leaves at least as many rows that arrived
/// for another forward, so that the device runs one while the other's
/// completions travel (two pieces of 1024 rows, as two_pointer keeps in
/// flight, stay apart). Policies grant compute at most compute_group chunks
/// (1024 tokens) wide, so compute_only at 256-token chunks sends grants of
/// 1024 rows together; fused to 4096 they run like its grants at
/// 1024-token chunks, which took 0.496 s at 16k against 0.533 s in
/// 1024-row forwards on the H200 (prefill_speed_r2.md).
constexpr int gpu_fuse_rows_free = 1024;
constexpr int gpu_fuse_rows = 4096;

/// Appends the engine jobs of layers [layer_begin, layer_end) of chunks
/// [chunk_begin, chunk_end) of `ws`, in chunk order; each job's hidden state
/// is hidden(c), or ws.hidden(c) without it. The gpu and stage actors build
/// their forwards with it.
void add_chunk_jobs(workspace& ws, const msg::cell_range& cells, std::vector<model::chunk_job>& jobs,
                    const std::function<model::hidden_state&(int)>& hidden = nullptr);

/// The compute grant in `f` for `ws`, checked: a decodable grant, compute,
/// its cells inside the request and the model's `layers`; else the error
/// (naming `who`) to answer with.
caf::expected<msg::grant> compute_grant_of(const msg::frame& f, const workspace& ws, int layers, const char* who);

/// Spawn detached: compute is the actor's own work, and a detached actor's
/// thread is the only one that ever drives its engine.
///
///   (frame grant, workspace_ptr) -> frame cell_done
///       enqueues the granted compute cells and answers when the device has
///       finished them (grants queue on the device back to back; the actor
///       does not wait). Grants that arrive together (in the mailbox before
///       the actor's own fuse message) with the same layer range run as one
///       forward over all their chunks' rows, of any requests, up to
///       gpu_fuse_rows rows (bitwise the same KV as one grant at a time);
///   (first_atom, workspace_ptr, sampling) -> int32 token
///       samples from the last prompt chunk's hidden state;
///   (decode_atom, workspace_ptr, int n, sampling, vector<int32> stop, actor reply_to, decode_hooks)
///       decodes up to n tokens (fewer when one of `stop` comes or the
///       hooks' cancel flag is set), interleaved with every other request's
///       decode steps and restore cells (continuous batching: each step
///       decodes one token of every active job), passes each token to the
///       hooks' on_token, then sends (done_atom, request_id) to reply_to.
caf::behavior gpu_actor(caf::stateful_actor<gpu_state>* self, std::shared_ptr<model::engine> engine,
                        std::uint32_t device);

}  // namespace kvflow

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvflow::decode_hooks)

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

/// A compute grant that the step budget split by chunks over several
/// decode steps: its parts share this, and only the last one answers.
struct grant_split {
  msg::cell_range cells;      // the whole grant
  std::uint64_t busy_ns = 0;  // device time of its parts so far
  bool failed = false;        // a part failed and answered; later parts are dropped
};

/// A compute grant (or a part of one) enqueued on the engine and not
/// finished yet.
struct pending_grant {
  caf::response_promise reply;
  msg::cell_done done;                 // filled in but for the times; cells: this part's
  std::shared_ptr<grant_split> split;  // set where the grant was split
  bool last = true;                    // the part that answers
};

/// Grants enqueued as one fused forward (engine::run_fused); they finish
/// together and share its device time in proportion to their cells.
struct pending_group {
  std::vector<pending_grant> grants;
  std::uint64_t queued_ns = 0;  // when it was enqueued
  double budget_share = 0;      // of a decode step: its tokens over the step budget (0: not budgeted)
};

/// A compute grant received and not yet enqueued: grants that arrive
/// together are fused before they go to the engine.
struct queued_grant {
  msg::grant grant;  // cells: what is left to enqueue
  workspace_ptr ws;
  caf::response_promise reply;
  std::shared_ptr<grant_split> split;  // set once a part of it was enqueued
  bool last = true;                    // false: a part taken ahead of the rest of its grant
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
  int step_tokens = 0;                           // prefill budget per decode step (0: none)
  double decode_step_ns = 0;                     // decayed time of a decode step alone (0: not measured yet)
  std::uint64_t step_group = ~std::uint64_t{0};  // the last group enqueued before the last step
  std::uint64_t step_end_ns = 0;                 // when the last step's tokens were out
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

/// Default prefill budget of a decode step (runtime_options::
/// step_prefill_tokens): 512 token-equivalents of compute grants ride with
/// each step, as Sarathi-Serve's strict-latency setting (vLLM's chunked
/// prefill budget is of the same order). On an H200 with llama-3-8b that
/// adds about 15-20 ms to a step instead of a whole restore's compute.
constexpr int default_step_prefill_tokens = 512;

/// Token-equivalents of compute cells: rows times the fraction of the
/// model's `layers` they span (a grant of 1024 rows over 8 of 32 layers
/// costs as much as 256 full-depth rows).
double grant_tokens(workspace& ws, const msg::cell_range& cells, int layers);

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
///
/// Prefill budget (Sarathi-Serve's stall-free batching): while a request
/// decodes, compute grants are enqueued only before a decode step, at most
/// `step_tokens` token-equivalents (grant_tokens) per step, a grant split
/// by chunks where the budget ends inside it (at least one chunk a step);
/// the rest wait for the next step, so a step is never behind more than
/// the budget of restore compute. A split grant answers once, when its
/// last part is done, timed by its parts' device time (ending when the
/// last part ends). A budgeted group's time also takes its share (its
/// tokens over the budget) of a decode step's device time: the rate a
/// restore gets while requests decode, which the scheduler's cost model
/// then learns. With no request decoding, or `step_tokens` 0, grants are
/// enqueued as they arrive.
caf::behavior gpu_actor(caf::stateful_actor<gpu_state>* self, std::shared_ptr<model::engine> engine,
                        std::uint32_t device);
/// gpu_actor with a prefill budget of `step_tokens` per decode step (0: none).
caf::behavior budgeted_gpu_actor(caf::stateful_actor<gpu_state>* self, std::shared_ptr<model::engine> engine,
                                 std::uint32_t device, int step_tokens);

}  // namespace kvflow

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvflow::decode_hooks)

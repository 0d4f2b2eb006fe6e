#pragma once
// The document path of a request (non-prefix reuse, issue 20): a prompt
// whose marked documents the prefix chain misses. On the CPU backend a
// detached actor reads the document entries from the tiers (blocking reads,
// off the actor pool) and the gpu actor places them and runs the selective
// recompute (blend_atom); on CUDA the gpu actor's work reads them itself,
// overlapped with the recompute (actors/document_cuda.hpp). Then the
// request takes its first token and decodes as any other. Its KV is
// approximate: nothing is stored under prefix keys, only the document
// entries that had to be computed.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/request_actor.hpp"
#include "devices/chunk_store.hpp"
#include "kernels/model/blend.hpp"
#include "policies/recompute_ratio.hpp"

namespace kvflow {

class document_scratch;

/// What the gpu actor does for a document request (in-process handle).
struct document_work {
  workspace_ptr ws;
  std::vector<model::prompt_segment> segments;  ///< tile the prompt; documents marked
  /// Per document segment: its KV from position 0 (the engine's kv type),
  /// where loaded by the caller (CPU) or computed here (to be stored).
  std::vector<std::vector<std::uint8_t>> documents;
  std::vector<bool> loaded;  ///< per document segment: read from a tier (else computed here)
  model::blend_options blend;
  model::blend_result result;  ///< filled in by run_document_work
  double compute_s = 0;        ///< seconds of the recompute (device path: the GPU's, from events)

  // The device path reads the entries itself (documents and loaded are its outputs).
  std::shared_ptr<devices::chunk_store> store;
  std::vector<std::vector<msg::chunk_key>> keys;  ///< per document segment: document_block_keys
  int groups = 4;                                 ///< forwards the reused documents' recompute is cut into
  double load_bytes = 0;                          ///< bytes the device path moved from the tiers
  double load_s = 0;                              ///< seconds from its first load to its last
  double token_layers = 0;                        ///< token-layers the device path computed
  // Where the device path's wall time goes (seconds, for the debug log):
  double wall_s = 0;    ///< all of run_document_work_device
  double setup_s = 0;   ///< buffers and the loader's start
  double wait_s = 0;    ///< the gpu actor's thread blocked on loads
  double drain_s = 0;   ///< then waiting for the GPU to finish the enqueued compute
  double finish_s = 0;  ///< the copies into the chunk blocks and the last sync
  /// Buffers kept between requests (actors/document_cuda.hpp); null: the
  /// request allocates its own.
  std::shared_ptr<document_scratch> scratch;
};
using document_work_ptr = std::shared_ptr<document_work>;

/// On the engine's owner thread: computes the documents not loaded, places
/// every document, runs blend_prefill and leaves the prompt's KV in the
/// workspace's chunk blocks and the last position's hidden state in its
/// last chunk's last row (what first_atom reads). An engine whose blocks are
/// not f32 host memory (CUDA) takes the device path instead
/// (run_document_work_device). Throws kvflow::error.
void run_document_work(model::engine& e, document_work& w);

/// Measured rates of the document path, shared by its requests: what the
/// recompute ratio is chosen from. Thread-safe.
class document_rates {
 public:
  void observe_compute(double token_layers, double seconds);
  void observe_load(double bytes, double seconds);
  /// A TTFT of the runtime's ordinary path that computed every chunk of a
  /// prompt of `tokens` (the alternative a reuse plan must beat). Prompts
  /// shorter than min_full_tokens are ignored: their per-request costs would
  /// make a per-token rate overstate a long prompt's full recompute, the
  /// direction that makes reuse look better than it is.
  void observe_full(double tokens, double ttft_s);
  /// A document request's TTFT beyond its plan's estimate (buffers, copies,
  /// actor hops, the estimate's error): the reuse path's fixed cost.
  void observe_overhead(double seconds);
  /// Seconds per token-layer and bytes per second (0 until observed).
  double token_layer_s() const;
  double load_bytes_per_s() const;
  /// The full recompute's TTFT for `tokens` (0 until observed).
  double full_s(double tokens) const;
  /// The reuse path's fixed seconds (0 until observed; never negative).
  double overhead_s() const;

  static constexpr double min_full_tokens = 1024;

 private:
  mutable std::mutex mutex_;
  double token_layer_s_ = 0, load_bytes_per_s_ = 0, full_token_s_ = 0, overhead_s_ = 0;
  bool overhead_seen_ = false;
};

struct document_params {
  request_params base;
  std::vector<model::prompt_segment> segments;
  std::vector<std::vector<msg::chunk_key>> keys;  ///< per document segment: document_block_keys
  std::shared_ptr<devices::chunk_store> store;
  std::shared_ptr<document_rates> rates;
  model::blend_options blend;  ///< ratio < 0: chosen from `rates` (policies/recompute_ratio)
  int device_groups = 4;       ///< device path: forwards the reused documents' recompute is cut into
  std::chrono::milliseconds timeout{600000};
};

/// The plan of a request: the caller's ratio (blend.ratio >= 0), or the
/// cost model's over the rates measured so far (policies/recompute_ratio
/// with split_front: the leading documents computed in full where loading
/// them is slower than computing them; a full recompute where reuse would
/// not pay: its estimate plus the path's measured fixed cost within the
/// policy's margin of the measured full recompute, where both are known).
/// Until both rates are known: the quality floor. Throws
/// kvflow::error(invalid_argument) on inputs the policy refuses. `kv` is
/// the blocks' type (the bytes a load moves); with `device_groups` > 0 the
/// plan is the device path's: loads overlap the recompute, whose last of
/// that many forwards waits for the last load (cacheblend: everything above
/// the check layers waits for it).
policies::recompute_plan choose_document_plan(const document_params& p, const model::config& c,
                                              model::dtype kv = model::dtype::f32, int device_groups = 0);
/// The plan for `e`'s backend: the device path's (p.device_groups forwards)
/// where its blocks are not f32, the CPU path's otherwise.
policies::recompute_plan choose_document_plan(const document_params& p, const model::engine& e);

/// Per document segment of `p`: whether the plan computes it in full, in
/// context, with no load (every document for a full recompute, else the
/// leading ones within front_share of the document tokens). A document the
/// store does not hold stays a document: it is computed alone and stored,
/// so that later requests can reuse it.
std::vector<bool> documents_in_full(const document_params& p, const policies::recompute_plan& plan);

struct document_request_state {
  static inline const char* name = "kvflow.document_request";
};

/// Spawn detached. Runs one request through the document path and calls
/// base.done exactly once; then quits.
caf::behavior document_request_actor(caf::stateful_actor<document_request_state>* self, caf::actor gpu,
                                     workspace_ptr ws, document_params params);

}  // namespace kvflow

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvflow::document_work_ptr)

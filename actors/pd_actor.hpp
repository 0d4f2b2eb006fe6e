#pragma once
// Prefill/decode disaggregation (FlowKV): a prefill instance computes a
// prompt's KV and first token on its gpu actor, then hands the request to a
// decode instance, possibly in another process or node: a PdHandoff message
// announces the KV, which moves as ONE contiguous span (the prompt-long
// block of every layer) over the UCX transport, and the decode instance
// continues in its gpu actor's continuous decode batch. On CUDA engines the
// span is packed on the device (one 2D copy per chunk) and moves either by
// CUDA IPC (decode instance on the same node: it maps the prefill's buffer
// and copies the span in one call) or through pinned host memory and UCX
// (one device->pinned copy, one send, one pinned->device copy).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/workspace.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "devices/net/kv_transfer.hpp"
#include "devices/net/transport.hpp"
#include "messages/pd_codec.hpp"

namespace kvflow {

using pd_handoff_atom = caf::atom_constant<caf::atom("pdhandoff")>;
using pd_collect_atom = caf::atom_constant<caf::atom("pdcollect")>;
using pd_landed_atom = caf::atom_constant<caf::atom("pdlanded")>;

/// A request a decode instance took over.
struct pd_incoming {
  msg::pd_handoff handoff;
  workspace_ptr ws;
  devices::pinned_buffer staging;  ///< where the contiguous KV lands
  bool finished = false;
  std::string why;  ///< set when it failed
  std::uint64_t announced_ns = 0, landed_ns = 0;
  std::vector<caf::response_promise> waiting;  ///< collectors
};

/// The device side of an instance with a CUDA engine (its own stream, the
/// contiguous span's device buffer, the IPC export or mapping); defined in
/// pd_actor.cpp, empty in builds without CUDA.
struct pd_device_side;

struct pd_decode_state {
  std::shared_ptr<model::engine> engine;
  caf::actor gpu;
  std::shared_ptr<devices::net::transport> net;
  std::shared_ptr<pd_device_side> dev;  ///< CUDA engines only
  int chunk_tokens = 256;
  std::map<std::uint64_t, pd_incoming> requests;
  static inline const char* name = "kvflow.pd_decode";
};

/// A decode instance: `gpu` is a gpu actor driving `engine` (whose KV
/// blocks it fills), `net` the UCX worker KV lands on. Publish it for
/// prefill instances in other processes.
///
///   (pd_handoff_atom, frame PdHandoff) -> frame PdReply
///       checks the handoff (shape of this model, contiguous, one piece),
///       posts the receive and answers ok with this worker's address (the
///       sender may send now), or not ok and why; a handoff carrying a CUDA
///       IPC handle (CUDA engines) is copied in one call before the answer,
///       which then means the KV landed (transfer_ns set): the sender may
///       reuse its buffer;
///   (pd_collect_atom, uint64 request_id) -> frame PdReply
///       answers once the request's decoding ended: every generated token,
///       the first included, and the transfer time at this end; not ok when
///       the KV never landed intact or the request is unknown.
caf::behavior pd_decode_actor(caf::stateful_actor<pd_decode_state>* self, std::shared_ptr<model::engine> engine,
                              caf::actor gpu, std::shared_ptr<devices::net::transport> net);

/// What a prefill instance produced for one request.
struct pd_prefilled {
  workspace_ptr ws;
  std::int32_t first_token = -1;
  double prefill_s = 0;
};

/// Prefills `prompt` on gpu actor `gpu` (one compute grant over every cell)
/// and samples the first token. Blocks the calling (scoped) actor; throws
/// kvflow::error with the actor's reason on failure.
pd_prefilled pd_prefill(caf::scoped_actor& self, const caf::actor& gpu, model::engine& engine, std::uint64_t request_id,
                        std::vector<std::int32_t> prompt, int chunk_tokens, const model::sampling& s,
                        std::chrono::seconds timeout = std::chrono::seconds(120));

/// The request's KV as one prompt-long block in pinned host memory, every
/// layer: the contiguous span the handoff moves in one call.
devices::pinned_buffer pd_pack(workspace& ws);

/// How a prefill instance's KV reaches the decode instance.
enum class pd_path : std::uint8_t {
  host_ucx,  ///< pinned host memory, one UCX send (any backend, any node)
  cuda_ipc,  ///< a CUDA IPC handle of a device buffer (CUDA engines, one node)
};
/// "host_ucx" or "cuda_ipc"; throws invalid_argument naming both otherwise.
pd_path parse_pd_path(const std::string& name);
const char* to_string(pd_path p);

/// A prefill instance's sending side: its UCX worker, the path, and (CUDA
/// engines) the device buffer the contiguous span is packed into, kept and
/// exported once across requests (a decode instance maps an allocation
/// once). One per prefill thread: a handoff reuses the buffer.
class pd_outbox {
 public:
  pd_outbox(devices::net::transport& net, pd_path path = pd_path::host_ucx);
  ~pd_outbox();
  pd_outbox(const pd_outbox&) = delete;
  pd_outbox& operator=(const pd_outbox&) = delete;

  devices::net::transport& net() { return net_; }
  pd_path path() const { return path_; }
  /// The device side for `eng` (made on first use); nullptr when `eng` is
  /// not a CUDA engine.
  pd_device_side* device(model::engine& eng);

 private:
  devices::net::transport& net_;
  pd_path path_;
  std::shared_ptr<pd_device_side> dev_;
};

/// Hands `p` over to `decode` (a pd_decode_actor, local or remote):
/// PdHandoff, then one UCX send of the contiguous span from the outbox's
/// worker, or (cuda_ipc) the span's IPC handle, which the decode instance
/// copies before it answers. Returns once the bytes are sent (copied);
/// throws kvflow::error when the decode instance refuses, the send fails,
/// or cuda_ipc is asked of an engine that is not a CUDA one (unsupported).
void pd_handoff(caf::scoped_actor& self, const caf::actor& decode, pd_outbox& out, pd_prefilled& p,
                std::uint32_t max_new_tokens, const model::sampling& s, const std::vector<std::int32_t>& stop_tokens,
                std::chrono::seconds timeout = std::chrono::seconds(120));
/// The host path through `net` (a pd_outbox made for this one handoff).
void pd_handoff(caf::scoped_actor& self, const caf::actor& decode, devices::net::transport& net, pd_prefilled& p,
                std::uint32_t max_new_tokens, const model::sampling& s, const std::vector<std::int32_t>& stop_tokens,
                std::chrono::seconds timeout = std::chrono::seconds(120));
/// Waits for request `request_id`'s tokens from `decode`.
msg::pd_reply pd_collect(caf::scoped_actor& self, const caf::actor& decode, std::uint64_t request_id,
                         std::chrono::seconds timeout = std::chrono::seconds(120));
/// pd_handoff, then pd_collect.
msg::pd_reply pd_handoff_and_collect(caf::scoped_actor& self, const caf::actor& decode, pd_outbox& out, pd_prefilled& p,
                                     std::uint32_t max_new_tokens, const model::sampling& s,
                                     const std::vector<std::int32_t>& stop_tokens,
                                     std::chrono::seconds timeout = std::chrono::seconds(120));

}  // namespace kvflow

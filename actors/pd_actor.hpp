#pragma once
// Prefill/decode disaggregation (FlowKV): a prefill instance computes a
// prompt's KV and first token on its gpu actor, then hands the request to a
// decode instance, possibly in another process or node: a PdHandoff message
// announces the KV, which moves as ONE contiguous span (the prompt-long
// block of every layer) over the UCX transport, and the decode instance
// continues in its gpu actor's continuous decode batch.

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

struct pd_decode_state {
  std::shared_ptr<model::engine> engine;
  caf::actor gpu;
  std::shared_ptr<devices::net::transport> net;
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
///       sender may send now), or not ok and why;
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

/// Hands `p` over to `decode` (a pd_decode_actor, local or remote):
/// PdHandoff, then one UCX send of the contiguous span from `net`. Returns
/// once the bytes are sent; throws kvflow::error when the decode instance
/// refuses or the send fails.
void pd_handoff(caf::scoped_actor& self, const caf::actor& decode, devices::net::transport& net, pd_prefilled& p,
                std::uint32_t max_new_tokens, const model::sampling& s, const std::vector<std::int32_t>& stop_tokens,
                std::chrono::seconds timeout = std::chrono::seconds(120));
/// Waits for request `request_id`'s tokens from `decode`.
msg::pd_reply pd_collect(caf::scoped_actor& self, const caf::actor& decode, std::uint64_t request_id,
                         std::chrono::seconds timeout = std::chrono::seconds(120));
/// pd_handoff, then pd_collect.
msg::pd_reply pd_handoff_and_collect(caf::scoped_actor& self, const caf::actor& decode, devices::net::transport& net,
                                     pd_prefilled& p, std::uint32_t max_new_tokens, const model::sampling& s,
                                     const std::vector<std::int32_t>& stop_tokens,
                                     std::chrono::seconds timeout = std::chrono::seconds(120));

}  // namespace kvflow

#pragma once
// The protocol between actors that may live in different processes, in one
// place. Every message is an atom plus Cap'n Proto frames (msg::frame:
// encoded bytes, decoded with the codec's limits on arrival); KV bytes travel
// beside them over UCX (devices/net), announced by a Transfer frame. Nothing
// here may name memory of the sending process: `no_process_memory` below
// makes a pointer, a smart pointer or a workspace handle in any of these
// interfaces a compile error, and CAF's typed sends refuse a message an
// interface does not list (tests/actors/interfaces_compile_fail.cpp).
//
// In-process actors (request, gpu, the local tiers, the remote tier proxy)
// keep their dynamically typed behaviors with workspace handles; the remote
// tier proxy is where a workspace's bytes turn into announced transfers.

#include <cstdint>
#include <memory>
#include <type_traits>

#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/bulk_type.hpp"
#include "actors/frame_type.hpp"

namespace kvflow {

using fetch_atom = caf::atom_constant<caf::atom("fetch")>;
using layout_atom = caf::atom_constant<caf::atom("layout")>;

/// A node's tiers (host memory in front of disk) as another process sees
/// them: one storage tier whose chunks are reached over the network.
///   (lookup_atom, frame lookup) -> frame chunkLocated: the keys held, all
///       layers, tier remote (a node without a layout holds nothing);
///   (fetch_atom, frame transfer{id, keys, layers, bytes, peer}) -> frame
///       transfer{id, keys, layers, bytes, checksum}: sends the keys' spans
///       as transfer `id` to the UCX worker `peer` (which announced it to
///       itself), answering once the bytes are on their way; a key it lacks
///       fails the fetch (not_found) and nothing is sent;
///   (store_atom, frame transfer{id, keys, all layers, bytes, checksum,
///       peer}) -> frame transfer{..., peer: the node's worker}: announces
///       `id` on the node, which stores the chunks when the bytes land with
///       the announced checksum; the sender sends after this answer;
///   (flush_atom) -> bool: every announced store has landed (or expired)
///       and is written to the node's tiers.
using remote_tier_actor = caf::typed_actor<caf::replies_to<lookup_atom, msg::frame>::with<msg::frame>,
                                           caf::replies_to<fetch_atom, msg::frame>::with<msg::frame>,
                                           caf::replies_to<store_atom, msg::frame>::with<msg::frame>,
                                           caf::replies_to<flush_atom>::with<bool>>;

/// A kvflow node: its tiers, plus
///   (inventory_atom) -> frame nodeInventory;
///   (layout_atom, frame kvLayout) -> frame kvLayout: sets the KV layout of
///       the node's chunks on first use; another layout later is refused
///       (invalid_argument), so one model's KV never serves another;
///   frame -> frame: any control message decoded and encoded again, or the
///       decode error (a peer learns why its frame was refused).
using node_actor = remote_tier_actor::extend<caf::replies_to<inventory_atom>::with<msg::frame>,
                                             caf::replies_to<layout_atom, msg::frame>::with<msg::frame>,
                                             caf::replies_to<msg::frame>::with<msg::frame>>;

using open_atom = caf::atom_constant<caf::atom("open")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
using stage_atom = caf::atom_constant<caf::atom("stage")>;

/// A pipeline stage that another process hosts (actors/stage_host, served
/// by `kvflow node --stage-layers`): its engine holds one layer range of a
/// model and runs that range of a request's chunks; the client side is
/// actors/remote_stage, which looks like any stage_actor to its pipeline.
/// Hidden states and KV spans travel as msg::bulk bytes announced by a
/// transfer frame (bytes, XXH3 checksum) in the same message; a bulk whose
/// size or checksum differs is refused (malformed_frame).
///   (layout_atom) -> (frame kvLayout, uint32 layer_begin, uint32 layer_end):
///       the model (fingerprint, layers, KV shape of one token) and the
///       stage's layers, which a client checks before using it;
///   (open_atom, frame register{request_id, chunk_tokens, num_chunks,
///       num_layers}, frame submit{request_id, tokens}) -> frame register:
///       makes the request's session (its KV and hidden states); opening
///       an open request starts it again;
///   (store_atom, frame grant{load: cells}, frame transfer, bulk) -> bool:
///       lands KV the host did not compute (loaded from the client's
///       tiers) that later grants attend to: the cells' spans, chunk by
///       chunk, layers [begin, end) of each; a failed store drops the
///       session, so the request's next grant fails (not_found);
///   (stage_atom, frame grant{compute}, frame transfer, bulk) -> (frame
///       cellDone, frame transfer, bulk): lands, when the grant enters at
///       the stage's first layer (not layer 0), the chunks' input hidden
///       states ([tokens][hidden] f32, chunk by chunk); runs the stage's
///       part of the grant; answers with the part's KV spans (chunk by
///       chunk) followed, when the part ends at the stage's last layer and
///       the stage is not the model's last, by the chunks' output hidden
///       states;
///   (first_atom, request_id, temperature, top_p, seed) -> int32 token: the
///       last stage samples from its hidden state of the last chunk;
///   (close_atom, request_id): drops the session.
using stage_host_actor = caf::typed_actor<
    caf::replies_to<layout_atom>::with<msg::frame, std::uint32_t, std::uint32_t>,
    caf::replies_to<open_atom, msg::frame, msg::frame>::with<msg::frame>,
    caf::replies_to<store_atom, msg::frame, msg::frame, msg::bulk>::with<bool>,
    caf::replies_to<stage_atom, msg::frame, msg::frame, msg::bulk>::with<msg::frame, msg::frame, msg::bulk>,
    caf::replies_to<first_atom, std::uint64_t, float, float, std::uint64_t>::with<std::int32_t>,
    caf::reacts_to<close_atom, std::uint64_t>>;

/// True for types that name memory of one process: raw and smart pointers
/// (a workspace_ptr is a std::shared_ptr).
template <class T>
struct names_process_memory : std::is_pointer<T> {};
template <class T>
struct names_process_memory<std::shared_ptr<T>> : std::true_type {};
template <class T>
struct names_process_memory<std::weak_ptr<T>> : std::true_type {};
template <class T, class D>
struct names_process_memory<std::unique_ptr<T, D>> : std::true_type {};

namespace detail {
template <class Sig>
struct signature_clean;
template <class... In, class... Out>
struct signature_clean<caf::typed_mpi<caf::detail::type_list<In...>, caf::output_tuple<Out...>>>
    : std::bool_constant<!((names_process_memory<std::decay_t<In>>::value || ...) ||
                           (names_process_memory<std::decay_t<Out>>::value || ...))> {};
template <class Handle>
struct interface_clean;
template <class... Sigs>
struct interface_clean<caf::typed_actor<Sigs...>> : std::bool_constant<(signature_clean<Sigs>::value && ...)> {};
}  // namespace detail

/// True when no message of a typed interface names process memory.
template <class Handle>
constexpr bool no_process_memory = detail::interface_clean<Handle>::value;

static_assert(no_process_memory<remote_tier_actor>, "a remote tier's messages must not name process memory");
static_assert(no_process_memory<node_actor>, "a node's messages must not name process memory");
static_assert(no_process_memory<stage_host_actor>, "a hosted stage's messages must not name process memory");

}  // namespace kvflow

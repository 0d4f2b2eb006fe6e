#pragma once
// Moving one request's KV between a prefill and a decode instance (FlowKV):
// the request's KV for a layer range laid out as ONE contiguous span (a
// prompt-long block, [layer][K|V][kv_head][token][head_dim]) moves in one
// call, against the paged baseline that moves one piece per (chunk, layer)
// of the request's chunk blocks. The pieces here are byte ranges of host or
// device memory; the host path sends them over the UCX transport, the CUDA
// IPC path (devices/gpu/ipc.hpp) copies them from a mapped allocation.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "devices/net/transport.hpp"
#include "messages/kv_shape.hpp"

namespace kvflow::devices::net {

/// One call's bytes: [offset, offset + bytes) of the source and destination.
struct kv_piece {
  std::size_t offset = 0;
  std::size_t bytes = 0;
};

/// A request's KV: `shape` (tokens = the whole prompt) cut into chunks of
/// `chunk_tokens` tokens, the last one shorter where the prompt is not a
/// multiple.
struct request_kv {
  model::kv_shape shape;
  int chunk_tokens = 256;

  int chunks() const { return (shape.tokens + chunk_tokens - 1) / chunk_tokens; }
  /// Tokens of chunk c.
  int chunk_count(int c) const;
  /// Shape of chunk c's block (every layer, chunk_count(c) tokens).
  model::kv_shape chunk_shape(int c) const;
  /// Byte offset of chunk c's block when the blocks lie back to back (the
  /// paged arena the per-block path reads).
  std::size_t chunk_offset(int c) const;
};

/// The contiguous layout's pieces of layers [layer_begin, layer_end): one
/// piece, the prompt-long block's span. Throws invalid_argument for an empty
/// or out-of-range layer range.
std::vector<kv_piece> contiguous_pieces(const request_kv& kv, int layer_begin, int layer_end);
/// The paged layout's pieces of the same layers: one per (chunk, layer), in
/// chunk then layer order; the same bytes in all as contiguous_pieces.
std::vector<kv_piece> per_block_pieces(const request_kv& kv, int layer_begin, int layer_end);

/// Copies the chunk blocks at `blocks[c]` (host memory, chunk_shape(c)
/// each) into the prompt-long block `dst` (kv.shape.bytes()), layers
/// [layer_begin, layer_end) only: the local relayout that lets the
/// transfer be one call.
void pack_chunks(const request_kv& kv, const std::vector<const void*>& blocks, void* dst, int layer_begin,
                 int layer_end);
/// The inverse: the prompt-long block `src` into the chunk blocks.
void unpack_chunks(const request_kv& kv, const void* src, const std::vector<void*>& blocks, int layer_begin,
                   int layer_end);

/// The result of moving a set of pieces.
struct moved {
  bool ok = false;
  std::string why;
  std::uint32_t calls = 0;        ///< transport calls (sends) made
  std::uint64_t bytes = 0;        ///< bytes landed
  std::uint64_t finished_ns = 0;  ///< steady clock, when the last piece landed
};

/// Announces pieces `pieces` of `dst` as transfers id0, id0 + 1, ... on
/// receiver `t`; `done` runs once (on the transport's thread) when every
/// piece has landed or one failed. `dst` must stay valid until then.
void expect_pieces(transport& t, std::uint64_t id0, void* dst, const std::vector<kv_piece>& pieces,
                   std::function<void(moved)> done);
/// Sends pieces of `src` to `peer` as transfers id0, id0 + 1, ..., one send
/// each; `done` runs once when every send completed or one failed.
void send_pieces(transport& t, const std::vector<std::uint8_t>& peer, std::uint64_t id0, const void* src,
                 const std::vector<kv_piece>& pieces, std::function<void(moved)> done);

}  // namespace kvflow::devices::net

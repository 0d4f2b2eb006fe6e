#pragma once
// The document path on the CUDA backend (non-prefix reuse, issue 20): the
// gpu actor's part of a document request when the blocks are bf16 device
// memory. The prompt's KV is restored in one prompt-long device block:
//  - loads: a loader thread reads each held document entry block by block
//    (host tier: straight from the pinned lease; disk: read_async into
//    pinned staging), copies only the rows it reuses into the block (one
//    strided copy per entry block: the sparse transfer) and rotates their K
//    to the new position (kernels/cuda/rope_delta.cuh), on a stream of its
//    own;
//  - compute, overlapped with those loads (the two-pointer split: compute
//    from the front, load from the back): the rows outside documents and
//    the documents the plan computes in full run first, waiting for no
//    load; EPIC's selected rows then run in `groups` forwards
//    (engine::run_selected), each once its documents' loads are in, since a
//    row attends only to earlier positions. CacheBlend's check layers run
//    over every row while the loads land (these write only the layers above
//    them, plus the last check layer's cached values into a side block);
//    the deviation is measured on the device, and the selected rows run the
//    layers above once every load is in;
//  - a held entry that fails to load and a document no tier holds are
//    computed alone (engine::run) and placed the same way; the caller
//    stores them.
// Then the block is copied into the workspace's chunk blocks and the last
// row's hidden state where first_atom reads it.

#include "actors/document_request.hpp"

namespace kvflow {

/// run_document_work for an engine whose blocks are device memory (a
/// cuda_engine): reads w.store under w.keys itself and fills w.loaded,
/// w.documents (the entries computed here, to store), w.result, w.compute_s,
/// w.load_bytes, w.load_s and w.token_layers. Throws kvflow::error
/// (unsupported without CUDA or for another engine).
void run_document_work_device(model::engine& e, document_work& w);

}  // namespace kvflow

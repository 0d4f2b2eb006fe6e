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

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "actors/document_request.hpp"
#include "devices/host/pinned_buffer.hpp"

namespace kvflow {

/// Buffers the device path keeps between requests, owned by the gpu actor:
/// the prompt-long block (2.1 GB for 16k tokens of llama-3-8b) and the
/// smaller ones, the disk loads' pinned staging and the loader's stream.
/// Allocating and freeing them per request cost a cudaMalloc and a
/// device-wide cudaFree each time, inside the TTFT. Grow-only: the device
/// memory of the largest prompt seen stays taken while the actor lives.
/// One request uses it at a time (`busy`); another finds it taken and
/// allocates its own.
class document_scratch {
 public:
  struct device_buffer {
    void* p = nullptr;
    std::size_t bytes = 0;
    /// At least `need` bytes on `device`, reallocated only when larger.
    void* get(std::size_t need, int device);
    ~device_buffer();
  };
  ~document_scratch();

  std::mutex busy;
  device_buffer prompt, side, inv_freq, hidden, all_hidden, index, deviation, last_hidden;
  std::vector<devices::pinned_buffer> staging;  ///< disk reads, one entry block each
  void* load_stream = nullptr;                  ///< cudaStream_t of the loader (non-blocking)
};

/// A scratch for a gpu actor (null without CUDA).
std::shared_ptr<document_scratch> make_document_scratch();

/// run_document_work for an engine whose blocks are device memory (a
/// cuda_engine): reads w.store under w.keys itself and fills w.loaded,
/// w.documents (the entries computed here, to store), w.result, w.compute_s,
/// w.load_bytes, w.load_s and w.token_layers. Throws kvflow::error
/// (unsupported without CUDA or for another engine).
void run_document_work_device(model::engine& e, document_work& w);

}  // namespace kvflow

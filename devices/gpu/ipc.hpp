#pragma once
// CUDA IPC between processes on one GPU: a prefill process exports the
// device allocation holding a request's KV as a handle (64 bytes, carried in
// a KvAnnounce message), and the decode process maps it and copies the
// pieces it needs into its own memory, device to device, without a host hop.

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

#include "devices/net/kv_transfer.hpp"

namespace kvflow::devices {

/// The IPC handle of the device allocation that starts at `base` (a pointer
/// cudaMalloc returned; IPC maps whole allocations), as bytes. Throws
/// kvflow::error(cuda_failure) naming the call.
std::vector<std::uint8_t> ipc_export(void* base);

/// An allocation exported for as long as this lives: its handle, and an
/// entry in this process's table of exports, so that an ipc_mapping of the
/// handle made in this same process (instances sharing a process, which the
/// driver refuses to map) uses the pointer itself. Move-only; the
/// allocation must outlive it.
class ipc_exported {
 public:
  ipc_exported() = default;
  /// Throws as ipc_export does.
  explicit ipc_exported(void* base);
  ~ipc_exported();
  ipc_exported(ipc_exported&& other) noexcept;
  ipc_exported& operator=(ipc_exported&& other) noexcept;
  ipc_exported(const ipc_exported&) = delete;
  ipc_exported& operator=(const ipc_exported&) = delete;

  const std::vector<std::uint8_t>& handle() const { return handle_; }

 private:
  void withdraw() noexcept;
  std::vector<std::uint8_t> handle_;
};

/// Another process's allocation mapped into this one. Move-only; unmaps on
/// destruction. The exporter must keep the allocation until this is gone.
/// A handle that an ipc_exported of this process still holds maps to its
/// pointer without the driver.
class ipc_mapping {
 public:
  /// Throws invalid_argument for a handle of the wrong size and
  /// cuda_failure when the driver refuses it (for example a handle exported
  /// by this same process through ipc_export alone).
  explicit ipc_mapping(const std::vector<std::uint8_t>& handle);
  ~ipc_mapping();
  ipc_mapping(ipc_mapping&& other) noexcept;
  ipc_mapping& operator=(ipc_mapping&&) = delete;
  ipc_mapping(const ipc_mapping&) = delete;
  ipc_mapping& operator=(const ipc_mapping&) = delete;

  void* data() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  bool opened_ = false;  ///< by the driver (else an export of this process)
};

/// Enqueues one device-to-device cudaMemcpyAsync per piece, from `src` to
/// `dst` at the same offsets, on `stream`; returns the calls made. The
/// contiguous layout makes this one call per layer range.
std::uint32_t copy_pieces(void* dst, const void* src, const std::vector<net::kv_piece>& pieces, cudaStream_t stream);

/// The local relayout on the device around a one-call transfer: the chunk
/// blocks `blocks[c]` (device memory, kv.chunk_shape(c) each) into the
/// prompt-long block `dst` (device memory, kv.shape.bytes()), layers
/// [layer_begin, layer_end), one cudaMemcpy2DAsync per chunk on `stream`
/// (a chunk's rows of those layers are evenly strided in both layouts).
/// Returns the calls made; throws invalid_argument for a bad range or block
/// count, cuda_failure naming the call.
std::uint32_t pack_chunks_device(const net::request_kv& kv, const std::vector<const void*>& blocks, void* dst,
                                 int layer_begin, int layer_end, cudaStream_t stream);
/// The inverse: the prompt-long block `src` into the chunk blocks.
std::uint32_t unpack_chunks_device(const net::request_kv& kv, const void* src, const std::vector<void*>& blocks,
                                   int layer_begin, int layer_end, cudaStream_t stream);

}  // namespace kvflow::devices

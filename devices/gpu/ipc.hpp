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

/// Another process's allocation mapped into this one. Move-only; unmaps on
/// destruction. The exporter must keep the allocation until this is gone.
class ipc_mapping {
 public:
  /// Throws invalid_argument for a handle of the wrong size and
  /// cuda_failure when the driver refuses it (for example a handle exported
  /// by this same process).
  explicit ipc_mapping(const std::vector<std::uint8_t>& handle);
  ~ipc_mapping();
  ipc_mapping(ipc_mapping&& other) noexcept;
  ipc_mapping& operator=(ipc_mapping&&) = delete;
  ipc_mapping(const ipc_mapping&) = delete;
  ipc_mapping& operator=(const ipc_mapping&) = delete;

  void* data() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

/// Enqueues one device-to-device cudaMemcpyAsync per piece, from `src` to
/// `dst` at the same offsets, on `stream`; returns the calls made. The
/// contiguous layout makes this one call per layer range.
std::uint32_t copy_pieces(void* dst, const void* src, const std::vector<net::kv_piece>& pieces, cudaStream_t stream);

}  // namespace kvflow::devices

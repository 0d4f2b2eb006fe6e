#pragma once
// The GPU tier: one device allocation (platform::device_buffer) carved into
// chunk-sized blocks.

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "platform/cuda_memory.hpp"

namespace kvflow::devices {

/// Fixed-size device blocks of one arena on one device. Thread-safe.
class gpu_pool {
 public:
  /// Allocates capacity_bytes (rounded down to whole blocks of block_bytes,
  /// each 256-byte aligned) on `device`. Throws kvflow::error
  /// (capacity_exceeded) when the device has not that much free,
  /// (cuda_failure) for other CUDA failures, (invalid_argument) when not
  /// one block fits.
  gpu_pool(int device, std::size_t capacity_bytes, std::size_t block_bytes);
  gpu_pool(const gpu_pool&) = delete;
  gpu_pool& operator=(const gpu_pool&) = delete;

  /// Index of a free block, or -1 when none is free.
  std::int64_t allocate();
  /// Returns a block from allocate(); throws kvflow::error(invalid_argument)
  /// on an index that is not allocated.
  void release(std::int64_t index);
  /// Device pointer of a block: // [layer][K|V][kv_head][token][head_dim]
  std::uint8_t* data(std::int64_t index) const;

  int device() const { return device_; }
  std::size_t block_bytes() const { return block_bytes_; }
  std::size_t block_count() const { return in_use_.size(); }
  std::size_t free_blocks() const;

 private:
  int device_;
  std::size_t block_bytes_, stride_;
  platform::device_buffer arena_;  // block_count * stride_ bytes
  mutable std::mutex mutex_;
  std::vector<std::int64_t> free_;
  std::vector<bool> in_use_;
};

}  // namespace kvflow::devices

#include "devices/gpu/gpu_pool.hpp"

#include <string>

#include "messages/error.hpp"

namespace kvflow::devices {

gpu_pool::gpu_pool(int device, std::size_t capacity_bytes, std::size_t block_bytes)
    : device_(device), block_bytes_(block_bytes), stride_((block_bytes + 255) / 256 * 256) {
  if (block_bytes == 0 || capacity_bytes < stride_)
    throw error(errc::invalid_argument, "gpu_pool: capacity " + std::to_string(capacity_bytes) +
                                            " bytes holds no block of " + std::to_string(block_bytes));
  const std::size_t n = capacity_bytes / stride_;
  arena_ = platform::device_buffer(n * stride_, device);
  in_use_.assign(n, false);
  for (std::size_t i = n; i-- > 0;) free_.push_back(static_cast<std::int64_t>(i));
}

std::int64_t gpu_pool::allocate() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.empty()) return -1;
  const std::int64_t i = free_.back();
  free_.pop_back();
  in_use_[static_cast<std::size_t>(i)] = true;
  return i;
}

void gpu_pool::release(std::int64_t index) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (index < 0 || static_cast<std::size_t>(index) >= in_use_.size() || !in_use_[static_cast<std::size_t>(index)])
    throw error(errc::invalid_argument, "gpu_pool::release: block " + std::to_string(index) + " is not allocated");
  in_use_[static_cast<std::size_t>(index)] = false;
  free_.push_back(index);
}

std::uint8_t* gpu_pool::data(std::int64_t index) const {
  return arena_.as<std::uint8_t>() + static_cast<std::size_t>(index) * stride_;
}

std::size_t gpu_pool::free_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return free_.size();
}

}  // namespace kvflow::devices

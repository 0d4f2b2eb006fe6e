#include "platform/owned_memory.hpp"

#include <utility>

namespace kvflow::platform {

owned_memory::owned_memory(owned_memory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      free_(std::exchange(other.free_, nullptr)) {}

owned_memory& owned_memory::operator=(owned_memory&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    free_ = std::exchange(other.free_, nullptr);
  }
  return *this;
}

void owned_memory::reset() noexcept {
  if (data_ != nullptr && free_ != nullptr) free_(data_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace kvflow::platform

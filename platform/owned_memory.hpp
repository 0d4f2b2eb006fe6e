#pragma once
// An owned allocation that frees itself with the function that goes with
// it: the one move-only owner behind device buffers, page-locked buffers and
// aligned host buffers. Every build.

#include <cstddef>

namespace kvflow::platform {

/// Memory that frees itself with the function it was made with. Move-only;
/// empty (data() nullptr) when default-constructed or moved from.
class owned_memory {
 public:
  owned_memory() = default;
  ~owned_memory() { reset(); }
  owned_memory(owned_memory&& other) noexcept;
  owned_memory& operator=(owned_memory&& other) noexcept;
  owned_memory(const owned_memory&) = delete;
  owned_memory& operator=(const owned_memory&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  std::size_t size() const { return size_; }
  /// Frees now; empty after.
  void reset() noexcept;

  /// Takes `data` (`size` bytes), which `free_fn` frees (nullptr: nothing
  /// to free).
  owned_memory(void* data, std::size_t size, bool (*free_fn)(void*) noexcept) noexcept
      : data_(data), size_(size), free_(free_fn) {}

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  bool (*free_)(void*) noexcept = nullptr;
};

}  // namespace kvflow::platform

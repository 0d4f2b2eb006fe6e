#pragma once
// Page-locked host memory: platform::try_pinned_alloc where CUDA is built and
// a device is present, 4 KiB-aligned memory otherwise (also good for O_DIRECT).

#include <cstddef>
#include <cstdint>

namespace kvflow::devices {

/// Alignment of every pinned buffer; also the O_DIRECT unit.
constexpr std::size_t io_alignment = 4096;

inline std::size_t align_up(std::size_t n, std::size_t a = io_alignment) { return (n + a - 1) / a * a; }
inline std::size_t align_down(std::size_t n, std::size_t a = io_alignment) { return n / a * a; }

/// An owned, 4 KiB-aligned host buffer, pinned when CUDA can pin it. Move-only.
/// Throws kvflow::error(io_failure) when neither allocation succeeds.
class pinned_buffer {
 public:
  pinned_buffer() = default;
  /// `page_lock` false skips page-locking (slow to allocate) for buffers
  /// that never feed a GPU copy: they are only 4 KiB-aligned.
  explicit pinned_buffer(std::size_t bytes, bool page_lock = true);
  ~pinned_buffer();
  pinned_buffer(pinned_buffer&& other) noexcept;
  pinned_buffer& operator=(pinned_buffer&& other) noexcept;
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;

  std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  /// True when the memory is page-locked through CUDA (fast async copies).
  bool pinned() const { return pinned_; }

 private:
  void release() noexcept;
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  bool pinned_ = false;
};

}  // namespace kvflow::devices

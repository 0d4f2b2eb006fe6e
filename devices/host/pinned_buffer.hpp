#pragma once
// Page-locked host memory: platform::try_pinned_alloc where CUDA is built and
// a device is present, 4 KiB-aligned memory otherwise (also good for O_DIRECT).

#include <cstddef>
#include <cstdint>

#include "platform/owned_memory.hpp"

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

  std::uint8_t* data() const { return mem_.as<std::uint8_t>(); }
  std::size_t size() const { return mem_.size(); }
  /// True when the memory is page-locked through CUDA (fast async copies).
  bool pinned() const { return pinned_ && mem_.data() != nullptr; }
  /// Buffers of this process holding memory now, and their bytes (pool
  /// counters for leak checks: fault tests compare them with a baseline).
  static std::int64_t live_count();
  static std::int64_t live_bytes();

 private:
  /// Counts one buffer's bytes in live_count()/live_bytes() while it lives;
  /// moves with the memory.
  class live_token {
   public:
    live_token() = default;
    explicit live_token(std::size_t bytes);
    ~live_token();
    live_token(live_token&& other) noexcept;
    live_token& operator=(live_token&& other) noexcept;

   private:
    std::size_t bytes_ = 0;
  };

  platform::owned_memory mem_;  // frees with platform::pinned_free or std::free
  bool pinned_ = false;
  live_token live_;  // after mem_: uncounted before the memory is freed
};

}  // namespace kvflow::devices

#pragma once
// One page-locked region allocated once and lent out in runs of whole
// slots: landing buffers whose number and size are bounded from the start,
// so nothing is page-locked or freed while transfers run.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "devices/host/pinned_buffer.hpp"

namespace kvflow::devices {

/// A slab of `slots` slots of `slot_bytes` (a multiple of io_alignment),
/// pinned as pinned_buffer is. take() lends a run of adjacent slots; the
/// run returns when the last copy of its lease goes, on whichever thread.
/// Thread-safe; leases keep the memory alive after the slab object is gone.
class pinned_slab {
 public:
  /// A run of slots lent out: `size()` is what was asked, the run may be
  /// longer (whole slots).
  class lease {
   public:
    std::uint8_t* data() const { return data_; }
    std::size_t size() const { return bytes_; }
    ~lease();
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;

   private:
    friend class pinned_slab;
    struct core;
    lease(std::shared_ptr<core> c, std::size_t first, std::size_t count, std::size_t bytes);
    std::shared_ptr<core> core_;
    std::size_t first_, count_, bytes_;
    std::uint8_t* data_;
  };

  /// Throws kvflow::error(invalid_argument) for no slot or a slot size of 0,
  /// io_failure when the memory cannot be had.
  pinned_slab(std::size_t slot_bytes, std::size_t slots);
  ~pinned_slab();
  pinned_slab(const pinned_slab&) = delete;
  pinned_slab& operator=(const pinned_slab&) = delete;

  /// `bytes` in the first run of free slots long enough, or null when none
  /// is free now: then `on_free` (set_on_free) runs once after some slots
  /// return. Asking for more than the whole slab (or 0 bytes) is
  /// kvflow::error(invalid_argument): no wait would ever serve it.
  std::shared_ptr<lease> take(std::size_t bytes);
  /// Runs, on the thread that returned slots, after a take() found too few
  /// (at most once per such take; may run spuriously). Set it before
  /// lending; it must not call back into the slab synchronously.
  void set_on_free(std::function<void()> on_free);

  std::size_t slot_bytes() const;
  std::size_t slots() const;
  std::size_t capacity() const { return slot_bytes() * slots(); }
  std::size_t free_slots() const;
  bool pinned() const;

 private:
  std::shared_ptr<lease::core> core_;
};

}  // namespace kvflow::devices

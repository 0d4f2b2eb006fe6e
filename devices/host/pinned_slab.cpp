#include "devices/host/pinned_slab.hpp"

#include <mutex>
#include <string>
#include <vector>

#include "messages/error.hpp"

namespace kvflow::devices {

struct pinned_slab::lease::core {
  pinned_buffer mem;
  std::size_t slot_bytes = 0;
  std::mutex m;
  std::vector<bool> used;  // per slot
  std::size_t free = 0;
  bool waiting = false;  // a take() found too few since the last notice
  std::function<void()> on_free;
};

pinned_slab::lease::lease(std::shared_ptr<core> c, std::size_t first, std::size_t count, std::size_t bytes)
    : core_(std::move(c)),
      first_(first),
      count_(count),
      bytes_(bytes),
      data_(core_->mem.data() + first * core_->slot_bytes) {}

pinned_slab::lease::~lease() {
  std::function<void()> notify;
  {
    std::lock_guard lk(core_->m);
    for (std::size_t i = first_; i < first_ + count_; ++i) core_->used[i] = false;
    core_->free += count_;
    if (core_->waiting) {
      core_->waiting = false;
      notify = core_->on_free;
    }
  }
  if (notify) notify();
}

pinned_slab::pinned_slab(std::size_t slot_bytes, std::size_t slots) {
  if (slot_bytes == 0 || slots == 0)
    throw error(errc::invalid_argument, "pinned slab of " + std::to_string(slots) + " slots of " +
                                            std::to_string(slot_bytes) + " bytes: both must be positive");
  slot_bytes = align_up(slot_bytes);
  core_ = std::make_shared<lease::core>();
  core_->mem = pinned_buffer(slot_bytes * slots);
  core_->slot_bytes = slot_bytes;
  core_->used.assign(slots, false);
  core_->free = slots;
}

pinned_slab::~pinned_slab() = default;

std::shared_ptr<pinned_slab::lease> pinned_slab::take(std::size_t bytes) {
  auto& c = *core_;
  const auto want = (bytes + c.slot_bytes - 1) / c.slot_bytes;
  if (bytes == 0 || want > c.used.size())
    throw error(errc::invalid_argument, "pinned slab: " + std::to_string(bytes) + " bytes asked of a slab of " +
                                            std::to_string(c.used.size()) + " slots of " +
                                            std::to_string(c.slot_bytes) + " bytes");
  std::lock_guard lk(c.m);
  // First fit: runs are returned as wholes, so the slab is all free again
  // whenever nothing is lent, and a waiting take is served at the latest then.
  for (std::size_t at = 0, run = 0; at < c.used.size(); ++at) {
    run = c.used[at] ? 0 : run + 1;
    if (run < want) continue;
    const auto first = at + 1 - want;
    for (auto i = first; i <= at; ++i) c.used[i] = true;
    c.free -= want;
    // lease's constructor is private: no make_shared.
    return std::shared_ptr<lease>(new lease(core_, first, want, bytes));
  }
  c.waiting = true;
  return nullptr;
}

void pinned_slab::set_on_free(std::function<void()> on_free) {
  std::lock_guard lk(core_->m);
  core_->on_free = std::move(on_free);
}

std::size_t pinned_slab::slot_bytes() const { return core_->slot_bytes; }
std::size_t pinned_slab::slots() const { return core_->used.size(); }
bool pinned_slab::pinned() const { return core_->mem.pinned(); }

std::size_t pinned_slab::free_slots() const {
  std::lock_guard lk(core_->m);
  return core_->free;
}

}  // namespace kvflow::devices

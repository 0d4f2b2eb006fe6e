#include "platform/block_cache.hpp"

#include <utility>

namespace kvflow::platform {

block_cache::block_cache(alloc_fn alloc, free_fn free, std::size_t cap_bytes)
    : alloc_(std::move(alloc)), free_(std::move(free)), cap_(cap_bytes) {}

block_cache::~block_cache() { trim(); }

void* block_cache::take(std::size_t bytes) {
  fence_fn fence;
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(m_);
    auto it = by_size_.find(bytes);
    if (it != by_size_.end()) {
      auto k = by_age_.find(it->second);
      p = k->second.p;
      fence = std::move(k->second.fence);
      kept_bytes_ -= bytes;
      by_age_.erase(k);
      by_size_.erase(it);
      lent_[p] = bytes;
    }
  }
  if (p) {
    // Usually long finished: the block was given back after its last use
    // was enqueued, and other work ran since.
    if (fence) fence();
    return p;
  }
  // A failed allocation puts the cache under pressure: blocks given back
  // from then on (the failed request's own) go back to the allocator, not
  // into the cache, until an allocation succeeds again.
  auto alloc = [&] {
    try {
      return alloc_(bytes);
    } catch (...) {
      std::lock_guard<std::mutex> lock(m_);
      pressure_ = true;
      throw;
    }
  };
  try {
    p = alloc();
  } catch (...) {
    bool any = false;
    {
      std::lock_guard<std::mutex> lock(m_);
      any = !by_age_.empty();
    }
    if (!any) throw;
    // Kept blocks of other sizes may be what the allocator lacks.
    trim();
    p = alloc();
  }
  std::lock_guard<std::mutex> lock(m_);
  pressure_ = false;
  lent_[p] = bytes;
  return p;
}

void block_cache::give(void* p, fence_fn fence) {
  if (p == nullptr) return;
  std::map<std::uint64_t, kept> gone;
  {
    std::lock_guard<std::mutex> lock(m_);
    auto it = lent_.find(p);
    if (it == lent_.end()) {
      gone.emplace(0, kept{p, 0, std::move(fence)});
    } else if (pressure_) {
      lent_.erase(it);
      gone.emplace(0, kept{p, 0, std::move(fence)});
    } else {
      const std::size_t bytes = it->second;
      lent_.erase(it);
      const auto stamp = next_stamp_++;
      by_age_.emplace(stamp, kept{p, bytes, std::move(fence)});
      by_size_.emplace(bytes, stamp);
      kept_bytes_ += bytes;
      // Over the cap: the oldest kept go (the one just given last).
      while (kept_bytes_ > cap_ && !by_age_.empty()) {
        auto oldest = by_age_.begin();
        auto range = by_size_.equal_range(oldest->second.bytes);
        for (auto s = range.first; s != range.second; ++s)
          if (s->second == oldest->first) {
            by_size_.erase(s);
            break;
          }
        kept_bytes_ -= oldest->second.bytes;
        gone.insert(by_age_.extract(oldest));
      }
    }
  }
  free_all(gone);
}

void block_cache::trim() {
  std::map<std::uint64_t, kept> gone;
  {
    std::lock_guard<std::mutex> lock(m_);
    gone.swap(by_age_);
    by_size_.clear();
    kept_bytes_ = 0;
  }
  free_all(gone);
}

void block_cache::free_all(std::map<std::uint64_t, kept>& gone) {
  for (auto& [stamp, k] : gone) {
    if (k.fence) k.fence();
    free_(k.p);
  }
  gone.clear();
}

std::size_t block_cache::kept_bytes() const {
  std::lock_guard<std::mutex> lock(m_);
  return kept_bytes_;
}

std::size_t block_cache::kept_blocks() const {
  std::lock_guard<std::mutex> lock(m_);
  return by_age_.size();
}

std::size_t block_cache::lent_blocks() const {
  std::lock_guard<std::mutex> lock(m_);
  return lent_.size();
}

}  // namespace kvflow::platform

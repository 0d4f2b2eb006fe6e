#include "devices/host/host_pool.hpp"

#include <chrono>
#include <cstring>
#include <string>
#include <utility>

#include "messages/error.hpp"

namespace kvflow::devices {

host_block::host_block(host_block&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      data_(other.data_),
      bytes_(other.bytes_),
      index_(other.index_),
      key_(other.key_),
      layers_(other.layers_) {}

host_block& host_block::operator=(host_block&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = other.data_;
    bytes_ = other.bytes_;
    index_ = other.index_;
    key_ = other.key_;
    layers_ = other.layers_;
  }
  return *this;
}

void host_block::reset() {
  if (pool_ != nullptr) std::exchange(pool_, nullptr)->unpin(index_);
}

host_pool::host_pool(std::size_t capacity_bytes, std::size_t block_bytes)
    : capacity_(capacity_bytes), block_bytes_(block_bytes), stride_(align_up(block_bytes)) {
  if (block_bytes == 0 || capacity_bytes < stride_)
    throw error(errc::invalid_argument, "host_pool: capacity " + std::to_string(capacity_bytes) +
                                            " bytes holds no block of " + std::to_string(block_bytes));
  const std::size_t n = capacity_bytes / stride_;
  arena_ = pinned_buffer(n * stride_);
  blocks_.resize(n);
  free_.reserve(n);
  for (std::size_t i = n; i-- > 0;) free_.push_back(static_cast<std::uint32_t>(i));
}

void host_pool::set_evict_callback(evict_fn fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  on_evict_ = std::move(fn);
}

host_block host_pool::make_lease(std::uint32_t index) {
  block_info& b = blocks_[index];
  ++b.pins;
  host_block lease;
  lease.pool_ = this;
  lease.data_ = arena_.data() + static_cast<std::size_t>(index) * stride_;
  lease.bytes_ = block_bytes_;
  lease.index_ = index;
  lease.key_ = b.key;
  lease.layers_ = b.layers;
  return lease;
}

void host_pool::unpin(std::uint32_t index) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    block_info& b = blocks_[index];
    if (--b.pins != 0 || (b.st != state::detached && b.st != state::reserved)) return;
    if (b.demoting) {
      b.demoting = false;
      --demoting_;
    }
    b.st = state::free;
    free_.push_back(index);
  }
  freed_.notify_all();
}

void host_pool::drop_entry(std::uint32_t index) {
  block_info& b = blocks_[index];
  directory_.erase(b.key);
  lru_.erase(b.lru);
  if (b.pins == 0) {
    b.st = state::free;
    free_.push_back(index);
  } else {
    b.st = state::detached;  // freed by the last unpin
  }
}

host_block host_pool::acquire(const msg::chunk_key& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = directory_.find(key);
  if (it == directory_.end()) return {};
  block_info& b = blocks_[it->second];
  lru_.splice(lru_.begin(), lru_, b.lru);
  return make_lease(it->second);
}

host_block host_pool::allocate(const msg::chunk_key& key, layer_range layers) {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (!free_.empty()) {
      const std::uint32_t index = free_.back();
      free_.pop_back();
      block_info& b = blocks_[index];
      b.st = state::reserved;
      b.key = key;
      b.layers = layers;
      return make_lease(index);
    }
    // A victim handed to the evict callback stays pinned while it is written
    // to disk; evicting more meanwhile would empty the pool (each eviction
    // frees nothing until written). Wait for a block to come back first (a
    // bounded wait: a lease held for long falls back to evicting more).
    if (demoting_ > 0 && freed_.wait_for(lock, std::chrono::seconds(1), [this] { return !free_.empty(); })) continue;
    // Evict the least recently used unpinned entry.
    std::uint32_t victim = 0;
    bool found = false;
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      if (blocks_[*it].pins == 0) {
        victim = *it;
        found = true;
        break;
      }
    }
    if (!found) return {};
    if (!on_evict_) {
      drop_entry(victim);
      continue;
    }
    // Hand the victim to the callback pinned: it stays out of reuse until the
    // demotion is written (or dropped), then returns to the free list.
    host_block lease = make_lease(victim);
    drop_entry(victim);
    evict_fn fn = on_evict_;
    lock.unlock();
    {
      // A callback that does not take the lease releases it here, unlocked.
      host_block handed = std::move(lease);
      fn(std::move(handed));
    }
    lock.lock();
    if (blocks_[victim].st == state::detached && !blocks_[victim].demoting) {
      blocks_[victim].demoting = true;
      ++demoting_;
    }
  }
}

bool host_pool::publish(host_block& block) {
  if (!block || block.pool_ != this) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  block_info& b = blocks_[block.index_];
  if (b.st == state::live) return true;
  if (b.st != state::reserved) return false;
  auto it = directory_.find(b.key);
  if (it != directory_.end()) drop_entry(it->second);
  b.st = state::live;
  lru_.push_front(block.index_);
  b.lru = lru_.begin();
  directory_.emplace(b.key, block.index_);
  return true;
}

bool host_pool::put(const msg::chunk_key& key, layer_range layers, std::size_t layer_bytes, const void* src) {
  if (layers.empty() || layer_bytes * layers.end > block_bytes_)
    throw error(errc::invalid_argument, "host_pool::put: layers [" + std::to_string(layers.begin) + ", " +
                                            std::to_string(layers.end) + ") exceed the block");
  host_block b = allocate(key, layers);
  if (!b) return false;
  const std::size_t off = layer_bytes * layers.begin;
  std::memcpy(b.data() + off, static_cast<const std::uint8_t*>(src) + off, layer_bytes * layers.size());
  return publish(b);
}

bool host_pool::erase(const msg::chunk_key& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = directory_.find(key);
  if (it == directory_.end()) return false;
  drop_entry(it->second);
  return true;
}

tier_lookup host_pool::lookup(const std::vector<msg::chunk_key>& keys) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tier_lookup::of(keys, [&](const msg::chunk_key& k) {
    auto it = directory_.find(k);
    return it == directory_.end() ? layer_range{} : blocks_[it->second].layers;
  });
}

bool host_pool::contains(const msg::chunk_key& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return directory_.count(key) != 0;
}

std::size_t host_pool::used_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return (blocks_.size() - free_.size()) * stride_;
}

std::size_t host_pool::entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return directory_.size();
}

std::size_t host_pool::leases() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t n = 0;
  for (const auto& b : blocks_) n += b.pins;
  return n;
}

}  // namespace kvflow::devices

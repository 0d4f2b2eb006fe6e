#pragma once
// The host tier: a pool of page-locked chunk blocks with a byte capacity, LRU
// eviction, pin counts and an eviction callback (demotion to disk).

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "devices/host/pinned_buffer.hpp"
#include "devices/tier.hpp"

namespace kvflow::devices {

class host_pool;

/// A pinned lease on one block of a host_pool: while it lives the block is
/// neither evicted nor reused. Move-only; releasing it (destructor or reset)
/// unpins. A lease may outlive nothing: destroy leases before their pool.
class host_block {
 public:
  host_block() = default;
  ~host_block() { reset(); }
  host_block(host_block&& other) noexcept;
  host_block& operator=(host_block&& other) noexcept;
  host_block(const host_block&) = delete;
  host_block& operator=(const host_block&) = delete;

  explicit operator bool() const { return pool_ != nullptr; }
  /// The whole chunk block, // [layer][K|V][kv_head][token][head_dim];
  /// only layers() hold data. 4 KiB-aligned.
  std::uint8_t* data() const { return data_; }
  /// Bytes of a block (the pool's block size).
  std::size_t bytes() const { return bytes_; }
  /// Block index in its pool: the handle that messages carry.
  std::uint32_t index() const { return index_; }
  const msg::chunk_key& key() const { return key_; }
  layer_range layers() const { return layers_; }
  void reset();

 private:
  friend class host_pool;
  host_pool* pool_ = nullptr;
  std::uint8_t* data_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint32_t index_ = 0;
  msg::chunk_key key_{};
  layer_range layers_;
};

/// Fixed-size blocks carved from one pinned arena of capacity_bytes (rounded
/// down to whole blocks), so used_bytes() can never exceed the capacity.
/// Thread-safe: every method may be called from any thread.
class host_pool {
 public:
  /// Called with the lease of each evicted block (its entry already gone from
  /// the directory); the block stays out of reuse until the lease is dropped.
  /// Runs on the evicting thread, outside the pool's lock; must not block long.
  using evict_fn = std::function<void(host_block&&)>;

  /// Throws kvflow::error(invalid_argument) when not even one block fits.
  host_pool(std::size_t capacity_bytes, std::size_t block_bytes);
  host_pool(const host_pool&) = delete;
  host_pool& operator=(const host_pool&) = delete;

  void set_evict_callback(evict_fn fn);

  /// Pinned lease on `key`'s block and marks it most recently used; empty on a miss.
  host_block acquire(const msg::chunk_key& key);
  /// Reserves a block for `key` (evicting least recently used unpinned
  /// entries), pinned and invisible to lookups until publish(). Empty when
  /// every block is pinned or being demoted.
  host_block allocate(const msg::chunk_key& key, layer_range layers);
  /// Makes an allocated block visible; an older entry of the same key is
  /// dropped. The lease stays valid. Returns false for an empty lease.
  bool publish(host_block& block);
  /// allocate + copy of layers from `src` (a whole-chunk block layout, only
  /// `layers` read) + publish. False when no block could be had.
  bool put(const msg::chunk_key& key, layer_range layers, std::size_t layer_bytes, const void* src);
  /// Drops `key` (its block is reused once unpinned). False when absent.
  bool erase(const msg::chunk_key& key);

  /// Which of `keys` this pool holds, without touching the LRU order.
  tier_lookup lookup(const std::vector<msg::chunk_key>& keys) const;
  bool contains(const msg::chunk_key& key) const;

  /// The configured capacity; used_bytes() never exceeds it.
  std::size_t capacity_bytes() const { return capacity_; }
  std::size_t block_bytes() const { return block_bytes_; }
  std::size_t block_count() const { return blocks_.size(); }
  /// Memory of blocks not free (published, reserved or being demoted),
  /// counted at the 4 KiB-aligned block stride.
  std::size_t used_bytes() const;
  std::size_t entries() const;
  /// Leases alive (pins summed over the blocks); 0 when nobody reads or
  /// writes the pool.
  std::size_t leases() const;
  /// Base of the arena (for registering it with a NIC or the GPU).
  std::uint8_t* arena() const { return arena_.data(); }
  bool pinned() const { return arena_.pinned(); }

 private:
  friend class host_block;
  enum class state : std::uint8_t { free, reserved, live, detached };
  struct block_info {
    state st = state::free;
    std::uint32_t pins = 0;
    bool demoting = false;  // handed to the evict callback, which still holds it
    msg::chunk_key key{};
    layer_range layers;
    std::list<std::uint32_t>::iterator lru;
  };

  host_block make_lease(std::uint32_t index);  // requires lock; pins
  void unpin(std::uint32_t index);
  void drop_entry(std::uint32_t index);  // requires lock; live -> detached/free

  std::size_t capacity_;
  std::size_t block_bytes_;
  std::size_t stride_;
  pinned_buffer arena_;
  mutable std::mutex mutex_;
  std::condition_variable freed_;  // a block went back to free_
  std::uint32_t demoting_ = 0;     // evicted blocks the evict callback still holds (being demoted)
  std::vector<block_info> blocks_;
  std::vector<std::uint32_t> free_;
  std::list<std::uint32_t> lru_;  // front = most recently used, live blocks only
  std::unordered_map<msg::chunk_key, std::uint32_t, chunk_key_hash> directory_;
  evict_fn on_evict_;
};

}  // namespace kvflow::devices

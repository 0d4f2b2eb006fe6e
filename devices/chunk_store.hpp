#pragma once
// The host and disk tiers together: demotion on eviction (host -> disk) and
// promotion on hit (disk -> host), both asynchronous and bounded.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "devices/disk/disk_store.hpp"
#include "devices/host/host_pool.hpp"

namespace kvflow::devices {

struct chunk_store_options {
  std::size_t host_capacity_bytes = 0;  ///< host pool capacity; blocks are disk.shape.bytes()
  disk_options disk;                    ///< the disk tier (its write queue bounds demotions)
  std::size_t promotion_queue_cap = 8;  ///< pending promotions; the oldest is dropped beyond
  bool demote_on_evict = true;
  bool promote_on_hit = true;
};

/// Where each key of a lookup is held; host wins where both hold it.
struct store_lookup {
  tier_lookup host, disk;
  /// Per key: the tier to load from (only meaningful where held(i)).
  std::vector<msg::tier> where;
  /// Leading keys held by either tier.
  std::size_t prefix = 0;
  bool held(std::size_t i) const { return host.held(i) || disk.held(i); }
};

/// Thread-safe. Owns one host_pool and one disk_store of the same chunk shape
/// and a promotion thread; demotions go through the disk's write-behind queue.
class chunk_store {
 public:
  /// Throws kvflow::error as host_pool and disk_store do.
  explicit chunk_store(chunk_store_options options);
  /// Stops promotions, then finishes the queued demotions.
  ~chunk_store();
  chunk_store(const chunk_store&) = delete;
  chunk_store& operator=(const chunk_store&) = delete;

  host_pool& host() { return host_; }
  disk_store& disk() { return disk_; }

  /// Both tiers' answers in one call.
  store_lookup lookup(const std::vector<msg::chunk_key>& keys) const;

  /// Stores layers of `block` (whole-chunk layout) in the host tier; its
  /// evictions demote to disk. When every host block is pinned (or still
  /// being demoted), queues a copy for the disk's write-behind instead; never
  /// waits for I/O.
  void store(const msg::chunk_key& key, layer_range layers, const void* block);

  /// Pinned lease of the host copy; on a host miss that the disk holds,
  /// queues a promotion (when enabled) and returns an empty lease: the caller
  /// reads this time from disk().read_async.
  host_block acquire(const msg::chunk_key& key);

  /// Queues a disk -> host promotion of key; never blocks on I/O. When the
  /// queue is full the oldest promotion is dropped with a log line.
  void promote(const msg::chunk_key& key);
  /// Waits until the promotion queue is empty and demotions are written.
  void flush();

  std::uint64_t promotions() const;  ///< promotions completed
  std::uint64_t demotions() const;   ///< demotions queued to disk
  std::uint64_t dropped_promotions() const;

 private:
  void on_evict(host_block&& block);
  void promotion_loop();

  chunk_store_options options_;
  host_pool host_;
  disk_store disk_;
  pinned_buffer staging_;  // promotion reads; used by the promotion thread only

  mutable std::mutex mutex_;
  std::condition_variable cv_, idle_cv_;
  std::deque<msg::chunk_key> promotions_queue_;
  bool promoting_ = false;
  bool stopping_ = false;
  std::uint64_t promoted_ = 0, demoted_ = 0, dropped_promotions_ = 0;
  std::thread promoter_;
};

}  // namespace kvflow::devices

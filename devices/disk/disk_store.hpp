#pragma once
// The disk tier: one chunk file per key in a cache directory (chunk_file.hpp),
// read with O_DIRECT through io_engine into pinned staging buffers, written
// behind on a background thread (temporary name, fsync, rename).

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "devices/disk/chunk_file.hpp"
#include "devices/disk/io_engine.hpp"
#include "devices/fault_plan.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "devices/rate_limiter.hpp"

namespace kvflow::devices {

struct disk_options {
  std::string directory;             ///< created if missing
  model_fingerprint fingerprint{};   ///< files of another model are misses (and removed)
  model::kv_shape shape;             ///< whole-chunk shape of this model
  std::uint64_t capacity_bytes = 0;  ///< bytes of chunk files kept (0 = no limit); LRU files go beyond
  std::size_t write_queue_cap = 8;   ///< pending write-behinds; the oldest is dropped beyond
  unsigned io_depth = 4;             ///< reads in flight
  bool use_io_uring = true;          ///< else a pread pool
  bool direct_io = true;             ///< O_DIRECT reads (where the file system allows)
  /// Paces reads / writes (may be the same object, or null for unlimited).
  std::shared_ptr<rate_limiter> read_limiter, write_limiter;
  /// Injected faults (tests and soaks; null: none): disk_read_error,
  /// disk_truncate, disk_write_full.
  std::shared_ptr<fault_plan> faults;
};

/// Thread-safe. A file that fails a check (truncated, flipped bits, another
/// model's fingerprint, a foreign version) is a miss: logged and removed.
class disk_store {
 public:
  /// Called once per read with the span (inside the staging buffer) or, on a
  /// miss, ok = false and data = nullptr. Runs on an I/O thread, or on the
  /// caller's before read_async returns for a miss found before reading
  /// (an unknown key, a file that will not open).
  using read_fn = std::function<void(bool ok, const std::uint8_t* data, std::size_t bytes)>;

  /// Opens (scanning and checking every chunk file's header) or creates the
  /// directory. Throws kvflow::error(io_failure) when it cannot be created.
  explicit disk_store(disk_options options);
  /// Finishes the queued writes.
  ~disk_store();
  disk_store(const disk_store&) = delete;
  disk_store& operator=(const disk_store&) = delete;

  /// Which of `keys` have a valid file (layers held per key).
  tier_lookup lookup(const std::vector<msg::chunk_key>& keys) const;
  bool contains(const msg::chunk_key& key) const;
  /// The layers stored for key (empty when absent).
  layer_range layers_of(const msg::chunk_key& key) const;

  /// Writes layers of `block` (whole-chunk layout) now, on the calling thread:
  /// temporary file, fsync, rename. A key already stored with these layers is
  /// skipped (keys are content addresses). Throws kvflow::error(io_failure).
  void write(const msg::chunk_key& key, layer_range layers, const void* block);
  /// Queues the same write for the background thread; `keep_alive` owns
  /// `block` until it is written or dropped. Never blocks on I/O; when the
  /// queue is full the oldest queued write is dropped with a log line.
  void write_behind(const msg::chunk_key& key, layer_range layers, const void* block, std::shared_ptr<void> keep_alive);
  /// Waits until every queued write is on disk (or dropped).
  void flush();
  /// Writes dropped because the queue was full.
  std::uint64_t dropped_writes() const;
  /// Writes queued or being written (0 when idle).
  std::size_t writes_pending() const;
  /// Reads started by read_async whose `done` has not run yet (0 when idle).
  std::int64_t reads_in_flight() const { return reads_in_flight_.load(); }

  /// Bytes a staging buffer needs to read `layers` of a chunk.
  std::size_t staging_bytes(layer_range layers) const;
  /// Reads `layers` (within the stored ones) as one read into `staging`
  /// (at least staging_bytes(layers), 4 KiB-aligned, alive until `done`),
  /// checks each layer's XXH3 and calls done. Does not wait for I/O: reads
  /// beyond io_depth in flight queue in order; a miss (absent, short,
  /// corrupt) calls done(false).
  /// `done` may copy to the GPU or start another read; the completions behind
  /// it wait for it (one thread completes reads), so it should be short.
  void read_async(const msg::chunk_key& key, layer_range layers, std::uint8_t* staging, read_fn done);
  /// Synchronous read_async (with an aligned, unpinned staging buffer of its
  /// own per call: GPU paths use read_async) that copies the span to dst (at the span's offset
  /// in a whole-chunk block when `dst_is_block`, else at dst). False on a miss.
  bool read(const msg::chunk_key& key, layer_range layers, void* dst, bool dst_is_block = true);

  /// Removes key's file. False when absent.
  bool erase(const msg::chunk_key& key);
  std::size_t entries() const;
  /// Bytes of the chunk files held.
  std::uint64_t used_bytes() const;
  const disk_options& options() const { return options_; }
  /// Name of the read engine ("io_uring" or "pread").
  const char* engine_name() const { return engine_->name(); }

 private:
  struct entry {
    layer_range layers;
    std::vector<std::uint64_t> layer_checksums;
    std::uint64_t file_bytes = 0;
    std::list<msg::chunk_key>::iterator lru_pos;  // its place in lru_
  };
  struct write_job {
    msg::chunk_key key;
    layer_range layers;
    const void* block;
    std::shared_ptr<void> keep_alive;
  };

  std::string path_of(const msg::chunk_key& key) const;
  void scan();
  void discard(const msg::chunk_key& key, const std::string& why);
  void writer_loop();
  /// Removes least recently used files until used_bytes_ fits the capacity,
  /// sparing `keep`. Requires mutex_; returns the paths to unlink.
  std::vector<std::string> evict_locked(const msg::chunk_key& keep);
  /// The entry of `key`, made the most recently used (a new one if absent).
  /// Requires mutex_.
  entry& use_locked(const msg::chunk_key& key);
  /// Drops `it` from the directory and the LRU order. Requires mutex_.
  void forget_locked(std::unordered_map<msg::chunk_key, entry, chunk_key_hash>::iterator it);

  disk_options options_;
  std::unique_ptr<io_engine> engine_;
  mutable std::mutex mutex_;
  std::unordered_map<msg::chunk_key, entry, chunk_key_hash> directory_;
  // Keys from least to most recently written or read: eviction takes the
  // front without looking at the other files.
  std::list<msg::chunk_key> lru_;
  std::uint64_t used_bytes_ = 0;

  mutable std::mutex queue_mutex_;
  std::condition_variable queue_cv_, idle_cv_;
  std::deque<write_job> queue_;
  bool writing_ = false;
  bool stopping_ = false;
  std::uint64_t dropped_ = 0;
  std::uint64_t tmp_counter_ = 0;
  std::atomic<std::int64_t> reads_in_flight_{0};
  std::thread writer_;
};

}  // namespace kvflow::devices

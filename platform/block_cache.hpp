#pragma once
// Freed memory blocks kept by size and lent again: for allocators whose free
// is expensive or synchronising (cudaFree waits for the whole device), so
// that a request's blocks going back do not stall the requests still running.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

namespace kvflow::platform {

/// A cache in front of an allocator. take() lends a kept block of exactly
/// the size asked (after its fence: the work that last used it has
/// finished), else allocates; give() keeps a block with the fence of its
/// last use instead of freeing it, up to `cap_bytes` kept (beyond, the
/// oldest kept are freed). Thread-safe; frees every kept block when
/// destroyed (waiting for their fences). Blocks must be given back before
/// the cache goes.
class block_cache {
 public:
  /// Allocates `bytes` (throws on failure).
  using alloc_fn = std::function<void*(std::size_t bytes)>;
  /// Frees a block of alloc_fn's; must not throw.
  using free_fn = std::function<void(void* p)>;
  /// Waits until the work that last used a given block has finished (empty:
  /// nothing to wait for). Called once, before the block is lent or freed.
  using fence_fn = std::function<void()>;

  block_cache(alloc_fn alloc, free_fn free, std::size_t cap_bytes);
  ~block_cache();
  block_cache(const block_cache&) = delete;
  block_cache& operator=(const block_cache&) = delete;

  /// A block of `bytes`: a kept one, else alloc_fn's; where alloc_fn throws
  /// and blocks are kept, they are freed and the allocation tried once more.
  void* take(std::size_t bytes);
  /// Returns a block take() lent, to be lent again after `fence`. A pointer
  /// take() did not lend is freed at once (after its fence), and so is
  /// every block while the last allocation failed (memory is short: the
  /// failed work's blocks go back to the allocator). Null: nothing.
  void give(void* p, fence_fn fence);
  /// Frees every kept block.
  void trim();

  std::size_t kept_bytes() const;
  std::size_t kept_blocks() const;
  /// Blocks lent out now.
  std::size_t lent_blocks() const;

 private:
  struct kept {
    void* p;
    std::size_t bytes;
    fence_fn fence;
  };
  // Frees `gone` (fences first) without the lock.
  void free_all(std::map<std::uint64_t, kept>& gone);

  alloc_fn alloc_;
  free_fn free_;
  std::size_t cap_;
  mutable std::mutex m_;
  std::unordered_map<void*, std::size_t> lent_;        // size of each block lent out
  std::multimap<std::size_t, std::uint64_t> by_size_;  // kept: size -> age stamp
  std::map<std::uint64_t, kept> by_age_;               // kept: age stamp -> block, oldest first
  std::uint64_t next_stamp_ = 0;
  std::size_t kept_bytes_ = 0;
  bool pressure_ = false;  // the last allocation failed: give() frees
};

}  // namespace kvflow::platform

#define BOOST_TEST_MODULE platform.block_cache
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <map>
#include <new>

#include "platform/block_cache.hpp"

using namespace kvflow::platform;

namespace {

// An allocator that counts its calls and can be told to fail.
struct counting_heap {
  int allocs = 0, frees = 0;
  std::size_t live_bytes = 0, limit = ~std::size_t{0};
  std::map<void*, std::size_t> live;
  block_cache make(std::size_t cap) {
    return block_cache(
        [this](std::size_t bytes) -> void* {
          if (live_bytes + bytes > limit) throw std::bad_alloc();
          ++allocs;
          void* p = std::malloc(bytes);
          live[p] = bytes;
          live_bytes += bytes;
          return p;
        },
        [this](void* p) {
          ++frees;
          live_bytes -= live[p];
          live.erase(p);
          std::free(p);
        },
        cap);
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_block_given_back_is_lent_again_after_its_fence) {
  counting_heap h;
  auto cache = h.make(1 << 20);
  void* a = cache.take(4096);
  BOOST_TEST(h.allocs == 1);
  int fenced = 0;
  cache.give(a, [&] { ++fenced; });
  BOOST_TEST(h.frees == 0);  // kept, not freed: no synchronising free
  BOOST_TEST(cache.kept_bytes() == 4096u);
  BOOST_TEST(fenced == 0);  // nothing waits when it is given back
  void* b = cache.take(4096);
  BOOST_TEST(b == a);
  BOOST_TEST(fenced == 1);  // the block's last use finished before it is lent again
  BOOST_TEST(h.allocs == 1);
  BOOST_TEST(cache.kept_bytes() == 0u);
  BOOST_TEST(cache.lent_blocks() == 1u);
  cache.give(b, {});
}

BOOST_AUTO_TEST_CASE(only_the_same_size_is_reused) {
  counting_heap h;
  auto cache = h.make(1 << 20);
  void* a = cache.take(4096);
  cache.give(a, {});
  void* b = cache.take(8192);
  BOOST_TEST(b != a);
  BOOST_TEST(h.allocs == 2);
  cache.give(b, {});
  BOOST_TEST(cache.kept_blocks() == 2u);
}

BOOST_AUTO_TEST_CASE(beyond_the_cap_the_oldest_are_freed_after_their_fences) {
  counting_heap h;
  auto cache = h.make(10000);
  void* a = cache.take(4096);
  void* b = cache.take(4096);
  void* c = cache.take(4096);
  int fenced_a = 0;
  cache.give(a, [&] { ++fenced_a; });
  cache.give(b, {});
  BOOST_TEST(h.frees == 0);
  cache.give(c, {});  // 12288 kept > 10000: a, the oldest, goes
  BOOST_TEST(h.frees == 1);
  BOOST_TEST(fenced_a == 1);
  BOOST_TEST(h.live.count(a) == 0u);
  BOOST_TEST(cache.kept_bytes() == 8192u);
}

BOOST_AUTO_TEST_CASE(a_failed_allocation_frees_the_kept_blocks_and_tries_again) {
  counting_heap h;
  h.limit = 3 * 4096;
  auto cache = h.make(1 << 20);
  void* a = cache.take(4096);
  void* b = cache.take(4096);
  cache.give(a, {});
  cache.give(b, {});
  // 8192 + 8192 > limit while a and b are kept: they go, then it fits.
  void* c = cache.take(8192);
  BOOST_TEST(c != nullptr);
  BOOST_TEST(h.frees == 2);
  BOOST_TEST(cache.kept_bytes() == 0u);
  cache.give(c, {});
  h.limit = 0;
  BOOST_CHECK_THROW(cache.take(100), std::bad_alloc);  // a kept 8192 is trimmed, still too big
  BOOST_TEST(cache.kept_blocks() == 0u);
}

BOOST_AUTO_TEST_CASE(after_a_failed_allocation_blocks_given_back_are_freed_until_one_succeeds) {
  counting_heap h;
  h.limit = 3 * 4096;
  auto cache = h.make(1 << 20);
  // Work that took two blocks fails on its third: its blocks go back to the
  // allocator, not into the cache, so the memory it held is free again.
  void* a = cache.take(4096);
  void* b = cache.take(4096);
  BOOST_CHECK_THROW(cache.take(8192), std::bad_alloc);
  cache.give(a, {});
  cache.give(b, {});
  BOOST_TEST(cache.kept_blocks() == 0u);
  BOOST_TEST(h.live_bytes == 0u);
  // A success ends it: blocks are kept again.
  void* c = cache.take(4096);
  cache.give(c, {});
  BOOST_TEST(cache.kept_blocks() == 1u);
  BOOST_TEST(h.live_bytes == 4096u);
}

BOOST_AUTO_TEST_CASE(unknown_pointers_are_freed_and_the_rest_when_destroyed) {
  counting_heap h;
  {
    auto cache = h.make(1 << 20);
    void* foreign = std::malloc(16);
    h.live[foreign] = 16;
    int fenced = 0;
    cache.give(foreign, [&] { ++fenced; });
    BOOST_TEST(fenced == 1);
    BOOST_TEST(h.frees == 1);
    cache.give(nullptr, {});
    cache.give(cache.take(64), {});
    cache.give(cache.take(128), {});
  }
  BOOST_TEST(h.live.empty());
  BOOST_TEST(h.frees == 3);
}

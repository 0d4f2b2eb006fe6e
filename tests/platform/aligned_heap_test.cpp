#define BOOST_TEST_MODULE platform.aligned_heap
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "platform/aligned_heap.hpp"
#include "tests/sanitized.hpp"

using namespace kvflow::platform;

BOOST_AUTO_TEST_CASE(blocks_are_aligned_and_writable) {
  for (std::size_t alignment : {std::size_t{8}, std::size_t{16}, std::size_t{64}, std::size_t{4096}}) {
    std::vector<void*> blocks;
    for (std::size_t bytes :
         {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{5000}, std::size_t{1} << 20}) {
      void* p = aligned_heap_alloc(bytes, alignment);
      BOOST_TEST_REQUIRE(p != nullptr);
      BOOST_TEST(reinterpret_cast<std::uintptr_t>(p) % alignment == 0u);
      std::memset(p, 0xab, bytes);  // ASan checks the whole span is ours
      blocks.push_back(p);
    }
    for (auto* p : blocks) aligned_heap_free(p);
  }
  aligned_heap_free(nullptr);
}

BOOST_AUTO_TEST_CASE(bad_alignments_and_sizes_are_refused) {
  BOOST_TEST(aligned_heap_alloc(16, 48) == nullptr);  // not a power of two
  BOOST_TEST(aligned_heap_alloc(16, 2) == nullptr);   // below a pointer's size
  BOOST_TEST(aligned_heap_alloc(std::numeric_limits<std::size_t>::max() - 8, 64) == nullptr);
}

BOOST_AUTO_TEST_CASE(freed_blocks_are_reused) {
  // The same size freed and taken again comes from the same malloc block:
  // what memalign failed to do. A sanitizer's allocator quarantines freed
  // blocks instead of reusing them, so there only the round trip is checked.
  void* a = aligned_heap_alloc(3000, 64);
  BOOST_TEST_REQUIRE(a != nullptr);
  aligned_heap_free(a);
  void* b = aligned_heap_alloc(3000, 64);
  BOOST_TEST_REQUIRE(b != nullptr);
#ifndef KVFLOW_SANITIZED
  BOOST_TEST(a == b);
#endif
  aligned_heap_free(b);
}

#define BOOST_TEST_MODULE actors.runtime_memory
#include <boost/test/unit_test.hpp>

#include <malloc.h>

#include <future>
#include <random>
#include <vector>

#include "actors/runtime.hpp"
#include "tests/sanitized.hpp"

// Memory per request of a long-running runtime (what `kvflow serve` is): the
// malloc arenas must not grow with the number of requests served. Their
// growth is what a soak shows as RSS; the live heap alone stayed flat while
// memalign'd workspace and staging buffers fragmented glibc's arenas by
// about 11 KB per request (issue 22's soak: 31 -> 183 MiB).

using namespace kvflow;

namespace {

// Bytes malloc holds from the system: every arena's heap plus its mmapped blocks.
std::size_t malloc_system_bytes() {
  auto m = mallinfo2();
  return m.arena + m.hblkhd;
}

}  // namespace

BOOST_AUTO_TEST_CASE(malloc_arenas_stay_flat_over_requests) {
#ifdef KVFLOW_SANITIZED
  // A sanitizer's allocator replaces malloc: mallinfo2 says nothing about it.
  BOOST_TEST_MESSAGE("skipped under a sanitizer");
  return;
#else
  runtime_options o;
  o.preset = "tiny-test";
  o.backend = "cpu";
  o.chunk_tokens = 16;
  o.threads = 1;
  // Small tiers, as in the soak: chunks are stored, loaded and evicted.
  o.host_tier_gb = 0.0002;
  o.disk_tier_gb = 0.002;
  runtime rt(o);
  std::mt19937 rng(1);
  std::vector<std::vector<std::int32_t> > shared;
  for (int i = 0; i < 12; ++i) {
    std::vector<std::int32_t> head(16u * (1 + rng() % 6));
    for (auto& t : head) t = static_cast<std::int32_t>(rng() % 512);
    shared.push_back(std::move(head));
  }
  // Waves of concurrent requests with shared prefixes of several lengths.
  auto serve = [&](int requests) {
    for (int done = 0; done < requests; done += 8) {
      std::vector<std::future<restore_report> > wave;
      for (int i = 0; i < 8; ++i) {
        auto tokens = shared[rng() % shared.size()];
        for (int n = 4 + static_cast<int>(rng() % 100); n > 0; --n) tokens.push_back(static_cast<int>(rng() % 512));
        submit_options so;
        so.max_new_tokens = 1 + rng() % 10;
        so.temperature = 0;
        wave.push_back(rt.submit(std::move(tokens), so));
      }
      for (auto& f : wave) f.get();
    }
  };
  serve(128);  // warm-up: tiers full, caches and thread pools at their size
  rt.flush();
  const auto before = malloc_system_bytes();
  const int measured = 384;
  serve(measured);
  rt.flush();
  const auto after = malloc_system_bytes();
  const double per_request = (static_cast<double>(after) - static_cast<double>(before)) / measured;
  BOOST_TEST_MESSAGE("malloc arenas: " << before << " -> " << after << " bytes, " << per_request
                                       << " bytes per request");
  // Before the fix: about 11,000 bytes per request here; after: 600 to 2,000
  // (threads filling their malloc caches).
  BOOST_TEST(per_request < 4000.0);
  BOOST_TEST(rt.counters().requests == 0);
#endif
}

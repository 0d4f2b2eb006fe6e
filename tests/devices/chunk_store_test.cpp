#define BOOST_TEST_MODULE devices.chunk_store
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "devices/chunk_store.hpp"
#include "tests/devices/test_util.hpp"

using namespace kvflow;
using namespace kvflow::devices;
using namespace kvflow::devices::test;

namespace {
const model::kv_shape shape = small_shape();
const layer_range all{0, 4};

chunk_store_options opts(const std::string& dir, std::size_t host_blocks) {
  return store_options(dir, host_blocks, shape);
}

bool same(const std::uint8_t* p, std::uint32_t i) {
  const auto want = block_of(shape, i);
  return std::memcmp(p, want.data(), want.size()) == 0;
}
}  // namespace

BOOST_AUTO_TEST_CASE(eviction_demotes_to_disk) {
  scratch_dir dir;
  chunk_store cs(opts(dir.path, 2));
  for (std::uint32_t i = 0; i < 5; ++i) {
    cs.store(key_of(i), all, block_of(shape, i).data());
    BOOST_REQUIRE(cs.host().used_bytes() <= cs.host().capacity_bytes());
  }
  cs.flush();
  // Blocks still being demoted are not reusable yet: a store that finds only
  // those writes through to disk instead. Either way every chunk is kept.
  BOOST_TEST(cs.demotions() >= 1u);
  std::vector<msg::chunk_key> keys;
  for (std::uint32_t i = 0; i < 5; ++i) keys.push_back(key_of(i));
  keys.push_back(key_of(99));
  const store_lookup r = cs.lookup(keys);
  BOOST_TEST(r.prefix == 5u);
  BOOST_TEST(!r.held(5));
  BOOST_TEST(r.host.prefix == 0u);  // 0 was the first evicted
  BOOST_TEST((r.where[0] == msg::tier::disk));
  for (std::uint32_t i = 0; i < 5; ++i)
    BOOST_TEST((r.where[i] == (r.host.held(i) ? msg::tier::host : msg::tier::disk)));
  std::vector<std::uint8_t> out(shape.bytes());
  for (std::uint32_t i = 0; i < 5; ++i) {
    if (r.where[i] == msg::tier::disk) {
      BOOST_TEST(cs.disk().read(key_of(i), all, out.data()));
      BOOST_TEST(same(out.data(), i));
    } else {
      host_block b = cs.host().acquire(key_of(i));
      BOOST_TEST(same(b.data(), i));
    }
  }
}

BOOST_AUTO_TEST_CASE(hit_on_disk_promotes_to_host) {
  scratch_dir dir;
  auto o = opts(dir.path, 3);
  chunk_store cs(o);
  cs.disk().write(key_of(7), all, block_of(shape, 7).data());
  BOOST_TEST(!cs.host().contains(key_of(7)));
  BOOST_TEST(!cs.acquire(key_of(7)));  // a host miss queues the promotion
  cs.flush();
  BOOST_TEST(cs.promotions() == 1u);
  host_block b = cs.acquire(key_of(7));
  BOOST_REQUIRE(b);
  BOOST_TEST(same(b.data(), 7));
  BOOST_TEST((cs.lookup({key_of(7)}).where[0] == msg::tier::host));
}

BOOST_AUTO_TEST_CASE(promotion_of_a_layer_range) {
  scratch_dir dir;
  chunk_store cs(opts(dir.path, 2));
  const auto src = block_of(shape, 3);
  cs.disk().write(key_of(3), layer_range{1, 3}, src.data());
  cs.promote(key_of(3));
  cs.flush();
  host_block b = cs.host().acquire(key_of(3));
  BOOST_REQUIRE(b);
  BOOST_TEST((b.layers() == layer_range{1, 3}));
  BOOST_TEST(std::memcmp(b.data() + shape.span_offset_bytes(1), src.data() + shape.span_offset_bytes(1),
                         shape.span_bytes(1, 3)) == 0);
}

BOOST_AUTO_TEST_CASE(promotion_queue_is_bounded) {
  scratch_dir dir;
  auto o = opts(dir.path, 4);
  o.promotion_queue_cap = 2;
  // 16 KiB reads at 400 KB/s: each promotion takes about 40 ms.
  o.disk.read_limiter = std::make_shared<rate_limiter>(400e3);
  chunk_store cs(o);
  for (std::uint32_t i = 0; i < 8; ++i) cs.disk().write(key_of(i), all, block_of(shape, i).data());
  for (std::uint32_t i = 0; i < 8; ++i) cs.promote(key_of(i));
  cs.flush();
  BOOST_TEST(cs.dropped_promotions() >= 4u);
  BOOST_TEST(cs.promotions() + cs.dropped_promotions() == 8u);
  BOOST_TEST(cs.host().contains(key_of(7)));
  BOOST_TEST(cs.host().used_bytes() <= cs.host().capacity_bytes());
}

BOOST_AUTO_TEST_CASE(concurrent_store_acquire_read) {
  scratch_dir dir;
  chunk_store cs(opts(dir.path, 3));
  std::atomic<int> bad{0}, over{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      std::vector<std::uint8_t> out(shape.bytes());
      for (int i = 0; i < 150; ++i) {
        const std::uint32_t k = rng() % 10;
        switch (rng() % 3) {
          case 0:
            cs.store(key_of(k), all, block_of(shape, k).data());
            break;
          case 1:
            if (host_block b = cs.acquire(key_of(k)))
              if (!same(b.data(), k)) ++bad;
            break;
          default:
            if (cs.disk().read(key_of(k), all, out.data()) && !same(out.data(), k)) ++bad;
        }
        if (cs.host().used_bytes() > cs.host().capacity_bytes()) ++over;
      }
    });
  for (auto& t : ts) t.join();
  cs.flush();
  BOOST_TEST(bad.load() == 0);
  BOOST_TEST(over.load() == 0);
}

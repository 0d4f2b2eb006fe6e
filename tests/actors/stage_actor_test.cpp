#define BOOST_TEST_MODULE actors.stage_actor
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <future>
#include <random>

#include "actors/runtime.hpp"
#include "messages/error.hpp"
#include "tests/actors/restore_reference.hpp"

using namespace kvflow;
using namespace std::chrono_literals;

namespace {

// A CPU runtime of tiny-test (4 layers) whose layers run on pipeline stages.
runtime_options staged(const temp_dir& dir, int stages, std::vector<int> splits = {}) {
  auto o = cpu_options("tiny-test", 16, dir, 0.05);
  o.seed = 7;
  o.threads = 1;  // N + 1 engines share this machine's cores
  o.stages = stages;
  o.stage_splits = std::move(splits);
  return o;
}

}  // namespace

// 2, 3 and 4 stages (and an uneven split): every policy restores the KV of
// one engine's full prefill bitwise and the same first token, the hidden
// state crossing every stage boundary of every computed chunk.
BOOST_AUTO_TEST_CASE(every_policy_on_every_stage_count_restores_the_full_prefill) {
  const int chunk = 16;
  struct layout {
    int stages;
    std::vector<int> splits;
  };
  for (const auto& l : {layout{2, {}}, layout{3, {}}, layout{4, {}}, layout{0, {3}}}) {
    temp_dir dir("stages" + std::to_string(l.stages));
    runtime rt(staged(dir, l.stages, l.splits));
    const int n = l.splits.empty() ? l.stages : static_cast<int>(l.splits.size()) + 1;
    BOOST_TEST_INFO(rt.describe());
    BOOST_TEST(rt.describe().find(std::to_string(n) + " stages") != std::string::npos);
    std::mt19937 rng(static_cast<unsigned>(10 + l.stages));
    for (auto& policy : all_policies) {
      auto tokens = random_tokens(rng, std::uniform_int_distribution<int>(4 * chunk, 9 * chunk)(rng), 512);
      auto prefix = std::uniform_int_distribution<std::size_t>(2 * chunk, tokens.size())(rng);
      auto ref = full_prefill("tiny-test", 7, tokens, chunk);
      BOOST_TEST_CONTEXT(n << " stages") {
        auto r = restore_and_check(rt, tokens, prefix, policy, ref);
        BOOST_CHECK_GT(r.cached_chunks, 0u);
        // Every computed chunk crosses every boundary its computed layers reach.
        if (policy == "compute_only") BOOST_CHECK_EQUAL(r.stage_handoffs, r.chunks * static_cast<std::uint32_t>(n - 1));
        if (policy == "load_only")
          BOOST_CHECK_EQUAL(r.stage_handoffs, (r.chunks - r.cached_chunks) * static_cast<std::uint32_t>(n - 1));
      }
    }
    // Decoding past the first token runs on the full engine over the
    // stages' KV: the same tokens as without stages.
    temp_dir plain_dir("plain" + std::to_string(l.stages));
    runtime plain(staged(plain_dir, 1));
    auto tokens = random_tokens(rng, 5 * chunk, 512);
    submit_options so;
    so.max_new_tokens = 6;
    so.store = false;
    BOOST_TEST(rt.submit(tokens, so).get().tokens == plain.submit(tokens, so).get().tokens);
  }
}

// A stage killed before or during a request: the request fails with an
// error (never hangs), and so do later ones.
BOOST_AUTO_TEST_CASE(a_killed_stage_fails_requests_cleanly) {
  std::mt19937 rng(5);
  for (int victim : {0, 1, 2}) {
    temp_dir dir("kill" + std::to_string(victim));
    runtime rt(staged(dir, 3));
    auto so = checked_restore("two_pointer");
    auto long_prompt = random_tokens(rng, 40 * 16, 512);
    auto during = rt.submit(long_prompt, so);
    rt.stop_stage(victim);
    BOOST_TEST_INFO("stage " << victim);
    BOOST_REQUIRE(during.wait_for(60s) == std::future_status::ready);
    try {
      // Finished before the kill reached it: then it is right.
      auto r = during.get();
      BOOST_CHECK_EQUAL(r.kv_sha256, full_prefill("tiny-test", 7, long_prompt, 16).kv_sha256);
    } catch (const error& e) {
      BOOST_CHECK(e.code() == errc::peer_down);
    }
    auto after = rt.submit(random_tokens(rng, 4 * 16, 512), so);
    BOOST_REQUIRE(after.wait_for(60s) == std::future_status::ready);
    BOOST_CHECK_THROW(after.get(), error);
  }
  temp_dir dir("kill-range");
  runtime rt(staged(dir, 2));
  BOOST_CHECK_THROW(rt.stop_stage(2), error);
}

BOOST_AUTO_TEST_CASE(bad_stage_layouts_are_refused) {
  temp_dir dir("bad");
  BOOST_CHECK_THROW(runtime(staged(dir, 5)), error);          // 4 layers
  BOOST_CHECK_THROW(runtime(staged(dir, 0, {2, 2})), error);  // not ascending
  auto o = staged(dir, 2);
  o.stage_devices = {0};
  BOOST_CHECK_THROW(runtime{o}, error);  // one device for two stages
  o.stage_devices.clear();
  o.stage_link = "nccl";
  BOOST_CHECK_THROW(runtime{o}, error);  // no NCCL on the CPU backend
}

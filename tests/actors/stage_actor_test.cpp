#define BOOST_TEST_MODULE actors.stage_actor
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <future>
#include <random>

#include <caf/all.hpp>

#include "actors/frame_type.hpp"
#include "actors/runtime.hpp"
#include "actors/stage_actor.hpp"
#include "actors/system_config.hpp"
#include "actors/workspace.hpp"
#include "kernels/model/stage_link.hpp"
#include "messages/codec.hpp"
#include "messages/digest.hpp"
#include "messages/error.hpp"
#include "tests/actors/grant_answer.hpp"
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

namespace {

// Two stage actors of tiny-test (layers [0, 2) and [2, 4)) on their own CPU
// engines, a workspace of `tokens` made for both, and a scoped actor to ask.
struct two_stages {
  system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<model::engine> e0, e1;
  caf::actor s0, s1;
  workspace_ptr ws;

  explicit two_stages(const std::vector<std::int32_t>& tokens, bool kill_second) {
    auto w = model::random_weights(model::preset("tiny-test"), 7);
    e0 = model::make_cpu_engine(w, 1);
    e1 = model::make_cpu_engine(w, 1);
    s1 = sys.spawn<caf::detached>(stage_actor, e1, stage_layout{1, 2, 4, 0}, stage_next{});
    if (kill_second) {
      caf::scoped_actor self{sys};
      self->monitor(s1);
      caf::anon_send_exit(s1, caf::exit_reason::kill);
      self->receive([](const caf::down_msg&) {});
    }
    std::shared_ptr<model::stage_link> link = model::make_host_link(*e0, *e1);
    s0 = sys.spawn<caf::detached>(stage_actor, e0, stage_layout{0, 0, 2, 0}, stage_next{s1, e1, link});
    ws = std::make_shared<workspace>(1, tokens, 16, *e0);
    ws->add_stages({e0, e1});
  }
  ~two_stages() {
    caf::anon_send_exit(s0, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(s1, caf::exit_reason::user_shutdown);
    s0 = s1 = nullptr;
  }

  // Sends compute grants of every layer, `per_grant` chunks each, in order;
  // collects the answers.
  std::vector<test::grant_answer> compute(std::uint32_t chunks, std::uint32_t per_grant,
                                          std::uint32_t layer_split = 4) {
    caf::scoped_actor self{sys};
    std::vector<test::grant_answer> answers;
    using handle = decltype(self->request(s0, std::chrono::seconds(30), msg::frame{}, ws));
    std::vector<handle> pending;
    std::uint64_t id = 1;
    for (std::uint32_t c = 0; c < chunks; c += per_grant)
      for (auto [lb, le] : {std::pair<std::uint32_t, std::uint32_t>{0, layer_split}, {layer_split, 4}}) {
        if (lb == le) continue;
        msg::grant g;
        g.request_id = 1;
        g.grant_id = id++;
        g.act = msg::action::compute;
        g.cells = {c, std::min(chunks, c + per_grant), lb, le};
        pending.push_back(self->request(s0, std::chrono::seconds(30), msg::encode(g), ws));
      }
    for (auto& p : pending) {
      answers.emplace_back();
      test::receive_answer(sys, p, answers.back());
    }
    return answers;
  }

  std::string digest() {
    sha256 h;
    for (auto& b : ws->blocks()) h.update(b.data, b.shape.bytes());
    return to_hex(h.finish());
  }
};

}  // namespace

// Grants that span both stages, end at the boundary or start at it: the
// first stage runs its layers, hands each chunk's hidden state over and
// passes the grant on; every grant is answered for its whole rectangle and
// the KV is the full prefill's.
BOOST_AUTO_TEST_CASE(grants_travel_the_pipeline_and_restore_the_full_prefill) {
  std::mt19937 rng(3);
  auto tokens = random_tokens(rng, 6 * 16 + 5, 512);
  auto ref = full_prefill("tiny-test", 7, tokens, 16);
  for (std::uint32_t split : {4u, 2u, 1u, 3u}) {
    two_stages p(tokens, false);
    auto answers = p.compute(7, 3, split);
    BOOST_TEST_CONTEXT("grants split at layer " << split) {
      for (auto& a : answers) {
        BOOST_TEST(a.ok, a.error);
        BOOST_TEST(a.done.finished_ns >= a.done.started_ns);
      }
      BOOST_TEST(p.digest() == ref.kv_sha256);
      BOOST_TEST(p.ws->handoffs.load() == 7u);  // every chunk crosses the boundary once
    }
  }
}

// The next stage is gone while a grant is half done (the first stage has
// run its layers): the grant is answered with an error, never left waiting.
BOOST_AUTO_TEST_CASE(a_dead_next_stage_fails_the_grant_it_was_passed) {
  std::mt19937 rng(4);
  two_stages p(random_tokens(rng, 3 * 16, 512), true);
  auto answers = p.compute(3, 3);
  BOOST_REQUIRE_EQUAL(answers.size(), 1u);
  BOOST_TEST(!answers[0].ok);
  BOOST_TEST(answers[0].error.find("next stage") != std::string::npos, answers[0].error);
}

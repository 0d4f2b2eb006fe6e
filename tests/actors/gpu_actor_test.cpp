#define BOOST_TEST_MODULE actors.gpu_actor
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/atoms.hpp"
#include "actors/frame_type.hpp"
#include "actors/gpu_actor.hpp"
#include "actors/system_config.hpp"
#include "actors/workspace.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/weights.hpp"
#include "messages/codec.hpp"
#include "messages/error.hpp"
#include "tests/actors/grant_answer.hpp"

// The gpu actor's compute path: grants that arrive together with one layer
// range run as one engine::run_fused call (across requests), grants of
// another layer range do not join it, the group's time is shared by cells,
// and a grant that fails its checks fails alone. While a request decodes,
// each decode step has at most the step budget of grants before it (a grant
// split by chunks where needed), and neither the tokens nor the KV change.

using namespace kvflow;

namespace {

constexpr int chunk_tokens = 16;

// The CPU engine, recording every run_fused call (its jobs' layer ranges and
// out blocks); the first call waits for `gate` (so that later grants queue
// in the mailbox meanwhile); a job whose out block is `poisoned` is refused
// before any job runs.
class recording_engine final : public model::engine {
 public:
  explicit recording_engine(std::shared_ptr<model::engine> inner) : inner_(std::move(inner)) {}
  const model::config& cfg() const override { return inner_->cfg(); }
  model::dtype kv_type() const override { return inner_->kv_type(); }
  const std::array<std::uint8_t, 32>& fingerprint() const override { return inner_->fingerprint(); }
  void* allocate(std::size_t bytes) override { return inner_->allocate(bytes); }
  void release(void* p) override { inner_->release(p); }
  void to_backend(void* dst, const void* src, std::size_t bytes) override { inner_->to_backend(dst, src, bytes); }
  void to_host(void* dst, const void* src, std::size_t bytes) override { inner_->to_host(dst, src, bytes); }
  void run(const model::chunk_job& job) override { inner_->run(job); }
  void run_fused(const std::vector<model::chunk_job>& jobs) override {
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& j : jobs)
        if (j.out.data == poisoned) throw error(errc::invalid_argument, "poisoned block");
      calls.push_back(jobs);
    }
    if (first_call) {
      first_call = false;
      gate.wait();
    }
    inner_->run_fused(jobs);
  }
  void synchronize() override { inner_->synchronize(); }
  void when_done(std::function<void()> fn) override { inner_->when_done(std::move(fn)); }
  void logits(const model::hidden_state& h, std::vector<float>& out) override { inner_->logits(h, out); }

  std::mutex mu;
  std::vector<std::vector<model::chunk_job>> calls;
  std::shared_future<void> gate;
  bool first_call = true;
  const void* poisoned = nullptr;

 private:
  std::shared_ptr<model::engine> inner_;
};

msg::frame grant_frame(std::uint64_t request, std::uint64_t id, std::uint32_t c0, std::uint32_t c1, std::uint32_t l0,
                       std::uint32_t l1) {
  msg::grant g;
  g.request_id = request;
  g.grant_id = id;
  g.act = msg::action::compute;
  g.cells = msg::cell_range{c0, c1, l0, l1};
  return msg::encode(g);
}

using answer = test::grant_answer;

struct fixture {
  std::shared_ptr<recording_engine> engine;
  std::promise<void> open;
  std::vector<workspace_ptr> ws;
  fixture() {
    engine = std::make_shared<recording_engine>(
        model::make_cpu_engine(model::random_weights(model::preset("tiny-test"), 3), 1));
    engine->gate = open.get_future().share();
    for (std::uint64_t r = 1; r <= 3; ++r) {
      std::vector<std::int32_t> tokens(4 * chunk_tokens);
      for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>((i * 7 + r) % 512);
      ws.push_back(std::make_shared<workspace>(r, std::move(tokens), chunk_tokens, *engine));
    }
  }

  // Sends the first grant, then `grants` while the engine holds the first
  // one back, then lets it go; returns every answer in sending order.
  std::vector<answer> run(const msg::frame& first, const std::vector<std::pair<msg::frame, int>>& grants,
                          int step_tokens = default_step_prefill_tokens) {
    system_config cfg;
    caf::actor_system sys{cfg};
    auto gpu =
        sys.spawn<caf::detached>(budgeted_gpu_actor, std::static_pointer_cast<model::engine>(engine), 0u, step_tokens);
    std::vector<answer> out(grants.size() + 1);
    {
      caf::scoped_actor self{sys};
      const auto timeout = std::chrono::seconds(20);
      using handle = decltype(self->request(gpu, timeout, first, ws[0]));
      std::vector<handle> pending;
      pending.push_back(self->request(gpu, timeout, first, ws[0]));
      // The first grant is in the engine before the others are sent.
      for (int i = 0; i < 2000; ++i) {
        {
          std::lock_guard<std::mutex> lock(engine->mu);
          if (!engine->calls.empty()) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      for (auto& [f, r] : grants) pending.push_back(self->request(gpu, timeout, f, ws[r]));
      open.set_value();
      for (std::size_t i = 0; i < pending.size(); ++i) test::receive_answer(sys, pending[i], out[i]);
    }
    caf::anon_send_exit(gpu, caf::exit_reason::user_shutdown);
    return out;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(grants_that_arrive_together_run_as_one_forward) {
  fixture fx;
  // While request 1's first grant runs: request 2's chunks 0-1 and request
  // 3's chunk 0 (layers [0, 2)), then request 1's chunk 1 (all layers).
  auto answers = fx.run(
      grant_frame(1, 1, 0, 1, 0, 4),
      {{grant_frame(2, 2, 0, 2, 0, 2), 1}, {grant_frame(3, 3, 0, 1, 0, 2), 2}, {grant_frame(1, 4, 1, 2, 0, 4), 0}});
  for (auto& a : answers) BOOST_TEST(a.ok, a.error);
  std::lock_guard<std::mutex> lock(fx.engine->mu);
  BOOST_TEST_REQUIRE(fx.engine->calls.size() == 3u);
  BOOST_TEST(fx.engine->calls[0].size() == 1u);
  // Requests 2 and 3 in one forward: 3 chunks, request 2's in position order.
  BOOST_TEST_REQUIRE(fx.engine->calls[1].size() == 3u);
  BOOST_TEST(fx.engine->calls[1][0].out.data == fx.ws[1]->block(0).data);
  BOOST_TEST(fx.engine->calls[1][1].out.data == fx.ws[1]->block(1).data);
  BOOST_TEST(fx.engine->calls[1][2].out.data == fx.ws[2]->block(0).data);
  // Another layer range does not join them.
  BOOST_TEST(fx.engine->calls[2].size() == 1u);
  // The group's time is shared by cells: request 2's grant (4 cells) ends
  // where request 3's (2 cells) starts, and takes twice as long.
  const auto& d2 = answers[1].done;
  const auto& d3 = answers[2].done;
  BOOST_TEST(d2.finished_ns == d3.started_ns);
  const double t2 = double(d2.finished_ns - d2.started_ns), t3 = double(d3.finished_ns - d3.started_ns);
  BOOST_TEST(t3 > 0);
  BOOST_TEST(t2 == 2 * t3, boost::test_tools::tolerance(0.01));
  BOOST_TEST(answers[3].done.started_ns >= d3.finished_ns);
}

BOOST_AUTO_TEST_CASE(a_refused_grant_fails_alone) {
  fixture fx;
  fx.engine->poisoned = fx.ws[2]->block(0).data;
  auto answers =
      fx.run(grant_frame(1, 1, 0, 1, 0, 4), {{grant_frame(3, 2, 0, 1, 0, 2), 2}, {grant_frame(2, 3, 0, 2, 0, 2), 1}});
  BOOST_TEST(answers[0].ok);
  BOOST_TEST(!answers[1].ok);
  BOOST_TEST(answers[1].error.find("poisoned") != std::string::npos, answers[1].error);
  BOOST_TEST(answers[2].ok, answers[2].error);
  BOOST_TEST(answers[2].done.request_id == 2u);
}

BOOST_AUTO_TEST_CASE(with_nothing_decoding_no_budget_applies) {
  fixture fx;
  // A budget of one chunk, and three chunks of grants arrive together: with
  // no request decoding they still run as one forward.
  auto answers = fx.run(grant_frame(1, 1, 0, 1, 0, 4),
                        {{grant_frame(2, 2, 0, 2, 0, 4), 1}, {grant_frame(3, 3, 0, 1, 0, 4), 2}}, chunk_tokens);
  for (auto& a : answers) BOOST_TEST(a.ok, a.error);
  std::lock_guard<std::mutex> lock(fx.engine->mu);
  BOOST_TEST_REQUIRE(fx.engine->calls.size() == 2u);
  BOOST_TEST(fx.engine->calls[1].size() == 3u);
}

namespace {

constexpr int layers = 4;  // tiny-test

// Request 1 (ws[0]) restored outside the actor, its first token sampled
// (as first_atom does); the engine's gate still closed for the next call.
void restore_directly(fixture& fx) {
  std::vector<model::chunk_job> jobs;
  add_chunk_jobs(*fx.ws[0], msg::cell_range{0, 4, 0, layers}, jobs);
  fx.engine->first_call = false;
  fx.engine->run_fused(jobs);
  fx.engine->synchronize();
  fx.engine->first_call = true;
  fx.engine->calls.clear();
  std::vector<float> logits;
  fx.engine->logits(fx.ws[0]->hidden(3), logits);
  fx.ws[0]->generated().push_back(model::sample(logits, model::sampling{}, 0));
}

struct decode_run {
  std::vector<std::int32_t> tokens;
  std::vector<answer> answers;
};

// Request 1 decodes `n` tokens; its first step holds the engine until
// `grants` (for ws[1], ws[2]) are in the mailbox.
decode_run decode_with(fixture& fx, int n, const std::vector<std::pair<msg::frame, int>>& grants, int step_tokens) {
  restore_directly(fx);
  decode_run out;
  system_config cfg;
  caf::actor_system sys{cfg};
  auto gpu =
      sys.spawn<caf::detached>(budgeted_gpu_actor, std::static_pointer_cast<model::engine>(fx.engine), 0u, step_tokens);
  {
    caf::scoped_actor self{sys};
    auto tokens = std::make_shared<std::vector<std::int32_t>>();
    decode_hooks hooks;
    hooks.on_token = [tokens](std::int32_t t) { tokens->push_back(t); };
    self->send(gpu, decode_atom::value, fx.ws[0], n, model::sampling{}, std::vector<std::int32_t>{},
               caf::actor_cast<caf::actor>(self), hooks);
    for (int i = 0; i < 2000; ++i) {
      {
        std::lock_guard<std::mutex> lock(fx.engine->mu);
        if (!fx.engine->calls.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const auto timeout = std::chrono::seconds(20);
    using handle = decltype(self->request(gpu, timeout, msg::frame{}, fx.ws[0]));
    std::vector<handle> pending;
    for (auto& [f, r] : grants) pending.push_back(self->request(gpu, timeout, f, fx.ws[r]));
    fx.open.set_value();
    out.answers.resize(grants.size());
    for (std::size_t i = 0; i < pending.size(); ++i) test::receive_answer(sys, pending[i], out.answers[i]);
    bool done = false;
    self->receive([&](done_atom, std::uint64_t id) { done = id == 1; }, caf::after(std::chrono::seconds(20)) >> [] {});
    BOOST_TEST(done);
    out.tokens = *tokens;
  }
  caf::anon_send_exit(gpu, caf::exit_reason::user_shutdown);
  return out;
}

std::vector<std::uint8_t> kv_bytes(workspace& ws) {
  std::vector<std::uint8_t> out;
  for (int c = 0; c < ws.num_chunks(); ++c) {
    auto& b = ws.block(c);
    auto* p = static_cast<const std::uint8_t*>(b.data);
    out.insert(out.end(), p, p + b.shape.bytes());
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_decode_step_waits_for_at_most_the_budget) {
  // Request 2: all layers of chunks 0-3 in one grant (64 tokens); request
  // 3: layers [0, 2) of chunks 0-3 (32 token-equivalents), then [2, 4).
  const std::vector<std::pair<msg::frame, int>> grants = {{grant_frame(2, 1, 0, 4, 0, layers), 1},
                                                          {grant_frame(3, 2, 0, 4, 0, 2), 2},
                                                          {grant_frame(3, 3, 0, 4, 2, layers), 2}};
  const int budget = 2 * chunk_tokens + chunk_tokens / 2;  // two full-depth chunks, not three
  fixture fx;
  auto run = decode_with(fx, 24, grants, budget);
  for (auto& a : run.answers) BOOST_TEST(a.ok, a.error);
  // The split grant answers once, for all its cells.
  BOOST_TEST(run.answers[0].done.cells.chunk_begin == 0u);
  BOOST_TEST(run.answers[0].done.cells.chunk_end == 4u);
  BOOST_TEST(run.answers[0].done.started_ns < run.answers[0].done.finished_ns);
  {
    std::lock_guard<std::mutex> lock(fx.engine->mu);
    // Calls in order: decode steps (one row a job) and compute groups in
    // between; before each step at most the budget of compute.
    double before_step = 0;
    int steps = 0, steps_with_compute = 0;
    for (auto& call : fx.engine->calls) {
      if (call.front().count == 1) {
        BOOST_TEST(before_step <= budget);
        steps_with_compute += before_step > 0;
        before_step = 0;
        ++steps;
        continue;
      }
      for (auto& j : call) before_step += double(j.count) * (j.layer_end - j.layer_begin) / layers;
    }
    BOOST_TEST(steps == 24);
    // 128 token-equivalents, at most 40 a step: 32, 40, 40 and 16.
    BOOST_TEST(steps_with_compute == 4);
  }
  // The same tokens as a decode alone, the same KV as the grants alone.
  fixture alone;
  auto ref = decode_with(alone, 24, {}, budget);
  BOOST_TEST(ref.tokens.size() == 24u);
  BOOST_TEST(run.tokens == ref.tokens, boost::test_tools::per_element());
  fixture unbudgeted;
  unbudgeted.engine->first_call = false;
  std::vector<model::chunk_job> jobs;
  for (auto [w, cells] : {std::pair{1, msg::cell_range{0, 4, 0, layers}}, std::pair{2, msg::cell_range{0, 4, 0, 2}},
                          std::pair{2, msg::cell_range{0, 4, 2, layers}}}) {
    jobs.clear();
    add_chunk_jobs(*unbudgeted.ws[w], cells, jobs);
    unbudgeted.engine->run_fused(jobs);
  }
  unbudgeted.engine->synchronize();
  BOOST_TEST((kv_bytes(*fx.ws[1]) == kv_bytes(*unbudgeted.ws[1])));
  BOOST_TEST((kv_bytes(*fx.ws[2]) == kv_bytes(*unbudgeted.ws[2])));
}

// Past gpu_fuse_rows_free rows, a forward takes at most half the rows that
// arrived together (up to gpu_fuse_rows): two grants of 1024 rows stay two
// forwards, four run as two forwards of 2048.
BOOST_AUTO_TEST_CASE(past_1024_rows_a_forward_takes_half_of_what_arrived) {
  for (std::uint32_t grants : {2u, 4u}) {
    fixture fx;
    constexpr std::uint32_t chunk = 256, per_grant = gpu_fuse_rows_free / chunk;
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(grants * per_grant * chunk));
    for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>((i * 5 + 1) % 512);
    fx.ws.push_back(std::make_shared<workspace>(4, std::move(tokens), chunk, *fx.engine));
    std::vector<std::pair<msg::frame, int>> frames;
    for (std::uint32_t g = 0; g < grants; ++g)
      frames.push_back({grant_frame(4, 2 + g, g * per_grant, (g + 1) * per_grant, 0, 1), 3});
    auto answers = fx.run(grant_frame(1, 1, 0, 1, 0, 4), frames);
    for (auto& a : answers) BOOST_TEST(a.ok, a.error);
    std::lock_guard<std::mutex> lock(fx.engine->mu);
    BOOST_TEST_INFO(grants << " grants of " << gpu_fuse_rows_free << " rows");
    BOOST_TEST_REQUIRE(fx.engine->calls.size() == 3u);
    BOOST_TEST(fx.engine->calls[1].size() == std::size_t(grants / 2 * per_grant));
    BOOST_TEST(fx.engine->calls[2].size() == std::size_t(grants / 2 * per_grant));
  }
}

// Pipeline stages split across processes: a `kvflow node --stage-layers`
// serves one layer range of tiny-test (its CPU engine holding only those
// layers) and a client runtime uses it as one of its 2, 3 or 4 stages.
// Every policy restores the KV and first token of one engine's full
// prefill; a stage process killed mid-request fails the request cleanly
// within a deadline, never hangs.

#define BOOST_TEST_MODULE actors.remote_stage
#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <chrono>
#include <future>
#include <random>

#include <caf/all.hpp>

#include "actors/frame_type.hpp"
#include "actors/runtime.hpp"
#include "actors/stage_host.hpp"
#include "actors/system_config.hpp"
#include "apps/node_cluster.hpp"
#include "devices/net/transport.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/kv_layout.hpp"
#include "messages/codec.hpp"
#include "messages/error.hpp"
#include "tests/actors/restore_reference.hpp"

using namespace kvflow;
using namespace std::chrono_literals;

namespace {

// A request whose stage process dies under it ends within this: the
// connection's close reaches the client at once on loopback; the
// middleman's connection timeout (5 s) bounds a silent peer.
constexpr auto kill_deadline = 10s;

std::string kvflow_exe() {
  auto& args = boost::unit_test::framework::master_test_suite();
  BOOST_REQUIRE_MESSAGE(args.argc >= 2, "pass the kvflow binary after --");
  return args.argv[1];
}

// One node process serving layers [begin, end) of tiny-test (seed 7).
std::unique_ptr<app::node_cluster> stage_node(int begin, int end) {
  app::node_cluster_options o;
  o.kvflow_exe = kvflow_exe();
  o.use_netns = false;
  o.node_args = {"--stage-preset",  "tiny-test",
                 "--stage-seed",    "7",
                 "--stage-layers",  std::to_string(begin) + ":" + std::to_string(end),
                 "--stage-threads", "1"};
  return std::make_unique<app::node_cluster>(o);
}

// A CPU runtime of tiny-test split at `splits`, stage `remote` served by `node`.
runtime_options staged(const temp_dir& dir, std::vector<int> splits, int remote, const app::node_cluster& node) {
  auto o = cpu_options("tiny-test", 16, dir, 0.05);
  o.seed = 7;
  o.threads = 1;
  o.stage_splits = std::move(splits);
  o.stage_nodes.assign(o.stage_splits.size() + 1, "");
  o.stage_nodes[static_cast<std::size_t>(remote)] = node.stage_members().at(0);
  return o;
}

}  // namespace

// The remote stage last, first, in the middle of three and one of four:
// every policy restores the full prefill's KV and first token, and decoding
// goes on from the stages' KV as without stages.
BOOST_AUTO_TEST_CASE(a_stage_in_another_process_restores_the_full_prefill) {
  struct layout {
    std::vector<int> splits;
    int remote;
  };
  std::mt19937 rng(21);
  for (const auto& l : {layout{{2}, 1}, layout{{2}, 0}, layout{{1, 3}, 1}, layout{{1, 2, 3}, 2}}) {
    std::vector<int> bounds{0};
    bounds.insert(bounds.end(), l.splits.begin(), l.splits.end());
    bounds.push_back(4);
    const auto r = static_cast<std::size_t>(l.remote);
    auto node = stage_node(bounds[r], bounds[r + 1]);
    temp_dir dir("remote-stage" + std::to_string(l.splits.size()) + "-" + std::to_string(l.remote));
    runtime rt(staged(dir, l.splits, l.remote, *node));
    BOOST_TEST_INFO(rt.describe());
    BOOST_TEST(rt.describe().find(node->stage_members()[0]) != std::string::npos);
    for (auto& policy : all_policies) {
      auto tokens = random_tokens(rng, std::uniform_int_distribution<int>(4 * 16, 9 * 16)(rng), 512);
      auto prefix = std::uniform_int_distribution<std::size_t>(2 * 16, tokens.size())(rng);
      auto ref = full_prefill("tiny-test", 7, tokens, 16);
      BOOST_TEST_CONTEXT(l.splits.size() + 1 << " stages, stage " << l.remote << " remote") {
        auto rep = restore_and_check(rt, tokens, prefix, policy, ref);
        BOOST_CHECK_GT(rep.cached_chunks, 0u);
        // Every chunk crosses every stage boundary, the remote ones included.
        if (policy == "compute_only")
          BOOST_CHECK_EQUAL(rep.stage_handoffs, rep.chunks * static_cast<std::uint32_t>(l.splits.size()));
      }
    }
    temp_dir plain_dir("remote-stage-plain");
    auto po = cpu_options("tiny-test", 16, plain_dir, 0.05);
    po.seed = 7;
    po.threads = 1;
    runtime plain(po);
    auto tokens = random_tokens(rng, 5 * 16 + 3, 512);
    submit_options so;
    so.max_new_tokens = 6;
    so.store = false;
    BOOST_TEST(rt.submit(tokens, so).get().tokens == plain.submit(tokens, so).get().tokens);
  }
}

// The stage's process is killed (SIGKILL) while a request runs: the request
// ends within the deadline, right (it finished first) or with peer_down,
// and later requests fail at once rather than wait.
BOOST_AUTO_TEST_CASE(a_killed_stage_process_fails_requests_within_the_deadline) {
  std::mt19937 rng(22);
  auto node = stage_node(2, 4);
  temp_dir dir("remote-stage-kill");
  runtime rt(staged(dir, {2}, 1, *node));
  auto long_prompt = random_tokens(rng, 60 * 16, 512);
  auto during = rt.submit(long_prompt, checked_restore("two_pointer"));
  node->signal(0, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  BOOST_REQUIRE_MESSAGE(during.wait_for(kill_deadline) == std::future_status::ready,
                        "the request did not end within the deadline");
  try {
    auto r = during.get();
    BOOST_CHECK_EQUAL(r.kv_sha256, full_prefill("tiny-test", 7, long_prompt, 16).kv_sha256);
  } catch (const error& e) {
    BOOST_TEST_MESSAGE("failed after the kill: " << e.what());
    BOOST_CHECK(e.code() == errc::peer_down);
  }
  auto after = rt.submit(random_tokens(rng, 4 * 16, 512), checked_restore("two_pointer"));
  BOOST_REQUIRE(after.wait_for(kill_deadline) == std::future_status::ready);
  BOOST_CHECK_THROW(after.get(), error);
  BOOST_TEST_MESSAGE("ended " << std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count()
                              << " s after the kill");
}

// A node that serves other layers than the stage needs, or another model,
// is refused when the runtime starts; so is a stage list of the wrong size.
BOOST_AUTO_TEST_CASE(a_stage_node_of_other_layers_or_model_is_refused) {
  auto node = stage_node(2, 4);
  temp_dir dir("remote-stage-bad");
  BOOST_CHECK_THROW(runtime(staged(dir, {1, 3}, 2, *node)), error);  // stage 2 is [3, 4)
  auto o = staged(dir, {2}, 1, *node);
  o.seed = 8;  // other weights
  BOOST_CHECK_THROW(runtime{o}, error);
  o = staged(dir, {2}, 1, *node);
  o.stage_nodes.push_back("");
  BOOST_CHECK_THROW(runtime{o}, error);
  o = staged(dir, {2}, 1, *node);
  o.stage_nodes[1] = "127.0.0.1:1";  // nobody there
  BOOST_CHECK_THROW(runtime{o}, error);
}

// The host checks what a peer sends: bytes that differ from their
// announcement, cells outside its layers or without a session are refused
// with an error (never computed on); a refused store drops the session.
BOOST_AUTO_TEST_CASE(the_stage_host_refuses_bytes_that_differ_from_their_announcement) {
  system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<model::engine> eng =
      model::make_cpu_engine(model::random_weights(model::preset("tiny-test"), 7), 1, {2, 4});
  auto host = sys.spawn<caf::detached>(stage_host, eng);
  caf::scoped_actor self{sys};
  bool failed = false;
  auto on_error = [&](caf::error&) { failed = true; };
  auto refused_stage = [&](const msg::frame& g, const msg::frame& t, const msg::bulk& b) {
    failed = false;
    self->request(host, 10s, stage_atom::value, g, t, b)
        .receive([](const msg::frame&, const msg::frame&, const msg::bulk&) {}, on_error);
    return failed;
  };
  auto refused_open = [&](const msg::frame& reg, const msg::frame& sub) {
    failed = false;
    self->request(host, 10s, open_atom::value, reg, sub).receive([](const msg::frame&) {}, on_error);
    return failed;
  };
  auto refused_store = [&](const msg::frame& cells, const msg::frame& t, const msg::bulk& b) {
    failed = false;
    self->request(host, 10s, store_atom::value, cells, t, b).receive([](bool) {}, on_error);
    return failed;
  };
  std::mt19937 rng(23);
  const auto tokens = random_tokens(rng, 2 * 16, 512);
  msg::register_request reg;
  reg.request_id = 9;
  reg.chunk_tokens = 16;
  reg.num_chunks = 2;
  reg.num_layers = 4;
  msg::submit sub;
  sub.request_id = 9;
  sub.tokens = tokens;
  msg::grant g;
  g.request_id = 9;
  g.grant_id = 1;
  g.cells = {0, 1, 0, 4};
  // Chunk 0's input hidden state at layer 2: [16][64] f32.
  msg::bulk hidden;
  hidden.bytes.assign(16 * 64 * sizeof(float), 0);
  auto announce = [](const msg::bulk& b) {
    msg::transfer t;
    t.bytes = b.bytes.size();
    t.checksum = devices::net::checksum(b.bytes.data(), b.bytes.size());
    return msg::encode(t);
  };
  BOOST_TEST(refused_stage(msg::encode(g), announce(hidden), hidden));  // no session yet
  reg.num_layers = 5;
  BOOST_TEST(refused_open(msg::encode(reg), msg::encode(sub)));  // another model
  reg.num_layers = 4;
  BOOST_TEST(!refused_open(msg::encode(reg), msg::encode(sub)));
  auto bad_sum = msg::decode(announce(hidden));
  auto t = std::get<msg::transfer>(*bad_sum);
  t.checksum ^= 1;
  BOOST_TEST(refused_stage(msg::encode(g), msg::encode(t), hidden));
  msg::bulk short_bulk{std::vector<std::uint8_t>(hidden.bytes.begin(), hidden.bytes.end() - 4)};
  BOOST_TEST(refused_stage(msg::encode(g), announce(short_bulk), short_bulk));
  msg::grant above = g;
  above.cells = {0, 1, 0, 2};  // layers the host does not hold
  BOOST_TEST(refused_stage(msg::encode(above), announce(hidden), hidden));
  // As announced: computed, answered with the part's KV (layers 2 and 3) and no hidden state (last stage).
  bool ok = false;
  self->request(host, 10s, stage_atom::value, msg::encode(g), announce(hidden), hidden)
      .receive(
          [&](const msg::frame& done, const msg::frame& tf, const msg::bulk& out) {
            auto d = std::get<msg::cell_done>(*msg::decode(done));
            BOOST_TEST(d.cells.layer_begin == 2u);
            BOOST_TEST(d.cells.layer_end == 4u);
            BOOST_TEST(out.bytes.size() == model::kv_shape_of(eng->cfg(), 16, eng->kv_type()).span_bytes(2, 4));
            BOOST_TEST(std::get<msg::transfer>(*msg::decode(tf)).checksum ==
                       devices::net::checksum(out.bytes.data(), out.bytes.size()));
            ok = true;
          },
          [&](caf::error& e) { BOOST_TEST_MESSAGE("refused: " << sys.render(e)); });
  BOOST_TEST(ok);
  // A store of cells outside the stage is refused and drops the session.
  msg::grant store = g;
  store.act = msg::action::load;
  store.cells = {0, 1, 1, 3};
  msg::bulk kv;
  kv.bytes.assign(model::kv_shape_of(eng->cfg(), 16, eng->kv_type()).span_bytes(1, 3), 0);
  BOOST_TEST(refused_store(msg::encode(store), announce(kv), kv));
  g.cells = {1, 2, 0, 4};
  BOOST_TEST(refused_stage(msg::encode(g), announce(hidden), hidden));
  caf::anon_send_exit(host, caf::exit_reason::user_shutdown);
}

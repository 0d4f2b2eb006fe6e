#define BOOST_TEST_MODULE actors.tier_actor
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/frame_type.hpp"
#include "actors/system_config.hpp"
#include "actors/tier_actor.hpp"
#include "actors/workspace.hpp"
#include "devices/chunk_store.hpp"
#include "devices/keys.hpp"
#include "devices/rate_limiter.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/weights.hpp"
#include "messages/codec.hpp"

using namespace kvflow;

namespace {

constexpr int chunk_tokens = 16;
constexpr int chunks = 8;
// Link time of one chunk on the paced disk: long against this machine's
// checksums, copies and message hops, short enough for a unit test.
constexpr double chunk_link_s = 0.05;

// A disk tier of `chunks` random chunks of tiny-test, paced so that a chunk
// takes chunk_link_s, and a workspace whose keys are those chunks.
struct fixture {
  std::string dir;
  std::shared_ptr<model::engine> engine;
  model::kv_shape shape;
  std::shared_ptr<devices::chunk_store> store;
  std::vector<std::vector<std::uint8_t>> written;
  workspace_ptr ws;

  fixture() {
    dir = (std::filesystem::temp_directory_path() / ("kvflow-test-tier-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir);
    engine = model::make_cpu_engine(model::random_weights(model::preset("tiny-test"), 3));
    shape = model::kv_shape::of(engine->cfg(), chunk_tokens, engine->kv_type());
    devices::chunk_store_options o;
    o.host_capacity_bytes = shape.bytes();
    o.disk.directory = dir;
    o.disk.shape = shape;
    o.disk.read_limiter = std::make_shared<devices::rate_limiter>(shape.bytes() / chunk_link_s);
    store = std::make_shared<devices::chunk_store>(o);
    std::mt19937 rng(7);
    std::vector<std::int32_t> tokens(chunks * chunk_tokens);
    for (auto& t : tokens) t = static_cast<std::int32_t>(rng() % 512);
    ws = std::make_shared<workspace>(1, tokens, chunk_tokens, *engine);
    for (int c = 0; c < chunks; ++c) {
      msg::chunk_key key{};
      for (auto& b : key) b = static_cast<std::uint8_t>(rng());
      std::vector<std::uint8_t> bytes(shape.bytes());
      for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
      store->disk().write(key, {0, static_cast<std::uint32_t>(shape.layers)}, bytes.data());
      ws->keys().push_back(key);
      written.push_back(std::move(bytes));
    }
  }
  ~fixture() {
    ws.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  msg::frame grant_of(std::uint32_t c) const {
    msg::grant g;
    g.request_id = 1;
    g.grant_id = c;
    g.act = msg::action::load;
    g.source = msg::tier::disk;
    g.cells = {c, c + 1, 0, static_cast<std::uint32_t>(shape.layers)};
    return msg::encode(g);
  }
};

struct answer {
  std::uint32_t chunk;
  bool ok = false;
  msg::cell_done done;
  std::string error;
};

// Sends a grant for each of `which` at once and collects every answer.
std::vector<answer> load_all(fixture& fx, const std::vector<std::uint32_t>& which) {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto tier = sys.spawn<caf::detached>(tier_actor, fx.store, msg::tier::disk, std::uint64_t{2 * fx.shape.bytes()});
  std::vector<answer> out(which.size());
  {
    caf::scoped_actor self{sys};
    // Every request goes out before the first answer is awaited.
    using handle = decltype(self->request(tier, caf::infinite, fx.grant_of(0), fx.ws));
    std::vector<handle> pending;
    for (auto c : which) pending.push_back(self->request(tier, caf::infinite, fx.grant_of(c), fx.ws));
    for (std::size_t i = 0; i < which.size(); ++i) {
      out[i].chunk = which[i];
      pending[i].receive(
          [&](const msg::frame& f) {
            auto decoded = msg::decode(f);
            if (decoded && std::holds_alternative<msg::cell_done>(*decoded)) {
              out[i].ok = true;
              out[i].done = std::get<msg::cell_done>(*decoded);
            } else {
              out[i].error = "not a cellDone frame";
            }
          },
          [&](caf::error& e) { out[i].error = sys.render(e); });
    }
  }
  caf::anon_send_exit(tier, caf::exit_reason::user_shutdown);
  return out;
}

}  // namespace

// Grants queued at the disk tier all land, with the right bytes, and each
// reports only its own share of the link: the tier submits the next grant's
// reads while earlier ones are in flight, and the cost model learns the
// link's rate from these times, so overlapping reads must not be counted
// twice (nor the link idle between grants).
BOOST_AUTO_TEST_CASE(queued_disk_grants_share_the_link_without_counting_it_twice) {
  fixture fx;
  std::vector<std::uint32_t> all;
  for (std::uint32_t c = 0; c < chunks; ++c) all.push_back(c);
  auto answers = load_all(fx, all);
  std::vector<msg::cell_done> done;
  for (auto& a : answers) {
    BOOST_TEST_CONTEXT("chunk " << a.chunk) {
      BOOST_REQUIRE_MESSAGE(a.ok, a.error);
      BOOST_CHECK_EQUAL(a.done.bytes, fx.shape.bytes());
      BOOST_CHECK(
          std::memcmp(fx.ws->block(static_cast<int>(a.chunk)).data, fx.written[a.chunk].data(), fx.shape.bytes()) == 0);
      done.push_back(a.done);
    }
  }
  std::sort(done.begin(), done.end(), [](auto& a, auto& b) { return a.started_ns < b.started_ns; });
  double busy_s = 0;
  for (std::size_t i = 0; i < done.size(); ++i) {
    double s = (done[i].finished_ns - done[i].started_ns) * 1e-9;
    busy_s += s;
    BOOST_TEST_CONTEXT("grant " << i << ": " << s * 1e3 << " ms") {
      if (i > 0) BOOST_CHECK_GE(done[i].started_ns, done[i - 1].finished_ns);
      // About the pace (less a late wake-up of the grant before); four reads
      // in flight counted from their common start would show up to four times it.
      BOOST_CHECK_GE(s, 0.5 * chunk_link_s);
      BOOST_CHECK_LE(s, 1.8 * chunk_link_s);
    }
  }
  double wall_s = (done.back().finished_ns - done.front().started_ns) * 1e-9;
  BOOST_CHECK_LE(wall_s, chunks * chunk_link_s * 1.4);
  BOOST_CHECK_CLOSE(busy_s, wall_s, 1.0);
}

// A chunk whose file vanished after the lookup fails its own grant, naming
// it; the grants queued beside it still land.
BOOST_AUTO_TEST_CASE(a_lost_chunk_fails_only_its_grant) {
  fixture fx;
  auto lost = devices::key_hex(fx.ws->keys()[3]);
  std::size_t removed = 0;
  for (auto& f : std::filesystem::directory_iterator(fx.dir))
    if (f.path().filename().string().find(lost) != std::string::npos) removed += std::filesystem::remove(f.path());
  BOOST_REQUIRE_EQUAL(removed, 1u);
  auto answers = load_all(fx, {2, 3, 4});
  BOOST_CHECK(answers[0].ok);
  BOOST_CHECK(!answers[1].ok);
  BOOST_CHECK_MESSAGE(answers[1].error.find("chunk 3") != std::string::npos, answers[1].error);
  BOOST_CHECK(answers[2].ok);
  BOOST_CHECK(std::memcmp(fx.ws->block(4).data, fx.written[4].data(), fx.shape.bytes()) == 0);
}

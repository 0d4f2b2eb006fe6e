#define BOOST_TEST_MODULE actors.tier_actor
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "actors/frame_type.hpp"
#include "actors/system_config.hpp"
#include "actors/tier_actor.hpp"
#include "actors/workspace.hpp"
#include "devices/chunk_store.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "devices/keys.hpp"
#include "devices/rate_limiter.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/weights.hpp"
#include "messages/codec.hpp"
#include "tests/actors/grant_answer.hpp"

using namespace kvflow;

namespace {

constexpr int chunk_tokens = 16;
constexpr int chunks = 8;
// Link time of one chunk on the paced disk: long against this machine's
// checksums, copies and message hops, short enough for a unit test.
constexpr double chunk_link_s = 0.05;

// The CPU engine, but each copy to the backend takes `copy_s` longer: a
// slow device copy, to see whether the link waits for it.
class slow_copy_engine final : public model::engine {
 public:
  slow_copy_engine(std::shared_ptr<model::engine> inner, double copy_s) : inner_(std::move(inner)), copy_s_(copy_s) {}
  const model::config& cfg() const override { return inner_->cfg(); }
  model::dtype kv_type() const override { return inner_->kv_type(); }
  const std::array<std::uint8_t, 32>& fingerprint() const override { return inner_->fingerprint(); }
  void* allocate(std::size_t bytes) override { return inner_->allocate(bytes); }
  void release(void* p) override { inner_->release(p); }
  void to_backend(void* dst, const void* src, std::size_t bytes) override {
    std::this_thread::sleep_for(std::chrono::duration<double>(copy_s_));
    inner_->to_backend(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, std::size_t bytes) override { inner_->to_host(dst, src, bytes); }
  void run(const model::chunk_job& job) override { inner_->run(job); }
  void synchronize() override { inner_->synchronize(); }
  void when_done(std::function<void()> fn) override { inner_->when_done(std::move(fn)); }
  void logits(const model::hidden_state& h, std::vector<float>& out) override { inner_->logits(h, out); }

 private:
  std::shared_ptr<model::engine> inner_;
  double copy_s_;
};

// A disk tier of `chunks` random chunks of tiny-test, paced so that a chunk
// takes chunk_link_s, and a workspace whose keys are those chunks (its
// copies to the backend slowed by `copy_s`).
struct fixture {
  std::string dir;
  std::shared_ptr<model::engine> engine;
  model::kv_shape shape;
  std::shared_ptr<devices::chunk_store> store;
  std::vector<std::vector<std::uint8_t>> written;
  workspace_ptr ws;

  explicit fixture(double copy_s = 0) {
    dir = (std::filesystem::temp_directory_path() / ("kvflow-test-tier-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir);
    engine = model::make_cpu_engine(model::random_weights(model::preset("tiny-test"), 3));
    if (copy_s > 0) engine = std::make_shared<slow_copy_engine>(engine, copy_s);
    shape = model::kv_shape_of(engine->cfg(), chunk_tokens, engine->kv_type());
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

using answer = test::grant_answer;

// Sends a grant for each of `which` at once and collects every answer (an
// answer missing after 10 s is an error); with `exit_after_s`, tells the
// tier to exit that long after the grants went out.
std::vector<answer> load_all(fixture& fx, const std::vector<std::uint32_t>& which, double exit_after_s = -1) {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto tier = sys.spawn<caf::detached>(disk_tier_actor, fx.store, std::uint64_t{2 * fx.shape.bytes()});
  std::vector<answer> out(which.size());
  {
    caf::scoped_actor self{sys};
    // Every request goes out before the first answer is awaited.
    const auto timeout = std::chrono::seconds(10);
    using handle = decltype(self->request(tier, timeout, fx.grant_of(0), fx.ws));
    std::vector<handle> pending;
    for (auto c : which) pending.push_back(self->request(tier, timeout, fx.grant_of(c), fx.ws));
    if (exit_after_s >= 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(exit_after_s));
      caf::anon_send_exit(tier, caf::exit_reason::user_shutdown);
    }
    for (std::size_t i = 0; i < which.size(); ++i) {
      out[i].chunk = which[i];
      test::receive_answer(sys, pending[i], out[i]);
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
    busy_s += (done[i].finished_ns - done[i].started_ns) * 1e-9;
    // Counted from their common arrival, queued grants would overlap.
    if (i > 0)
      BOOST_CHECK_MESSAGE(done[i].started_ns >= done[i - 1].finished_ns,
                          "grant " << i << " starts " << (done[i - 1].finished_ns - done[i].started_ns) / 1e6
                                   << " ms before the one before it landed");
  }
  // Each grant's own time can shift to its neighbour when a thread wakes
  // late; their mean is the link's time per chunk.
  BOOST_CHECK_GE(busy_s / chunks, 0.9 * chunk_link_s);
  BOOST_CHECK_LE(busy_s / chunks, 1.5 * chunk_link_s);
  double wall_s = (done.back().finished_ns - done.front().started_ns) * 1e-9;
  BOOST_CHECK_CLOSE(busy_s, wall_s, 1.0);
}

// The link does not wait for a grant's copy to the device: the next grant's
// reads are already queued. Waiting would take chunks x (link + copy).
BOOST_AUTO_TEST_CASE(a_slow_copy_does_not_idle_the_link) {
  const double copy_s = 0.04;
  fixture fx(copy_s);
  std::vector<std::uint32_t> all;
  for (std::uint32_t c = 0; c < chunks; ++c) all.push_back(c);
  const auto start = std::chrono::steady_clock::now();
  auto answers = load_all(fx, all);
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto& a : answers) BOOST_REQUIRE_MESSAGE(a.ok, "chunk " << a.chunk << ": " << a.error);
  const double pipelined = chunks * chunk_link_s + copy_s, serial = chunks * (chunk_link_s + copy_s);
  BOOST_TEST_MESSAGE("8 grants in " << wall_s << " s; pipelined " << pipelined << " s, serial " << serial << " s");
  BOOST_CHECK_LT(wall_s, (pipelined + serial) / 2);
}

// A tier told to exit with reads in flight answers every grant (those not
// landed with an error) instead of leaving its requests waiting, and the
// reads still in flight finish into buffers that are still theirs (ASan).
BOOST_AUTO_TEST_CASE(an_exit_answers_the_grants_still_reading) {
  fixture fx;
  std::vector<std::uint32_t> all;
  for (std::uint32_t c = 0; c < chunks; ++c) all.push_back(c);
  auto answers = load_all(fx, all, 2.5 * chunk_link_s);
  std::size_t landed = 0, stopped = 0;
  for (auto& a : answers) {
    if (a.ok) ++landed;
    if (a.error.find("disk tier stopped") != std::string::npos) ++stopped;
  }
  BOOST_TEST_MESSAGE(landed << " grants landed, " << stopped << " stopped");
  BOOST_CHECK_EQUAL(landed + stopped, static_cast<std::size_t>(chunks));
  BOOST_CHECK_GT(stopped, 0u);
  // The files are intact once every read has finished: a read into a freed
  // buffer would fail its checksum and remove the file.
  std::this_thread::sleep_for(std::chrono::duration<double>((chunks + 2) * chunk_link_s));
  for (std::uint32_t c = 0; c < chunks; ++c) BOOST_CHECK(fx.store->disk().contains(fx.ws->keys()[c]));
}

// Grants of any layer range read into the slab the tier page-locked when
// it started: no buffer is pinned (or freed: cudaFreeHost waits for the
// whole device) while loads run, and reads that find the slab full wait
// for room instead. Here the slab holds two chunks (a cap of one), less
// than the grants ask at once.
BOOST_AUTO_TEST_CASE(grants_of_any_size_read_into_the_slab_made_at_start) {
  fixture fx;
  const auto L = static_cast<std::uint32_t>(fx.shape.layers);
  BOOST_REQUIRE_GE(L, 4u);
  const std::vector<msg::cell_range> cells{{0, 3, 0, 1}, {3, 4, 0, 3}, {4, 5, 0, L}, {5, 8, 2, L}, {0, 3, 1, 2},
                                           {0, 2, 2, L}, {2, 3, 2, L}, {3, 4, 3, L}, {5, 8, 0, 2}};
  system_config cfg;
  caf::actor_system sys{cfg};
  auto tier = sys.spawn<caf::detached>(disk_tier_actor, fx.store, std::uint64_t{fx.shape.bytes()});
  auto grant = [&](std::uint32_t i) {
    msg::grant g;
    g.request_id = 1;
    g.grant_id = i;
    g.act = msg::action::load;
    g.source = msg::tier::disk;
    g.cells = cells[i];
    return msg::encode(g);
  };
  std::vector<answer> out(cells.size());
  std::int64_t pinned_before = 0;
  {
    caf::scoped_actor self{sys};
    const auto timeout = std::chrono::seconds(10);
    // The first grant alone: the tier has made its slab once it answers.
    auto first = self->request(tier, timeout, grant(0), fx.ws);
    test::receive_answer(sys, first, out[0]);
    pinned_before = devices::pinned_buffer::live_count();
    using handle = decltype(self->request(tier, timeout, grant(0), fx.ws));
    std::vector<handle> pending;
    for (std::uint32_t i = 1; i < cells.size(); ++i) pending.push_back(self->request(tier, timeout, grant(i), fx.ws));
    for (std::uint32_t i = 1; i < cells.size(); ++i) test::receive_answer(sys, pending[i - 1], out[i]);
  }
  BOOST_CHECK_EQUAL(devices::pinned_buffer::live_count(), pinned_before);
  for (std::uint32_t i = 0; i < cells.size(); ++i) {
    BOOST_TEST_CONTEXT("grant " << i) {
      BOOST_REQUIRE_MESSAGE(out[i].ok, out[i].error);
      const auto& r = cells[i];
      BOOST_CHECK_EQUAL(out[i].done.bytes,
                        (r.chunk_end - r.chunk_begin) *
                            fx.shape.span_bytes(static_cast<int>(r.layer_begin), static_cast<int>(r.layer_end)));
    }
  }
  // Every cell of every chunk was granted once: the blocks are the files.
  for (std::uint32_t c = 0; c < chunks; ++c)
    BOOST_CHECK_MESSAGE(
        std::memcmp(fx.ws->block(static_cast<int>(c)).data, fx.written[c].data(), fx.shape.bytes()) == 0,
        "chunk " << c);
  caf::anon_send_exit(tier, caf::exit_reason::user_shutdown);
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

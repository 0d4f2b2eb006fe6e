#define BOOST_TEST_MODULE actors.runtime_stream
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>

#include <unistd.h>

#include "actors/runtime.hpp"

// The runtime's serving hooks: per-token callbacks, cancellation, tenant
// salts, extra stop tokens and per-tier lookup counts (what `kvflow serve`
// builds on), on the CPU with the tiny-test preset.

using namespace kvflow;
using namespace std::chrono_literals;

namespace {

struct fixture {
  std::string dir = (std::filesystem::temp_directory_path() / ("kvflow-stream-" + std::to_string(::getpid()))).string();
  std::unique_ptr<runtime> rt;
  fixture() {
    runtime_options o;
    o.preset = "tiny-test";
    o.backend = "cpu";
    o.chunk_tokens = 16;
    o.host_tier_gb = 0.05;
    o.disk_dir = dir;
    rt = std::make_unique<runtime>(o);
  }
  ~fixture() {
    rt.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

std::vector<std::int32_t> prompt(int n, int salt = 0) {
  std::vector<std::int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 5) % 512;
  return t;
}

// Tokens passed to on_token, in order, with a lock (it runs on actor threads).
struct collected {
  std::mutex m;
  std::vector<std::int32_t> tokens;
  void operator()(std::int32_t t) {
    std::lock_guard<std::mutex> l(m);
    tokens.push_back(t);
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(on_token_sees_every_token_in_order, fixture) {
  auto seen = std::make_shared<collected>();
  submit_options so;
  so.max_new_tokens = 20;
  so.on_token = [seen](std::int32_t t) { (*seen)(t); };
  auto r = rt->submit(prompt(40), so).get();
  BOOST_TEST(seen->tokens == r.tokens);
  BOOST_TEST(r.tokens.size() == 20u);
  BOOST_TEST(r.finish_reason == "length");
}

BOOST_FIXTURE_TEST_CASE(cancel_stops_decoding_and_restoring, fixture) {
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  submit_options so;
  so.max_new_tokens = 2000;
  so.cancel = cancel;
  std::atomic<int> n{0};
  so.on_token = [&](std::int32_t) {
    if (++n == 5) cancel->store(true);
  };
  auto r = rt->submit(prompt(40), so).get();
  BOOST_TEST(r.finish_reason == "cancelled");
  BOOST_TEST(r.tokens.size() >= 5u);
  BOOST_TEST(r.tokens.size() < 50u);

  // Cancelled before it starts: the restore ends at its first finished
  // grant, which is at most 64 cells (the scheduler's cap) of these 160.
  submit_options early;
  early.cancel = std::make_shared<std::atomic<bool>>(true);
  auto e = rt->submit(prompt(640, 3), early).get();
  BOOST_TEST(e.finish_reason == "cancelled");
  BOOST_TEST(e.tokens.empty());
  BOOST_TEST(e.cells_computed < e.chunks * 4u);
}

BOOST_FIXTURE_TEST_CASE(tenants_never_share_cached_chunks, fixture) {
  submit_options a;
  a.max_new_tokens = 1;
  a.tenant_salt = "alice";
  auto p = prompt(64, 1);
  auto first = rt->submit(p, a).get();
  rt->flush();
  auto again = rt->submit(p, a).get();
  BOOST_TEST(first.cached_chunks == 0u);
  BOOST_TEST(again.cached_chunks == 3u);  // 4 chunks; the last is always computed
  BOOST_REQUIRE_EQUAL(again.tiers.size(), 2u);
  BOOST_TEST(again.tiers[0].tier == "host");
  BOOST_TEST(again.tiers[0].lookups == 4u);
  BOOST_TEST(again.tiers[0].hits == 4u);
  BOOST_TEST(again.tiers[0].bytes_loaded + again.tiers[1].bytes_loaded > 0u);
  BOOST_TEST(again.grants_load > 0u);
  auto b = a;
  b.tenant_salt = "bob";
  auto bob = rt->submit(p, b).get();
  BOOST_TEST(bob.cached_chunks == 0u);
  BOOST_TEST(bob.tiers[0].hits == 0u);
  BOOST_TEST(bob.tiers[1].hits == 0u);
  BOOST_TEST(bob.first_token == first.first_token);
}

BOOST_FIXTURE_TEST_CASE(extra_stop_tokens_end_the_reply, fixture) {
  submit_options so;
  so.max_new_tokens = 12;
  auto full = rt->submit(prompt(20, 2), so).get();
  BOOST_REQUIRE(full.tokens.size() == 12u);
  so.stop_token_ids = {full.tokens[3]};
  auto cut = rt->submit(prompt(20, 2), so).get();
  auto at = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[3]) - full.tokens.begin();
  BOOST_TEST(cut.tokens.size() == static_cast<std::size_t>(at + 1));
  BOOST_TEST(cut.finish_reason == "stop");
}

BOOST_FIXTURE_TEST_CASE(requests_decode_together, fixture) {
  // A decodes a long reply; B, with the same prompt, arrives while A is at
  // its 5th token. B's tokens must come while A is still decoding
  // (continuous batching), not after A's last one; and B finds A's prompt
  // chunks cached (stored at A's first token, not at its end).
  std::mutex m;
  std::vector<char> order;  // 'a' or 'b' per token, in arrival order
  auto started = std::make_shared<std::promise<void>>();
  submit_options a;
  a.max_new_tokens = 400;
  std::atomic<int> na{0};
  a.on_token = [&, started](std::int32_t) {
    {
      std::lock_guard<std::mutex> l(m);
      order.push_back('a');
    }
    if (++na == 5) started->set_value();
  };
  auto fa = rt->submit(prompt(40, 4), a);
  started->get_future().wait();
  rt->flush();
  submit_options b;
  b.max_new_tokens = 8;
  b.on_token = [&](std::int32_t) {
    std::lock_guard<std::mutex> l(m);
    order.push_back('b');
  };
  auto rb = rt->submit(prompt(40, 4), b).get();
  auto ra = fa.get();
  BOOST_TEST(rb.cached_chunks == 2u);
  BOOST_TEST(ra.tokens.size() == 400u);
  BOOST_TEST(rb.tokens.size() == 8u);
  // B decoded in the same forwards as A (one batch), yet greedy on the same
  // prompt it must reply exactly what A replied first: a row's result never
  // depends on the rows it is batched with.
  BOOST_REQUIRE_GE(ra.tokens.size(), rb.tokens.size());
  const std::vector<std::int32_t> a_head(ra.tokens.begin(), ra.tokens.begin() + rb.tokens.size());
  BOOST_TEST(rb.tokens == a_head, boost::test_tools::per_element());
  std::string s(order.begin(), order.end());
  BOOST_TEST(s.rfind('b') < s.rfind('a'), "B finished after A: " << s.substr(0, 80));
}

// The runtime's document path (non-prefix reuse) on the tiny random model:
// documents computed alone and stored on first sight, reused in a new order
// afterwards; recomputing every token gives the full prefill's KV and first
// token bit for bit; a prompt whose documents lie in a cached prefix
// restores through the prefix chain, bit-exactly, as before.
#define BOOST_TEST_MODULE actors.runtime_documents
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <random>

#include "actors/runtime.hpp"
#include "messages/error.hpp"
#include "tests/actors/document_prompt.hpp"

using namespace kvflow;

namespace {

constexpr int vocab = 512;  // tiny-test's vocabulary

std::vector<std::int32_t> random_tokens(int n, unsigned seed) { return test::random_tokens(n, seed, vocab); }

test::prompt stitch(const std::vector<std::vector<std::int32_t>>& docs, const std::vector<int>& order,
                    unsigned question) {
  return test::stitch(docs, order, question, vocab);
}

runtime_options tiny() {
  runtime_options o;
  o.preset = "tiny-test";
  o.backend = "cpu";
  o.threads = 2;
  o.chunk_tokens = 16;
  o.host_tier_gb = 0.01;
  return o;
}

using test::prompt;
using test::run;

}  // namespace

BOOST_AUTO_TEST_CASE(documents_are_stored_then_reused_in_a_new_order) {
  runtime rt(tiny());
  const std::vector<std::vector<std::int32_t>> docs{random_tokens(21, 11), random_tokens(30, 12),
                                                    random_tokens(17, 13)};
  const auto first = stitch(docs, {0, 1, 2}, 50);
  auto r = run(rt, first, true, 0.15);
  BOOST_TEST(r.documents_computed == 3u);
  BOOST_TEST(r.documents_reused == 0u);
  BOOST_TEST(r.tokens.size() == 4u);
  rt.flush();

  // The same documents in another order after the same system text: a prefix
  // chain miss beyond the system text, every document entry a hit.
  const auto again = stitch(docs, {2, 0, 1}, 51);
  auto reused = run(rt, again, true, 0.15, false);
  BOOST_TEST(reused.documents_reused == 3u);
  BOOST_TEST(reused.documents_computed == 0u);
  BOOST_TEST(reused.recompute_ratio == 0.15);
  BOOST_TEST(reused.document_tokens_recomputed == 10u);  // 15% of 68
  BOOST_TEST(reused.bytes_from_host > 0u);

  // Recomputing every document token is the full prefill, bit for bit.
  auto all = run(rt, again, true, 1.0, false);
  auto full = run(rt, again, false, -1, false);
  BOOST_TEST(all.documents_reused == 3u);
  BOOST_TEST(all.kv_sha256 == full.kv_sha256);
  BOOST_TEST(all.first_token == full.first_token);
  BOOST_TEST(all.tokens == full.tokens);

  // The adaptive ratio stays within [the quality floor, 1].
  auto adaptive = run(rt, again, true, -1, false);
  BOOST_TEST(adaptive.recompute_ratio >= 0.15);
  BOOST_TEST(adaptive.recompute_ratio <= 1.0);
}

BOOST_AUTO_TEST_CASE(a_prefix_hit_still_restores_bit_exactly) {
  runtime rt(tiny());
  const std::vector<std::vector<std::int32_t>> docs{random_tokens(32, 21), random_tokens(16, 22)};
  const auto p = stitch(docs, {0, 1}, 60);
  auto full = run(rt, p, false, -1, true);  // computes and stores the prefix chain
  rt.flush();
  auto hit = run(rt, p, true, 0.15, false);
  BOOST_TEST(hit.cached_chunks > 0u);
  BOOST_TEST(hit.documents_reused == 0u);  // both documents lie in the cached prefix
  BOOST_TEST(hit.documents_computed == 0u);
  BOOST_TEST(hit.kv_sha256 == full.kv_sha256);
  BOOST_TEST(hit.tokens == full.tokens);
}

BOOST_AUTO_TEST_CASE(bad_document_spans_are_refused) {
  runtime rt(tiny());
  prompt p = stitch({random_tokens(10, 31)}, {0}, 70);
  submit_options so;
  so.documents = {{5, 100}};
  BOOST_CHECK_THROW(rt.submit(p.tokens, so).get(), kvflow::error);
  so.documents = {{12, 3}, {10, 3}};
  BOOST_CHECK_THROW(rt.submit(p.tokens, so).get(), kvflow::error);
  so.documents = {{9, 10}};
  so.document_selection = "random";
  BOOST_CHECK_THROW(rt.submit(p.tokens, so).get(), kvflow::error);
}

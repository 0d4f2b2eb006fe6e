#define BOOST_TEST_MODULE kernels.model.weights
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>

#include "kernels/model/weights.hpp"
#include "messages/error.hpp"

using namespace kvflow::model;

BOOST_AUTO_TEST_CASE(random_weights_are_deterministic_and_shaped) {
  const config c = preset("tiny-test");
  weights a = random_weights(c, 5), b = random_weights(c, 5), other = random_weights(c, 6);
  check_shapes(a, "a");
  BOOST_TEST(a.embedding == b.embedding);
  BOOST_TEST(a.layers[3].w_down == b.layers[3].w_down);
  BOOST_TEST(a.fingerprint == b.fingerprint);
  BOOST_TEST(a.fingerprint != other.fingerprint);
  BOOST_TEST(a.embedding != other.embedding);
  // Known bits: the generator is ours, not the standard library's.
  BOOST_TEST(kvflow::to_hex(a.fingerprint) == kvflow::to_hex(random_weights(c, 5).fingerprint));
  for (float v : a.layers[0].wq) BOOST_REQUIRE(std::abs(v) <= std::sqrt(3.0f / c.hidden));
  for (float v : a.final_norm) BOOST_REQUIRE(v >= 0.9f && v <= 1.1f);
  BOOST_TEST(a.lm_head().size() == static_cast<std::size_t>(c.vocab_size) * c.hidden);
}

BOOST_AUTO_TEST_CASE(tied_embeddings_have_no_output) {
  config c = preset("tiny-test");
  c.tie_embeddings = true;
  weights w = random_weights(c, 1);
  BOOST_TEST(w.output.empty());
  BOOST_TEST(&w.lm_head() == &w.embedding);
  check_shapes(w, "tied");
}

BOOST_AUTO_TEST_CASE(fingerprint_sees_every_weight_and_the_config) {
  weights w = random_weights(preset("tiny-test"), 3);
  auto fp = w.fingerprint;
  compute_fingerprint(w);
  BOOST_TEST(w.fingerprint == fp);
  w.layers[1].ffn_norm[7] += 1e-3f;
  compute_fingerprint(w);
  BOOST_TEST(w.fingerprint != fp);
  w.layers[1].ffn_norm[7] -= 1e-3f;
  compute_fingerprint(w);
  BOOST_TEST(w.fingerprint == fp);
  w.cfg.rope_theta = 20000.0f;
  compute_fingerprint(w);
  BOOST_TEST(w.fingerprint != fp);
}

BOOST_AUTO_TEST_CASE(check_shapes_names_the_tensor) {
  weights w = random_weights(preset("tiny-test"), 3);
  w.layers[2].w_up.resize(10);
  try {
    check_shapes(w, "model.gguf");
    BOOST_FAIL("no error");
  } catch (const kvflow::error& e) {
    BOOST_TEST((e.code() == kvflow::errc::bad_file));
    std::string what = e.what();
    BOOST_TEST(what.find("model.gguf") != std::string::npos);
    BOOST_TEST(what.find("layers.2.w_up") != std::string::npos);
  }
  weights few = random_weights(preset("tiny-test"), 3);
  few.layers.pop_back();
  BOOST_CHECK_THROW(check_shapes(few, "x"), kvflow::error);
  weights bad_cfg = random_weights(preset("tiny-test"), 3);
  bad_cfg.cfg.kv_heads = 3;
  BOOST_CHECK_THROW(check_shapes(bad_cfg, "x"), kvflow::error);
}

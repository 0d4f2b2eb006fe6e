// A pipeline stage on CUDA in another process: `kvflow node --stage-layers
// 15:30 --backend cuda` serves the last half of the SmolLM2-135M shape
// (random weights, seed 7) from a CUDA engine holding only those layers'
// weights, and a CUDA runtime uses it as its second stage. The node reports
// exactly the weight bytes of its layers (plus the tied embedding and final
// norm), every policy restores the KV and first token of a runtime without
// stages bitwise, and decoding goes on as without stages.
#define BOOST_TEST_MODULE actors.remote_stage_gpu
#define BOOST_TEST_NO_MAIN
#include <cstdio>
#include <random>
#include <sstream>

#include "actors/runtime.hpp"
#include "apps/node_cluster.hpp"
#include "tests/actors/restore_reference.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

using namespace kvflow;

namespace {

std::string kvflow_exe() {
  auto& args = boost::unit_test::framework::master_test_suite();
  BOOST_REQUIRE_MESSAGE(args.argc >= 2, "pass the kvflow binary after --");
  return args.argv[1];
}

runtime_options cuda_options(const temp_dir& dir) {
  runtime_options o;
  o.preset = "smollm2-135m";
  o.seed = 7;
  o.backend = "cuda";
  o.chunk_tokens = 256;
  o.host_tier_gb = 0;
  o.disk_gbps = 25;
  o.disk_dir = dir.path;
  return o;
}

// Bytes of bf16 weights (fp32 norms) a CUDA engine of layers [b, e) holds.
std::size_t stage_weight_bytes(const model::config& c, int b, int e) {
  const std::size_t h = c.hidden, q = static_cast<std::size_t>(c.heads) * c.head_dim,
                    kv = static_cast<std::size_t>(c.kv_heads) * c.head_dim, in = c.intermediate;
  const std::size_t layer = 2 * h * 4 + ((q + 2 * kv) * h + h * q + 2 * in * h + h * in) * 2;
  std::size_t bytes = layer * static_cast<std::size_t>(e - b);
  const bool first = b == 0, last = e == c.layers;
  if (first || (last && c.tie_embeddings)) bytes += static_cast<std::size_t>(c.vocab_size) * h * 2;
  if (last) bytes += h * 4 + (c.tie_embeddings ? 0 : static_cast<std::size_t>(c.vocab_size) * h * 2);
  return bytes;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_cuda_stage_in_another_process_restores_one_engines_kv) {
  const auto cfg = model::preset("smollm2-135m");
  const int split = cfg.layers / 2;
  app::node_cluster_options no;
  no.kvflow_exe = kvflow_exe();
  no.use_netns = false;
  no.node_args = {
      "--stage-preset", "smollm2-135m", "--stage-seed",   "7",
      "--backend",      "cuda",         "--stage-layers", std::to_string(split) + ":" + std::to_string(cfg.layers)};
  app::node_cluster node(no);
  const std::string report = node.stage_reports().at(0);
  std::printf("node: %s", report.c_str());
  // "stage listening ADDR layers B:E weights W bytes on cuda device D, engine M bytes of T device memory"
  std::size_t weights = 0, engine_bytes = 0;
  {
    std::istringstream in(report.substr(report.find(" weights ")));
    std::string word, unit;
    in >> word >> weights;
    const auto at = report.find(" engine ");
    BOOST_REQUIRE_MESSAGE(at != std::string::npos, "no engine memory in: " << report);
    std::istringstream mem(report.substr(at));
    mem >> word >> engine_bytes;
  }
  BOOST_TEST(weights == stage_weight_bytes(cfg, split, cfg.layers));
  BOOST_TEST(weights < stage_weight_bytes(cfg, 0, cfg.layers));
  BOOST_TEST(engine_bytes >= weights);

  std::mt19937 rng(9);
  const auto tokens = random_tokens(rng, 4 * 256 + 37, 32000);
  restore_report one;
  std::vector<std::int32_t> plain_tokens;
  submit_options decode;
  decode.max_new_tokens = 5;
  decode.store = false;
  {
    temp_dir dir("remote-stage-gpu-one");
    runtime rt(cuda_options(dir));
    one = rt.submit(tokens, checked_restore("compute_only")).get();
    plain_tokens = rt.submit(tokens, decode).get().tokens;
  }
  temp_dir dir("remote-stage-gpu");
  auto o = cuda_options(dir);
  o.stage_splits = {split};
  o.stage_nodes = {"", node.stage_members().at(0)};
  runtime rt(o);
  BOOST_TEST_MESSAGE(rt.describe());
  BOOST_TEST(rt.describe().find(node.stage_members()[0]) != std::string::npos);
  // The cached prefix: all but the last chunk, stored by a computed restore.
  submit_options prime = checked_restore("compute_only");
  prime.store = true;
  rt.submit(std::vector<std::int32_t>(tokens.begin(), tokens.end() - 37), prime).get();
  rt.flush();
  for (const std::string policy : {"compute_only", "load_only", "two_pointer"}) {
    auto r = rt.submit(tokens, checked_restore(policy)).get();
    BOOST_TEST_CONTEXT(policy) {
      BOOST_CHECK_EQUAL(r.kv_sha256, one.kv_sha256);
      BOOST_CHECK_EQUAL(r.first_token, one.first_token);
      BOOST_CHECK_GT(r.stage_handoffs, 0u);
    }
    std::printf("remote_stage_gpu %s ttft %.4f s cached %u/%u chunks, computed %u loaded %u cells, kv %s\n",
                policy.c_str(), r.ttft_s, r.cached_chunks, r.chunks, r.cells_computed, r.cells_loaded,
                r.kv_sha256 == one.kv_sha256 ? "equal" : "DIFFERENT");
  }
  BOOST_TEST(rt.submit(tokens, decode).get().tokens == plain_tokens);
}

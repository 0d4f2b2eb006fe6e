#define BOOST_TEST_MODULE actors.stage_gpu
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "actors/runtime.hpp"
#include "tests/actors/restore_reference.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

// Pipeline stages on one GPU: two stage actors, each with its own CUDA
// engine on device 0 and an NCCL (or host) hand-off between them, restore
// the KV of one engine's full prefill bitwise. KVFLOW_STAGE_GPU_PRESET and
// KVFLOW_STAGE_GPU_CONTEXT pick the model and prompt (default: smollm2-135m
// at 4096, quick); the run of record is llama-3-8b at 16384.

using namespace kvflow;

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

runtime_options options(const std::string& preset, const temp_dir& dir, int stages, const std::string& link) {
  runtime_options o;
  o.preset = preset;
  o.backend = "cuda";
  o.chunk_tokens = 256;
  o.host_tier_gb = 0;
  o.disk_gbps = 25;
  o.disk_dir = dir.path;
  o.stages = stages;
  o.stage_link = link;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_CASE(two_stages_on_one_gpu_restore_one_engines_kv) {
  const auto preset = env_or("KVFLOW_STAGE_GPU_PRESET", "smollm2-135m");
  const int context = std::stoi(env_or("KVFLOW_STAGE_GPU_CONTEXT", "4096"));
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> pick(0, 32000 - 1);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(context));
  for (auto& t : tokens) t = pick(rng);

  restore_report one;
  {
    temp_dir dir("one");
    runtime rt(options(preset, dir, 0, ""));
    rt.submit(tokens, checked_restore("compute_only")).get();  // warm
    one = rt.submit(tokens, checked_restore("compute_only")).get();
    std::printf("stage_gpu %s ctx %d stages 1 compute_only ttft %.4f s\n", preset.c_str(), context, one.ttft_s);
  }
  for (const std::string link : {"nccl", "host"}) {
    temp_dir dir(link);
    runtime rt(options(preset, dir, 2, link));
    BOOST_TEST_MESSAGE(rt.describe());
    // The cached prefix: all but the last chunk, stored by a computed restore.
    submit_options prime = checked_restore("compute_only");
    prime.store = true;
    rt.submit(std::vector<std::int32_t>(tokens.begin(), tokens.end() - 256), prime).get();
    rt.flush();
    for (const std::string policy : {"compute_only", "load_only", "two_pointer"}) {
      auto r = rt.submit(tokens, checked_restore(policy)).get();
      BOOST_TEST_CONTEXT(link << " " << policy) {
        BOOST_CHECK_EQUAL(r.kv_sha256, one.kv_sha256);
        BOOST_CHECK_EQUAL(r.first_token, one.first_token);
        BOOST_CHECK_GT(r.stage_handoffs, 0u);
      }
      std::printf(
          "stage_gpu %s ctx %d stages 2 link %s %s ttft %.4f s cached %u/%u chunks, computed %u loaded %u cells, "
          "%u hand-offs %.3f ms per chunk, kv %s\n",
          preset.c_str(), context, link.c_str(), policy.c_str(), r.ttft_s, r.cached_chunks, r.chunks, r.cells_computed,
          r.cells_loaded, r.stage_handoffs, r.stage_handoffs ? r.handoff_s / r.stage_handoffs * 1e3 : 0.0,
          r.kv_sha256 == one.kv_sha256 ? "equal" : "DIFFERENT");
    }
  }
}

#define BOOST_TEST_MODULE actors.runtime_gpu
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <random>

#include "actors/runtime.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

// The restore invariant on the GPU engine: whatever the policy and tier, the
// restored KV (bf16, device memory) is bitwise the KV of a full chunked
// prefill (compute_only in the same runtime; the engine suite proves chunked
// == one-shot on the GPU) and the first token is the same.

using namespace kvflow;

namespace {

struct temp_dir {
  std::string path;
  explicit temp_dir(const std::string& name)
      : path((std::filesystem::temp_directory_path() / ("kvflow-gpu-" + name + "-" + std::to_string(::getpid())))
                 .string()) {
    std::filesystem::remove_all(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

void check_policies(const std::string& preset, int context, int chunk, double host_gb, double disk_gbps) {
  temp_dir dir(preset);
  runtime_options o;
  o.preset = preset;
  o.backend = "cuda";
  o.chunk_tokens = chunk;
  o.host_tier_gb = host_gb;
  o.disk_gbps = disk_gbps;
  o.disk_dir = dir.path;
  runtime rt(o);
  BOOST_TEST_MESSAGE(rt.describe());
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> pick(0, 32000 - 1);
  std::vector<std::int32_t> tokens(context);
  for (auto& t : tokens) t = pick(rng);

  submit_options prime;
  prime.max_new_tokens = 1;
  prime.policy = "compute_only";
  rt.submit(std::vector<std::int32_t>(tokens.begin(), tokens.end() - chunk), prime).get();
  rt.flush();

  submit_options so;
  so.max_new_tokens = 1;
  so.digest_kv = true;
  so.store = false;
  so.policy = "compute_only";
  auto base = rt.submit(tokens, so).get();
  BOOST_TEST_MESSAGE(preset << " " << context << " tokens: compute_only " << base.ttft_s << " s");
  for (const char* policy : {"load_only", "bidirectional", "two_pointer", "oracle"}) {
    so.policy = policy;
    auto r = rt.submit(tokens, so).get();
    BOOST_TEST_MESSAGE(preset << " " << context << " tokens, host " << host_gb << " GB, disk " << disk_gbps
                              << " Gbit/s: " << policy << " " << r.ttft_s << " s, computed " << r.cells_computed
                              << " loaded " << r.cells_loaded << " (host " << r.bytes_from_host << " B, disk "
                              << r.bytes_from_disk << " B)");
    BOOST_TEST_CONTEXT(preset << " " << policy) {
      BOOST_CHECK_EQUAL(r.kv_sha256, base.kv_sha256);
      BOOST_CHECK_EQUAL(r.first_token, base.first_token);
      BOOST_CHECK_EQUAL(r.cached_chunks, static_cast<std::uint32_t>(context / chunk - 1));
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(llama_3_8b_8k_from_host) { check_policies("llama-3-8b", 8192, 256, 4, 0); }
BOOST_AUTO_TEST_CASE(llama_3_8b_8k_from_paced_disk) { check_policies("llama-3-8b", 8192, 256, 0, 25); }
BOOST_AUTO_TEST_CASE(smollm2_shape_4k_from_disk) { check_policies("smollm2-135m", 4096, 256, 0, 0); }

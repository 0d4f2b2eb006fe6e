#pragma once
// What every restore test checks against: a full chunked prefill on a fresh
// CPU engine (its KV digest and first token), random prompts and a cache
// folder that cleans up after itself; a restore checked against them.
// Include after the Boost.Test module definition.

#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "actors/runtime.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/weights.hpp"
#include "messages/digest.hpp"

namespace kvflow {
namespace {

struct reference {
  std::string kv_sha256;
  std::int32_t first_token = -1;
};

// A full chunked prefill on a fresh engine with the same weights: the KV and
// first token every restore must reproduce exactly.
inline reference full_prefill(const std::string& preset, std::uint64_t seed, const std::vector<std::int32_t>& tokens,
                              int chunk_tokens) {
  auto eng = model::make_cpu_engine(model::random_weights(model::preset(preset), seed));
  auto& c = eng->cfg();
  int chunks = static_cast<int>((tokens.size() + chunk_tokens - 1) / chunk_tokens);
  std::vector<model::kv_block> blocks(chunks);
  std::vector<float> hidden;
  sha256 h;
  for (int i = 0; i < chunks; ++i) {
    int count = std::min<int>(chunk_tokens, static_cast<int>(tokens.size()) - i * chunk_tokens);
    blocks[i].shape = model::kv_shape_of(c, count, eng->kv_type());
    blocks[i].data = eng->allocate(blocks[i].shape.bytes());
    hidden.assign(static_cast<std::size_t>(count) * c.hidden, 0.0f);
    model::chunk_job job;
    job.tokens = tokens.data() + static_cast<std::size_t>(i) * chunk_tokens;
    job.count = count;
    job.pos0 = i * chunk_tokens;
    job.layer_begin = 0;
    job.layer_end = c.layers;
    job.past = {blocks.data(), i};
    job.out = blocks[i];
    job.hidden = {hidden.data(), count};
    eng->run(job);
    h.update(blocks[i].data, blocks[i].shape.bytes());
  }
  std::vector<float> logits;
  eng->logits({hidden.data(), static_cast<int>(hidden.size() / c.hidden)}, logits);
  reference r{to_hex(h.finish()), model::sample(logits, {}, 0)};
  for (auto& b : blocks) eng->release(b.data);
  return r;
}

inline std::vector<std::int32_t> random_tokens(std::mt19937& rng, int count, int vocab) {
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  std::vector<std::int32_t> t(count);
  for (auto& x : t) x = pick(rng);
  return t;
}

// A cache folder removed when the test case ends (after its runtime).
struct temp_dir {
  std::string path;
  explicit temp_dir(const std::string& name) : path(make(name)) {}
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  static std::string make(const std::string& name);
};

inline std::string temp_dir::make(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("kvflow-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

// A CPU runtime of `preset` with its disk tier in `dir` and a host tier of
// `host_gb` (0: none).
inline runtime_options cpu_options(const std::string& preset, int chunk_tokens, const temp_dir& dir, double host_gb) {
  runtime_options o;
  o.preset = preset;
  o.backend = "cpu";
  o.chunk_tokens = chunk_tokens;
  o.host_tier_gb = host_gb;
  o.disk_dir = dir.path;
  return o;
}

// One restore under `policy` that reports its KV digest, generates one token
// and stores nothing (every policy then sees the same cache).
inline submit_options checked_restore(const std::string& policy) {
  submit_options so;
  so.max_new_tokens = 1;
  so.policy = policy;
  so.digest_kv = true;
  so.store = false;
  return so;
}

const std::vector<std::string> all_policies = {"compute_only", "load_only", "bidirectional", "two_pointer", "oracle"};

// Stores a random-length prefix of `tokens` (computed), then restores all of
// it with `policy`; checks the KV and the first token against `ref`.
inline restore_report restore_and_check(runtime& rt, const std::vector<std::int32_t>& tokens, std::size_t prefix,
                                        const std::string& policy, const reference& ref) {
  submit_options warm;
  warm.max_new_tokens = 1;
  warm.policy = "compute_only";
  std::vector<std::int32_t> head(tokens.begin(), tokens.begin() + prefix);
  rt.submit(head, warm).get();
  rt.flush();
  auto so = checked_restore(policy);
  auto r = rt.submit(tokens, so).get();
  BOOST_TEST_CONTEXT(policy << ": " << tokens.size() << " tokens, " << prefix << " stored, " << r.cached_chunks
                            << " of " << r.chunks << " chunks cached, " << r.cells_loaded << " cells loaded") {
    BOOST_CHECK_EQUAL(r.kv_sha256, ref.kv_sha256);
    BOOST_CHECK_EQUAL(r.first_token, ref.first_token);
    BOOST_CHECK_EQUAL(r.cells_computed + r.cells_loaded, r.chunks * 4u);
    if (policy == "compute_only") BOOST_CHECK_EQUAL(r.cells_loaded, 0u);
    if (policy == "load_only") BOOST_CHECK_EQUAL(r.cells_computed, (r.chunks - r.cached_chunks) * 4u);
  }
  return r;
}

}  // namespace
}  // namespace kvflow

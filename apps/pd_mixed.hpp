#pragma once
// The mixed load of `kvflow pd --role mixed` (apps/pd_mixed.cpp).

#include <functional>
#include <memory>
#include <string>

#include "kernels/model/engine.hpp"

namespace kvflow::app {

struct mixed_options {
  int instances = 3;
  int prefill_instances = 1;  ///< at the start (and always, with fixed roles)
  int chunk_tokens = 64;
  int max_decodes = 16;
  double hold_s = 0.3;  ///< imbalance that lasts this long switches a role (and cooldown)
  std::uint64_t seed = 1;
  int long_prompts = 12;
  int long_prompt_tokens = 1024;
  int short_generation = 4;
  int long_generations = 12;
  int short_prompt_tokens = 32;
  int long_generation_tokens = 192;
  double burst2_at_s = 1.0;
  int repeats = 1;                   ///< runs of each placement, alternating
  std::string kv_path = "host_ucx";  ///< or cuda_ipc (CUDA engines)
  std::string model, backend;        ///< named in the report
  std::string out;
};

/// Runs the mixed load with fixed roles, then with load-aware placement;
/// prints a line per run and writes JSON to o.out. 1 when a request failed.
/// `make` is called once per instance: every run reuses those engines.
int run_pd_mixed(const mixed_options& o, const std::function<std::shared_ptr<model::engine>()>& make);

}  // namespace kvflow::app

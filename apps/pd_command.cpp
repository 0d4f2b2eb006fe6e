// `kvflow pd`: prefill/decode disaggregation across processes. `--role
// decode` publishes a decode instance (a gpu actor behind a pd_decode_actor)
// through CAF's middleman; `--role run` prefills prompts on its own gpu
// actor, hands each request's KV to a decode instance as one contiguous
// UCX transfer and prints the tokens the decode instance generated. With
// --check it also runs the same prompts on one instance (kvflow::runtime)
// and fails unless the tokens are equal. `--backend cuda` puts both roles on
// CUDA engines; `--kv-path cuda_ipc` then hands the KV over by CUDA IPC (one
// device copy per layer range) instead of pinned host memory and UCX.

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "actors/caf_error.hpp"
#include "actors/gpu_actor.hpp"
#include "actors/pd_actor.hpp"
#include "actors/runtime.hpp"
#include "actors/system_config.hpp"
#include "apps/commands.hpp"
#include "apps/pd_mixed.hpp"
#include "apps/stop_signal.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/model_file.hpp"
#include "kernels/model/weights.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"
#include "platform/cuda.hpp"
#ifdef KVFLOW_HAVE_CUDA
#include "kernels/cuda/cuda_engine.hpp"
#endif

extern char** environ;

namespace kvflow::app {
namespace {

struct pd_options {
  std::string role = "run";
  std::string preset;
  std::string model_path;
  std::uint64_t seed = 1;
  int threads = 1;
  int chunk_tokens = 64;
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string decode;  // host:port of a decode instance
  std::vector<int> prompt_tokens{300};
  std::uint32_t max_new_tokens = 12;
  bool check = false;
  std::string ucx_tls = "tcp";
  std::string ucx_devices = "lo";
  std::string backend = "cpu";
  std::string kv_path = "host_ucx";
  int device = 0;
  mixed_options mixed;
};

std::shared_ptr<model::engine> make_engine(const pd_options& o) {
  if (o.backend == "cuda") {
#ifdef KVFLOW_HAVE_CUDA
    if (!platform::cuda_device_available())
      throw error(errc::unsupported, "pd: --backend cuda, but no CUDA device was found");
    // Random presets are drawn on the device, as the runtime makes them.
    if (!o.preset.empty()) return model::make_cuda_engine_random(model::preset(o.preset), o.seed, o.device);
    auto loaded = model::load_model_file(o.model_path.empty() ? model::default_model_path() : o.model_path);
    return model::make_cuda_engine(loaded.w, o.device);
#else
    throw error(errc::unsupported, "pd: --backend cuda needs a build with CUDA (KVFLOW_CUDA=ON)");
#endif
  }
  if (!o.preset.empty())
    return model::make_cpu_engine(model::random_weights(model::preset(o.preset), o.seed), o.threads);
  auto loaded = model::load_model_file(o.model_path.empty() ? model::default_model_path() : o.model_path);
  return model::make_cpu_engine(std::move(loaded.w), o.threads);
}

int run_decode(const pd_options& o) {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto engine = make_engine(o);
  auto net = std::make_shared<devices::net::transport>(devices::net::transport_options{o.ucx_tls, o.ucx_devices});
  auto gpu = sys.spawn<caf::detached>(gpu_actor, engine, 0u);
  auto decode = sys.spawn(pd_decode_actor, engine, caf::actor_cast<caf::actor>(gpu), net);
  auto port = sys.middleman().publish(caf::actor_cast<caf::actor>(decode), o.port, o.host.c_str(), true);
  if (!port) {
    std::cerr << "kvflow pd: cannot publish on " << o.host << ":" << o.port << ": " << sys.render(port.error()) << "\n";
    caf::anon_send_exit(decode, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(gpu, caf::exit_reason::user_shutdown);
    return 1;
  }
  std::cout << "listening " << o.host << ":" << *port << std::endl;
  wait_for_stop_signal();
  caf::anon_send_exit(decode, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(gpu, caf::exit_reason::user_shutdown);
  return 0;
}

// A decode process of our own on loopback: `kvflow pd --role decode`.
struct child_decode {
  pid_t pid = -1;
  FILE* out = nullptr;
  std::string address;
  ~child_decode() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    if (out) fclose(out);
  }
};

void start_decode(const pd_options& o, child_decode& c) {
  int p[2];
  if (pipe(p) != 0) throw error(errc::io_failure, "pd: pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, p[0]);
  std::vector<std::string> args{"kvflow",        "--log-level",
                                "warn",          "pd",
                                "--role",        "decode",
                                "--host",        o.host,
                                "--port",        "0",
                                "--seed",        std::to_string(o.seed),
                                "--threads",     std::to_string(o.threads),
                                "--ucx-tls",     o.ucx_tls,
                                "--ucx-devices", o.ucx_devices,
                                "--backend",     o.backend,
                                "--device",      std::to_string(o.device)};
  if (!o.preset.empty()) args.insert(args.end(), {"--preset", o.preset});
  if (!o.model_path.empty()) args.insert(args.end(), {"--model", o.model_path});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = posix_spawn(&c.pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(p[1]);
  if (rc != 0) {
    close(p[0]);
    c.pid = -1;
    throw error(errc::io_failure, "pd: cannot start the decode process");
  }
  c.out = fdopen(p[0], "r");
  char line[256] = {};
  char host[64] = {};
  unsigned port = 0;
  if (!fgets(line, sizeof line, c.out) || sscanf(line, "listening %63[^:]:%u", host, &port) != 2)
    throw error(errc::peer_down, "pd: the decode process did not report its port");
  c.address = std::string(host) + ":" + std::to_string(port);
}

std::string join(const std::vector<std::int32_t>& v) {
  std::string s;
  for (auto t : v) s += (s.empty() ? "" : " ") + std::to_string(t);
  return s;
}

int run_prefill(const pd_options& o) {
  // First: a missing device or model fails here, not as a silent child.
  auto engine = make_engine(o);
  child_decode child;
  std::string target = o.decode;
  if (target.empty()) {
    start_decode(o, child);
    target = child.address;
  }
  auto colon = target.rfind(':');
  if (colon == std::string::npos) throw error(errc::invalid_argument, "--decode wants HOST:PORT, got " + target);
  system_config cfg;
  caf::actor_system sys{cfg};
  auto remote = sys.middleman().remote_actor(target.substr(0, colon),
                                             static_cast<std::uint16_t>(std::stoi(target.substr(colon + 1))));
  if (!remote)
    throw error(errc::peer_down,
                "pd: cannot reach the decode instance at " + target + ": " + sys.render(remote.error()));
  devices::net::transport net({o.ucx_tls, o.ucx_devices});
  pd_outbox outbox(net, parse_pd_path(o.kv_path));
  auto gpu = sys.spawn<caf::detached>(gpu_actor, engine, 0u);

  // The reference: the same prompts on one instance, prefill and decode.
  std::unique_ptr<runtime> single;
  std::vector<std::int32_t> stops;
  if (o.check) {
    runtime_options ro;
    ro.preset = o.preset;
    ro.model_path = o.model_path;
    ro.seed = o.seed;
    ro.backend = o.backend;
    ro.threads = o.threads;
    ro.chunk_tokens = o.chunk_tokens;
    ro.host_tier_gb = 0.05;
    single = std::make_unique<runtime>(ro);
    stops = single->model().stop_tokens;
  }
  std::mt19937 rng(static_cast<std::uint32_t>(o.seed));
  const int vocab = engine->cfg().vocab_size;
  bool all_equal = true;
  caf::scoped_actor self{sys};
  std::uint64_t id = 1;
  for (int n : o.prompt_tokens) {
    std::vector<std::int32_t> prompt(static_cast<std::size_t>(n));
    for (auto& t : prompt) t = static_cast<std::int32_t>(rng() % static_cast<unsigned>(vocab));
    model::sampling s;  // greedy
    auto p = pd_prefill(self, caf::actor_cast<caf::actor>(gpu), *engine, id, prompt, o.chunk_tokens, s);
    auto got = pd_handoff_and_collect(self, *remote, outbox, p, o.max_new_tokens, s, stops);
    p.ws.reset();
    if (!got.ok)
      throw error(errc::io_failure, "pd: decode instance failed request " + std::to_string(id) + ": " + got.why);
    std::printf(
        "request %llu: %d prompt tokens, prefill %.3f s, KV %.1f KiB in 1 call (%s), transfer %.3f ms at the decode "
        "end\n",
        static_cast<unsigned long long>(id), n, p.prefill_s,
        static_cast<double>(model::kv_shape_of(engine->cfg(), n, engine->kv_type()).bytes()) / 1024,
        to_string(outbox.path()), static_cast<double>(got.transfer_ns) / 1e6);
    std::printf("  pd tokens:     %s\n", join(got.tokens).c_str());
    if (single) {
      submit_options so;
      so.max_new_tokens = o.max_new_tokens;
      so.store = false;
      auto ref = single->submit(prompt, so).get();
      std::printf("  single tokens: %s\n", join(ref.tokens).c_str());
      const bool equal = ref.tokens == got.tokens;
      all_equal = all_equal && equal;
      std::printf("  %s\n", equal ? "equal" : "DIFFERENT");
    }
    ++id;
  }
  caf::anon_send_exit(gpu, caf::exit_reason::user_shutdown);
  if (o.check) std::printf("%s\n", all_equal ? "pd check: equal to one instance" : "pd check: FAILED");
  return all_equal ? 0 : 1;
}

}  // namespace

command_runner add_pd_command(CLI::App& app) {
  auto o = std::make_shared<pd_options>();
  auto* c = app.add_subcommand(
      "pd",
      "Prefill/decode disaggregation across processes: prefill here, decode in another process (started on "
      "loopback unless --decode names one), KV moved as one contiguous UCX transfer");
  c->add_option(
       "--role", o->role,
       "run (prefill here, hand over, print tokens), decode (serve as decode instance) or mixed (a burst of long "
       "prompts then of long generations through in-process instances: fixed roles vs load-aware placement)")
      ->check(CLI::IsMember({"run", "decode", "mixed"}))
      ->capture_default_str();
  c->add_option("--preset", o->preset, "random-weight model preset (tiny-test, smollm2-135m, ...)");
  c->add_option("--model", o->model_path, "GGUF/safetensors model (default: the bundled SmolLM2) when no --preset");
  c->add_option("--seed", o->seed, "weights (presets) and prompt seed")->capture_default_str();
  c->add_option("--threads", o->threads, "CPU backend threads per instance")->capture_default_str();
  c->add_option("--chunk-tokens", o->chunk_tokens, "tokens per KV chunk")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  c->add_option("--host", o->host, "--role decode: address to listen on")->capture_default_str();
  c->add_option("--port", o->port, "--role decode: port (0: any free one)")->capture_default_str();
  c->add_option("--decode", o->decode, "--role run: HOST:PORT of a decode instance (default: start one on loopback)");
  c->add_option("--prompt-tokens", o->prompt_tokens, "random prompts of these lengths, one request each")
      ->delimiter(',')
      ->capture_default_str();
  c->add_option("--max-new-tokens", o->max_new_tokens, "tokens to generate per request (greedy)")
      ->capture_default_str();
  c->add_flag("--check", o->check, "also run each prompt on one instance and fail unless the tokens are equal");
  c->add_option("--ucx-tls", o->ucx_tls, "UCX transports for KV bytes")->capture_default_str();
  c->add_option("--ucx-devices", o->ucx_devices, "UCX network devices")->capture_default_str();
  c->add_option("--backend", o->backend, "engine of every instance: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  c->add_option("--device", o->device, "--backend cuda: the GPU of the instances")->capture_default_str();
  c->add_option("--kv-path", o->kv_path,
                "how KV moves: host_ucx (pinned host memory, one UCX send; any backend) or cuda_ipc (a CUDA IPC "
                "handle, one device copy; --backend cuda, instances on one node)")
      ->check(CLI::IsMember({"host_ucx", "cuda_ipc"}))
      ->capture_default_str();
  auto& m = o->mixed;
  c->add_option("--instances", m.instances, "mixed: instances (each a gpu actor with its own engine)")
      ->capture_default_str();
  c->add_option("--prefill-instances", m.prefill_instances, "mixed: prefill instances at the start")
      ->capture_default_str();
  c->add_option("--long-prompts", m.long_prompts, "mixed: requests of burst 1")->capture_default_str();
  c->add_option("--long-prompt-tokens", m.long_prompt_tokens, "mixed: their prompt length")->capture_default_str();
  c->add_option("--long-generations", m.long_generations, "mixed: requests of burst 2")->capture_default_str();
  c->add_option("--long-generation-tokens", m.long_generation_tokens, "mixed: tokens each of them generates")
      ->capture_default_str();
  c->add_option("--burst2-at", m.burst2_at_s, "mixed: seconds after burst 1 that burst 2 arrives")
      ->capture_default_str();
  c->add_option("--hold", m.hold_s, "mixed: seconds an imbalance must last before a role switch")
      ->capture_default_str();
  c->add_option("--repeats", m.repeats, "mixed: runs of each placement, alternating")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  c->add_option("--out", m.out, "mixed: JSON report file");
  return [o] {
    if (o->kv_path == "cuda_ipc" && o->backend != "cuda")
      throw error(errc::invalid_argument, "pd: --kv-path cuda_ipc needs --backend cuda");
    if (o->role == "mixed") {
      o->mixed.seed = o->seed;
      o->mixed.chunk_tokens = o->chunk_tokens;
      o->mixed.kv_path = o->kv_path;
      o->mixed.backend = o->backend;
      o->mixed.model = !o->preset.empty() ? o->preset : o->model_path.empty() ? "default model" : o->model_path;
      return run_pd_mixed(o->mixed, [o] { return make_engine(*o); });
    }
    return o->role == "decode" ? run_decode(*o) : run_prefill(*o);
  };
}

}  // namespace kvflow::app

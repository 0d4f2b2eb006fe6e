#include "actors/runtime.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <random>
#include <sstream>

#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/frame_type.hpp"
#include "actors/gpu_actor.hpp"
#include "actors/remote_tier_actor.hpp"
#include "actors/request_actor.hpp"
#include "actors/scheduler_actor.hpp"
#include "actors/system_config.hpp"
#include "actors/tier_actor.hpp"
#include "actors/workspace.hpp"
#include "devices/keys.hpp"
#include "kernels/model/chat_template.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/model_file.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"

#ifdef KVFLOW_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_engine.hpp"
#endif

namespace kvflow {
namespace {

bool cuda_available() {
#ifdef KVFLOW_WITH_CUDA
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

std::string choose_backend(const std::string& wanted) {
  if (wanted == "cpu") return "cpu";
  if (wanted == "cuda") {
    if (!cuda_available())
      throw error(errc::unsupported, "backend cuda asked for, but this build has no CUDA or no GPU was found");
    return "cuda";
  }
  if (wanted == "auto") return cuda_available() ? "cuda" : "cpu";
  throw error(errc::invalid_argument, "backend '" + wanted + "' (use cpu, cuda or auto)");
}

}  // namespace

struct runtime::impl {
  runtime_options opts;
  std::string backend;
  std::string model_name;
  std::shared_ptr<const model::tokenizer> tok;
  std::string chat_template;
  std::vector<std::int32_t> stop_tokens;
  std::shared_ptr<model::engine> engine;
  std::shared_ptr<devices::chunk_store> store;
  std::shared_ptr<devices::rate_limiter> disk_limiter;
  std::string disk_dir;
  bool remove_disk_dir = false;
  std::atomic<std::uint64_t> next_id{1};
  std::atomic<std::uint64_t> cache_epoch{0};

  system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor scheduler, gpu;
  std::vector<std::pair<msg::tier, caf::actor>> tiers;
  std::vector<cluster_member> members;  // of the cluster whose tiers are the remote tier
  std::size_t members_up = 0;

  // Connects to the cluster's nodes, tells them the KV layout and spawns
  // the remote tier. A node that cannot be reached now is retried by the
  // remote tier; its chunks are misses meanwhile.
  void join_cluster() {
    if (!opts.cluster_file.empty()) members = read_cluster_file(opts.cluster_file);
    for (auto& m : opts.cluster_members) members.push_back(parse_member(m));
    if (members.empty()) return;
    auto net =
        std::make_shared<devices::net::transport>(devices::net::transport_options{opts.ucx_tls, opts.ucx_devices});
    remote_tier_options ro;
    ro.members = members;
    ro.replicas = opts.cluster_replicas;
    auto shape = model::kv_shape::of(engine->cfg(), opts.chunk_tokens, engine->kv_type());
    ro.layout.fingerprint = engine->fingerprint();
    ro.layout.layers = static_cast<std::uint32_t>(shape.layers);
    ro.layout.kv_heads = static_cast<std::uint32_t>(shape.kv_heads);
    ro.layout.tokens = static_cast<std::uint32_t>(shape.tokens);
    ro.layout.head_dim = static_cast<std::uint32_t>(shape.head_dim);
    ro.layout.dtype = static_cast<std::uint8_t>(shape.type);
    std::vector<node_actor> handles;
    caf::scoped_actor self{*sys};
    for (auto& m : members) {
      auto h = sys->middleman().remote_actor<node_actor>(m.host, m.port);
      node_actor accepted;
      if (!h) {
        logger("actors")->warn("runtime: node {} unreachable: {}", m.name, sys->render(h.error()));
      } else {
        // A node makes its host pool on the first layout: page-locking
        // gigabytes takes seconds.
        self->request(*h, std::chrono::seconds(60), layout_atom::value, msg::encode(ro.layout))
            .receive([&](const msg::frame&) { accepted = *h; },
                     [&](caf::error& e) {
                       logger("actors")->warn("runtime: node {} refused the layout: {}", m.name, sys->render(e));
                     });
      }
      if (accepted) ++members_up;
      handles.push_back(accepted);
    }
    // Not detached: the nodes hold references to it until their connections
    // close, and the actor system waits for a detached actor's destruction,
    // not only for its exit.
    tiers.emplace_back(msg::tier::remote,
                       sys->spawn(remote_tier_proxy, std::move(ro), std::move(handles), std::move(net)));
  }

  void load_model() {
    model::weights w;
    if (!opts.preset.empty()) {
      auto c = model::preset(opts.preset);
      model_name = opts.preset + " (random weights, seed " + std::to_string(opts.seed) + ")";
#ifdef KVFLOW_WITH_CUDA
      if (backend == "cuda") {
        // Large presets are made on the device: no host copy of their weights.
        engine = model::make_cuda_engine_random(c, opts.seed);
        return;
      }
#endif
      w = model::random_weights(c, opts.seed);
    } else {
      auto path = opts.model_path.empty() ? model::default_model_path() : opts.model_path;
      auto loaded = model::load_model_file(path);
      model_name = std::filesystem::path(path).filename().string();
      tok = loaded.tok;
      chat_template = loaded.chat_template;
      w = std::move(loaded.w);
    }
#ifdef KVFLOW_WITH_CUDA
    if (backend == "cuda") {
      engine = model::make_cuda_engine(w);
      return;
    }
#endif
    engine = model::make_cpu_engine(std::move(w), opts.threads);
  }

  void find_stop_tokens() {
    if (!tok) return;
    for (int id = 0; id < tok->vocab_size(); ++id)
      if (tok->is_end_of_turn(id) || id == tok->eos()) stop_tokens.push_back(id);
  }

  // A CUDA engine's first forward loads its modules and creates cuBLAS
  // handles: 130-160 ms on the H100 for a 26 ms llama-3-8b chunk. One chunk
  // of every layer at start keeps that out of the first request's TTFT (and
  // out of the scheduler's first compute sample).
  void warm_up() {
    // The CPU kernels have no one-time setup; bad chunk sizes are refused later, with context.
    if (backend != "cuda" || opts.chunk_tokens <= 0) return;
    auto start = std::chrono::steady_clock::now();
    int n = std::min(opts.chunk_tokens, engine->cfg().max_positions);
    workspace ws(0, std::vector<std::int32_t>(static_cast<std::size_t>(n), 0), n, *engine);
    model::chunk_job job;
    job.tokens = ws.tokens().data();
    job.count = ws.chunk_count(0);
    job.layer_end = engine->cfg().layers;
    job.out = ws.block(0);
    job.hidden = ws.hidden(0);
    engine->run(job);
    engine->synchronize();
    logger("actors")->info("runtime: engine warmed up in {:.0f} ms",
                           std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }

  void make_tiers() {
    if (opts.chunk_tokens <= 0) throw error(errc::invalid_argument, "chunk_tokens must be positive");
    devices::chunk_store_options so;
    auto shape = model::kv_shape::of(engine->cfg(), opts.chunk_tokens, engine->kv_type());
    // The host tier holds at least one chunk: it is also the staging area
    // of stores and promotions.
    so.host_capacity_bytes = std::max<std::size_t>(static_cast<std::size_t>(opts.host_tier_gb * 1e9), shape.bytes());
    disk_dir = opts.disk_dir;
    if (disk_dir.empty()) {
      disk_dir = (std::filesystem::temp_directory_path() / ("kvflow-" + std::to_string(::getpid()))).string();
      remove_disk_dir = true;
    }
    so.disk.directory = disk_dir;
    so.disk.capacity_bytes = opts.disk_tier_gb > 0 ? static_cast<std::uint64_t>(opts.disk_tier_gb * 1e9) : 0;
    // A request stores all its new chunks at once; the queue holds host
    // copies until they are written.
    so.disk.write_queue_cap = 256;
    so.disk.fingerprint = engine->fingerprint();
    so.disk.shape = shape;
    // Always a limiter (rate 0 is unpaced), so that the rate can change later.
    disk_limiter = std::make_shared<devices::rate_limiter>(devices::rate_limiter::gbit_per_s(opts.disk_gbps));
    so.disk.read_limiter = disk_limiter;
    store = std::make_shared<devices::chunk_store>(so);
  }

  static bool lost_chunk(const std::exception_ptr& e) {
    if (!e) return false;
    try {
      std::rethrow_exception(e);
    } catch (const error& err) {
      return err.code() == errc::not_found;
    } catch (...) {
      return false;
    }
  }

  // Spawns the request actor. A restore that fails because a chunk left its
  // tier after the lookup (not_found) starts again, up to `retries` times:
  // the tier has dropped that chunk, so the new lookup computes it instead.
  // TTFT still counts from the first submit.
  void start(std::vector<std::int32_t> tokens, submit_options so, report_callback done,
             std::chrono::steady_clock::time_point submitted, int retries) {
    auto id = next_id++;
    auto ws = std::make_shared<workspace>(id, tokens, opts.chunk_tokens, *engine);
    auto salt = opts.tenant_salt + "#" + std::to_string(cache_epoch.load());
    ws->keys() =
        devices::chunk_keys(engine->fingerprint(), salt, ws->tokens(), static_cast<std::size_t>(opts.chunk_tokens));
    request_env env{scheduler, gpu, tiers};
    request_params p;
    p.policy = so.policy.empty() ? opts.policy : so.policy;
    p.opts = so;
    p.submitted = submitted;
    p.stop_tokens = stop_tokens;
    if (tok) {
      auto t = tok;
      p.detokenize = [t](const std::vector<std::int32_t>& ids) { return t->decode(ids); };
    }
    p.done = [this, tokens = std::move(tokens), so, done = std::move(done), submitted, retries](
                 std::exception_ptr e, restore_report r) mutable {
      if (retries > 0 && lost_chunk(e)) {
        try {
          return start(std::move(tokens), std::move(so), std::move(done), submitted, retries - 1);
        } catch (...) {
          e = std::current_exception();
        }
      }
      done(e, std::move(r));
    };
    sys->spawn(request_actor, std::move(env), std::move(ws), std::move(p));
  }

  void start_actors() {
    sys = std::make_unique<caf::actor_system>(cfg);
    policies::caps caps;
    if (opts.max_compute_cells) caps.compute_cells = opts.max_compute_cells;
    auto chunk_bytes = model::kv_shape::of(engine->cfg(), opts.chunk_tokens, engine->kv_type()).bytes();
    for (auto& b : caps.load_bytes) b = opts.max_load_bytes_in_flight ? opts.max_load_bytes_in_flight : 2 * chunk_bytes;
    policies::cost_prior prior;
    // A paced disk tells its rate up front; measured samples refine it.
    if (opts.disk_gbps > 0) prior.bytes_per_s[static_cast<std::size_t>(msg::tier::disk)] = opts.disk_gbps * 1e9 / 8;
    if (opts.remote_gbps > 0)
      prior.bytes_per_s[static_cast<std::size_t>(msg::tier::remote)] = opts.remote_gbps * 1e9 / 8;
    scheduler = sys->spawn(scheduler_actor, opts.policy, caps, prior);
    gpu = sys->spawn<caf::detached>(gpu_actor, engine, 0u);
    if (!opts.local_tiers) return join_cluster();
    if (opts.host_tier_gb > 0)
      tiers.emplace_back(msg::tier::host,
                         sys->spawn<caf::detached>(tier_actor, store, msg::tier::host, std::uint64_t{0}));
    tiers.emplace_back(msg::tier::disk,
                       sys->spawn<caf::detached>(tier_actor, store, msg::tier::disk,
                                                 caps.load_bytes[static_cast<std::size_t>(msg::tier::disk)]));
    join_cluster();
  }
};

runtime::runtime(runtime_options opts) : impl_(std::make_unique<impl>()) {
  auto& m = *impl_;
  m.opts = std::move(opts);
  m.backend = choose_backend(m.opts.backend);
  m.load_model();
  m.warm_up();
  m.find_stop_tokens();
  m.make_tiers();
  m.start_actors();
  logger("actors")->info("runtime: {}", describe());
}

runtime::~runtime() {
  auto& m = *impl_;
  if (m.sys) {
    for (auto& t : m.tiers) caf::anon_send_exit(t.second, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(m.gpu, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(m.scheduler, caf::exit_reason::user_shutdown);
    m.tiers.clear();
    m.gpu = nullptr;
    m.scheduler = nullptr;
    m.sys.reset();  // waits for every actor, requests in flight included
  }
  m.store.reset();
  if (m.remove_disk_dir) {
    std::error_code ec;
    std::filesystem::remove_all(m.disk_dir, ec);
  }
}

void runtime::submit(std::vector<std::int32_t> tokens, submit_options opts,
                     std::function<void(std::exception_ptr, restore_report)> done) {
  auto& m = *impl_;
  for (auto t : tokens)
    if (t < 0 || t >= m.engine->cfg().vocab_size)
      throw error(errc::out_of_range, "token id " + std::to_string(t) + " outside the vocabulary of " +
                                          std::to_string(m.engine->cfg().vocab_size));
  if (static_cast<int>(tokens.size()) + static_cast<int>(opts.max_new_tokens) > m.engine->cfg().max_positions)
    throw error(errc::out_of_range, "prompt of " + std::to_string(tokens.size()) + " tokens plus " +
                                        std::to_string(opts.max_new_tokens) + " new ones exceeds the model's " +
                                        std::to_string(m.engine->cfg().max_positions) + " positions");
  // Every node of a cluster may die during one restore: each loss restores again once.
  m.start(std::move(tokens), std::move(opts), std::move(done), std::chrono::steady_clock::now(),
          1 + static_cast<int>(m.members.size()));
}

std::future<restore_report> runtime::submit(std::vector<std::int32_t> tokens, submit_options opts) {
  auto promise = std::make_shared<std::promise<restore_report>>();
  auto future = promise->get_future();
  submit(std::move(tokens), std::move(opts), [promise](std::exception_ptr e, restore_report r) {
    if (e)
      promise->set_exception(e);
    else
      promise->set_value(std::move(r));
  });
  return future;
}

std::future<restore_report> runtime::submit_chat(const std::vector<chat_turn>& turns, submit_options opts) {
  std::vector<model::chat_message> messages;
  for (auto& t : turns) messages.push_back({t.role, t.content});
  auto text = model::apply_chat_template(impl_->chat_template, messages, true);
  return submit(tokenize(text), std::move(opts));
}

std::string runtime::detokenize(const std::vector<std::int32_t>& tokens) const {
  if (!impl_->tok) throw error(errc::unsupported, "model " + impl_->model_name + " has no tokenizer");
  return impl_->tok->decode(tokens);
}

std::vector<std::int32_t> runtime::tokenize(const std::string& text) const {
  if (!impl_->tok) throw error(errc::unsupported, "model " + impl_->model_name + " has no tokenizer");
  return impl_->tok->encode(text, true);
}

void runtime::clear_cache() {
  // A new salt epoch: every earlier chunk key misses from now on, and the
  // old entries age out of the tiers by LRU. Random rather than counted, so
  // that a cache folder kept from an earlier process (whose epochs counted
  // the same way) cannot hit either; epoch 0, before any clear, is the same
  // in every process, which is what lets a kept folder serve the next run.
  std::random_device rd;
  std::uint64_t epoch = 0;
  while (epoch == 0) epoch = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  impl_->cache_epoch = epoch;
}

void runtime::flush() {
  // Stores are messages to the tier actors: a flush request queued behind
  // them finds their chunks handed to the store; then the disk writes finish.
  caf::scoped_actor self{*impl_->sys};
  for (auto& t : impl_->tiers)
    self->request(t.second, std::chrono::minutes(5), flush_atom::value)
        .receive([](bool) {},
                 [&](caf::error& e) { throw error(errc::io_failure, "tier flush: " + impl_->sys->render(e)); });
}

void runtime::set_disk_rate(double gbps) {
  if (gbps < 0) throw error(errc::invalid_argument, "disk rate " + std::to_string(gbps) + " Gbit/s");
  impl_->disk_limiter->set_rate(devices::rate_limiter::gbit_per_s(gbps));
  // The scheduler learns the new pace at once instead of from the first
  // slow load: one second's worth of bytes at the set rate.
  if (gbps > 0) {
    msg::rate_sample paced{msg::tier::disk, static_cast<std::uint64_t>(gbps * 1e9 / 8), 1000000000ull};
    caf::anon_send(impl_->scheduler, msg::encode(paced));
  }
}

const runtime_options& runtime::options() const { return impl_->opts; }

std::string runtime::describe() const {
  auto& m = *impl_;
  std::ostringstream out;
  auto& c = m.engine->cfg();
  out << "kvflow: " << m.model_name << " (" << c.layers << " layers, hidden " << c.hidden << ") on " << m.backend
      << ", chunks of " << m.opts.chunk_tokens << " tokens, policy " << m.opts.policy << ", tiers:";
  for (auto& t : m.tiers) out << " " << msg::to_string(t.first);
  if (!m.members.empty()) out << " (cluster of " << m.members.size() << " nodes, " << m.members_up << " up)";
  out << " (disk " << m.disk_dir;
  if (m.opts.disk_gbps > 0) out << " paced to " << m.opts.disk_gbps << " Gbit/s";
  out << ")";
  return out.str();
}

}  // namespace kvflow

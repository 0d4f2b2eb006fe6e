#include "actors/runtime.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>

#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/document_request.hpp"
#include "actors/frame_type.hpp"
#include "actors/gpu_actor.hpp"
#include "actors/node_tls.hpp"
#include "actors/remote_stage.hpp"
#include "actors/remote_tier_actor.hpp"
#include "actors/request_actor.hpp"
#include "actors/scheduler_actor.hpp"
#include "actors/stage_actor.hpp"
#include "actors/system_config.hpp"
#include "actors/tier_actor.hpp"
#include "actors/workspace.hpp"
#include "devices/document_store.hpp"
#include "devices/fault_plan.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "devices/keys.hpp"
#include "kernels/model/chat_template.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/model_file.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"
#include "policies/stage_plan.hpp"

#include "platform/cuda.hpp"

#ifdef KVFLOW_HAVE_CUDA
#include "kernels/cuda/cuda_engine.hpp"
#include "kernels/cuda/nccl_link.hpp"
#endif

namespace kvflow {
const char* to_string(backend_kind b) { return b == backend_kind::cuda ? "cuda" : "cpu"; }

backend_kind resolve_backend(const std::string& name) {
  if (name == "cpu") return backend_kind::cpu;
  if (name == "cuda") {
    if (!platform::cuda_device_available())
      throw error(errc::unsupported, "backend cuda asked for, but this build has no CUDA or no GPU was found");
    return backend_kind::cuda;
  }
  if (name == "auto") return platform::cuda_device_available() ? backend_kind::cuda : backend_kind::cpu;
  throw error(errc::invalid_argument, "backend '" + name + "' (use cpu, cuda or auto)");
}

struct runtime::impl {
  runtime_options opts;
  backend_kind backend = backend_kind::cpu;
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
  std::shared_ptr<document_rates> doc_rates = std::make_shared<document_rates>();
  std::shared_ptr<devices::fault_plan> faults;
  std::atomic<std::int64_t> requests_live{0};
  std::mutex tiers_mutex;  // restart_tier replaces a tier while requests start
  std::uint64_t disk_staging_bytes = 0;

  system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor scheduler, gpu;
  caf::actor watchdog;  // requests' deadline timers (deadline_watchdog)
  std::vector<std::pair<msg::tier, caf::actor>> tiers;
  std::vector<cluster_member> members;  // of the cluster whose tiers are the remote tier
  std::size_t members_up = 0;
  std::shared_ptr<devices::net::transport> remote_net;  // the remote tier's KV bytes

  // Connects to the cluster's nodes, tells them the KV layout and spawns
  // the remote tier. A node that cannot be reached now is retried by the
  // remote tier; its chunks are misses meanwhile.
  void join_cluster() {
    if (!opts.cluster_file.empty()) members = read_cluster_file(opts.cluster_file);
    for (auto& m : opts.cluster_members) members.push_back(parse_member(m));
    if (members.empty()) return;
    auto net = std::make_shared<devices::net::transport>(
        devices::net::transport_options{opts.ucx_tls, opts.ucx_devices, opts.ucx_lanes});
    remote_net = net;
    remote_tier_options ro;
    ro.members = members;
    ro.replicas = opts.cluster_replicas;
    ro.landing_bytes = opts.remote_landing_bytes;
    ro.rates = scheduler.address();  // each node's rate, learned apart
    auto shape = model::kv_shape_of(engine->cfg(), opts.chunk_tokens, engine->kv_type());
    ro.layout.fingerprint = engine->fingerprint();
    ro.layout.layers = static_cast<std::uint32_t>(shape.layers);
    ro.layout.kv_heads = static_cast<std::uint32_t>(shape.kv_heads);
    ro.layout.tokens = static_cast<std::uint32_t>(shape.tokens);
    ro.layout.head_dim = static_cast<std::uint32_t>(shape.head_dim);
    ro.layout.dtype = static_cast<std::uint8_t>(shape.type);
    std::vector<node_actor> handles;
    caf::scoped_actor self{*sys};
    for (auto& m : members) {
      auto h = connect_node(*sys, m.host, m.port);
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

  /// Makes another engine of the same model on a device (the stages' own),
  /// holding the weights of `held` only where the backend can.
  std::function<std::shared_ptr<model::engine>(int device, model::layer_range held)> make_engine;
  std::vector<std::uint32_t> stage_bounds;  ///< [0, ..., layers]; two entries: no stages
  struct stage {
    stage_layout layout;
    std::shared_ptr<model::engine> engine;
    stage_route route;
    std::string node;       ///< host:port of the process serving it; empty: this one
    stage_host_actor host;  ///< that process's stage
  };
  std::vector<stage> stage_list;
  std::string link_kind;

  int stage_count() const {
    return opts.stage_splits.empty() ? std::max(1, opts.stages) : static_cast<int>(opts.stage_splits.size()) + 1;
  }

  void load_model() {
    model::weights w;
    if (!opts.preset.empty()) {
      auto c = model::preset(opts.preset);
      model_name = opts.preset + " (random weights, seed " + std::to_string(opts.seed) + ")";
#ifdef KVFLOW_HAVE_CUDA
      if (backend == backend_kind::cuda) {
        // Large presets are made on the device: no host copy of their weights.
        auto seed = opts.seed;
        make_engine = [c, seed](int device, model::layer_range held) {
          return model::make_cuda_engine_random(c, seed, device, held);
        };
        // Every layer: decode runs on this engine (README: decode across stages).
        engine = make_engine(0, {});
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
    // Stages make their own engines from the same weights.
    auto kept = stage_count() > 1 ? std::make_shared<model::weights>(w) : nullptr;
#ifdef KVFLOW_HAVE_CUDA
    if (backend == backend_kind::cuda) {
      make_engine = [kept](int device, model::layer_range held) -> std::shared_ptr<model::engine> {
        if (!kept) throw error(errc::invalid_argument, "no weights kept for stage engines");
        return model::make_cuda_engine(*kept, device, held);
      };
      engine = model::make_cuda_engine(w);
      return;
    }
#endif
    auto threads = opts.threads;
    make_engine = [kept, threads](int, model::layer_range held) -> std::shared_ptr<model::engine> {
      if (!kept) throw error(errc::invalid_argument, "no weights kept for stage engines");
      return model::make_cpu_engine(*kept, threads, held);
    };
    engine = model::make_cpu_engine(std::move(w), opts.threads);
  }

  std::shared_ptr<model::stage_link> make_link(const stage& from, const stage& to) {
    // A remote stage's hidden states here are host bytes on their way.
    if (link_kind == "host" || from.host || to.host) return model::make_host_link(*from.engine, *to.engine);
#ifdef KVFLOW_HAVE_CUDA
    if (link_kind == "nccl") {
      const bool same = from.layout.device == to.layout.device;
      return model::make_nccl_link(static_cast<int>(from.layout.device), static_cast<int>(to.layout.device),
                                   model::make_nccl_link_id(same ? 1 : 2, same ? 0 : 1));
    }
#endif
    throw error(errc::unsupported, "stage link '" + link_kind + "' on backend " + std::string(to_string(backend)) +
                                       " (use host" + (backend == backend_kind::cuda ? " or nccl)" : ")"));
  }

  // Connects to the process serving stage `st` and checks that it serves
  // this model's layers of the stage.
  stage_host_actor connect_stage(const stage& st) {
    const auto m = parse_member(st.node);
    const auto where = "stage " + std::to_string(st.layout.index) + " at " + st.node;
    auto h = kvflow::connect_stage(*sys, m.host, m.port);
    if (!h) throw error(errc::peer_down, where + " is unreachable: " + sys->render(h.error()));
    caf::scoped_actor self{*sys};
    std::optional<error> refused;
    self->request(*h, std::chrono::seconds(10), layout_atom::value)
        .receive(
            [&](const msg::frame& f, std::uint32_t begin, std::uint32_t end) {
              auto decoded = msg::decode(f);
              auto* l = decoded ? std::get_if<msg::kv_layout>(&*decoded) : nullptr;
              const auto fp = engine->fingerprint();
              if (!l || !std::equal(fp.begin(), fp.end(), l->fingerprint.begin()) ||
                  l->layers != static_cast<std::uint32_t>(engine->cfg().layers))
                refused = error(errc::invalid_argument, where + " serves another model than " + model_name);
              else if (l->dtype != static_cast<std::uint8_t>(engine->kv_type()))
                // A CPU stage (f32 KV) and a CUDA runtime (bf16) or the reverse.
                refused = error(errc::invalid_argument,
                                where + " keeps KV as " + (l->dtype == 0 ? "f32 (cpu)" : "bf16 (cuda)") +
                                    ", this runtime as " + (engine->kv_type() == model::dtype::f32 ? "f32" : "bf16") +
                                    ": start the node with the runtime's --backend");
              else if (begin != static_cast<std::uint32_t>(st.layout.layer_begin) ||
                       end != static_cast<std::uint32_t>(st.layout.layer_end))
                refused = error(errc::invalid_argument, where + " serves layers [" + std::to_string(begin) + ", " +
                                                            std::to_string(end) + "), the stage has [" +
                                                            std::to_string(st.layout.layer_begin) + ", " +
                                                            std::to_string(st.layout.layer_end) + ")");
            },
            [&](caf::error& e) { refused = error(errc::peer_down, where + " did not answer: " + sys->render(e)); });
    if (refused) throw *refused;
    return *h;
  }

  // Spawns one stage actor per layer range, the last first (each needs the
  // next one's actor), each with its own engine and its own tier actors.
  void start_stages(const policies::caps& caps) {
    stage_bounds =
        policies::stage_bounds(static_cast<std::uint32_t>(engine->cfg().layers), opts.stages, opts.stage_splits);
    const auto n = stage_bounds.size() - 1;
    if (n < 2) return;
    if (!opts.stage_devices.empty() && opts.stage_devices.size() != n)
      throw error(errc::invalid_argument,
                  std::to_string(opts.stage_devices.size()) + " stage devices for " + std::to_string(n) + " stages");
    if (!opts.stage_nodes.empty() && opts.stage_nodes.size() != n)
      throw error(errc::invalid_argument,
                  std::to_string(opts.stage_nodes.size()) + " stage nodes for " + std::to_string(n) + " stages");
    link_kind = !opts.stage_link.empty() ? opts.stage_link : backend == backend_kind::cuda ? "nccl" : "host";
    stage_list.resize(n);
    for (std::size_t s = 0; s < n; ++s) {
      auto& st = stage_list[s];
      st.layout.index = static_cast<int>(s);
      st.layout.layer_begin = static_cast<int>(stage_bounds[s]);
      st.layout.layer_end = static_cast<int>(stage_bounds[s + 1]);
      st.layout.device = opts.stage_devices.empty() ? 0u : static_cast<std::uint32_t>(opts.stage_devices[s]);
      if (s < opts.stage_nodes.size() && !opts.stage_nodes[s].empty() && opts.stage_nodes[s] != "local") {
        st.node = opts.stage_nodes[s];
        st.host = connect_stage(st);
        st.engine = engine;  // its hidden states here live in this process's engine memory
        continue;
      }
      st.engine = make_engine(static_cast<int>(st.layout.device), {st.layout.layer_begin, st.layout.layer_end});
    }
    // Every stage has its engine: the copy of the weights they were made from goes.
    make_engine = nullptr;
    for (std::size_t s = n; s-- > 0;) {
      auto& st = stage_list[s];
      stage_next next;
      if (s + 1 < n) next = {stage_list[s + 1].route.actor, stage_list[s + 1].engine, make_link(st, stage_list[s + 1])};
      st.route.layer_begin = stage_bounds[s];
      st.route.layer_end = stage_bounds[s + 1];
      // A remote stage is not detached, as the remote tier's proxy: its host
      // holds references to it until the connection closes, and the actor
      // system waits for a detached actor's destruction (a shutdown hung
      // there at times under ASan).
      st.route.actor =
          st.host ? sys->spawn(remote_stage, st.host, st.engine, st.layout, std::move(next), opts.stage_timeout)
                  : sys->spawn<caf::detached>(stage_actor, st.engine, st.layout, std::move(next));
      // Each stage loads its own layers over its own links (its own tier
      // actors: the links of its GPU), from the shared store.
      if (opts.host_tier_gb > 0)
        st.route.tiers.emplace_back(msg::tier::host, sys->spawn<caf::detached>(host_tier_actor, store));
      st.route.tiers.emplace_back(
          msg::tier::disk, sys->spawn<caf::detached>(disk_tier_actor, store,
                                                     caps.load_bytes[static_cast<std::size_t>(msg::tier::disk)]));
    }
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
    if (backend != backend_kind::cuda || opts.chunk_tokens <= 0) return;
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
    auto shape = model::kv_shape_of(engine->cfg(), opts.chunk_tokens, engine->kv_type());
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
    if (opts.disk_write_gbps > 0)
      so.disk.write_limiter =
          std::make_shared<devices::rate_limiter>(devices::rate_limiter::gbit_per_s(opts.disk_write_gbps));
    faults = opts.faults.empty() ? devices::fault_plan::from_env() : devices::fault_plan::parse(opts.faults);
    if (faults) logger("actors")->warn("runtime: injecting faults {}", faults->describe());
    so.disk.faults = faults;
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
    auto salt = (so.tenant_salt.empty() ? opts.tenant_salt : so.tenant_salt) + "#" + std::to_string(cache_epoch.load());
    ws->keys() =
        devices::chunk_keys(engine->fingerprint(), salt, ws->tokens(), static_cast<std::size_t>(opts.chunk_tokens));
    if (!stage_list.empty()) {
      std::vector<std::shared_ptr<model::engine>> engines;
      for (auto& s : stage_list) engines.push_back(s.engine);
      ws->add_stages(engines);
    }
    // A document request never loses a chunk (a missing entry is computed), so it needs no retry.
    bool full_by_plan = false;  // documents marked, but the plan found reuse would not pay
    if (!so.documents.empty() && start_documents(ws, so, salt, done, submitted, full_by_plan)) return;
    request_env env{scheduler, gpu, {}};
    {
      std::lock_guard<std::mutex> lock(tiers_mutex);
      env.tiers = tiers;
    }
    env.step_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(opts.step_timeout_s * 1000));
    env.faults = faults;
    env.watchdog = watchdog;
    for (auto& s : stage_list) env.stages.push_back(s.route);
    request_params p;
    p.policy = so.policy.empty() ? opts.policy : so.policy;
    p.opts = so;
    p.submitted = submitted;
    p.deadline = std::chrono::milliseconds(
        static_cast<std::int64_t>((so.deadline_s > 0 ? so.deadline_s : opts.request_timeout_s) * 1000));
    p.stop_tokens = stop_tokens;
    p.stop_tokens.insert(p.stop_tokens.end(), so.stop_token_ids.begin(), so.stop_token_ids.end());
    if (tok) {
      auto t = tok;
      p.detokenize = [t](const std::vector<std::int32_t>& ids) { return t->decode(ids); };
    }
    p.done = [this, tokens = std::move(tokens), so, done = std::move(done), submitted, retries, full_by_plan](
                 std::exception_ptr e, restore_report r) mutable {
      if (full_by_plan) r.recompute_ratio = 1;  // every document token recomputed
      // A prompt computed in full by this path: the full recompute a
      // document plan must beat (one engine: the document path's own case).
      if (!e && r.cached_chunks == 0 && r.cells_loaded == 0 && stage_list.empty())
        doc_rates->observe_full(r.prompt_tokens, r.ttft_s);
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

  // Non-prefix reuse: the documents the prefix chain misses go through the
  // document path; a prompt whose documents all lie in the cached prefix
  // (or a backend without selective recompute) restores as usual, so a
  // prefix hit stays bit-exact. True when the document path took it.
  // `full_by_plan`: set where the plan sent it down the ordinary path.
  bool start_documents(const std::shared_ptr<workspace>& ws, const submit_options& so, const std::string& salt,
                       report_callback done, std::chrono::steady_clock::time_point submitted, bool& full_by_plan) {
    // CUDA runs the document path on the device (actors/document_cuda.hpp),
    // on one engine: pipeline stages restore marked prompts as usual.
    if (backend != backend_kind::cpu && !(backend == backend_kind::cuda && stage_list.empty())) {
      logger("actors")->debug("documents marked, but the {} backend with {} stages has no document path",
                              to_string(backend), stage_list.size());
      return false;
    }
    const int n = static_cast<int>(ws->tokens().size());
    const auto found = store->lookup(ws->keys());
    const int cached = static_cast<int>(found.prefix) * opts.chunk_tokens;
    std::vector<model::prompt_segment> segments;
    std::vector<std::vector<msg::chunk_key>> keys;
    int at = 0;
    for (const auto& d : so.documents) {
      const int b = static_cast<int>(d.begin), e = b + static_cast<int>(d.count);
      if (d.count == 0 || b < at || e > n)
        throw error(errc::invalid_argument, "document [" + std::to_string(b) + ", " + std::to_string(e) +
                                                ") is empty, out of order or outside a prompt of " + std::to_string(n) +
                                                " tokens");
      if (e <= cached) continue;  // in the cached prefix: restored exactly
      if (b > at) segments.push_back({at, b - at, false});
      segments.push_back({b, e - b, true});
      keys.push_back(devices::document_block_keys(
          engine->fingerprint(), salt, std::vector<std::int32_t>(ws->tokens().begin() + b, ws->tokens().begin() + e),
          static_cast<std::size_t>(opts.chunk_tokens)));
      at = e;
    }
    if (keys.empty()) return false;
    if (at < n) segments.push_back({at, n - at, false});
    document_params dp;
    dp.base.policy = "documents";
    dp.base.opts = so;
    dp.base.submitted = submitted;
    dp.base.stop_tokens = stop_tokens;
    dp.base.stop_tokens.insert(dp.base.stop_tokens.end(), so.stop_token_ids.begin(), so.stop_token_ids.end());
    if (tok) {
      auto t = tok;
      dp.base.detokenize = [t](const std::vector<std::int32_t>& ids) { return t->decode(ids); };
    }
    dp.base.done = std::move(done);
    dp.segments = std::move(segments);
    dp.keys = std::move(keys);
    dp.store = store;
    dp.rates = doc_rates;
    dp.blend.selection = model::parse_selection(so.document_selection);
    dp.blend.ratio = so.recompute_ratio;
    // Where the cost model finds no gain worth its margin (the path's
    // measured fixed cost included) and every document is stored already,
    // the request is restored by the ordinary path, which computes every
    // chunk in fused prefill forwards, faster than the document path at
    // 100%: an adaptive request is then never slower than a full recompute
    // by construction (up to the noise of the measurements the plan uses).
    // A document no tier holds keeps the document path, which computes it
    // alone and stores it.
    if (dp.blend.ratio < 0) {
      policies::recompute_plan plan;
      try {
        plan = choose_document_plan(dp, *engine);
      } catch (const error&) {
        plan.full_recompute = false;  // the request reports it
      }
      const bool all_held =
          std::all_of(dp.keys.begin(), dp.keys.end(), [&](const auto& k) { return devices::has_document(*store, k); });
      if (plan.full_recompute && all_held) {
        logger("actors")->debug(
            "request {}: documents held, but reuse would not pay (estimate {:.4f} s + fixed {:.4f} s against "
            "a full recompute of {:.4f} s): the ordinary path",
            ws->request_id(), plan.estimate_s, plan.fixed_s, plan.full_recompute_s);
        full_by_plan = true;
        return false;
      }
    }
    sys->spawn<caf::detached>(document_request_actor, gpu, ws, std::move(dp));
    return true;
  }

  void start_actors() {
    // Checked before the system starts: CAF reports a bad path only on connect.
    use_tls(cfg, merge_tls({opts.cluster_cert, opts.cluster_key, opts.cluster_ca},
                           opts.cluster_file.empty() ? tls_options{} : read_cluster_tls(opts.cluster_file)));
    sys = std::make_unique<caf::actor_system>(cfg);
    policies::caps caps;
    // Compute grants span chunks of about compute_group_tokens together (the
    // gpu actor runs them as one forward): the default caps scale with it.
    // 2048 rows on CUDA: two_pointer's grants of one 1024-token chunk ran
    // 5-13% slower a cell than compute_only's wider forwards on the H200
    // (llama-3-8b 16k, remote:10: the same chunks cost 356 ms of GPU in
    // 1024-row grants, 337 ms in 2048-row ones); 4096 left the split too
    // coarse to meet well (TTFT 0.405 s against 0.356 s).
    const int group_tokens = opts.compute_group_tokens > 0   ? opts.compute_group_tokens
                             : backend == backend_kind::cuda ? 2048
                                                             : 0;
    auto chunks_of = [&](int tokens) {
      return static_cast<std::uint32_t>(std::max(1, (tokens + opts.chunk_tokens - 1) / opts.chunk_tokens));
    };
    caps.compute_group = chunks_of(group_tokens);
    // Loads are queued in 1024-token units on CUDA whatever the compute
    // group (one chunk on the CPU): a link's queue need not grow with the
    // GPU's forward.
    caps.load_group = chunks_of(backend == backend_kind::cuda ? 1024 : 0);
    // The cap on compute in flight scales with the rows of a forward that
    // fills the device: gpu_fuse_rows on CUDA (at least a group). compute_only
    // grants half the cap at a time, so each of its grants is one forward
    // of that many rows; at 1024 rows (the cap before) the H200 ran
    // llama-3-8b's QKV product 28% slower a row (192 tiles of 256x128 are
    // 1.45 waves of 132 SMs) and paid the elementwise kernels' launches 4x
    // as often. two_pointer and bidirectional size their grants from
    // compute_group and their own queue depth, below the cap.
    const int forward_tokens = backend == backend_kind::cuda ? std::max(gpu_fuse_rows, group_tokens) : group_tokens;
    caps.compute_cells *= std::max<std::uint32_t>(
        caps.compute_group, static_cast<std::uint32_t>((forward_tokens + opts.chunk_tokens - 1) / opts.chunk_tokens));
    if (opts.max_compute_cells) caps.compute_cells = opts.max_compute_cells;
    // Each stage keeps its own queue full: a grant is in flight while it
    // travels the whole pipeline.
    caps.compute_cells *= static_cast<std::uint64_t>(stage_count());
    // Each stage loads its own layers over its own links (their caps are per link).
    if (stage_count() > 1)
      caps.stage_bounds =
          policies::stage_bounds(static_cast<std::uint32_t>(engine->cfg().layers), opts.stages, opts.stage_splits);
    auto chunk_bytes = model::kv_shape_of(engine->cfg(), opts.chunk_tokens, engine->kv_type()).bytes();
    if (opts.load_queue_chunks == 0) throw error(errc::invalid_argument, "load_queue_chunks must be at least 1");
    caps.load_queue_chunks = opts.load_queue_chunks;
    for (auto& b : caps.load_bytes)
      b = opts.max_load_bytes_in_flight ? opts.max_load_bytes_in_flight
                                        : std::uint64_t{opts.load_queue_chunks} * chunk_bytes * caps.load_group;
    policies::cost_prior prior;
    if (opts.rate_pool_ms >= 0) prior.rate_pool_s = opts.rate_pool_ms * 1e-3;
    // A paced disk tells its rate up front; measured samples refine it.
    if (opts.disk_gbps > 0) prior.bytes_per_s[static_cast<std::size_t>(msg::tier::disk)] = opts.disk_gbps * 1e9 / 8;
    // No latency prior for the disk (cost_prior::latency_s stays 0): with
    // 0.5 ms, two_pointer's first disk grants went 8 layers deep and it was
    // slower at 16k on the H200 (chunk 256: 0.495 s against 0.425 s without;
    // chunk 1024: 0.412 against 0.388; medians of 3, one call, 2026-12-03).
    if (opts.remote_gbps > 0)
      prior.bytes_per_s[static_cast<std::size_t>(msg::tier::remote)] = opts.remote_gbps * 1e9 / 8;
    if (!(opts.admission_window_ms >= 0) || opts.admission_window_ms > 1000)
      throw error(errc::invalid_argument,
                  "admission_window_ms must be in [0, 1000], not " + std::to_string(opts.admission_window_ms));
    scheduler = sys->spawn(scheduler_actor, opts.policy, caps, prior, opts.admission_window_ms * 1e-3);
    watchdog = sys->spawn(deadline_watchdog, std::size_t{256});
    gpu = sys->spawn<caf::detached>(budgeted_gpu_actor, engine, 0u, opts.step_prefill_tokens);
    if (!opts.local_tiers) return join_cluster();
    if (opts.host_tier_gb > 0) tiers.emplace_back(msg::tier::host, sys->spawn<caf::detached>(host_tier_actor, store));
    disk_staging_bytes = caps.load_bytes[static_cast<std::size_t>(msg::tier::disk)];
    tiers.emplace_back(msg::tier::disk, sys->spawn<caf::detached>(disk_tier_actor, store, disk_staging_bytes));
    start_stages(caps);
    join_cluster();
  }
};

runtime::runtime(runtime_options opts) : impl_(std::make_unique<impl>()) {
  auto& m = *impl_;
  m.opts = std::move(opts);
  m.backend = resolve_backend(m.opts.backend);
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
    for (auto& s : m.stage_list) {
      caf::anon_send_exit(s.route.actor, caf::exit_reason::user_shutdown);
      for (auto& t : s.route.tiers) caf::anon_send_exit(t.second, caf::exit_reason::user_shutdown);
      s.route = {};  // a detached actor's thread ends only when nothing holds the actor
    }
    caf::anon_send_exit(m.gpu, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(m.scheduler, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(m.watchdog, caf::exit_reason::user_shutdown);
    m.watchdog = nullptr;
    m.tiers.clear();
    m.gpu = nullptr;
    m.scheduler = nullptr;
    m.sys.reset();         // waits for every actor, requests in flight included
    m.stage_list.clear();  // engines outlive the workspaces that hold their memory
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
  ++m.requests_live;
  auto counted = [&m, done = std::move(done)](std::exception_ptr e, restore_report r) {
    --m.requests_live;
    done(e, std::move(r));
  };
  // Every node of a cluster may die during one restore, and so may a local
  // tier actor: each loss restores again once.
  try {
    m.start(std::move(tokens), std::move(opts), std::move(counted), std::chrono::steady_clock::now(),
            2 + static_cast<int>(m.members.size()));
  } catch (...) {
    --m.requests_live;
    throw;
  }
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
  return submit(chat_tokens(turns), std::move(opts));
}

std::vector<std::int32_t> runtime::chat_tokens(const std::vector<chat_turn>& turns) const {
  std::vector<model::chat_message> messages;
  for (auto& t : turns) messages.push_back({t.role, t.content});
  return tokenize(model::apply_chat_template(impl_->chat_template, messages, true));
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
  std::vector<std::pair<msg::tier, caf::actor>> tiers;
  {
    std::lock_guard<std::mutex> lock(impl_->tiers_mutex);
    tiers = impl_->tiers;
  }
  for (auto& t : tiers)
    self->request(t.second, std::chrono::minutes(5), flush_atom::value)
        .receive([](bool) {},
                 [&](caf::error& e) { throw error(errc::io_failure, "tier flush: " + impl_->sys->render(e)); });
}

std::pair<std::uint64_t, double> runtime::learned_rate(const std::string& tier, std::uint16_t link) const {
  std::uint8_t t = 0;
  while (t < msg::tier_count && tier != msg::to_string(static_cast<msg::tier>(t))) ++t;
  if (t == msg::tier_count) throw error(errc::invalid_argument, "learned_rate: no tier named '" + tier + "'");
  std::pair<std::uint64_t, double> out{0, 0};
  caf::scoped_actor self{*impl_->sys};
  self->request(impl_->scheduler, std::chrono::seconds(10), stats_atom::value, t, link)
      .receive(
          [&](std::uint64_t samples, double rate) {
            out = {samples, rate};
          },
          [&](caf::error& e) { throw error(errc::io_failure, "learned_rate: " + impl_->sys->render(e)); });
  return out;
}

wire_totals runtime::remote_wire_totals() const {
  if (!impl_->remote_net) return {};
  auto t = impl_->remote_net->totals();
  return {t.raw_bytes, t.wire_bytes, t.frames};
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

void runtime::restart_tier(const std::string& tier) {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.tiers_mutex);
  for (auto& [kind, actor] : m.tiers) {
    if (tier != msg::to_string(kind) || (kind != msg::tier::host && kind != msg::tier::disk)) continue;
    caf::anon_send_exit(actor, caf::exit_reason::kill);
    actor = kind == msg::tier::host ? m.sys->spawn<caf::detached>(host_tier_actor, m.store)
                                    : m.sys->spawn<caf::detached>(disk_tier_actor, m.store, m.disk_staging_bytes);
    logger("actors")->warn("runtime: tier {} killed and started again", tier);
    return;
  }
  throw error(errc::not_found, "runtime has no local tier '" + tier + "' to restart");
}

resource_counters runtime::counters() const {
  auto& m = *impl_;
  resource_counters c;
  c.requests = m.requests_live.load();
  c.loads_in_flight = tier_detail::loads_in_flight();
  c.disk_reads = m.store->disk().reads_in_flight();
  c.disk_writes = static_cast<std::int64_t>(m.store->disk().writes_pending());
  c.host_leases = static_cast<std::int64_t>(m.store->host().leases());
  c.staging_buffers = devices::pinned_buffer::live_count();
  c.staging_bytes = devices::pinned_buffer::live_bytes();
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != decltype(it){};
       it.increment(ec))
    ++c.open_fds;
  if (m.faults)
    for (std::size_t i = 0; i < static_cast<std::size_t>(devices::fault::count_); ++i)
      c.faults_injected += m.faults->injected(static_cast<devices::fault>(i));
  return c;
}

void runtime::stop_stage(int index) {
  auto& m = *impl_;
  if (index < 0 || index >= static_cast<int>(m.stage_list.size()))
    throw error(errc::out_of_range, "stage " + std::to_string(index) + " of " + std::to_string(m.stage_list.size()));
  caf::anon_send_exit(m.stage_list[static_cast<std::size_t>(index)].route.actor, caf::exit_reason::kill);
}

const runtime_options& runtime::options() const { return impl_->opts; }

model_info runtime::model() const {
  auto& c = impl_->engine->cfg();
  return {impl_->model_name, c.max_positions, c.vocab_size, impl_->tok != nullptr, impl_->stop_tokens};
}

backend_kind runtime::backend() const { return impl_->backend; }

std::string runtime::describe_engine() const {
  auto& m = *impl_;
  auto& c = m.engine->cfg();
  std::ostringstream out;
  out << "kvflow: " << m.model_name << " (" << c.layers << " layers, hidden " << c.hidden << ") on "
      << to_string(m.backend);
  return out.str();
}

std::string runtime::describe() const {
  auto& m = *impl_;
  std::ostringstream out;
  out << describe_engine() << ", chunks of " << m.opts.chunk_tokens << " tokens, policy " << m.opts.policy
      << ", tiers:";
  for (auto& t : m.tiers) out << " " << msg::to_string(t.first);
  if (!m.members.empty()) out << " (cluster of " << m.members.size() << " nodes, " << m.members_up << " up)";
  out << " (disk " << m.disk_dir;
  if (m.opts.disk_gbps > 0) out << " paced to " << m.opts.disk_gbps << " Gbit/s";
  out << ")";
  if (!m.stage_list.empty()) {
    out << ", " << m.stage_list.size() << " stages (layers";
    for (auto& s : m.stage_list)
      out << " [" << s.layout.layer_begin << "," << s.layout.layer_end << ")@"
          << (s.node.empty() ? std::to_string(s.layout.device) : s.node);
    out << ", " << m.link_kind << " hand-off)";
  }
  return out.str();
}

}  // namespace kvflow

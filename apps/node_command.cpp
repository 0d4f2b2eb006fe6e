// `kvflow node`: publishes this process's node actor (a host tier in front
// of a disk tier, reached by other processes as one remote tier) on a TCP
// port through CAF's middleman, with heartbeats and a connection timeout;
// with --stage-layers it also serves one pipeline stage (a layer range of a
// model on a CPU or CUDA engine holding only those layers) on a second port.

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "actors/caf_error.hpp"
#include "actors/node.hpp"
#include "actors/node_tls.hpp"
#include "actors/remote_tier_actor.hpp"
#include "actors/runtime.hpp"
#include "actors/stage_host.hpp"
#include "actors/system_config.hpp"
#include "apps/commands.hpp"
#include "apps/stop_signal.hpp"
#include "kernels/model/cpu_engine.hpp"
#ifdef KVFLOW_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_engine.hpp"
#endif
#include "kernels/model/model_file.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"

namespace kvflow::app {
namespace {

struct node_command_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 4242;
  std::string node_id;
  node_options node;
  bool keep_dir = false;
  std::string cluster_file;
  std::string join;
  int heartbeat_ms = 500;
  int connection_timeout_ms = 5000;
  // A pipeline stage served to runtimes (their --stage-nodes).
  std::string stage_layers;  // "begin:end"; empty: no stage
  std::string stage_preset;
  std::string stage_model;
  std::uint64_t stage_seed = 1;
  int stage_threads = 0;
  std::string stage_backend = "cpu";
  int stage_device = 0;
  std::uint16_t stage_port = 0;
  tls_options tls;
};

#ifdef KVFLOW_HAVE_CUDA
// Bytes of device memory in use on `device` (by every process on it).
std::size_t device_used_bytes(int device, std::size_t* total = nullptr) {
  std::size_t free_b = 0, total_b = 0;
  if (cudaSetDevice(device) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
  if (total) *total = total_b;
  return total_b - free_b;
}
#endif

// The stage's engine: the model's weights of layers [begin, end) only, on
// the CPU or on CUDA device --stage-device. `memory` describes what it
// holds, for the node's log and its "stage listening" line.
std::shared_ptr<model::engine> make_stage_engine(const node_command_options& opt, std::string& memory) {
  int begin = 0, end = 0;
  char tail = 0;
  if (std::sscanf(opt.stage_layers.c_str(), "%d:%d%c", &begin, &end, &tail) != 2)
    throw error(errc::invalid_argument, "--stage-layers '" + opt.stage_layers + "': want begin:end");
  const backend_kind backend = resolve_backend(opt.stage_backend);
#ifdef KVFLOW_HAVE_CUDA
  if (backend == backend_kind::cuda) {
    // Used memory before and after: what the stage's engine took on the
    // device (weights, the product library's workspace, buffers).
    const std::size_t before = device_used_bytes(opt.stage_device);
    std::shared_ptr<model::cuda_engine> e;
    if (!opt.stage_preset.empty()) {
      // Drawn on the device, as the runtime's --backend cuda --preset does
      // (the same fingerprint), with no host copy of the weights.
      e = model::make_cuda_engine_random(model::preset(opt.stage_preset), opt.stage_seed, opt.stage_device,
                                         {begin, end});
    } else {
      const auto w = model::load_model_file(opt.stage_model.empty() ? model::default_model_path() : opt.stage_model).w;
      e = model::make_cuda_engine(w, opt.stage_device, {begin, end});
    }
    std::size_t total = 0;
    const std::size_t after = device_used_bytes(opt.stage_device, &total);
    memory = "on cuda device " + std::to_string(opt.stage_device) + ", engine " +
             std::to_string(after > before ? after - before : 0) + " bytes of " + std::to_string(total) +
             " device memory";
    return e;
  }
#endif
  (void)backend;  // cpu: resolve_backend refused cuda where this build has none
  model::weights w;
  if (!opt.stage_preset.empty())
    w = model::random_weights(model::preset(opt.stage_preset), opt.stage_seed);
  else
    w = model::load_model_file(opt.stage_model.empty() ? model::default_model_path() : opt.stage_model).w;
  memory = "on cpu";
  return model::make_cpu_engine(std::move(w), opt.stage_threads, {begin, end});
}

int run_node(node_command_options opt) {
  network_options net;
  net.heartbeat = std::chrono::milliseconds(opt.heartbeat_ms);
  net.connection_timeout = std::chrono::milliseconds(opt.connection_timeout_ms);
  system_config cfg(net);
  // Credentials from the flags, else from the cluster file; checked here,
  // since CAF reports a bad path only as "cannot open port".
  tls_options tls;
  try {
    tls = merge_tls(opt.tls, opt.cluster_file.empty() ? tls_options{} : read_cluster_tls(opt.cluster_file));
    use_tls(cfg, tls);
  } catch (const error& e) {
    std::cerr << "kvflow node: " << e.what() << "\n";
    return 2;
  }
  if (auto why = plain_listen_refusal(opt.host); !tls.enabled() && !why.empty()) {
    std::cerr << "kvflow node: " << why << "\n";
    return 2;
  }
  caf::actor_system sys{cfg};
  msg::node_inventory inv;
  inv.node_id = opt.node_id.empty() ? opt.host + ":" + std::to_string(opt.port) : opt.node_id;
  inv.host = opt.host;
  // Checked before publishing: a node that names itself in a cluster file
  // must be listed there under the same name, or placement would differ.
  if (!opt.cluster_file.empty()) {
    auto members = read_cluster_file(opt.cluster_file);
    bool listed = false;
    for (auto& m : members) listed = listed || m.name == inv.node_id || (m.host == opt.host && m.port == opt.port);
    if (!listed) {
      std::cerr << "kvflow node: " << inv.node_id << " is not a member of " << opt.cluster_file << "\n";
      return 2;
    }
  }
  if (!opt.join.empty()) {
    // A node that joins checks that the cluster is reachable from here.
    auto m = parse_member(opt.join);
    auto peer = connect_node(sys, m.host, m.port);
    if (!peer) {
      std::cerr << "kvflow node: cannot join " << opt.join << ": " << sys.render(peer.error()) << "\n";
      return 1;
    }
  }
  bool made_dir = false;
  if (opt.node.disk_dir.empty()) {
    opt.node.disk_dir =
        (std::filesystem::temp_directory_path() / ("kvflow-node-" + std::to_string(::getpid()))).string();
    made_dir = !opt.keep_dir;
  }
  std::shared_ptr<model::engine> stage_engine;
  std::string stage_memory;
  if (!opt.stage_layers.empty()) {
    try {
      stage_engine = make_stage_engine(opt, stage_memory);
    } catch (const error& e) {
      std::cerr << "kvflow node: cannot make the stage: " << e.what() << "\n";
      return 2;
    }
  }
  auto node_handle = sys.spawn(node, inv, opt.node);
  auto port = publish_node(sys, node_handle, opt.port, opt.host);
  if (!port) {
    std::cerr << "kvflow node: cannot publish on " << opt.host << ":" << opt.port << ": " << sys.render(port.error())
              << "\n";
    caf::anon_send_exit(node_handle, caf::exit_reason::user_shutdown);
    return 1;
  }
  // The line a parent process waits for before it connects.
  std::cout << "listening " << opt.host << ":" << *port << (tls.enabled() ? " tls" : "") << std::endl;
  stage_host_actor stage;
  if (stage_engine) {
    const auto held = stage_engine->layers_held();
    stage = sys.spawn<caf::detached>(stage_host, stage_engine);
    auto stage_port = publish_stage(sys, stage, opt.stage_port, opt.host);
    if (!stage_port) {
      std::cerr << "kvflow node: cannot publish the stage on " << opt.host << ":" << opt.stage_port << ": "
                << sys.render(stage_port.error()) << "\n";
      caf::anon_send_exit(stage, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(node_handle, caf::exit_reason::user_shutdown);
      return 1;
    }
    // The second line a parent waits for: where runtimes find the stage.
    std::cout << "stage listening " << opt.host << ":" << *stage_port << " layers " << held.begin << ":" << held.end
              << " weights " << stage_engine->weight_bytes() << " bytes " << stage_memory << std::endl;
    logger("actors")->info("node {}: stage of layers [{}, {}) of {} ({} layers): weights {} bytes, {}", inv.node_id,
                           held.begin, held.end, stage_engine->cfg().name, stage_engine->cfg().layers,
                           stage_engine->weight_bytes(), stage_memory);
  }
  const int sig = wait_for_stop_signal();
  logger("actors")->info("node {} stopping on signal {}", inv.node_id, sig);
  caf::anon_send_exit(node_handle, caf::exit_reason::user_shutdown);
  if (stage) caf::anon_send_exit(stage, caf::exit_reason::user_shutdown);
  if (made_dir) {
    std::error_code ec;
    std::filesystem::remove_all(opt.node.disk_dir, ec);
  }
  return 0;
}

}  // namespace

command_runner add_node_command(CLI::App& app) {
  auto opt = std::make_shared<node_command_options>();
  auto* cmd = app.add_subcommand(
      "node",
      "Run a kvflow node: a host tier in front of a disk tier that runtimes of the cluster use as a remote tier\n"
      "(KV bytes over UCX, control through CAF's middleman with heartbeats)");
  cmd->add_option("--host", opt->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", opt->port, "TCP port to listen on (0 picks a free one)")->capture_default_str();
  cmd->add_option("--node-id", opt->node_id, "Name in the cluster (placement hashes it; default: host:port as given)");
  cmd->add_option("--host-gb", opt->node.host_gb, "Host tier capacity in GB")->capture_default_str();
  cmd->add_option("--disk-dir", opt->node.disk_dir, "Chunk file folder (default: a temporary one, removed at exit)");
  cmd->add_option("--disk-gb", opt->node.disk_gb, "Chunk files kept in GB (0: no limit)")->capture_default_str();
  cmd->add_flag("--keep-dir", opt->keep_dir, "Keep the temporary chunk folder at exit");
  cmd->add_option("--cluster", opt->cluster_file, "Cluster file this node is a member of (checked at start)");
  cmd->add_option("--join", opt->join, "host:port of a node of the cluster to check reachability against");
  cmd->add_option("--ucx-tls", opt->node.net.tls, "UCX transports for KV bytes (UCX_TLS syntax; default: UCX's)");
  cmd->add_option("--ucx-devices", opt->node.net.devices, "UCX network devices (UCX_NET_DEVICES syntax)");
  cmd->add_option_function<std::string>(
         "--wire-compression", [opt](const std::string& s) { opt->node.compression = parse_wire_compression(s); },
         "KV to clients losslessly compressed, made once when stored: auto (where it saves a tenth or more), on "
         "(wherever smaller), off (default: auto)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_option("--pack-threads", opt->node.pack_threads, "Threads compressing stored chunks (0: none)")
      ->capture_default_str();
  cmd->add_option("--stage-layers", opt->stage_layers,
                  "Also serve a pipeline stage of layers begin:end (e.g. 16:32) to runtimes whose --stage-nodes "
                  "name it; its engine (CPU or CUDA, --backend) holds only those layers' weights. Decode still runs "
                  "on the runtime's own engine, which holds every layer");
  cmd->add_option("--stage-preset", opt->stage_preset,
                  "The stage's model: a preset with random weights (as the runtime's --preset)");
  cmd->add_option("--stage-model", opt->stage_model, "The stage's model file (default: the bundled model)");
  cmd->add_option("--stage-seed", opt->stage_seed, "Seed of the preset's random weights (the runtime's --seed)")
      ->capture_default_str();
  cmd->add_option("--backend", opt->stage_backend,
                  "The stage's engine: cpu, cuda or auto (cuda: bf16 weights of the stage's layers only on "
                  "--stage-device; the runtime using the stage must run on cuda too)")
      ->capture_default_str();
  cmd->add_option("--stage-device", opt->stage_device, "CUDA device of the stage's engine (--backend cuda)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--stage-threads", opt->stage_threads, "CPU threads of the stage's engine (0: all cores)")
      ->capture_default_str();
  cmd->add_option("--stage-port", opt->stage_port, "TCP port of the stage (0 picks a free one)")->capture_default_str();
  cmd->add_option("--ucx-lanes", opt->node.net.lanes, "UCX workers (threads, connections per peer) for KV bytes")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--heartbeat-ms", opt->heartbeat_ms, "Middleman heartbeat interval")->capture_default_str();
  cmd->add_option("--connection-timeout-ms", opt->connection_timeout_ms, "Close a connection silent for this long")
      ->capture_default_str();
  cmd->add_option("--cert", opt->tls.cert,
                  "This node's certificate (PEM), signed by the cluster's CA: peers are then authenticated over TLS "
                  "(default: the cluster file's 'cert = PATH'; without certificates a node listens on loopback only)");
  cmd->add_option("--key", opt->tls.key, "The private key of --cert (PEM)");
  cmd->add_option("--ca", opt->tls.ca,
                  "The cluster's CA certificate (PEM): peers must present a certificate it signed");
  return [opt] { return run_node(*opt); };
}

}  // namespace kvflow::app

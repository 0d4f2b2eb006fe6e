// `kvflow node`: publishes this process's node actor on a TCP port.

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <csignal>
#include <iostream>
#include <unistd.h>

#include "actors/caf_error.hpp"
#include "actors/node.hpp"
#include "actors/system_config.hpp"
#include "apps/commands.hpp"
#include "messages/log.hpp"

namespace kvflow::app {
namespace {

struct node_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 4242;
  std::string node_id;
};

int run_node(const node_options& opt) {
  system_config cfg;
  caf::actor_system sys{cfg};
  msg::node_inventory inv;
  inv.node_id = opt.node_id.empty() ? "node-" + std::to_string(::getpid()) : opt.node_id;
  inv.host = opt.host;
  inv.port = opt.port;
  auto node = sys.spawn(node_actor, inv);
  auto port = sys.middleman().publish(node, opt.port, opt.host.c_str(), true);
  if (!port) {
    std::cerr << "kvflow node: cannot publish on " << opt.host << ":" << opt.port << ": " << sys.render(port.error())
              << "\n";
    caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
    return 1;
  }
  // The line a parent process waits for before it connects.
  std::cout << "listening " << opt.host << ":" << *port << std::endl;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  int sig = 0;
  sigwait(&set, &sig);
  logger("actors")->info("node {} stopping on signal {}", inv.node_id, sig);
  caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
  return 0;
}

}  // namespace

command_runner add_node_command(CLI::App& app) {
  auto opt = std::make_shared<node_options>();
  auto* cmd = app.add_subcommand("node", "Run a kvflow node that other processes reach through CAF's middleman");
  cmd->add_option("--host", opt->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", opt->port, "TCP port to listen on (0 picks a free one)")->capture_default_str();
  cmd->add_option("--node-id", opt->node_id, "Name in the cluster inventory (default: node-PID)");
  return [opt] { return run_node(*opt); };
}

}  // namespace kvflow::app

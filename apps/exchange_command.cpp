// `kvflow exchange`: two actors exchange Cap'n Proto messages, in one process
// and across two processes through CAF's middleman on loopback.

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "actors/atoms.hpp"
#include "actors/frame_type.hpp"
#include "actors/node.hpp"
#include "actors/system_config.hpp"
#include "apps/commands.hpp"
#include "messages/error.hpp"
#include "policies/policy.hpp"

extern char** environ;

namespace kvflow::app {
namespace {

using namespace std::chrono_literals;

// Sends three messages to `node` and prints what came back; false on any
// unexpected answer.
bool converse(caf::actor_system& sys, const caf::actor& node, const char* where) {
  caf::scoped_actor self{sys};
  bool ok = true;
  self->request(node, 5s, inventory_atom::value)
      .receive(
          [&](const msg::frame& f) {
            auto inv = msg::decode(f);
            ok = ok && inv && std::holds_alternative<msg::node_inventory>(*inv);
            if (ok) {
              auto& n = std::get<msg::node_inventory>(*inv);
              std::cout << where << ": inventory of " << n.node_id << " (" << f.bytes.size() << " bytes)\n";
            }
          },
          [&](const caf::error& e) {
            std::cout << where << ": inventory failed: " << sys.render(e) << "\n";
            ok = false;
          });
  msg::submit sub;
  sub.request_id = 7;
  sub.tenant = "demo";
  sub.tokens = {1, 2, 3, 4};
  sub.max_new_tokens = 16;
  sub.policy = policies::to_string(policies::policy_kind::two_pointer);
  self->request(node, 5s, msg::encode(sub))
      .receive(
          [&](const msg::frame& f) {
            auto back = msg::decode(f);
            bool same = back && msg::same(*back, sub);
            std::cout << where << ": submit round trip " << (same ? "equal" : "DIFFERENT") << "\n";
            ok = ok && same;
          },
          [&](const caf::error& e) {
            std::cout << where << ": submit failed: " << sys.render(e) << "\n";
            ok = false;
          });
  msg::frame garbage{std::vector<char>(24, '\x7f')};
  self->request(node, 5s, garbage)
      .receive(
          [&](const msg::frame&) { ok = false; },
          [&](const caf::error& e) { std::cout << where << ": malformed frame refused: " << sys.render(e) << "\n"; });
  return ok;
}

int run_exchange() {
  system_config cfg;
  caf::actor_system sys{cfg};
  msg::node_inventory inv;
  inv.node_id = "in-process";
  auto local = caf::actor_cast<caf::actor>(sys.spawn(node, inv, node_options{}));
  bool ok = converse(sys, local, "in-process");
  caf::anon_send_exit(local, caf::exit_reason::user_shutdown);

  // A second process: this same binary as `kvflow node --port 0`.
  int out[2];
  if (pipe(out) != 0) throw error(errc::io_failure, "pipe for the node process");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::string self_exe = "/proc/self/exe";
  const char* argv[] = {"kvflow", "--log-level", "warn", "node", "--port", "0", "--node-id", "second-process", nullptr};
  pid_t child = 0;
  if (posix_spawn(&child, self_exe.c_str(), &actions, nullptr, const_cast<char**>(argv), environ) != 0)
    throw error(errc::io_failure, "cannot start the node process");
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  FILE* child_out = fdopen(out[0], "r");
  char line[256] = {};
  unsigned port = 0;
  if (!fgets(line, sizeof line, child_out) || sscanf(line, "listening %*[^:]:%u", &port) != 1) {
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
    throw error(errc::peer_down, "node process did not report its port");
  }
  auto remote = sys.middleman().remote_actor<node_actor>("127.0.0.1", static_cast<std::uint16_t>(port));
  if (!remote) {
    std::cout << "second process: connect failed: " << sys.render(remote.error()) << "\n";
    ok = false;
  } else {
    ok = converse(sys, caf::actor_cast<caf::actor>(*remote), "second process") && ok;
  }
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  fclose(child_out);
  std::cout << (ok ? "exchange ok" : "exchange FAILED") << "\n";
  return ok ? 0 : 1;
}

}  // namespace

command_runner add_exchange_command(CLI::App& app) {
  app.add_subcommand("exchange", "Exchange Cap'n Proto messages between actors, in-process and across two processes");
  return [] { return run_exchange(); };
}

}  // namespace kvflow::app

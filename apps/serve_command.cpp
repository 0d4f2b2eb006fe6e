// `kvflow serve`: the OpenAI-compatible HTTP server over an in-process
// runtime. Settings come from a TOML file, flags and KVFLOW_* variables
// (environment > flags > file); SIGINT or SIGTERM stops it cleanly.

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <vector>

#include <pthread.h>

#include "actors/frontend/http_server.hpp"
#include "actors/frontend/serve_config.hpp"
#include "actors/runtime.hpp"
#include "apps/commands.hpp"

namespace kvflow::app {
namespace {

struct serve_flags {
  std::string config;
  std::map<std::string, std::string> values;
  std::vector<std::pair<std::string, CLI::Option*>> given;
};

int run_serve(serve_flags& f) {
  // Every thread started from here on (the actor system's, the server's)
  // inherits this mask, so the signals reach only the sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  frontend::serve_config c;
  const char* env_config = std::getenv("KVFLOW_CONFIG");
  auto config = env_config ? std::string(env_config) : f.config;
  if (!config.empty()) frontend::apply_file(c, config);
  std::map<std::string, std::string> flags;
  for (auto& [key, opt] : f.given)
    if (opt->count() > 0) flags[key] = f.values[key];
  frontend::apply_values(c, flags, "command line");
  frontend::apply_environment(c, [](const char* name) { return std::getenv(name); });

  runtime rt(c.rt);
  frontend::http_server server(rt, c.server);
  server.start();
  std::cout << "kvflow serve: " << rt.describe() << "\n"
            << "kvflow serve: model '" << server.model_name() << "', listening on " << server.url()
            << (c.server.api_keys.empty() ? " (no API keys: open, one tenant)"
                                          : " (" + std::to_string(c.server.api_keys.size()) + " API keys)")
            << std::endl;
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::cout << "kvflow serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", finishing " << server.running()
            << " requests in flight (at most " << c.server.shutdown_grace_s << " s)" << std::endl;
  server.stop();
  std::cout << "kvflow serve: stopped" << std::endl;
  return 0;
}

}  // namespace

command_runner add_serve_command(CLI::App& app) {
  auto f = std::make_shared<serve_flags>();
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve an OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics). "
      "Settings: --config FILE (TOML, keys as below with underscores), then flags, then KVFLOW_<KEY> variables, "
      "each overriding the one before. Default: SmolLM2 on the CPU (CUDA where a GPU is found), 127.0.0.1:8000");
  cmd->add_option("--config", f->config, "TOML file of settings (env KVFLOW_CONFIG wins)");
  const frontend::serve_config defaults;
  for (auto& s : frontend::serve_settings()) {
    auto* opt = cmd->add_option(s.flag(), f->values[s.key], s.help + " [env " + s.env() + "]");
    opt->type_name(s.type);
    if (auto shown = s.show(defaults); !shown.empty()) opt->default_str(shown);
    f->given.emplace_back(s.key, opt);
  }
  return [f] { return run_serve(*f); };
}

}  // namespace kvflow::app

// The kvflow command.

#include <iostream>
#include <map>

#include <CLI/CLI.hpp>

#include "apps/commands.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"

int main(int argc, char** argv) {
  CLI::App app{"kvflow: restores long-context KV caches by loading and recomputing at once"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error, critical or off (env KVFLOW_LOG_LEVEL wins)")
      ->capture_default_str();
  std::map<CLI::App*, kvflow::app::command_runner> runners;
  auto add = [&](auto adder) {
    auto runner = adder(app);
    runners.emplace(app.get_subcommands({}).back(), std::move(runner));
  };
  add(kvflow::app::add_demo_command);
  add(kvflow::app::add_node_command);
  add(kvflow::app::add_exchange_command);
  add(kvflow::app::add_bench_command);
  add(kvflow::app::add_serve_command);
  add(kvflow::app::add_load_command);
  add(kvflow::app::add_pd_bench_command);
  add(kvflow::app::add_pd_command);
  CLI11_PARSE(app, argc, argv);
  try {
    kvflow::init_logging(log_level);
    for (auto& [cmd, run] : runners)
      if (cmd->parsed()) return run();
  } catch (const std::exception& e) {
    std::cerr << "kvflow: " << e.what() << "\n";
    return 1;
  }
  return 1;
}

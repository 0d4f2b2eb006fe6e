#pragma once
// Subcommands of the kvflow command; each adds itself to the CLI11 app and
// returns the exit code through `run` when chosen.

#include <functional>

#include <CLI/App.hpp>

namespace kvflow::app {

using command_runner = std::function<int()>;

command_runner add_node_command(CLI::App& app);
command_runner add_exchange_command(CLI::App& app);
command_runner add_demo_command(CLI::App& app);
command_runner add_bench_command(CLI::App& app);
command_runner add_serve_command(CLI::App& app);
command_runner add_load_command(CLI::App& app);
command_runner add_pd_bench_command(CLI::App& app);
command_runner add_pd_command(CLI::App& app);

}  // namespace kvflow::app

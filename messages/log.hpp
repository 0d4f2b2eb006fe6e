#pragma once
// One spdlog logger per subsystem ("actors", "tiers", "kernels", ...).

#include <memory>
#include <string>

#include <spdlog/logger.h>

namespace kvflow {

/// Sets the level of every kvflow logger. The environment variable
/// KVFLOW_LOG_LEVEL wins over `level` (environment > flags > file).
/// Accepts trace, debug, info, warn, error, critical, off; throws
/// kvflow::error(invalid_argument) on anything else.
void init_logging(const std::string& level = "info");

/// The logger of a subsystem, created on first use; thread-safe.
std::shared_ptr<spdlog::logger> logger(const std::string& subsystem);

}  // namespace kvflow

#include "messages/log.hpp"

#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "messages/error.hpp"

namespace kvflow {
namespace {

std::mutex mutex;
spdlog::level::level_enum parse(const std::string& name);

// Loggers made before init_logging (libraries used without the kvflow
// command) still follow KVFLOW_LOG_LEVEL.
spdlog::level::level_enum initial_level() {
  const char* env = std::getenv("KVFLOW_LOG_LEVEL");
  if (!env || !*env) return spdlog::level::info;
  auto lvl = spdlog::level::from_str(env);
  return lvl == spdlog::level::off && std::string(env) != "off" ? spdlog::level::info : lvl;
}

spdlog::level::level_enum current = initial_level();

spdlog::level::level_enum parse(const std::string& name) {
  auto lvl = spdlog::level::from_str(name);
  // from_str maps anything unknown to off; only "off" itself may mean off.
  if (lvl == spdlog::level::off && name != "off")
    throw error(errc::invalid_argument,
                "log level '" + name + "' (use trace, debug, info, warn, error, critical, off)");
  return lvl;
}

}  // namespace

void init_logging(const std::string& level) {
  const char* env = std::getenv("KVFLOW_LOG_LEVEL");
  auto lvl = parse(env && *env ? std::string(env) : level);
  std::lock_guard<std::mutex> guard(mutex);
  current = lvl;
  spdlog::apply_all([lvl](const std::shared_ptr<spdlog::logger>& l) { l->set_level(lvl); });
}

std::shared_ptr<spdlog::logger> logger(const std::string& subsystem) {
  std::lock_guard<std::mutex> guard(mutex);
  if (auto existing = spdlog::get(subsystem)) return existing;
  // Logs go to stderr so that stdout stays for results.
  auto created = spdlog::stderr_color_mt(subsystem);
  created->set_level(current);
  created->set_pattern("[%H:%M:%S.%e] [%n] [%^%l%$] %v");
  return created;
}

}  // namespace kvflow

#pragma once
// The CAF actor system configuration of every kvflow process.

#include <chrono>

#include <caf/actor_system_config.hpp>

namespace kvflow {

/// Network settings of the middleman. CAF 0.17 leaves heartbeats and the
/// connection timeout off, so a vanished peer would go unnoticed.
struct network_options {
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds connection_timeout{5000};
};

/// Registers kvflow's message types and error category, loads the
/// middleman and sets its heartbeat and connection timeout.
class system_config : public caf::actor_system_config {
 public:
  explicit system_config(const network_options& net = {});
};

}  // namespace kvflow

#pragma once
// `kvflow serve`'s HTTP server: the OpenAI-compatible API over an in-process
// runtime. POST /v1/completions and /v1/chat/completions (streamed as
// server-sent events or not), GET /v1/models, /health and /metrics
// (Prometheus text). Requests decode together in the runtime (continuous
// batching); admission bounds how many run and wait.

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "actors/runtime.hpp"

namespace kvflow::frontend {

class metrics;

struct server_options {
  std::string host = "127.0.0.1";  ///< loopback unless asked otherwise
  int port = 8000;                 ///< 0: any free port (see http_server::port)
  std::string served_model_name;   ///< the name clients send as "model"; empty: the preset or model file's stem
  std::map<std::string, std::string> api_keys;  ///< key -> tenant; empty: open, one tenant "default"
  /// File of the secret that salts tenants' chunk keys (made if missing;
  /// see load_tenant_secret); empty: a fresh secret per process.
  std::string tenant_secret_file;
  std::size_t max_running = 8;             ///< requests in the runtime at once
  std::size_t max_waiting = 64;            ///< requests waiting for a slot; beyond: 429
  std::size_t max_body_bytes = 1 << 20;    ///< larger bodies: 413
  std::uint32_t default_max_tokens = 256;  ///< when a request gives no max_tokens (clipped to the context)
  int retry_after_s = 1;                   ///< Retry-After of a 429
  double shutdown_grace_s = 30;            ///< stop() lets requests in flight finish this long, then cancels them
  /// Connection threads; 0: max_running + max_waiting + 8. As many accepted
  /// connections more may wait for a thread; the kernel's backlog holds the rest.
  int http_threads = 0;
};

/// Serves one runtime. Thread-safe; the runtime must outlive the server.
class http_server {
 public:
  /// Checks the options (throws kvflow::error with context); serves nothing yet.
  http_server(runtime& rt, server_options opts);
  /// Stops as stop() does.
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Binds host:port and serves on a thread of its own; returns the bound
  /// port. Throws kvflow::error (io_failure) when it cannot bind.
  int start();
  /// Refuses new requests (503), lets those in flight finish for up to
  /// shutdown_grace_s, cancels what is left (streams end with finish_reason
  /// "abort"), then closes the listening socket. Idempotent.
  void stop();

  int port() const;
  std::string url() const;  ///< "http://host:port"
  const std::string& model_name() const;
  /// Requests running in the runtime and waiting for admission.
  std::size_t running() const;
  std::size_t waiting() const;
  const metrics& stats() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace kvflow::frontend

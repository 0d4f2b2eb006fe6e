#pragma once
// The Prometheus metrics of `kvflow serve`, kept with prometheus-cpp's core
// and served as text by our own HTTP server (GET /metrics). Thread-safe.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/runtime.hpp"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace kvflow::frontend {

/// Latency buckets like vLLM's, 1 ms to 10 s.
const std::vector<double>& latency_buckets();

class metrics {
 public:
  metrics();
  ~metrics();
  metrics(const metrics&) = delete;
  metrics& operator=(const metrics&) = delete;

  /// Arrival to first token (admission wait included).
  void time_to_first_token(double seconds);
  /// Between two tokens of one reply.
  void inter_token(double seconds);
  /// A generation that ran: its runtime report, the tokens it counts and why it ended.
  void finished(const std::string& endpoint, const restore_report& r, std::uint32_t prompt_tokens,
                std::uint32_t generation_tokens, const std::string& finish_reason, double e2e_seconds);
  /// Every answered /v1 request, by HTTP status (429s and 4xx included).
  void response(int status);
  /// Current admission state, set before each scrape.
  void queue(std::size_t running, std::size_t waiting);
  /// The runtime's pool counters (kvflow_pool{counter="..."}), set before
  /// each scrape: soaks check them back at their baseline.
  void pools(const resource_counters& c);

  /// Prometheus text exposition format 0.0.4.
  std::string text() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* responses_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Family<prometheus::Counter>* lookups_;
  prometheus::Family<prometheus::Counter>* hits_;
  prometheus::Family<prometheus::Counter>* bytes_;
  prometheus::Counter* chunks_;
  prometheus::Counter* cached_chunks_;
  prometheus::Family<prometheus::Counter>* cells_;
  prometheus::Family<prometheus::Counter>* grants_;
  prometheus::Family<prometheus::Gauge>* pools_;
};

}  // namespace kvflow::frontend

#include "actors/frontend/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace kvflow::frontend {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const std::vector<double>& latency_buckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                        0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0};
  return b;
}

metrics::metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  requests_ = &BuildCounter()
                   .Name("kvflow_requests_total")
                   .Help("Generations finished, by endpoint and finish reason")
                   .Register(r);
  responses_ = &BuildCounter()
                    .Name("kvflow_http_responses_total")
                    .Help("Answered /v1 requests by HTTP status (429: admission queue full)")
                    .Register(r);
  prompt_tokens_ = &BuildCounter()
                        .Name("kvflow_prompt_tokens_total")
                        .Help("Prompt tokens of finished generations")
                        .Register(r)
                        .Add({});
  generation_tokens_ =
      &BuildCounter().Name("kvflow_generation_tokens_total").Help("Generated tokens").Register(r).Add({});
  pools_ = &BuildGauge()
                .Name("kvflow_pool")
                .Help("Runtime pool counters: back at their idle values when no request runs")
                .Register(r);
  running_ = &BuildGauge().Name("kvflow_requests_running").Help("Requests running in the runtime").Register(r).Add({});
  waiting_ = &BuildGauge().Name("kvflow_requests_waiting").Help("Requests waiting for admission").Register(r).Add({});
  ttft_ = &BuildHistogram()
               .Name("kvflow_time_to_first_token_seconds")
               .Help("Arrival to first token, admission wait included")
               .Register(r)
               .Add({}, latency_buckets());
  itl_ = &BuildHistogram()
              .Name("kvflow_inter_token_latency_seconds")
              .Help("Time between two tokens of one reply")
              .Register(r)
              .Add({}, latency_buckets());
  e2e_ = &BuildHistogram()
              .Name("kvflow_e2e_request_latency_seconds")
              .Help("Arrival to last token")
              .Register(r)
              .Add({}, latency_buckets());
  lookups_ =
      &BuildCounter().Name("kvflow_cache_lookups_total").Help("Prompt chunk keys looked up, per tier").Register(r);
  hits_ = &BuildCounter().Name("kvflow_cache_hits_total").Help("Chunk keys a tier held, per tier").Register(r);
  bytes_ = &BuildCounter().Name("kvflow_cache_loaded_bytes_total").Help("KV bytes loaded from each tier").Register(r);
  chunks_ = &BuildCounter().Name("kvflow_prompt_chunks_total").Help("Prompt chunks restored").Register(r).Add({});
  cached_chunks_ = &BuildCounter()
                        .Name("kvflow_cached_chunks_total")
                        .Help("Prompt chunks found in a tier (the cached prefix)")
                        .Register(r)
                        .Add({});
  cells_ = &BuildCounter()
                .Name("kvflow_cells_total")
                .Help("Restore cells (chunk x layer) by how they were restored: computed or loaded")
                .Register(r);
  grants_ =
      &BuildCounter().Name("kvflow_grants_total").Help("Grants carried out, by kind: compute or load").Register(r);
}

metrics::~metrics() = default;

void metrics::time_to_first_token(double seconds) { ttft_->Observe(seconds); }

void metrics::inter_token(double seconds) { itl_->Observe(seconds); }

// Family::Add returns the metric already made for labels it has seen.
void metrics::finished(const std::string& endpoint, const restore_report& r, std::uint32_t prompt_tokens,
                       std::uint32_t generation_tokens, const std::string& finish_reason, double e2e_seconds) {
  requests_->Add({{"endpoint", endpoint}, {"finish_reason", finish_reason}}).Increment();
  prompt_tokens_->Increment(prompt_tokens);
  generation_tokens_->Increment(generation_tokens);
  e2e_->Observe(e2e_seconds);
  for (auto& t : r.tiers) {
    lookups_->Add({{"tier", t.tier}}).Increment(t.lookups);
    hits_->Add({{"tier", t.tier}}).Increment(t.hits);
    bytes_->Add({{"tier", t.tier}}).Increment(static_cast<double>(t.bytes_loaded));
  }
  chunks_->Increment(r.chunks);
  cached_chunks_->Increment(r.cached_chunks);
  cells_->Add({{"how", "computed"}}).Increment(r.cells_computed);
  cells_->Add({{"how", "loaded"}}).Increment(r.cells_loaded);
  grants_->Add({{"kind", "compute"}}).Increment(r.grants_compute);
  grants_->Add({{"kind", "load"}}).Increment(r.grants_load);
}

void metrics::response(int status) { responses_->Add({{"code", std::to_string(status)}}).Increment(); }

void metrics::pools(const resource_counters& c) {
  auto set = [this](const char* name, double v) { pools_->Add({{"counter", name}}).Set(v); };
  set("requests", static_cast<double>(c.requests));
  set("loads_in_flight", static_cast<double>(c.loads_in_flight));
  set("disk_reads", static_cast<double>(c.disk_reads));
  set("disk_writes", static_cast<double>(c.disk_writes));
  set("host_leases", static_cast<double>(c.host_leases));
  set("staging_buffers", static_cast<double>(c.staging_buffers));
  set("staging_bytes", static_cast<double>(c.staging_bytes));
  set("open_fds", static_cast<double>(c.open_fds));
  set("faults_injected", static_cast<double>(c.faults_injected));
}

void metrics::queue(std::size_t running, std::size_t waiting) {
  running_->Set(static_cast<double>(running));
  waiting_->Set(static_cast<double>(waiting));
}

std::string metrics::text() const { return prometheus::TextSerializer().Serialize(registry_->Collect()); }

}  // namespace kvflow::frontend

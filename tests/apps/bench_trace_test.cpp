#define BOOST_TEST_MODULE apps.bench_trace
#include <boost/test/unit_test.hpp>

#include <string>

#include "apps/bench_trace.hpp"

using namespace kvflow;
using namespace kvflow::app;
using nlohmann::json;

namespace {

// One request of 4 chunks, 3 of them cached, 4 layers: chunk 0 computed
// whole, chunk 1 computed up to layer 2 and loaded above, chunk 2 loaded,
// chunk 3 (the suffix) computed.
restore_run one_request() {
  restore_report r;
  r.request_id = 7;
  r.prompt_tokens = 512;
  r.chunks = 4;
  r.cached_chunks = 3;
  r.ttft_s = 0.050;
  r.spans = {
      {true, "gpu", 0, 1, 0, 4, 0.000, 0.010},   {true, "gpu", 1, 2, 0, 2, 0.010, 0.016},
      {false, "disk", 1, 2, 2, 4, 0.000, 0.020}, {false, "disk", 2, 3, 0, 4, 0.000, 0.030},
      {true, "gpu", 3, 4, 0, 4, 0.030, 0.045},
  };
  restore_run run;
  run.reports.push_back(r);
  run.submit_s.push_back(0.5);
  return run;
}

trace_facts facts() {
  trace_facts f;
  f.preset = "tiny-test";
  f.tier = "disk";
  f.policy = "two_pointer";
  f.device = "cpu";
  f.context_tokens = 512;
  f.layers = 4;
  f.chunk_tokens = 128;
  f.suffix_tokens = 128;
  return f;
}

}  // namespace

BOOST_AUTO_TEST_CASE(one_event_per_grant_on_its_thread) {
  json doc = chrome_trace(facts(), one_request());
  int compute = 0, load = 0;
  for (auto& e : doc["traceEvents"]) {
    if (e["ph"] != "X") continue;
    if (e["cat"] == "compute") {
      ++compute;
      BOOST_TEST(e["tid"].get<int>() == 0);
    } else {
      ++load;
      BOOST_TEST(e["tid"].get<int>() == 1);
    }
    // Times in microseconds from the batch's first submit (this one at 0.5 s).
    BOOST_TEST(e["ts"].get<double>() >= 0.5e6);
  }
  BOOST_TEST(compute == 3);
  BOOST_TEST(load == 2);
}

BOOST_AUTO_TEST_CASE(the_meeting_point_is_the_highest_computed_cached_cell) {
  json doc = chrome_trace(facts(), one_request());
  auto& req = doc["kvflow"]["requests"][0];
  BOOST_TEST(req["meet"]["chunk"].get<int>() == 1);
  BOOST_TEST(req["meet"]["layer"].get<int>() == 1);
  // When chunk 1 was complete: its load ended last, at 20 ms.
  BOOST_TEST(req["meet"]["at_s"].get<double>() == 0.020);
  BOOST_TEST(doc["kvflow"]["batch"].get<int>() == 1);
  BOOST_TEST(doc["kvflow"]["policy"] == "two_pointer");
}

BOOST_AUTO_TEST_CASE(a_load_only_restore_has_no_meeting_point) {
  auto run = one_request();
  auto& spans = run.reports[0].spans;
  spans = {{false, "disk", 0, 3, 0, 4, 0.0, 0.03}, {true, "gpu", 3, 4, 0, 4, 0.03, 0.045}};
  json doc = chrome_trace(facts(), run);
  BOOST_TEST(doc["kvflow"]["requests"][0]["meet"].is_null());
}

#define BOOST_TEST_MODULE apps.load.report
#include <boost/test/unit_test.hpp>

// The load report against hand-computed values: numpy's percentiles, the
// population std, vLLM's TPOT and goodput rules, throughputs, turns.

#include "apps/load/report.hpp"
#include "messages/error.hpp"

using namespace kvflow::load;

namespace {

request_record ok_record(double ttft, double e2el, std::int64_t out, std::int64_t in, int turn = 0) {
  request_record r;
  r.ok = true;
  r.status = 200;
  r.ttft_s = ttft;
  r.e2el_s = e2el;
  r.output_tokens = out;
  r.prompt_tokens = in;
  r.turn = turn;
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(percentiles_interpolate_like_numpy) {
  std::vector<double> v{1, 2, 3, 4};
  // numpy.percentile([1,2,3,4], [0, 50, 90, 99, 100]) = 1, 2.5, 3.7, 3.97, 4
  BOOST_CHECK_CLOSE(percentile(v, 0), 1.0, 1e-9);
  BOOST_CHECK_CLOSE(percentile(v, 50), 2.5, 1e-9);
  BOOST_CHECK_CLOSE(percentile(v, 90), 3.7, 1e-9);
  BOOST_CHECK_CLOSE(percentile(v, 99), 3.97, 1e-9);
  BOOST_CHECK_CLOSE(percentile(v, 100), 4.0, 1e-9);
  BOOST_CHECK_CLOSE(percentile({7}, 99), 7.0, 1e-9);
  BOOST_CHECK_THROW(percentile({}, 50), kvflow::error);
  BOOST_CHECK_THROW(percentile(v, 101), kvflow::error);
}

BOOST_AUTO_TEST_CASE(summary_is_in_ms_with_population_std) {
  // seconds 0.1, 0.2, 0.3, 0.6: mean 300 ms; std sqrt((4+1+0+9)/4)*100 = 187.08 ms
  auto s = summarize_seconds({0.3, 0.1, 0.6, 0.2});
  BOOST_CHECK_CLOSE(s.mean_ms, 300.0, 1e-9);
  BOOST_CHECK_CLOSE(s.median_ms, 250.0, 1e-9);
  BOOST_CHECK_CLOSE(s.std_ms, 187.0828693, 1e-6);
  BOOST_CHECK_CLOSE(s.p90_ms, 510.0, 1e-9);  // 0.3 + 0.7 * 0.3 s
  BOOST_CHECK_CLOSE(s.p99_ms, 591.0, 1e-9);
  auto empty = summarize_seconds({});
  BOOST_CHECK_EQUAL(empty.mean_ms, 0.0);
  BOOST_CHECK_EQUAL(empty.p99_ms, 0.0);
}

BOOST_AUTO_TEST_CASE(report_counts_throughput_tpot_and_goodput) {
  std::vector<request_record> recs;
  recs.push_back(ok_record(0.1, 1.1, 11, 100, 0));  // TPOT (1.1-0.1)/10 = 100 ms
  recs.push_back(ok_record(0.4, 0.9, 6, 200, 1));   // TPOT 0.5/5 = 100 ms
  recs.push_back(ok_record(0.2, 0.2, 1, 50, 1));    // one token: no TPOT, 0 for goodput
  request_record failed;
  failed.ok = false;
  failed.status = 500;
  failed.prompt_tokens = 999;  // failed requests count no tokens
  recs.push_back(failed);
  for (std::size_t i = 0; i < recs.size(); ++i) recs[i].itl_s = {0.01 * static_cast<double>(i + 1)};
  recs[3].itl_s.clear();

  slo_config slo = parse_slos({"ttft:300", "tpot:150"});
  auto r = make_report(recs, 2.0, slo);
  BOOST_CHECK_EQUAL(r.completed, 3u);
  BOOST_CHECK_EQUAL(r.failed, 1u);
  BOOST_CHECK_EQUAL(r.total_input_tokens, 350);
  BOOST_CHECK_EQUAL(r.total_output_tokens, 18);
  BOOST_CHECK_CLOSE(r.request_throughput, 1.5, 1e-9);
  BOOST_CHECK_CLOSE(r.output_throughput, 9.0, 1e-9);
  BOOST_CHECK_CLOSE(r.total_token_throughput, 184.0, 1e-9);
  BOOST_CHECK_CLOSE(r.ttft.mean_ms, 233.3333333, 1e-6);
  BOOST_CHECK_CLOSE(r.ttft.median_ms, 200.0, 1e-9);
  BOOST_CHECK_CLOSE(r.tpot.mean_ms, 100.0, 1e-9);  // only the two multi-token answers
  BOOST_CHECK_CLOSE(r.itl.mean_ms, 20.0, 1e-9);    // 10, 20, 30 ms
  BOOST_CHECK_CLOSE(r.e2el.mean_ms, 733.3333333, 1e-6);
  // Good: #1 (ttft 100, tpot 100) and #3 (ttft 200, tpot 0); #2 misses ttft 300.
  BOOST_REQUIRE(r.request_goodput);
  BOOST_CHECK_EQUAL(r.good_requests, 2u);
  BOOST_CHECK_CLOSE(*r.request_goodput, 1.0, 1e-9);
  BOOST_REQUIRE_EQUAL(r.by_turn.size(), 2u);
  BOOST_CHECK_EQUAL(r.by_turn[0].turn, 0);
  BOOST_CHECK_EQUAL(r.by_turn[1].completed, 2u);
  BOOST_CHECK_CLOSE(r.by_turn[1].mean_ttft_ms, 300.0, 1e-9);

  auto j = report_json(r, recs, {{"model_id", "m"}});
  BOOST_CHECK_EQUAL(j.at("model_id"), "m");
  BOOST_CHECK_EQUAL(j.at("completed"), 3);
  BOOST_CHECK_EQUAL(j.at("failed"), 1);
  for (const char* key :
       {"mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_itl_ms",
        "median_e2el_ms", "request_goodput", "output_throughput", "total_token_throughput", "duration"})
    BOOST_CHECK_MESSAGE(j.contains(key), key);
  BOOST_CHECK_EQUAL(j.at("requests").size(), 4u);
  BOOST_CHECK_CLOSE(j.at("requests")[0].at("tpot_ms").get<double>(), 100.0, 1e-9);
  BOOST_CHECK_EQUAL(j.at("requests")[3].at("ok"), false);

  auto table = report_table(r);
  BOOST_CHECK(table.find("Failed requests:") != std::string::npos);
  BOOST_CHECK(table.find("Request goodput (req/s):") != std::string::npos);
  BOOST_CHECK(table.find("TTFT by turn") != std::string::npos);

  auto no_slo = make_report(recs, 2.0, {});
  BOOST_CHECK(!no_slo.request_goodput);
  BOOST_CHECK(report_json(no_slo, recs, {}).at("request_goodput").is_null());
}

BOOST_AUTO_TEST_CASE(goodput_e2el_and_tpot_boundaries) {
  std::vector<request_record> recs{ok_record(0.1, 1.1, 11, 1), ok_record(0.1, 2.0, 11, 1)};
  auto r = make_report(recs, 1.0, parse_slos({"e2el:1100"}));
  BOOST_CHECK_EQUAL(r.good_requests, 1u);  // equal to the SLO is good, as vLLM's s >= r
  r = make_report(recs, 1.0, parse_slos({"tpot:100"}));
  BOOST_CHECK_EQUAL(r.good_requests, 1u);  // 100 ms meets it, 190 ms does not
}

BOOST_AUTO_TEST_CASE(bad_slos_are_refused) {
  for (const char* bad : {"ttft", "ttft:", "ttft:-3", "ttft:abc", "ttft:5x", "latency:100", ":100"})
    BOOST_CHECK_THROW(parse_slos({bad}), kvflow::error);
  auto s = parse_slos({"ttft:500", "tpot:50", "e2el:2000"});
  BOOST_CHECK_EQUAL(*s.ttft_ms, 500.0);
  BOOST_CHECK_EQUAL(*s.tpot_ms, 50.0);
  BOOST_CHECK_EQUAL(*s.e2el_ms, 2000.0);
}

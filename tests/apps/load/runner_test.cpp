#define BOOST_TEST_MODULE apps.load.runner
#include <boost/test/unit_test.hpp>

// The runner in-process against the fake server: the cap on requests in
// flight holds, Poisson arrivals overlap, a session's turns go one after the
// other, a failing source stops the run cleanly, and the progress line.

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "apps/load/runner.hpp"
#include "messages/error.hpp"
#include "tests/apps/load/fake_openai_server.hpp"

using namespace kvflow::load;
using kvflow::load::testing::fake_server;
using kvflow::load::testing::first_delay_ms;

namespace {

// `total` completions requests; sessions of `turns` turns when turns > 1;
// throws at request `fail_at` (when >= 0).
class test_source : public request_source {
 public:
  test_source(int total, int turns = 1, int fail_at = -1) : total_(total), turns_(turns), fail_at_(fail_at) {}
  std::optional<scenario_request> next(const scenario_context& ctx) override {
    if (static_cast<int>(ctx.index) == fail_at_) throw kvflow::error(kvflow::errc::invalid_argument, "source broke");
    if (ctx.session.empty() && started_ >= total_) return std::nullopt;
    scenario_request r;
    r.api.body = {{"prompt", "one two three"}, {"max_tokens", 2}};
    if (ctx.session.empty()) {
      ++started_;
      if (turns_ > 1) r.session = "s" + std::to_string(started_);
    }
    return r;
  }
  std::optional<double> on_response(const scenario_context& ctx, const request_record&) override {
    if (turns_ > 1 && ctx.turn + 1 < turns_) return 0.0;
    return std::nullopt;
  }

 private:
  int total_, turns_, fail_at_, started_ = 0;
};

endpoint_config endpoint(const fake_server& s) {
  endpoint_config e;
  e.base_url = s.url();
  e.model = "fake-model";
  e.timeout_s = 10;
  return e;
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_cap_on_requests_in_flight_holds) {
  fake_server server;
  test_source src(8);
  run_options o;
  o.concurrency = 2;
  o.progress = false;
  auto r = run_load(src, endpoint(server), o);
  BOOST_REQUIRE_EQUAL(r.records.size(), 8u);
  for (const auto& rec : r.records) {
    BOOST_CHECK_MESSAGE(rec.ok, rec.error);
    BOOST_CHECK_GE(rec.ttft_s * 1000, first_delay_ms);
    BOOST_CHECK_EQUAL(rec.output_tokens, 2);
  }
  BOOST_CHECK_EQUAL(server.max_in_flight(), 2);
  BOOST_CHECK_GE(r.duration_s * 1000, 4 * first_delay_ms);  // four rounds of two
}

BOOST_AUTO_TEST_CASE(poisson_arrivals_do_not_wait_for_answers) {
  fake_server server;
  test_source src(10);
  run_options o;
  o.request_rate = 100;  // 10 ms apart on average; each answer takes > 60 ms
  o.num_requests = 10;
  o.progress = false;
  auto r = run_load(src, endpoint(server), o);
  BOOST_REQUIRE_EQUAL(r.records.size(), 10u);
  for (std::size_t i = 1; i < r.records.size(); ++i) BOOST_CHECK_GE(r.records[i].start_s, r.records[i - 1].start_s);
  BOOST_CHECK_GE(server.max_in_flight(), 3);
  BOOST_CHECK_LT(r.records.back().start_s, 10 * first_delay_ms / 1000.0);  // not one after the other
}

BOOST_AUTO_TEST_CASE(a_sessions_turns_follow_its_answers) {
  fake_server server;
  test_source src(2, 3);
  run_options o;
  o.concurrency = 2;
  o.progress = false;
  auto r = run_load(src, endpoint(server), o);
  BOOST_REQUIRE_EQUAL(r.records.size(), 6u);
  std::map<std::string, std::vector<const request_record*>> by_session;
  for (const auto& rec : r.records) by_session[rec.session].push_back(&rec);
  BOOST_REQUIRE_EQUAL(by_session.size(), 2u);
  for (const auto& [name, recs] : by_session) {
    BOOST_REQUIRE_EQUAL(recs.size(), 3u);
    for (int t = 0; t < 3; ++t) BOOST_CHECK_EQUAL(recs[t]->turn, t);
    for (int t = 1; t < 3; ++t)  // sent only once the previous answer was in
      BOOST_CHECK_GE(recs[t]->start_s + 1e-6, recs[t - 1]->start_s + recs[t - 1]->e2el_s);
  }
}

BOOST_AUTO_TEST_CASE(a_failing_source_stops_the_run_after_its_requests_finish) {
  fake_server server;
  test_source src(10, 1, 3);
  run_options o;
  o.concurrency = 2;
  o.progress = false;
  BOOST_CHECK_EXCEPTION(run_load(src, endpoint(server), o), kvflow::error, [](const kvflow::error& e) {
    return std::string(e.what()).find("source broke") != std::string::npos;
  });
  BOOST_CHECK_EQUAL(server.bodies().size(), 3u);
}

BOOST_AUTO_TEST_CASE(a_stop_flag_ends_the_run_early) {
  fake_server server;
  test_source src(1000);
  std::atomic<bool> stop{false};
  run_options o;
  o.request_rate = 100;
  o.duration_s = 30;
  o.progress = false;
  o.stop = &stop;
  std::thread flip([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop = true;
  });
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_load(src, endpoint(server), o);
  flip.join();
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_CHECK_LT(took, 2.0);  // not the 30 s asked for
  BOOST_CHECK_GE(r.records.size(), 1u);
  BOOST_CHECK_LT(r.records.size(), 200u);
  for (const auto& rec : r.records) BOOST_CHECK(rec.ok);  // those in flight were answered
}

BOOST_AUTO_TEST_CASE(progress_lines) {
  BOOST_CHECK_EQUAL(progress_line(5, 1, 2, 10, 3.31, 0, 10), "[#####.....] 5/10  ok 4  failed 1  in flight 2  3.3 s");
  BOOST_CHECK_EQUAL(progress_line(3, 0, 1, 0, 1.0, 4.0, 4), "[#...] 3 done  ok 3  failed 0  in flight 1  1.0 s");
  BOOST_CHECK_EQUAL(progress_line(3, 0, 0, 0, 1.0, 0, 4), "3 done  ok 3  failed 0  in flight 0  1.0 s");
}

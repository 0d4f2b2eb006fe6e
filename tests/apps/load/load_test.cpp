#define BOOST_TEST_MODULE apps.load.load
#include <boost/test/unit_test.hpp>

// `kvflow load` end to end against a fake OpenAI server started in-process
// on a loopback port: it streams a few SSE chunks after a set delay, so the
// report's TTFT must be at least that delay; multi-turn histories must grow;
// the trace must replay with its sessions; failures are counted; bad input
// gets a clear error.

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include "tests/apps/load/fake_openai_server.hpp"
#include "tests/apps/load/test_files.hpp"

namespace fs = std::filesystem;
using kvflow::load::testing::chunk_gap_ms;
using kvflow::load::testing::fake_server;
using kvflow::load::testing::first_delay_ms;
using kvflow::load::testing::read_text;
using kvflow::load::testing::run_load;
using kvflow::load::testing::scratch;
using json = nlohmann::json;

namespace {

// Runs `kvflow load ARGS`; stderr into `log`. Returns the exit status.
json report(const fs::path& p) { return json::parse(read_text(p)); }

// A loopback port that nothing listens on: bound, read, closed.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  BOOST_REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  BOOST_REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

const std::string shipped = std::string(KVFLOW_SOURCE_DIR) + "/apps/load/";

}  // namespace

BOOST_AUTO_TEST_CASE(multi_turn_scenario_streams_and_grows_its_history) {
  fake_server server;
  scratch s("load-test");
  auto out = s.dir / "chat.json";
  int rc = run_load("--url " + server.url() + " --scenario " + shipped + "scenarios/multi_turn.lua" +
                        " --arg sessions=3 --arg turns=3 --arg context=20 --arg question=5 --arg max_tokens=4" +
                        " --concurrency 2 --goodput ttft:10000 --out " + out.string(),
                    s.dir / "log");
  BOOST_REQUIRE_MESSAGE(rc == 0, read_text(s.dir / "log"));
  auto j = report(out);
  BOOST_CHECK_EQUAL(j.at("model_id"), "fake-model");
  BOOST_CHECK_EQUAL(j.at("completed"), 9);
  BOOST_CHECK_EQUAL(j.at("failed"), 0);
  BOOST_CHECK_EQUAL(j.at("total_output_tokens"), 36);
  BOOST_CHECK_EQUAL(j.at("max_concurrency"), 2);
  BOOST_CHECK_CLOSE(j.at("request_goodput").get<double>(), j.at("request_throughput").get<double>(), 1e-9);
  BOOST_CHECK_GE(j.at("median_ttft_ms").get<double>(), first_delay_ms);
  for (const auto& r : j.at("requests")) {
    BOOST_CHECK(r.at("ok").get<bool>());
    BOOST_CHECK_GE(r.at("ttft_ms").get<double>(), first_delay_ms);  // the role-only chunk does not count
    BOOST_CHECK_GE(r.at("e2el_ms").get<double>(), first_delay_ms + 3 * chunk_gap_ms);  // the last chunk left then
    BOOST_CHECK_EQUAL(r.at("itl_ms").size(), 3u);
    BOOST_CHECK_EQUAL(r.at("output_tokens"), 4);
  }
  // Three turns, each prompt longer than the last (usage's prompt_tokens).
  const auto& turns = j.at("by_turn");
  BOOST_REQUIRE_EQUAL(turns.size(), 3u);
  for (std::size_t t = 0; t < 3; ++t) BOOST_CHECK_EQUAL(turns[t].at("completed"), 3);
  BOOST_CHECK_LT(turns[0].at("mean_prompt_tokens").get<double>(), turns[1].at("mean_prompt_tokens").get<double>());
  BOOST_CHECK_LT(turns[1].at("mean_prompt_tokens").get<double>(), turns[2].at("mean_prompt_tokens").get<double>());
  // The server saw each session's history grow by the answer and a question.
  std::map<std::size_t, int> by_size;
  for (const auto& b : server.bodies()) {
    BOOST_CHECK_EQUAL(b.at("model"), "fake-model");
    BOOST_CHECK(b.at("stream").get<bool>());
    const auto& m = b.at("messages");
    ++by_size[m.size()];
    if (m.size() >= 4) BOOST_CHECK_EQUAL(m[2].at("content"), "alpha beta gamma delta");
  }
  BOOST_CHECK((by_size == std::map<std::size_t, int>{{2, 3}, {4, 3}, {6, 3}}));
  // The table went to stdout.
  BOOST_CHECK(read_text(s.dir / "log.out").find("Serving Benchmark Result") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(trace_replays_with_sessions_and_shared_prefixes) {
  fake_server server;
  scratch s("load-test");
  auto out = s.dir / "trace.json";
  int rc = run_load("--url " + server.url() + " --trace " + shipped + "traces/small.jsonl" +
                        " --token-ids --vocab 1000 --scale 0.05 --speedup 10 --out " + out.string(),
                    s.dir / "log");
  BOOST_REQUIRE_MESSAGE(rc == 0, read_text(s.dir / "log"));
  auto j = report(out);
  BOOST_CHECK_EQUAL(j.at("completed"), 24);
  BOOST_CHECK_EQUAL(j.at("failed"), 0);
  // The trace spans about 6 s; at 10x its requests go out over about 0.6 s.
  double last_start = 0;
  std::map<std::string, std::vector<int>> turns;
  for (const auto& r : j.at("requests")) {
    last_start = std::max(last_start, r.at("start_ms").get<double>());
    if (!r.at("session").is_null()) turns[r.at("session").get<std::string>()].push_back(r.at("turn").get<int>());
  }
  BOOST_CHECK_GT(last_start, 450.0);
  BOOST_CHECK_LT(last_start, 1500.0);
  BOOST_CHECK_EQUAL(turns.size(), 4u);
  for (const auto& [sess, ts] : turns) BOOST_CHECK_MESSAGE((ts == std::vector<int>{0, 1, 2, 3}), sess);
  // Prompts: token ids; the scaled block is 26 tokens, and the first block
  // (hash id 0) is in every prompt.
  auto bodies = server.bodies();
  BOOST_REQUIRE_EQUAL(bodies.size(), 24u);
  const auto& first = bodies[0].at("prompt");
  BOOST_REQUIRE(first.is_array());
  for (const auto& b : bodies) {
    const auto& p = b.at("prompt");
    BOOST_REQUIRE(p.is_array());
    BOOST_REQUIRE_GE(p.size(), 26u);
    BOOST_CHECK(std::equal(p.begin(), p.begin() + 26, first.begin()));
    for (const auto& id : p) BOOST_CHECK(id.get<int>() >= 1 && id.get<int>() < 1000);
  }
}

BOOST_AUTO_TEST_CASE(failures_are_counted_and_keys_are_sent) {
  scratch s("load-test");
  {
    fake_server server(2);  // every second request fails
    auto out = s.dir / "rag.json";
    int rc = run_load("--url " + server.url() + " --scenario rag --arg docs=4 --arg doc_len=10 --num-requests 6" +
                          " --request-rate 200 --seed 3 --out " + out.string(),
                      s.dir / "log");
    BOOST_REQUIRE_MESSAGE(rc == 0, read_text(s.dir / "log"));
    auto j = report(out);
    BOOST_CHECK_EQUAL(j.at("completed"), 3);
    BOOST_CHECK_EQUAL(j.at("failed"), 3);
    int with_error = 0;
    for (const auto& r : j.at("requests"))
      if (!r.at("ok").get<bool>()) {
        BOOST_CHECK_EQUAL(r.at("status"), 500);
        with_error += r.at("error").get<std::string>().find("injected failure") != std::string::npos;
      }
    BOOST_CHECK_EQUAL(with_error, 3);
  }
  {
    fake_server server(0, "secret");
    auto out = s.dir / "key.json";
    BOOST_REQUIRE_EQUAL(run_load("--url " + server.url() + "/v1 --api-key secret --scenario long_doc --no-stream" +
                                     " --arg doc_len=30 --num-requests 3 --out " + out.string(),
                                 s.dir / "log"),
                        0);
    auto j = report(out);
    BOOST_CHECK_EQUAL(j.at("completed"), 3);
    for (const auto& r : j.at("requests")) {
      BOOST_CHECK_GE(r.at("ttft_ms").get<double>(), first_delay_ms);  // a whole answer: TTFT = E2EL
      BOOST_CHECK_EQUAL(r.at("ttft_ms").get<double>(), r.at("e2el_ms").get<double>());
    }
    BOOST_REQUIRE_EQUAL(run_load("--url " + server.url() + " --api-key wrong --scenario long_doc --arg doc_len=30" +
                                     " --num-requests 2 --out " + out.string(),
                                 s.dir / "log"),
                        0);
    j = report(out);
    BOOST_CHECK_EQUAL(j.at("failed"), 2);
    BOOST_CHECK(j.at("requests")[0].at("error").get<std::string>().find("bad API key") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(bad_input_gets_clear_errors) {
  scratch s("load-test");
  auto log = s.dir / "log";
  int closed_port = free_port();
  BOOST_CHECK_EQUAL(run_load("--url http://127.0.0.1:" + std::to_string(closed_port) + " --scenario rag", log), 1);
  BOOST_CHECK_MESSAGE(read_text(log).find("cannot reach") != std::string::npos, read_text(log));

  fake_server server;
  auto bad_lua = s.dir / "bad.lua";
  std::ofstream(bad_lua) << "function request(ctx)\n  return {prompt = 'x' .. nil}\nend\n";
  BOOST_CHECK_EQUAL(run_load("--url " + server.url() + " --scenario " + bad_lua.string(), log), 1);
  BOOST_CHECK_MESSAGE(read_text(log).find(bad_lua.string() + ":2:") != std::string::npos, read_text(log));

  auto bad_trace = s.dir / "bad.jsonl";
  std::ofstream(bad_trace) << "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 1}\n{\"timestamp\": 1}\n";
  BOOST_CHECK_EQUAL(run_load("--url " + server.url() + " --trace " + bad_trace.string(), log), 1);
  BOOST_CHECK_MESSAGE(read_text(log).find(bad_trace.string() + ":2") != std::string::npos, read_text(log));

  BOOST_CHECK_EQUAL(run_load("--url " + server.url() + " --scenario rag --goodput latency:5", log), 1);
  BOOST_CHECK_MESSAGE(read_text(log).find("unknown metric") != std::string::npos, read_text(log));
  BOOST_CHECK_EQUAL(run_load("--url ftp://x --scenario rag", log), 1);
  BOOST_CHECK_MESSAGE(read_text(log).find("neither http nor https") != std::string::npos, read_text(log));
  BOOST_CHECK_EQUAL(run_load("--url " + server.url(), log), 1);
  BOOST_CHECK_MESSAGE(read_text(log).find("--scenario") != std::string::npos, read_text(log));
  BOOST_CHECK_NE(run_load("--url " + server.url() + " --scenario rag --concurrency many", log), 0);
  BOOST_CHECK(server.bodies().empty());  // nothing was sent for any of these
}

#define BOOST_TEST_MODULE apps.load.serve_load
#include <boost/test/unit_test.hpp>

// `kvflow load` against the real `kvflow serve` (CPU backend, SmolLM2-135M,
// loopback, a port the server picks): the shipped multi-turn scenario's later
// turns must start faster than the first (their prefix is cached), the
// shipped trace must replay without failures, and /metrics must count cache
// hits.

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include "tests/apps/load/test_files.hpp"

namespace fs = std::filesystem;
using kvflow::load::testing::read_text;
using kvflow::load::testing::run_load;
using kvflow::load::testing::scratch;
using json = nlohmann::json;

namespace {

const std::string model = std::string(KVFLOW_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string shipped = std::string(KVFLOW_SOURCE_DIR) + "/apps/load/";

// `kvflow serve` as a child process; its URL read from the line it prints.
class server_process {
 public:
  explicit server_process(const fs::path& log) {
    int out[2];
    BOOST_REQUIRE(::pipe(out) == 0);
    pid_ = ::fork();
    BOOST_REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      FILE* err = std::fopen(log.c_str(), "w");
      if (err) ::dup2(fileno(err), STDERR_FILENO);
      ::close(out[0]);
      ::setenv("KVFLOW_MODEL", model.c_str(), 1);
      ::execl(KVFLOW_BIN, KVFLOW_BIN, "--log-level", "warn", "serve", "--backend", "cpu", "--port", "0",
              "--chunk-tokens", "32", static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    ::close(out[1]);
    stdout_ = ::fdopen(out[0], "r");
    char line[1024];
    std::regex url_re("listening on (http://[0-9.]+:[0-9]+)");
    while (std::fgets(line, sizeof line, stdout_)) {
      std::cmatch m;
      if (std::regex_search(line, m, url_re)) {
        url_ = m[1];
        break;
      }
    }
  }
  ~server_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      for (int i = 0; i < 200 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (::waitpid(pid_, &status, WNOHANG) == 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
    }
    if (stdout_) std::fclose(stdout_);
  }
  const std::string& url() const { return url_; }

 private:
  pid_t pid_ = -1;
  FILE* stdout_ = nullptr;
  std::string url_;
};

// The sum of a Prometheus counter's samples (every label set).
double metric_sum(const std::string& metrics, const std::string& name) {
  double sum = 0;
  std::istringstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    auto rest = line.substr(name.size());
    if (!rest.empty() && rest[0] != '{' && rest[0] != ' ') continue;  // a longer name
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

}  // namespace

BOOST_AUTO_TEST_CASE(multi_turn_and_trace_against_kvflow_serve) {
  if (!fs::exists(model)) {
    std::cout << "skipped: " << model << " not found (bash .ci/setup fetches it)\n";
    return;
  }
  scratch s("serve-load-test");
  server_process server(s.dir / "serve.log");
  BOOST_REQUIRE_MESSAGE(!server.url().empty(), "kvflow serve did not start: " << read_text(s.dir / "serve.log"));

  // Multi-turn: one session at a time, so each turn's TTFT is its own prefill.
  auto chat = s.dir / "chat.json";
  int rc = run_load("--url " + server.url() + " --scenario " + shipped + "scenarios/multi_turn.lua" +
                        " --arg sessions=2 --arg turns=3 --arg context=150 --arg question=8 --arg max_tokens=4" +
                        " --concurrency 1 --out " + chat.string(),
                    s.dir / "chat.log");
  BOOST_REQUIRE_MESSAGE(rc == 0, read_text(s.dir / "chat.log"));
  auto j = json::parse(read_text(chat));
  BOOST_CHECK_EQUAL(j.at("completed"), 6);
  BOOST_CHECK_EQUAL(j.at("failed"), 0);
  const auto& turns = j.at("by_turn");
  BOOST_REQUIRE_EQUAL(turns.size(), 3u);
  double first = turns[0].at("mean_ttft_ms").get<double>();
  for (std::size_t t = 1; t < turns.size(); ++t) {
    BOOST_CHECK_GT(turns[t].at("mean_prompt_tokens").get<double>(), turns[0].at("mean_prompt_tokens").get<double>());
    BOOST_CHECK_MESSAGE(turns[t].at("mean_ttft_ms").get<double>() < first,
                        "turn " << t << " TTFT " << turns[t].at("mean_ttft_ms") << " ms, first " << first << " ms");
  }
  BOOST_TEST_MESSAGE("TTFT by turn (ms): " << turns[0].at("mean_ttft_ms") << ", " << turns[1].at("mean_ttft_ms") << ", "
                                           << turns[2].at("mean_ttft_ms"));

  // The shipped trace, scaled down for a small model on a CPU.
  auto trace = s.dir / "trace.json";
  rc = run_load("--url " + server.url() + " --trace " + shipped + "traces/small.jsonl" +
                    " --scale 0.08 --max-output 2 --num-requests 6 --out " + trace.string(),
                s.dir / "trace.log");
  BOOST_REQUIRE_MESSAGE(rc == 0, read_text(s.dir / "trace.log"));
  j = json::parse(read_text(trace));
  BOOST_CHECK_EQUAL(j.at("completed"), 6);
  BOOST_CHECK_EQUAL(j.at("failed"), 0);
  BOOST_CHECK_GT(j.at("total_output_tokens").get<int>(), 0);

  httplib::Client c(server.url());
  auto m = c.Get("/metrics");
  BOOST_REQUIRE(m);
  BOOST_REQUIRE_EQUAL(m->status, 200);
  double hits = metric_sum(m->body, "kvflow_cache_hits_total");
  BOOST_TEST_MESSAGE("kvflow_cache_hits_total " << hits);
  BOOST_CHECK_GT(hits, 0.0);
}

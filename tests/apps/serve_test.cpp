#define BOOST_TEST_MODULE apps.serve
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

// `kvflow serve` as a user runs it: a config file, a flag the environment
// overrides, a preset served by token ids, and SIGTERM for a clean stop.

using json = nlohmann::json;

namespace {

struct server_process {
  pid_t pid = -1;
  FILE* out = nullptr;
  std::string seen;

  server_process(const std::vector<std::string>& args, const std::vector<std::string>& env) {
    int fds[2];
    BOOST_REQUIRE(::pipe(fds) == 0);
    pid = ::fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      for (auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out = ::fdopen(fds[0], "r");
  }
  ~server_process() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (out) ::fclose(out);
  }

  // Reads stdout until a line matches; empty when the process ends first.
  std::smatch wait_for(const std::regex& re) {
    char line[4096];
    while (std::fgets(line, sizeof line, out)) {
      seen += line;
      std::string l(line);
      std::smatch m;
      if (std::regex_search(l, m, re)) {
        // Keep the matched groups valid beyond `l`.
        static std::string keep;
        keep = l;
        std::regex_search(keep, m, re);
        return m;
      }
    }
    return {};
  }

  int stop(int sig) {
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
    char line[4096];
    while (std::fgets(line, sizeof line, out)) seen += line;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(serves_a_preset_by_token_ids_and_stops_on_sigterm) {
  auto config = std::filesystem::temp_directory_path() / ("kvflow-serve-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(config) << "preset = \"tiny-test\"\nbackend = \"cpu\"\nchunk_tokens = 16\nport = 1\n"
                           "[api_keys]\n\"sk-test\" = \"team\"\n";
  // The flag says port 2 and the file port 1: the environment's 0 (any free port) wins.
  server_process p({KVFLOW_BIN, "--log-level", "warn", "serve", "--config", config.string(), "--port", "2"},
                   {"KVFLOW_PORT=0"});
  auto m = p.wait_for(std::regex("listening on http://127\\.0\\.0\\.1:([0-9]+)"));
  std::filesystem::remove(config);
  BOOST_REQUIRE_MESSAGE(!m.empty(), "no address printed: " << p.seen);
  int port = std::stoi(m[1].str());
  BOOST_TEST(port > 2);
  BOOST_TEST(p.seen.find("model 'tiny-test'") != std::string::npos);

  httplib::Client c("127.0.0.1", port);
  httplib::Headers key = {{"Authorization", "Bearer sk-test"}};
  auto body = json{{"model", "tiny-test"}, {"prompt", {1, 2, 3, 4, 5}}, {"max_tokens", 6}, {"temperature", 0}};
  auto r = c.Post("/v1/completions", key, body.dump(), "application/json");
  BOOST_REQUIRE(r);
  BOOST_TEST(r->status == 200);
  auto j = json::parse(r->body);
  BOOST_TEST(j["choices"][0]["token_ids"].size() == 6u);
  BOOST_TEST(j["choices"][0]["text"] == "");
  BOOST_TEST(j["usage"]["prompt_tokens"] == 5);
  // No tokenizer: a text prompt is refused, saying to send token ids.
  auto text = c.Post("/v1/completions", key, R"({"prompt":"hello"})", "application/json");
  BOOST_REQUIRE(text);
  BOOST_TEST(text->status == 400);
  BOOST_TEST(text->body.find("token ids") != std::string::npos);
  auto unauth = c.Post("/v1/completions", body.dump(), "application/json");
  BOOST_REQUIRE(unauth);
  BOOST_TEST(unauth->status == 401);

  BOOST_TEST(p.stop(SIGTERM) == 0);
  BOOST_TEST(p.seen.find("SIGTERM") != std::string::npos);
  BOOST_TEST(p.seen.find("kvflow serve: stopped") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_settings_are_refused_with_context) {
  server_process p({KVFLOW_BIN, "serve", "--preset", "tiny-test", "--backend", "cpu"}, {"KVFLOW_MAX_RUNNING=none"});
  p.wait_for(std::regex("never matches$^"));
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  p.pid = -1;
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 1);
}

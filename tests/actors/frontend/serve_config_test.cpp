#define BOOST_TEST_MODULE actors.frontend.serve_config
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <unistd.h>

#include "actors/frontend/openai_json.hpp"
#include "actors/frontend/serve_config.hpp"
#include "actors/frontend/tenants.hpp"
#include "messages/error.hpp"

using namespace kvflow;
using namespace kvflow::frontend;

namespace {

struct temp_file {
  std::string path;
  explicit temp_file(const std::string& text)
      : path((std::filesystem::temp_directory_path() / ("kvflow-serve-" + std::to_string(::getpid()) + ".toml"))
                 .string()) {
    std::ofstream(path) << text;
  }
  ~temp_file() { std::remove(path.c_str()); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(names_follow_one_rule) {
  auto& all = serve_settings();
  auto it = std::find_if(all.begin(), all.end(), [](auto& s) { return s.key == "chunk_tokens"; });
  BOOST_REQUIRE(it != all.end());
  BOOST_TEST(it->flag() == "--chunk-tokens");
  BOOST_TEST(it->env() == "KVFLOW_CHUNK_TOKENS");
  serve_config c;
  BOOST_TEST(c.server.host == "127.0.0.1");  // loopback unless asked
}

BOOST_AUTO_TEST_CASE(environment_beats_flags_beats_file) {
  temp_file f(R"(port = 9000
host = "0.0.0.0"
chunk_tokens = 64
host_tier_gb = 1.5
[api_keys]
"sk-a" = "alice"
)");
  serve_config c;
  apply_file(c, f.path);
  BOOST_TEST(c.server.port == 9000);
  BOOST_TEST(c.server.host == "0.0.0.0");
  BOOST_TEST(c.rt.host_tier_gb == 1.5);
  BOOST_TEST(c.server.api_keys.at("sk-a") == "alice");
  apply_values(c, {{"port", "9001"}, {"chunk_tokens", "128"}}, "command line");
  BOOST_TEST(c.server.port == 9001);
  BOOST_TEST(c.rt.chunk_tokens == 128);
  std::map<std::string, std::string> env = {{"KVFLOW_PORT", "9002"}, {"KVFLOW_API_KEYS", "k1=t1,k2=t2"}};
  apply_environment(c, [&](const char* n) { return env.count(n) ? env.at(n).c_str() : nullptr; });
  BOOST_TEST(c.server.port == 9002);
  BOOST_TEST(c.rt.chunk_tokens == 128);
  BOOST_TEST(c.server.host == "0.0.0.0");
  BOOST_TEST(c.server.api_keys.size() == 2u);
  BOOST_TEST(c.server.api_keys.at("k2") == "t2");
}

BOOST_AUTO_TEST_CASE(bad_values_name_their_source) {
  serve_config c;
  auto message = [&](auto fn) {
    try {
      fn();
    } catch (const error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  BOOST_TEST(message([&] {
               apply_values(c, {{"port", "80x"}}, "command line");
             }).find("command line: port") != std::string::npos);
  BOOST_TEST(message([&] { apply_values(c, {{"port", "70000"}}, "x"); }).find("outside") != std::string::npos);
  BOOST_TEST(message([&] { apply_values(c, {{"max_running", "0"}}, "x"); }).find("max_running") != std::string::npos);
  std::map<std::string, std::string> env = {{"KVFLOW_DISK_GBPS", "fast"}};
  BOOST_TEST(message([&] {
               apply_environment(c, [&](const char* n) { return env.count(n) ? env.at(n).c_str() : nullptr; });
             }).find("KVFLOW_DISK_GBPS") != std::string::npos);
  temp_file typo("prot = 1\n");
  BOOST_TEST(message([&] { apply_file(c, typo.path); }).find("unknown setting 'prot'") != std::string::npos);
  temp_file broken("port = = 1\n");
  BOOST_TEST(message([&] { apply_file(c, broken.path); }).find(broken.path) != std::string::npos);
  BOOST_CHECK_THROW(parse_api_keys("nokey"), error);
  BOOST_CHECK_THROW(parse_api_keys("=t"), error);
}

BOOST_AUTO_TEST_CASE(api_keys_map_to_tenants) {
  tenants open;
  BOOST_TEST(open.authenticate("") == "default");
  tenants keyed({{"sk-a", "alice"}, {"sk-b", "bob"}});
  BOOST_TEST(keyed.authenticate("Bearer sk-a") == "alice");
  BOOST_TEST(keyed.authenticate("Bearer sk-b") == "bob");
  auto status = [&](const std::string& header) {
    try {
      keyed.authenticate(header);
    } catch (const api_error& e) {
      return e.status();
    }
    return 200;
  };
  BOOST_TEST(status("") == 401);
  BOOST_TEST(status("Bearer sk-c") == 401);
  BOOST_TEST(status("Bearer sk-") == 401);
  BOOST_TEST(status("Bearer sk-aa") == 401);
  BOOST_TEST(status("sk-a") == 401);
  BOOST_CHECK_THROW(tenants(std::map<std::string, std::string>{{"", "x"}}), error);
}

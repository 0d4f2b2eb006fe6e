#define BOOST_TEST_MODULE apps.bench
#include <boost/test/unit_test.hpp>

// `kvflow bench` end to end on the CPU with the tiny preset: the records it
// writes, a swept suffix, --append replacing a point, and bad input refused.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>

#include <unistd.h>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct scratch {
  fs::path dir = fs::temp_directory_path() / ("kvflow-bench-test-" + std::to_string(::getpid()));
  scratch() { fs::create_directories(dir); }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// Runs `kvflow bench ARGS`, stderr into `log`; returns the exit status.
int bench(const std::string& args, const fs::path& log) {
  std::string cmd = std::string(KVFLOW_BIN) + " --log-level warn bench --preset tiny-test --backend cpu " +
                    "--chunk-tokens 128 --tiers host --batch 1 --repeats 1 --policies compute_only,two_pointer " +
                    args + " > /dev/null 2> " + log.string();
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

json records(const fs::path& dir) {
  std::ifstream in(dir / "restore.json");
  json j;
  in >> j;
  return j.at("records");
}

std::string text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// bench() that must succeed: a failure prints the run's log, which goes
// with the scratch folder otherwise.
bool runs(const std::string& args, const fs::path& log) {
  const int rc = bench(args, log);
  if (rc != 0) std::cerr << "kvflow bench " << args << " exited " << rc << ":\n" << text(log) << "\n";
  return rc == 0;
}

}  // namespace

BOOST_AUTO_TEST_CASE(sweeps_the_suffix_and_appends_in_place) {
  scratch s;
  auto log = s.dir / "log.txt";
  BOOST_REQUIRE(runs("--contexts 512 --suffix-tokens 16,64 --out " + (s.dir / "out").string(), log));
  auto rs = records(s.dir / "out");
  BOOST_TEST(rs.size() == 4u);  // 2 suffixes x 2 policies
  std::set<int> suffixes;
  for (auto& r : rs) {
    for (auto* k :
         {"model", "context_tokens", "suffix_tokens", "tier", "batch", "policy", "ttft_s", "ttft_p99_s", "device"})
      BOOST_TEST(r.contains(k), "record lacks " << k);
    BOOST_TEST(r.at("ttft_s").get<double>() > 0);
    suffixes.insert(r.at("suffix_tokens").get<int>());
  }
  BOOST_TEST((suffixes == std::set<int>{16, 64}));
  BOOST_TEST(fs::exists(s.dir / "out" / "restore.md"));

  // Measured again: the two points of suffix 64 are replaced, not added.
  BOOST_REQUIRE(runs("--contexts 512 --suffix-tokens 64 --append --out " + (s.dir / "out").string(), log));
  BOOST_TEST(records(s.dir / "out").size() == 4u);
}

BOOST_AUTO_TEST_CASE(refuses_bad_input_with_context) {
  scratch s;
  auto log = s.dir / "log.txt";
  BOOST_TEST(bench("--contexts 512 --suffix-tokens 0", log) != 0);
  BOOST_TEST(text(log).find("--suffix-tokens") != std::string::npos);
  BOOST_TEST(bench("--contexts 256 --suffix-tokens 200", log) != 0);
  BOOST_TEST(text(log).find("leaves no cached chunk") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(makes_a_missing_disk_root) {
  scratch s;
  auto log = s.dir / "log.txt";
  auto root = s.dir / "not" / "there";
  BOOST_REQUIRE(runs("--contexts 512 --suffix-tokens 64 --tiers disk --disk-root " + root.string() + " --out " +
                         (s.dir / "out").string(),
                     log));
  BOOST_TEST(fs::is_directory(root));
  int disk = 0;
  for (auto& r : records(s.dir / "out")) disk += r.at("tier") == "disk";
  BOOST_TEST(disk == 2);  // compute_only and two_pointer (the helper also names the host tier)
}

// --stages N: the restores run over N pipeline stages (their KV digests
// checked against compute_only's as always) and the records carry the
// stage count and the hand-off cost per chunk; a staged point is its own
// record beside the same point without stages.
BOOST_AUTO_TEST_CASE(runs_restores_across_pipeline_stages) {
  scratch s;
  auto log = s.dir / "log.txt";
  auto out = (s.dir / "out").string();
  BOOST_REQUIRE(runs("--contexts 512 --suffix-tokens 64 --stages 3 --out " + out, log));
  auto rs = records(s.dir / "out");
  BOOST_REQUIRE(rs.size() == 2u);
  for (auto& r : rs) {
    BOOST_TEST(r.at("stages").get<int>() == 3);
    BOOST_TEST(r.at("kv_digest_checked").get<bool>());
    BOOST_TEST(r.at("handoffs").get<long>() > 0);
    BOOST_TEST(r.at("handoff_ms_per_chunk").get<double>() >= 0);
  }
  BOOST_TEST(text(s.dir / "out" / "restore.md").find("Stages (3") != std::string::npos);
  BOOST_REQUIRE(runs("--contexts 512 --suffix-tokens 64 --append --out " + out, log));
  BOOST_TEST(records(s.dir / "out").size() == 4u);
  BOOST_TEST(bench("--contexts 512 --stages 9", log) != 0);  // tiny-test has 4 layers
  BOOST_TEST(text(log).find("stages") != std::string::npos);
}

// Every point with compute_only and load_only carries its bound and the
// link time per cell the bound assumed; a batch's comes from its own
// load_only (the link's rate under the batch), batch 1's from batch 1's.
BOOST_AUTO_TEST_CASE(records_the_bound_and_the_link_rate_it_assumed) {
  scratch s;
  auto log = s.dir / "log.txt";
  std::string cmd = std::string(KVFLOW_BIN) +
                    " --log-level warn bench --preset tiny-test --backend cpu --chunk-tokens 128 --tiers host "
                    "--contexts 512 --suffix-tokens 64 --batch 1,2 --repeats 1 "
                    "--policies compute_only,load_only,two_pointer --out " +
                    (s.dir / "out").string() + " > /dev/null 2> " + log.string();
  const int rc = std::system(cmd.c_str());
  BOOST_REQUIRE_MESSAGE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, text(log));
  auto rs = records(s.dir / "out");
  BOOST_REQUIRE(rs.size() == 6u);  // 2 batches x 3 policies
  for (auto& r : rs) {
    BOOST_TEST_INFO("batch " << r.at("batch") << " " << r.at("policy"));
    BOOST_TEST(r.at("bound_s").is_number());
    BOOST_TEST(r.at("bound_cell_load_s").is_number());
    if (r.at("bound_cell_load_s").is_number()) BOOST_TEST(r.at("bound_cell_load_s").get<double>() > 0);
    // A batch's bound rests on its own compute_only run; the one on batch
    // 1's compute costs is kept beside it.
    BOOST_TEST(r.at("bound_batch1_s").is_number() == (r.at("batch").get<int>() > 1));
  }
}

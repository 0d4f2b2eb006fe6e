#define BOOST_TEST_MODULE apps.demo
#include <boost/test/unit_test.hpp>

// `kvflow demo --disk-dir DIR` on the CPU with the real small model: a
// folder the user names is created when missing, keeps what was in it and
// keeps its chunk files for the next run.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

int demo(const fs::path& disk_dir, const fs::path& log) {
  std::string cmd = std::string(KVFLOW_BIN) + " --log-level warn demo --backend cpu --policies two_pointer " +
                    "--document-repeats 1 --reply-tokens 2 --disk-dir " + disk_dir.string() + " > " + log.string() +
                    " 2>&1";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::size_t chunk_files(const fs::path& dir) {
  std::size_t n = 0;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".kvc") ++n;
  return n;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_named_cache_folder_is_kept) {
  fs::path base = fs::temp_directory_path() / ("kvflow-demo-test-" + std::to_string(::getpid()));
  fs::path dir = base / "cache";  // does not exist yet
  fs::create_directories(base);
  auto log = base / "log.txt";
  BOOST_REQUIRE_MESSAGE(demo(dir, log) == 0, "kvflow demo failed, see " << log);
  BOOST_TEST(fs::is_directory(dir));
  auto stored = chunk_files(dir);
  BOOST_TEST(stored > 0u);

  // The user's own file in the folder survives a second run, and so do the chunks.
  std::ofstream(dir / "mine.txt") << "keep me";
  BOOST_REQUIRE_MESSAGE(demo(dir, log) == 0, "second kvflow demo failed, see " << log);
  BOOST_TEST(fs::exists(dir / "mine.txt"));
  BOOST_TEST(chunk_files(dir) >= stored);
  std::error_code ec;
  fs::remove_all(base, ec);
}

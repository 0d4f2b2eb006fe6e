#define BOOST_TEST_MODULE platform.mapped_file
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include <unistd.h>

#include "messages/error.hpp"
#include "platform/mapped_file.hpp"

using kvflow::errc;
using kvflow::platform::mapped_file;
namespace fs = std::filesystem;

namespace {

struct scratch {
  fs::path dir = fs::temp_directory_path() / ("kvflow-mapped-" + std::to_string(::getpid()));
  scratch() { fs::create_directories(dir); }
  ~scratch() { fs::remove_all(dir); }
  std::string write(const std::string& name, const std::string& bytes) {
    auto p = dir / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
};

errc code_of(const std::string& path) {
  try {
    mapped_file::open(path);
  } catch (const kvflow::error& e) {
    BOOST_TEST(std::string(e.what()).find(path) != std::string::npos);
    return e.code();
  }
  return errc::none;
}

}  // namespace

BOOST_AUTO_TEST_CASE(maps_the_whole_file) {
  scratch s;
  const std::string bytes = "GGUF and then some bytes";
  auto f = mapped_file::open(s.write("a", bytes));
  BOOST_REQUIRE(f.size() == bytes.size());
  BOOST_TEST(std::memcmp(f.data(), bytes.data(), bytes.size()) == 0);
}

BOOST_AUTO_TEST_CASE(an_empty_file_maps_to_nothing) {
  scratch s;
  auto f = mapped_file::open(s.write("empty", ""));
  BOOST_TEST(f.size() == 0u);
  BOOST_TEST(f.data() == nullptr);
}

BOOST_AUTO_TEST_CASE(a_move_keeps_the_bytes_where_they_are) {
  scratch s;
  auto a = mapped_file::open(s.write("b", "0123456789"));
  const auto* p = a.data();
  mapped_file b(std::move(a));
  BOOST_TEST(b.data() == p);
  BOOST_TEST(a.data() == nullptr);  // NOLINT(bugprone-use-after-move)
  mapped_file c;
  c = std::move(b);
  BOOST_TEST(c.data() == p);
  BOOST_TEST(c.size() == 10u);
}

BOOST_AUTO_TEST_CASE(missing_files_and_folders_are_errors_naming_the_path) {
  scratch s;
  BOOST_TEST(static_cast<int>(code_of((s.dir / "missing").string())) == static_cast<int>(errc::io_failure));
  BOOST_TEST(static_cast<int>(code_of(s.dir.string())) == static_cast<int>(errc::bad_file));
}

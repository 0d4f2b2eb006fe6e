#pragma once
// Helpers shared by the kvflow load tests: a scratch folder removed at the
// end, whole-file reads, and the message of a kvflow::error.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include "messages/error.hpp"

namespace kvflow::load::testing {

/// A folder under the temp directory, unique to this process and tag, removed
/// with everything in it when the object goes.
struct scratch {
  std::filesystem::path dir;
  explicit scratch(const std::string& tag)
      : dir(std::filesystem::temp_directory_path() / ("kvflow-" + tag + "-" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(dir);
  }
  ~scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  /// Writes `text` to dir/name and returns the path.
  std::filesystem::path write(const std::string& name, const std::string& text) const {
    std::ofstream(dir / name) << text;
    return dir / name;
  }
};

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// What `f` threw as a kvflow::error, or "(no error)".
inline std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const kvflow::error& e) {
    return e.what();
  }
  return "(no error)";
}

#ifdef KVFLOW_BIN
/// Runs `kvflow load --no-plot --no-progress ARGS` with stdout into LOG.out
/// and stderr into LOG; returns the exit status (-1 when it did not exit).
inline int run_load(const std::string& args, const std::filesystem::path& log) {
  std::string cmd = std::string(KVFLOW_BIN) + " --log-level warn load --no-plot --no-progress " + args + " > " +
                    log.string() + ".out 2> " + log.string();
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}
#endif

}  // namespace kvflow::load::testing

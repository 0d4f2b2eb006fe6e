#pragma once
// `kvflow serve`'s settings and where they come from: a TOML file, command
// line flags and the environment, in that order (environment > flags >
// file). Every setting has one name, `key` in the file, `--key-with-dashes`
// on the command line and `KVFLOW_KEY` in the environment.

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "actors/frontend/http_server.hpp"
#include "actors/runtime.hpp"

namespace kvflow::frontend {

struct serve_config {
  runtime_options rt;
  server_options server;
};

/// One setting: its file key, flag, environment variable, help, and how it
/// reads and shows its value as text.
struct setting {
  std::string key;
  std::string help;
  std::function<void(serve_config&, const std::string&)> set;  ///< throws kvflow::error on a bad value
  std::function<std::string(const serve_config&)> show;
  std::string type = "TEXT";  ///< TEXT, INT or NUMBER, for --help
  std::string flag() const;   ///< "--chunk-tokens"
  std::string env() const;    ///< "KVFLOW_CHUNK_TOKENS"
};

/// Every setting of `kvflow serve`, runtime_options' included.
const std::vector<setting>& serve_settings();

/// Applies a TOML file; unknown keys and bad values throw kvflow::error
/// naming the file and key. api_keys is a table: key = "tenant".
void apply_file(serve_config& c, const std::string& path);
/// Applies values given on the command line, by key.
void apply_values(serve_config& c, const std::map<std::string, std::string>& values, const std::string& source);
/// Applies the KVFLOW_* variables that `getenv` finds.
void apply_environment(serve_config& c, const std::function<const char*(const char*)>& getenv);

/// "key=tenant,key2=tenant2" as a map; throws kvflow::error on a malformed list.
std::map<std::string, std::string> parse_api_keys(const std::string& list);

}  // namespace kvflow::frontend

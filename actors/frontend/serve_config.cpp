#include "actors/frontend/serve_config.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>

#include <toml++/toml.h>

#include "messages/error.hpp"

namespace kvflow::frontend {
namespace {

long long to_integer(const std::string& v, long long lo, long long hi) {
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty()) throw error(errc::invalid_argument, "'" + v + "' is not an integer");
  if (n < lo || n > hi)
    throw error(errc::invalid_argument, v + " is outside " + std::to_string(lo) + "-" + std::to_string(hi));
  return n;
}

double to_number(const std::string& v, double lo) {
  std::size_t used = 0;
  double d = 0;
  try {
    d = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty()) throw error(errc::invalid_argument, "'" + v + "' is not a number");
  if (!(d >= lo)) throw error(errc::invalid_argument, v + " is below " + std::to_string(lo));
  return d;
}

std::string number_text(double d) {
  std::ostringstream out;
  out << d;
  return out.str();
}

// Settings backed by a member, with typed parsing.
setting text(const char* key, const char* help, std::string runtime_options::*m) {
  return {key, help, [m](serve_config& c, const std::string& v) { c.rt.*m = v; },
          [m](const serve_config& c) { return c.rt.*m; }};
}
setting text(const char* key, const char* help, std::string server_options::*m) {
  return {key, help, [m](serve_config& c, const std::string& v) { c.server.*m = v; },
          [m](const serve_config& c) { return c.server.*m; }};
}
template <typename T>
setting whole(const char* key, const char* help, T runtime_options::*m, long long lo, long long hi) {
  return {key, help, [=](serve_config& c, const std::string& v) { c.rt.*m = static_cast<T>(to_integer(v, lo, hi)); },
          [m](const serve_config& c) { return std::to_string(c.rt.*m); }, "INT"};
}
template <typename T>
setting whole(const char* key, const char* help, T server_options::*m, long long lo, long long hi) {
  return {key, help,
          [=](serve_config& c, const std::string& v) { c.server.*m = static_cast<T>(to_integer(v, lo, hi)); },
          [m](const serve_config& c) { return std::to_string(c.server.*m); }, "INT"};
}
setting real(const char* key, const char* help, double runtime_options::*m) {
  return {key, help, [m](serve_config& c, const std::string& v) { c.rt.*m = to_number(v, 0); },
          [m](const serve_config& c) { return number_text(c.rt.*m); }, "NUMBER"};
}
setting real(const char* key, const char* help, double server_options::*m) {
  return {key, help, [m](serve_config& c, const std::string& v) { c.server.*m = to_number(v, 0); },
          [m](const serve_config& c) { return number_text(c.server.*m); }, "NUMBER"};
}

std::string toml_text(const toml::node& n, const std::string& where) {
  if (auto s = n.as_string()) return s->get();
  if (auto i = n.as_integer()) return std::to_string(i->get());
  if (auto f = n.as_floating_point()) return number_text(f->get());
  if (auto b = n.as_boolean()) return b->get() ? "true" : "false";
  if (auto t = n.as_table()) {
    // api_keys = { "sk-..." = "tenant" } becomes "sk-...=tenant,..."
    std::string list;
    for (auto& [k, v] : *t) {
      auto tenant = v.as_string();
      if (!tenant) throw error(errc::invalid_argument, where + "." + std::string(k.str()) + ": a tenant name (string)");
      list += (list.empty() ? "" : ",") + std::string(k.str()) + "=" + tenant->get();
    }
    return list;
  }
  throw error(errc::invalid_argument, where + ": a string, number or table");
}

}  // namespace

std::string setting::flag() const {
  auto f = "--" + key;
  std::replace(f.begin(), f.end(), '_', '-');
  return f;
}

std::string setting::env() const {
  auto e = "KVFLOW_" + key;
  for (auto& ch : e) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return e;
}

std::map<std::string, std::string> parse_api_keys(const std::string& list) {
  std::map<std::string, std::string> keys;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw error(errc::invalid_argument, "api keys: '" + item.substr(0, 4) + "...' is not KEY=TENANT");
    keys[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return keys;
}

const std::vector<setting>& serve_settings() {
  using R = runtime_options;
  using S = server_options;
  static const std::vector<setting> all = {
      text("host", "Address to listen on (loopback by default; 0.0.0.0 for every interface)", &S::host),
      whole("port", "Port to listen on (0: any free port)", &S::port, 0, 65535),
      text("served_model_name", "Model name clients send (default: the preset or the model file's name)",
           &S::served_model_name),
      {"api_keys", "API keys and their tenants, KEY=TENANT,... (none: open, one tenant)",
       [](serve_config& c, const std::string& v) { c.server.api_keys = parse_api_keys(v); },
       [](const serve_config& c) {
         return c.server.api_keys.empty() ? "" : std::to_string(c.server.api_keys.size()) + " keys";
       }},
      text("tenant_secret_file",
           "Secret that salts each tenant's chunk keys, made (0600) if missing; keep it with disk_dir so chunks "
           "survive restarts (default: a fresh one per start)",
           &S::tenant_secret_file),
      whole("max_running", "Requests decoding at once", &S::max_running, 1, 1 << 20),
      whole("max_waiting", "Requests queued for a slot; more get 429", &S::max_waiting, 0, 1 << 20),
      whole("max_body_bytes", "Largest request body (larger: 413)", &S::max_body_bytes, 1, 1ll << 32),
      whole("default_max_tokens", "Tokens generated when a request gives no max_tokens", &S::default_max_tokens, 1,
            1 << 30),
      whole("retry_after_s", "Retry-After of a 429, seconds", &S::retry_after_s, 0, 3600),
      real("shutdown_grace_s", "On SIGINT/SIGTERM, seconds requests in flight may finish before they are cancelled",
           &S::shutdown_grace_s),
      whole("http_threads", "Connection threads (0: max_running + max_waiting + 8)", &S::http_threads, 0, 100000),
      text("model", "GGUF or safetensors model (default: $KVFLOW_MODEL or models/)", &R::model_path),
      text("preset", "Random weights of a preset instead of a model file (token ids only)", &R::preset),
      whole("seed", "Seed of a preset's random weights", &R::seed, 0, INT64_MAX),
      text("backend", "cpu, cuda or auto", &R::backend),
      whole("threads", "CPU backend threads (0: all cores)", &R::threads, 0, 4096),
      whole("chunk_tokens", "Tokens per chunk", &R::chunk_tokens, 1, 1 << 20),
      text("policy", "compute_only, load_only, bidirectional, two_pointer or oracle", &R::policy),
      real("host_tier_gb", "Pinned host tier capacity in GB (0: none)", &R::host_tier_gb),
      text("disk_dir", "Chunk file folder (default: a temporary one, removed at exit)", &R::disk_dir),
      real("disk_tier_gb", "Disk tier capacity in GB (0: no limit)", &R::disk_tier_gb),
      real("disk_gbps", "Pace disk reads to this many Gbit/s (0: unpaced)", &R::disk_gbps),
      whole("max_compute_cells", "Compute cells in flight (0: the policy default)", &R::max_compute_cells, 0,
            1ll << 40),
      whole("step_prefill_tokens",
            "Restore compute tokens run alongside each decode step while requests decode (0: no budget)",
            &R::step_prefill_tokens, 0, 1 << 30),
      whole("max_load_bytes_in_flight", "Granted load bytes in flight per tier (0: two chunks)",
            &R::max_load_bytes_in_flight, 0, INT64_MAX),
      real("request_timeout_s", "A request not done this many seconds after arrival fails (deadline_exceeded)",
           &R::request_timeout_s),
      real("step_timeout_s", "A grant, transfer or first token taking longer fails its request", &R::step_timeout_s),
      text("faults", "Fault injection for tests and soaks, fault=probability,...,seed=N (README; none by default)",
           &R::faults),
  };
  return all;
}

void apply_values(serve_config& c, const std::map<std::string, std::string>& values, const std::string& source) {
  for (auto& [key, value] : values) {
    auto& all = serve_settings();
    const std::string& name = key;  // a lambda may not capture a structured binding before C++20
    auto it = std::find_if(all.begin(), all.end(), [&](const setting& s) { return s.key == name; });
    if (it == all.end()) throw error(errc::invalid_argument, source + ": unknown setting '" + key + "'");
    try {
      it->set(c, value);
    } catch (const error& e) {
      // The context without its code's prefix: the new error carries it.
      std::string what = e.what(), prefix = std::string(to_string(e.code())) + ": ";
      if (what.compare(0, prefix.size(), prefix) == 0) what.erase(0, prefix.size());
      throw error(errc::invalid_argument, source + ": " + key + ": " + what);
    }
  }
}

void apply_file(serve_config& c, const std::string& path) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    throw error(errc::invalid_argument, "config " + path + " (" + where.str() + "): " + std::string(e.description()));
  }
  std::map<std::string, std::string> values;
  for (auto& [k, v] : t) values[std::string(k.str())] = toml_text(v, "config " + path + ": " + std::string(k.str()));
  apply_values(c, values, "config " + path);
}

void apply_environment(serve_config& c, const std::function<const char*(const char*)>& getenv) {
  for (auto& s : serve_settings())
    if (const char* v = getenv(s.env().c_str())) apply_values(c, {{s.key, v}}, "environment variable " + s.env());
}

}  // namespace kvflow::frontend

#include "apps/load/trace.hpp"

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/load/synthetic.hpp"
#include "messages/error.hpp"

namespace kvflow::load {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw error(errc::invalid_argument, where + ": " + what);
}

double number_field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) bad(where, std::string("missing \"") + key + "\"");
  if (!it->is_number()) bad(where, std::string("\"") + key + "\" is not a number");
  double v = it->get<double>();
  if (!(v >= 0)) bad(where, std::string("\"") + key + "\" is negative");
  return v;
}

int length_field(const json& j, const char* key, const std::string& where) {
  double v = number_field(j, key, where);
  if (v != static_cast<double>(static_cast<long long>(v)) || v > 1e9)
    bad(where, std::string("\"") + key + "\" is not a whole number of tokens");
  return static_cast<int>(v);
}

// Block i's key: the hash id, or for blocks the trace does not name, one
// unique to this entry.
std::uint64_t block_key(const trace_entry& e, std::size_t i, std::uint64_t salt) {
  if (i < e.hash_ids.size()) return e.hash_ids[i] * 0x9e3779b97f4a7c15ull + 1;
  return hash_key("unshared:" + std::to_string(salt) + ":" + std::to_string(i));
}

}  // namespace

trace_entry parse_trace_line(const std::string& line, const std::string& where) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    bad(where, std::string("not JSON (") + e.what() + ")");
  }
  if (!j.is_object()) bad(where, "not a JSON object");
  trace_entry e;
  e.timestamp_ms = number_field(j, "timestamp", where);
  e.input_length = length_field(j, "input_length", where);
  e.output_length = length_field(j, "output_length", where);
  if (e.input_length < 1) bad(where, "\"input_length\" is 0");
  if (e.output_length < 1) bad(where, "\"output_length\" is 0");
  if (auto it = j.find("hash_ids"); it != j.end()) {
    if (!it->is_array()) bad(where, "\"hash_ids\" is not an array");
    for (const auto& h : *it) {
      if (!h.is_number_unsigned()) bad(where, "\"hash_ids\" holds " + h.dump() + ", not a non-negative integer");
      e.hash_ids.push_back(h.get<std::uint64_t>());
    }
  }
  if (auto it = j.find("session_id"); it != j.end() && !it->is_null()) {
    if (it->is_string())
      e.session_id = it->get<std::string>();
    else if (it->is_number_integer())
      e.session_id = it->dump();
    else
      bad(where, "\"session_id\" is neither a string nor an integer");
  }
  return e;
}

std::vector<trace_entry> read_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw error(errc::io_failure, "cannot read trace " + path);
  std::vector<trace_entry> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    auto e = parse_trace_line(line, path + ":" + std::to_string(n));
    e.line = n;
    out.push_back(std::move(e));
  }
  if (in.bad()) throw error(errc::io_failure, "error reading trace " + path);
  if (out.empty()) throw error(errc::invalid_argument, path + ": no requests in the trace");
  std::stable_sort(out.begin(), out.end(),
                   [](const trace_entry& a, const trace_entry& b) { return a.timestamp_ms < b.timestamp_ms; });
  return out;
}

std::vector<std::int32_t> trace_prompt_tokens(const trace_entry& e, int block_tokens_n, int vocab, std::uint64_t salt) {
  if (block_tokens_n < 1) throw error(errc::invalid_argument, "block size must be at least one token");
  std::vector<std::int32_t> out;
  out.reserve(static_cast<std::size_t>(e.input_length));
  for (std::size_t i = 0; static_cast<int>(out.size()) < e.input_length; ++i) {
    int n = std::min(block_tokens_n, e.input_length - static_cast<int>(out.size()));
    auto b = block_tokens(block_key(e, i, salt), n, vocab);
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

std::string trace_prompt_text(const trace_entry& e, int block_tokens_n, std::uint64_t salt) {
  if (block_tokens_n < 1) throw error(errc::invalid_argument, "block size must be at least one token");
  std::string out;
  for (int done = 0, i = 0; done < e.input_length; ++i) {
    int n = std::min(block_tokens_n, e.input_length - done);
    if (done) out += ' ';
    out += block_words(block_key(e, static_cast<std::size_t>(i), salt), n);
    done += n;
  }
  return out;
}

}  // namespace kvflow::load

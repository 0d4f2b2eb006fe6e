#pragma once
// Load-test scenarios as Lua 5.4 scripts, in wrk's model: the script builds
// each request and may react to each response. The API (documented for users
// in apps/load/scenarios/README.md):
//
//   function init(args)          -- once; args: the --arg KEY=VALUE pairs
//   function request(ctx)        -- each request; ctx.session is nil for a new
//                                -- one, or the session to continue
//     return {messages = {...} | prompt = "text" | {ids...},
//             max_tokens = 64, session = "s1", ...}  -- or nil: no more new work
//   function response(ctx, resp) -- optional; return true (or seconds to wait)
//                                -- to continue ctx.session with another turn
//
// plus a `kvflow` table of helpers (random numbers, token-id and word blocks).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>

#include "apps/load/openai_client.hpp"
#include "apps/load/report.hpp"

struct lua_State;

namespace kvflow::load {

struct scenario_options {
  std::string path;                         ///< the .lua file
  std::map<std::string, std::string> args;  ///< --arg KEY=VALUE, passed to init(args) and kvflow.args
  bool token_ids = false;                   ///< kvflow.token_ids: prompts as token ids (presets without a tokenizer)
  int vocab = 512;                          ///< token ids are drawn from [1, vocab)
  std::uint64_t seed = 1;                   ///< seeds kvflow.random and math.random
  bool stream = true;                       ///< a request's "stream" when the script sets none
};

/// Where a request stands, as the script sees it (the `ctx` argument).
struct scenario_context {
  std::size_t index = 0;  ///< requests sent before this one
  std::string session;    ///< empty: start something new
  int turn = 0;           ///< requests of `session` sent before this one
  double now_s = 0;       ///< since the run's start
};

/// What the script asked for.
struct scenario_request {
  api_request api;
  std::string session;             ///< empty: not part of a session
  std::int64_t prompt_tokens = 0;  ///< estimate for the report when the server sends no usage
};

/// A loaded script. Every call takes an internal lock, so one instance may be
/// shared by all of a run's threads (a Lua state is single-threaded).
class lua_scenario {
 public:
  /// Loads and runs the file, then calls init(args) when defined. Throws
  /// kvflow::error(invalid_argument) with "file:line: message" on a syntax or
  /// runtime error, when request() is missing, and io_failure when the file
  /// cannot be read.
  explicit lua_scenario(const scenario_options& opt);
  ~lua_scenario();
  lua_scenario(const lua_scenario&) = delete;
  lua_scenario& operator=(const lua_scenario&) = delete;

  /// Calls request(ctx). nullopt when it returned nil (no more new work; with
  /// ctx.session set it ends that session). Throws kvflow::error with the
  /// script's file and line on an error in the script or a malformed table.
  std::optional<scenario_request> request(const scenario_context& ctx);

  /// Calls response(ctx, resp) when the script defines it. Returns the delay
  /// in seconds before the session's next turn, or nullopt when the session
  /// ends (nil or false; also when the record has no session). Throws like
  /// request().
  std::optional<double> response(const scenario_context& ctx, const request_record& rec);

 private:
  void call(const char* fn, int nargs, int nresults);
  std::string where(const char* fn);
  scenario_options opt_;
  std::mutex mu_;
  lua_State* L_ = nullptr;
  bool has_response_ = false;
  std::mt19937_64 rng_;

  friend struct scenario_lib;
};

}  // namespace kvflow::load

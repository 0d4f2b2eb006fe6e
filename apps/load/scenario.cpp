#include "apps/load/scenario.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include <lua.hpp>

#include "apps/load/synthetic.hpp"
#include "messages/error.hpp"

namespace kvflow::load {

using json = nlohmann::json;

// The kvflow.* helpers; a struct so it can reach lua_scenario's privates.
struct scenario_lib {
  static lua_scenario& self(lua_State* L) {
    return *static_cast<lua_scenario*>(lua_touserdata(L, lua_upvalueindex(1)));
  }

  // kvflow.random() in [0, 1); kvflow.random(m) in [1, m]; kvflow.random(m, n) in [m, n].
  static int random(lua_State* L) {
    auto& s = self(L);
    int n = lua_gettop(L);
    if (n == 0) {
      lua_pushnumber(L, std::uniform_real_distribution<double>(0.0, 1.0)(s.rng_));
      return 1;
    }
    lua_Integer lo = 1, hi = luaL_checkinteger(L, 1);
    if (n >= 2) {
      lo = hi;
      hi = luaL_checkinteger(L, 2);
    }
    luaL_argcheck(L, lo <= hi, n >= 2 ? 2 : 1, "interval is empty");
    lua_pushinteger(L, std::uniform_int_distribution<lua_Integer>(lo, hi)(s.rng_));
    return 1;
  }

  // kvflow.exponential(mean): a draw of an exponential distribution (think times).
  static int exponential(lua_State* L) {
    auto& s = self(L);
    double mean = luaL_checknumber(L, 1);
    luaL_argcheck(L, mean > 0, 1, "mean must be positive");
    lua_pushnumber(L, std::exponential_distribution<double>(1.0 / mean)(s.rng_));
    return 1;
  }

  static std::uint64_t key_arg(lua_State* L, int idx) {
    luaL_argcheck(L, lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER, idx,
                  "key must be a string or a number");
    std::size_t len = 0;
    const char* s = luaL_tolstring(L, idx, &len);
    auto h = hash_key(std::string_view(s, len));
    lua_pop(L, 1);
    return h;
  }

  static int length_arg(lua_State* L, int idx) {
    lua_Integer n = luaL_checkinteger(L, idx);
    luaL_argcheck(L, n >= 0 && n <= (1 << 24), idx, "length must be in [0, 16777216]");
    return static_cast<int>(n);
  }

  static void push_tokens(lua_State* L, int n, std::uint64_t key, int vocab) {
    auto ids = block_tokens(key, n, vocab);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; ++i) {
      lua_pushinteger(L, ids[static_cast<std::size_t>(i)]);
      lua_rawseti(L, -2, i + 1);
    }
  }

  // kvflow.tokens(n, key): n token ids, the same for the same key.
  static int tokens(lua_State* L) {
    int n = length_arg(L, 1);
    push_tokens(L, n, key_arg(L, 2), self(L).opt_.vocab);
    return 1;
  }

  // kvflow.words(n, key): n words, the same for the same key.
  static int words(lua_State* L) {
    int n = length_arg(L, 1);
    auto text = block_words(key_arg(L, 2), n);
    lua_pushlstring(L, text.data(), text.size());
    return 1;
  }

  // kvflow.prompt(n, key): tokens() with --token-ids, words() otherwise.
  static int prompt(lua_State* L) { return self(L).opt_.token_ids ? tokens(L) : words(L); }

  // kvflow.append(t, u): appends u's array part to t; returns t.
  static int append(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    auto n = static_cast<lua_Integer>(lua_rawlen(L, 1));
    auto m = static_cast<lua_Integer>(lua_rawlen(L, 2));
    for (lua_Integer i = 1; i <= m; ++i) {
      lua_rawgeti(L, 2, i);
      lua_rawseti(L, 1, n + i);
    }
    lua_settop(L, 1);
    return 1;
  }

  // kvflow.length(x): #x for a table of token ids, the number of words of a string.
  static int length(lua_State* L) {
    if (lua_type(L, 1) == LUA_TTABLE) {
      lua_pushinteger(L, static_cast<lua_Integer>(lua_rawlen(L, 1)));
      return 1;
    }
    std::size_t len = 0;
    const char* s = luaL_checklstring(L, 1, &len);
    lua_Integer words_n = 0;
    bool in_word = false;
    for (std::size_t i = 0; i < len; ++i) {
      bool space = s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r';
      if (!space && !in_word) ++words_n;
      in_word = !space;
    }
    lua_pushinteger(L, words_n);
    return 1;
  }

  // kvflow.log(...): one line on stderr.
  static int log(lua_State* L) {
    std::string line;
    for (int i = 1; i <= lua_gettop(L); ++i) {
      std::size_t len = 0;
      const char* s = luaL_tolstring(L, i, &len);
      if (i > 1) line += ' ';
      line.append(s, len);
      lua_pop(L, 1);
    }
    std::cerr << "script: " << line << "\n";
    return 0;
  }

  static int traceback(lua_State* L) {
    const char* msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, nullptr);
    luaL_traceback(L, L, msg, 1);
    return 1;
  }
};

namespace {

constexpr int max_depth = 32;

json to_json(lua_State* L, int idx, int depth, const std::string& path) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return nullptr;
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx) != 0;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return static_cast<std::int64_t>(lua_tointeger(L, idx));
      return lua_tonumber(L, idx);
    case LUA_TSTRING: {
      std::size_t len = 0;
      const char* s = lua_tolstring(L, idx, &len);
      return std::string(s, len);
    }
    case LUA_TTABLE: {
      if (depth > max_depth) throw error(errc::invalid_argument, path + " nests deeper than 32 tables (a cycle?)");
      auto n = static_cast<lua_Integer>(lua_rawlen(L, idx));
      lua_Integer count = 0;
      lua_pushnil(L);
      while (lua_next(L, idx) != 0) {
        ++count;
        lua_pop(L, 1);
      }
      if (count == n) {  // a sequence (an empty table is an empty array)
        json a = json::array();
        for (lua_Integer i = 1; i <= n; ++i) {
          lua_rawgeti(L, idx, i);
          a.push_back(to_json(L, -1, depth + 1, path + "[" + std::to_string(i) + "]"));
          lua_pop(L, 1);
        }
        return a;
      }
      json o = json::object();
      lua_pushnil(L);
      while (lua_next(L, idx) != 0) {
        lua_pushvalue(L, -2);  // tostring on a copy: lua_next needs the key untouched
        std::string key = luaL_tolstring(L, -1, nullptr);
        lua_pop(L, 2);
        o[key] = to_json(L, -1, depth + 1, path + "." + key);
        lua_pop(L, 1);
      }
      return o;
    }
    default:
      throw error(errc::invalid_argument,
                  path + " is a " + std::string(luaL_typename(L, idx)) + ", which has no JSON form");
  }
}

std::int64_t count_words(const std::string& s) {
  std::int64_t n = 0;
  bool in_word = false;
  for (char c : s) {
    bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

std::int64_t estimate_tokens(const json& body) {
  std::int64_t n = 0;
  if (auto p = body.find("prompt"); p != body.end()) {
    if (p->is_string()) n += count_words(p->get<std::string>());
    if (p->is_array()) n += static_cast<std::int64_t>(p->size());
  }
  if (auto m = body.find("messages"); m != body.end() && m->is_array())
    for (const auto& msg : *m)
      if (msg.is_object() && msg.contains("content") && msg["content"].is_string())
        n += count_words(msg["content"].get<std::string>());
  return n;
}

void set_field(lua_State* L, const char* key, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, key);
}
void set_field(lua_State* L, const char* key, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, key);
}
void set_field(lua_State* L, const char* key, const std::string& v) {
  lua_pushlstring(L, v.data(), v.size());
  lua_setfield(L, -2, key);
}

void push_context(lua_State* L, const scenario_context& ctx, bool token_ids) {
  lua_createtable(L, 0, 5);
  set_field(L, "index", static_cast<lua_Integer>(ctx.index));
  if (!ctx.session.empty()) set_field(L, "session", ctx.session);
  set_field(L, "turn", static_cast<lua_Integer>(ctx.turn));
  set_field(L, "now", ctx.now_s);
  lua_pushboolean(L, token_ids);
  lua_setfield(L, -2, "token_ids");
}

}  // namespace

lua_scenario::lua_scenario(const scenario_options& opt) : opt_(opt), rng_(opt.seed) {
  if (opt.vocab < 2)
    throw error(errc::invalid_argument, "--vocab " + std::to_string(opt.vocab) + " must be at least 2");
  L_ = luaL_newstate();
  if (!L_) throw error(errc::io_failure, "cannot create a Lua state (out of memory)");
  luaL_openlibs(L_);

  static const luaL_Reg fns[] = {{"random", scenario_lib::random},
                                 {"exponential", scenario_lib::exponential},
                                 {"tokens", scenario_lib::tokens},
                                 {"words", scenario_lib::words},
                                 {"prompt", scenario_lib::prompt},
                                 {"append", scenario_lib::append},
                                 {"length", scenario_lib::length},
                                 {"log", scenario_lib::log},
                                 {nullptr, nullptr}};
  lua_newtable(L_);
  lua_pushlightuserdata(L_, this);
  luaL_setfuncs(L_, fns, 1);
  lua_pushboolean(L_, opt.token_ids);
  lua_setfield(L_, -2, "token_ids");
  lua_pushinteger(L_, opt.vocab);
  lua_setfield(L_, -2, "vocab");
  lua_pushinteger(L_, static_cast<lua_Integer>(opt.seed));
  lua_setfield(L_, -2, "seed");
  lua_newtable(L_);
  for (const auto& [k, v] : opt.args) {
    lua_pushlstring(L_, v.data(), v.size());
    lua_setfield(L_, -2, k.c_str());
  }
  lua_setfield(L_, -2, "args");
  lua_setglobal(L_, "kvflow");

  // math.random follows --seed too, so a script that uses it is repeatable.
  lua_getglobal(L_, "math");
  lua_getfield(L_, -1, "randomseed");
  lua_pushinteger(L_, static_cast<lua_Integer>(opt.seed));
  lua_call(L_, 1, 0);
  lua_pop(L_, 1);

  std::ifstream probe(opt.path);
  if (!probe) {
    lua_close(L_);
    throw error(errc::io_failure, "cannot read scenario " + opt.path);
  }
  lua_pushcfunction(L_, scenario_lib::traceback);
  if (luaL_loadfile(L_, opt.path.c_str()) != LUA_OK || lua_pcall(L_, 0, 0, -2) != LUA_OK) {
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "unknown error";
    lua_close(L_);
    throw error(errc::invalid_argument, "scenario " + msg);
  }
  lua_settop(L_, 0);
  if (lua_getglobal(L_, "request") != LUA_TFUNCTION) {
    lua_close(L_);
    throw error(errc::invalid_argument, "scenario " + opt.path + " defines no function request(ctx)");
  }
  has_response_ = lua_getglobal(L_, "response") == LUA_TFUNCTION;
  int has_init = lua_getglobal(L_, "init") == LUA_TFUNCTION;
  lua_settop(L_, 0);
  if (has_init) {
    try {
      lua_getglobal(L_, "init");
      lua_getglobal(L_, "kvflow");
      lua_getfield(L_, -1, "args");
      lua_remove(L_, -2);
      call("init", 1, 0);
    } catch (...) {
      lua_close(L_);
      throw;
    }
  }
}

lua_scenario::~lua_scenario() {
  if (L_) lua_close(L_);
}

// Calls the function below its `nargs` arguments on the stack under a
// traceback handler; leaves `nresults` results. Throws with file:line.
void lua_scenario::call(const char* fn, int nargs, int nresults) {
  int func = lua_gettop(L_) - nargs;
  lua_pushcfunction(L_, scenario_lib::traceback);
  lua_insert(L_, func);
  int rc = lua_pcall(L_, nargs, nresults, func);
  lua_remove(L_, func);
  if (rc != LUA_OK) {
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "unknown error";
    lua_settop(L_, 0);
    throw error(errc::invalid_argument, std::string("scenario error in ") + fn + "(): " + msg);
  }
}

// "file:LINE" of a global function's definition, for errors about what it returned.
std::string lua_scenario::where(const char* fn) {
  lua_Debug ar;
  std::string out = opt_.path;
  if (lua_getglobal(L_, fn) == LUA_TFUNCTION && lua_getinfo(L_, ">S", &ar))
    out += ":" + std::to_string(ar.linedefined);
  else
    lua_pop(L_, 1);
  return out;
}

std::optional<scenario_request> lua_scenario::request(const scenario_context& ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  lua_settop(L_, 0);
  lua_getglobal(L_, "request");
  push_context(L_, ctx, opt_.token_ids);
  call("request", 1, 1);
  auto fail = [&](const std::string& what) -> std::optional<scenario_request> {
    lua_settop(L_, 0);
    auto w = where("request");
    lua_settop(L_, 0);
    throw error(errc::invalid_argument, w + ": request() " + what);
  };
  if (lua_isnil(L_, -1)) {
    lua_settop(L_, 0);
    return std::nullopt;
  }
  if (!lua_istable(L_, -1))
    return fail(std::string("returned a ") + luaL_typename(L_, -1) + ", expected a table (or nil when done)");
  scenario_request out;
  out.api.stream = opt_.stream;
  out.api.endpoint.clear();
  lua_pushnil(L_);
  while (lua_next(L_, 1) != 0) {
    if (lua_type(L_, -2) != LUA_TSTRING) return fail("returned a table with a non-string key");
    std::string key = lua_tostring(L_, -2);
    if (key == "endpoint") {
      std::string e = lua_isstring(L_, -1) ? lua_tostring(L_, -1) : "";
      if (e == "chat" || e == "/v1/chat/completions" || e == "chat/completions")
        out.api.endpoint = "chat";
      else if (e == "completions" || e == "/v1/completions")
        out.api.endpoint = "completions";
      else
        return fail("returned endpoint '" + e + "'; expected \"chat\" or \"completions\"");
    } else if (key == "session") {
      if (lua_type(L_, -1) != LUA_TSTRING && lua_type(L_, -1) != LUA_TNUMBER)
        return fail("returned a session that is neither a string nor a number");
      out.session = lua_tostring(L_, -1);
    } else if (key == "stream") {
      out.api.stream = lua_toboolean(L_, -1) != 0;
    } else {
      try {
        out.api.body[key] = to_json(L_, -1, 0, key);
      } catch (const error& e) {
        return fail(std::string("returned a table whose ") + e.what());
      }
    }
    lua_pop(L_, 1);
  }
  lua_settop(L_, 0);
  auto& body = out.api.body;
  std::string asked = out.api.endpoint;  // empty unless the script named one
  if (body.contains("messages") && body.contains("prompt")) return fail("returned both messages and prompt");
  if (body.contains("messages")) {
    if (!body["messages"].is_array() || body["messages"].empty())
      return fail("returned messages that are not a non-empty list of {role=, content=}");
    out.api.endpoint = "chat";
  } else if (body.contains("prompt")) {
    const auto& p = body["prompt"];
    bool ids = p.is_array() && !p.empty() &&
               std::all_of(p.begin(), p.end(), [](const json& v) { return v.is_number_integer(); });
    if (!p.is_string() && !ids) return fail("returned a prompt that is neither a string nor a list of token ids");
    out.api.endpoint = "completions";
  } else {
    return fail("returned a table with neither messages nor prompt");
  }
  if (!asked.empty() && asked != out.api.endpoint)
    return fail("asked for endpoint " + asked + (asked == "chat" ? " without messages" : " with messages"));
  out.prompt_tokens = estimate_tokens(body);
  return out;
}

std::optional<double> lua_scenario::response(const scenario_context& ctx, const request_record& rec) {
  if (!has_response_) return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  lua_settop(L_, 0);
  lua_getglobal(L_, "response");
  push_context(L_, ctx, opt_.token_ids);
  lua_createtable(L_, 0, 9);
  lua_pushboolean(L_, rec.ok);
  lua_setfield(L_, -2, "ok");
  set_field(L_, "status", static_cast<lua_Integer>(rec.status));
  if (!rec.error.empty()) set_field(L_, "error", rec.error);
  set_field(L_, "text", rec.text);
  if (!rec.token_ids.empty()) {
    lua_createtable(L_, static_cast<int>(rec.token_ids.size()), 0);
    for (std::size_t i = 0; i < rec.token_ids.size(); ++i) {
      lua_pushinteger(L_, rec.token_ids[i]);
      lua_rawseti(L_, -2, static_cast<lua_Integer>(i + 1));
    }
    lua_setfield(L_, -2, "token_ids");
  }
  set_field(L_, "ttft", rec.ttft_s);
  set_field(L_, "e2el", rec.e2el_s);
  set_field(L_, "output_tokens", static_cast<lua_Integer>(rec.output_tokens));
  set_field(L_, "prompt_tokens", static_cast<lua_Integer>(rec.prompt_tokens));
  call("response", 2, 1);
  std::optional<double> out;
  if (lua_isboolean(L_, -1)) {
    if (lua_toboolean(L_, -1)) out = 0.0;
  } else if (lua_isnumber(L_, -1)) {
    double d = lua_tonumber(L_, -1);
    if (!(d >= 0) || !std::isfinite(d)) {
      lua_settop(L_, 0);
      auto w = where("response");
      lua_settop(L_, 0);
      throw error(errc::invalid_argument,
                  w + ": response() returned " + std::to_string(d) + "; expected true, false, nil or seconds >= 0");
    }
    out = d;
  } else if (!lua_isnil(L_, -1)) {
    std::string type = luaL_typename(L_, -1);
    lua_settop(L_, 0);
    auto w = where("response");
    lua_settop(L_, 0);
    throw error(errc::invalid_argument,
                w + ": response() returned a " + type + "; expected true, false, nil or seconds >= 0");
  }
  lua_settop(L_, 0);
  if (ctx.session.empty()) return std::nullopt;
  return out;
}

}  // namespace kvflow::load

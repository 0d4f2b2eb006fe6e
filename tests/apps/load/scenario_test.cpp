#define BOOST_TEST_MODULE apps.load.scenario
#include <boost/test/unit_test.hpp>

// The Lua scenario runner on tiny scripts: the request table becomes a JSON
// body, sessions continue through response(), the kvflow helpers are
// deterministic, and script errors name the file and line.

#include "apps/load/scenario.hpp"
#include "messages/error.hpp"
#include "tests/apps/load/test_files.hpp"

using namespace kvflow::load;
using kvflow::load::testing::error_message;
namespace fs = std::filesystem;

namespace {

// One scratch folder for the whole suite.
const kvflow::load::testing::scratch& dir() {
  static kvflow::load::testing::scratch s("scenario-test");
  return s;
}

scenario_options options(const fs::path& p) {
  scenario_options o;
  o.path = p.string();
  o.args = {{"turns", "3"}};
  return o;
}

const char* chat_script = R"(
local turns
local history = {}
function init(args) turns = tonumber(args.turns) end
function request(ctx)
  if ctx.session == nil then
    if ctx.index >= 2 then return nil end
    local id = "s" .. ctx.index
    history[id] = {{role = "user", content = kvflow.words(5, id)}}
    return {messages = history[id], max_tokens = 4, session = id, temperature = 0.5}
  end
  table.insert(history[ctx.session], {role = "user", content = "turn " .. ctx.turn})
  return {messages = history[ctx.session], max_tokens = 4}
end
function response(ctx, resp)
  table.insert(history[ctx.session], {role = "assistant", content = resp.text})
  if ctx.turn + 1 < turns then return true end
  return false
end
)";

}  // namespace

BOOST_AUTO_TEST_CASE(builds_requests_and_continues_sessions) {
  auto f = dir().write("chat.lua", chat_script);
  lua_scenario s(options(f));
  scenario_context ctx;
  auto r = s.request(ctx);
  BOOST_REQUIRE(r);
  BOOST_CHECK_EQUAL(r->api.endpoint, "chat");
  BOOST_CHECK_EQUAL(r->session, "s0");
  BOOST_CHECK_EQUAL(r->api.body.at("max_tokens"), 4);
  BOOST_CHECK_EQUAL(r->api.body.at("temperature"), 0.5);
  BOOST_CHECK_EQUAL(r->api.body.at("messages").size(), 1u);
  BOOST_CHECK_EQUAL(r->prompt_tokens, 5);
  BOOST_CHECK(r->api.stream);

  request_record rec;
  rec.ok = true;
  rec.text = "an answer";
  ctx.session = "s0";
  ctx.turn = 0;
  auto again = s.response(ctx, rec);
  BOOST_REQUIRE(again);
  BOOST_CHECK_EQUAL(*again, 0.0);
  ctx.turn = 1;
  auto r2 = s.request(ctx);
  BOOST_REQUIRE(r2);
  const auto& msgs = r2->api.body.at("messages");
  BOOST_REQUIRE_EQUAL(msgs.size(), 3u);  // first question, the answer, the follow-up
  BOOST_CHECK_EQUAL(msgs[1].at("content"), "an answer");
  BOOST_CHECK_EQUAL(msgs[2].at("content"), "turn 1");
  ctx.turn = 2;
  BOOST_CHECK(!s.response(ctx, rec));  // the last turn ends the session

  scenario_context fresh;
  fresh.index = 2;
  BOOST_CHECK(!s.request(fresh));  // nil: no more new work
}

BOOST_AUTO_TEST_CASE(helpers_are_deterministic_and_follow_the_mode) {
  auto f = dir().write("helpers.lua", R"lua(
function request(ctx)
  local a = kvflow.tokens(6, "k")
  local b = kvflow.tokens(4, "k")
  for i = 1, 4 do assert(a[i] == b[i], "tokens(4) is not a prefix of tokens(6)") end
  for i = 1, 6 do assert(a[i] >= 1 and a[i] < kvflow.vocab) end
  assert(kvflow.words(3, 1) == kvflow.words(3, 1))
  assert(kvflow.length(kvflow.words(7, "x")) == 7)
  local r = kvflow.random(3, 5)
  assert(r >= 3 and r <= 5)
  return {prompt = kvflow.prompt(8, "p"), max_tokens = 2, stream = false}
end
)lua");
  auto o = options(f);
  o.token_ids = true;
  o.vocab = 50;
  lua_scenario s(o);
  auto r = s.request({});
  BOOST_REQUIRE(r);
  BOOST_CHECK_EQUAL(r->api.endpoint, "completions");
  BOOST_CHECK(!r->api.stream);
  BOOST_REQUIRE(r->api.body.at("prompt").is_array());
  BOOST_CHECK_EQUAL(r->api.body.at("prompt").size(), 8u);
  BOOST_CHECK_EQUAL(r->prompt_tokens, 8);
  lua_scenario again(o);
  BOOST_CHECK_EQUAL(again.request({})->api.body.dump(), r->api.body.dump());

  o.token_ids = false;
  lua_scenario text(o);
  BOOST_CHECK(text.request({})->api.body.at("prompt").is_string());
}

BOOST_AUTO_TEST_CASE(script_errors_name_file_and_line) {
  {
    auto f = dir().write("syntax.lua", "function request(ctx)\n  return {\nend\n");
    auto msg = error_message([&] { lua_scenario s(options(f)); });
    BOOST_CHECK_MESSAGE(msg.find(f.string() + ":") != std::string::npos, msg);
  }
  {
    auto f = dir().write("runtime.lua", "function request(ctx)\n  local x = nil\n  return x.field\nend\n");
    lua_scenario s(options(f));
    auto msg = error_message([&] { s.request({}); });
    BOOST_CHECK_MESSAGE(msg.find(f.string() + ":3:") != std::string::npos, msg);
    BOOST_CHECK_MESSAGE(msg.find("request()") != std::string::npos, msg);
  }
  {
    auto f = dir().write("shape.lua", "\n\nfunction request(ctx)\n  return {max_tokens = 3}\nend\n");
    lua_scenario s(options(f));
    auto msg = error_message([&] { s.request({}); });
    BOOST_CHECK_MESSAGE(msg.find(f.string() + ":3") != std::string::npos, msg);
    BOOST_CHECK_MESSAGE(msg.find("neither messages nor prompt") != std::string::npos, msg);
  }
  {
    auto f = dir().write("init.lua", "function init(args)\n  error('need docs')\nend\nfunction request(ctx) end\n");
    auto msg = error_message([&] { lua_scenario s(options(f)); });
    BOOST_CHECK_MESSAGE(msg.find(f.string() + ":2: need docs") != std::string::npos, msg);
  }
  {
    auto f = dir().write("none.lua", "x = 1\n");
    auto msg = error_message([&] { lua_scenario s(options(f)); });
    BOOST_CHECK_MESSAGE(msg.find("no function request") != std::string::npos, msg);
  }
  {
    auto f = dir().write("resp.lua",
                         "function request(ctx) return {prompt = 'a'} end\nfunction response(c, r) return 'x' end\n");
    lua_scenario s(options(f));
    scenario_context ctx;
    ctx.session = "s";
    auto msg = error_message([&] { s.response(ctx, {}); });
    BOOST_CHECK_MESSAGE(msg.find(f.string() + ":2") != std::string::npos, msg);
  }
  BOOST_CHECK_THROW(lua_scenario(options("/nonexistent/x.lua")), kvflow::error);
}

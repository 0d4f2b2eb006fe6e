#define BOOST_TEST_MODULE actors.frontend.openai_json
#include <boost/test/unit_test.hpp>

#include "actors/frontend/openai_json.hpp"

using namespace kvflow;
using namespace kvflow::frontend;
using json = nlohmann::json;

namespace {

parse_limits limits(bool tokenizer = true) {
  parse_limits l;
  l.model = "m";
  l.vocab_size = 100;
  l.has_tokenizer = tokenizer;
  return l;
}

// The status and parameter a body is refused with.
std::pair<int, std::string> refusal(endpoint kind, const std::string& body, bool tokenizer = true) {
  try {
    parse_request(kind, body, limits(tokenizer));
  } catch (const api_error& e) {
    return {e.status(), e.param()};
  }
  return {200, ""};
}

}  // namespace

BOOST_AUTO_TEST_CASE(parses_completion_with_every_sampling_parameter) {
  auto r = parse_request(endpoint::completions,
                         R"({"model":"m","prompt":"hi","max_tokens":5,"temperature":0.5,"top_p":0.9,"seed":7,
                             "stop":["\n","END"],"stop_token_ids":[3],"stream":true,
                             "stream_options":{"include_usage":true},"n":1,"user":"ignored"})",
                         limits());
  BOOST_TEST(r.prompt_text == "hi");
  BOOST_TEST(!r.prompt_is_ids);
  BOOST_TEST(*r.max_tokens == 5u);
  BOOST_TEST(r.temperature == 0.5f);
  BOOST_TEST(r.top_p == 0.9f);
  BOOST_TEST(*r.seed == 7u);
  BOOST_TEST(r.stop == (std::vector<std::string>{"\n", "END"}));
  BOOST_TEST(r.stop_token_ids == std::vector<std::int32_t>{3});
  BOOST_TEST(r.stream);
  BOOST_TEST(r.include_usage);
}

BOOST_AUTO_TEST_CASE(defaults_follow_openai) {
  auto r = parse_request(endpoint::completions, R"({"prompt":"hi"})", limits());
  BOOST_TEST(r.model == "m");
  BOOST_TEST(!r.max_tokens.has_value());
  BOOST_TEST(r.temperature == 1.0f);
  BOOST_TEST(!r.seed.has_value());
  BOOST_TEST(!r.stream);
  // null means unset
  auto n = parse_request(endpoint::completions, R"({"prompt":"hi","temperature":null,"stop":null})", limits());
  BOOST_TEST(n.temperature == 1.0f);
  BOOST_TEST(n.stop.empty());
}

BOOST_AUTO_TEST_CASE(token_id_prompts_work_without_a_tokenizer) {
  auto r = parse_request(endpoint::completions, R"({"prompt":[1,2,3]})", limits(false));
  BOOST_TEST(r.prompt_is_ids);
  BOOST_TEST(r.prompt_ids == (std::vector<std::int32_t>{1, 2, 3}));
  auto one = parse_request(endpoint::completions, R"({"prompt":[[4,5]]})", limits(false));
  BOOST_TEST(one.prompt_ids == (std::vector<std::int32_t>{4, 5}));
  BOOST_TEST(refusal(endpoint::completions, R"({"prompt":"text"})", false).first == 400);
  BOOST_TEST(refusal(endpoint::chat, R"({"messages":[{"role":"user","content":"x"}]})", false).first == 400);
  BOOST_TEST(refusal(endpoint::completions, R"({"prompt":[1],"stop":"x"})", false).second == "stop");
}

BOOST_AUTO_TEST_CASE(chat_messages_and_content_parts) {
  auto r = parse_request(endpoint::chat,
                         R"({"messages":[{"role":"developer","content":"be brief"},
                                        {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                             "max_completion_tokens":3})",
                         limits());
  BOOST_REQUIRE_EQUAL(r.messages.size(), 2u);
  BOOST_TEST(r.messages[0].role == "system");
  BOOST_TEST(r.messages[1].content == "ab");
  BOOST_TEST(*r.max_tokens == 3u);
}

BOOST_AUTO_TEST_CASE(bad_requests_get_their_status_and_parameter) {
  using E = endpoint;
  BOOST_TEST(refusal(E::completions, "{bad").first == 400);
  BOOST_TEST(refusal(E::completions, "[1]").first == 400);
  BOOST_TEST(refusal(E::completions, R"({"model":"other","prompt":"x"})").first == 404);
  BOOST_TEST(refusal(E::completions, R"({})").second == "prompt");
  BOOST_TEST(refusal(E::completions, R"({"prompt":""})").second == "prompt");
  BOOST_TEST(refusal(E::completions, R"({"prompt":["a","b"]})").second == "prompt");
  BOOST_TEST(refusal(E::completions, R"({"prompt":[1,100]})").second == "prompt");
  BOOST_TEST(refusal(E::completions, R"({"prompt":[1,-1]})").second == "prompt");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","max_tokens":0})").second == "max_tokens");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","max_tokens":1.5})").second == "max_tokens");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","temperature":2.5})").second == "temperature");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","temperature":"hot"})").second == "temperature");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","top_p":0})").second == "top_p");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","seed":"s"})").second == "seed");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","stop":5})").second == "stop");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","n":2})").second == "n");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","logprobs":3})").second == "logprobs");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","stream":"yes"})").second == "stream");
  BOOST_TEST(refusal(E::completions, R"({"prompt":"x","stream_options":{"include_usage":true}})").second ==
             "stream_options");
  BOOST_TEST(refusal(E::chat, R"({"messages":[]})").second == "messages");
  BOOST_TEST(refusal(E::chat, R"({"messages":[{"role":"robot","content":"x"}]})").second == "messages");
  BOOST_TEST(refusal(E::chat, R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})").second ==
             "messages");
}

BOOST_AUTO_TEST_CASE(context_window_checks) {
  generation_request r;
  BOOST_TEST(check_context(r, 10, 100, 16) == 16u);
  BOOST_TEST(check_context(r, 90, 100, 16) == 10u);  // the default is clipped to what is left
  r.max_tokens = 10;
  BOOST_TEST(check_context(r, 90, 100, 16) == 10u);
  r.max_tokens = 11;
  BOOST_CHECK_THROW(check_context(r, 90, 100, 16), api_error);
  r.max_tokens.reset();
  try {
    check_context(r, 100, 100, 16);
    BOOST_FAIL("a prompt filling the context passed");
  } catch (const api_error& e) {
    BOOST_TEST(e.status() == 400);
    BOOST_TEST(std::string(e.what()).find("maximum context length is 100") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(responses_have_openai_shapes) {
  generation_result g;
  g.id = "cmpl-1";
  g.created = 5;
  g.model = "m";
  g.text = "hello";
  g.token_ids = {1, 2};
  g.finish_reason = "length";
  g.prompt_tokens = 3;
  auto c = response_body(endpoint::completions, g);
  BOOST_TEST(c["object"] == "text_completion");
  BOOST_TEST(c["choices"][0]["text"] == "hello");
  BOOST_TEST(c["choices"][0]["token_ids"] == json({1, 2}));
  BOOST_TEST(c["usage"]["total_tokens"] == 5);
  auto chat = response_body(endpoint::chat, g);
  BOOST_TEST(chat["object"] == "chat.completion");
  BOOST_TEST(chat["choices"][0]["message"]["role"] == "assistant");
  BOOST_TEST(chat["choices"][0]["message"]["content"] == "hello");

  auto first = chunk_body(endpoint::chat, "id", 5, "m", "he", {1}, true, "");
  BOOST_TEST(first["object"] == "chat.completion.chunk");
  BOOST_TEST(first["choices"][0]["delta"]["role"] == "assistant");
  BOOST_TEST(first["choices"][0]["finish_reason"].is_null());
  auto last = chunk_body(endpoint::completions, "id", 5, "m", "", {}, false, "stop");
  BOOST_TEST(last["choices"][0]["finish_reason"] == "stop");
  BOOST_TEST(usage_chunk(endpoint::chat, g)["choices"].empty());

  BOOST_TEST(sse_event(json{{"a", 1}}) == "data: {\"a\":1}\n\n");
  BOOST_TEST(sse_done() == "data: [DONE]\n\n");
  // Half a UTF-8 character does not throw.
  BOOST_TEST(dump(json("\xE2\x82")) == "\"\xEF\xBF\xBD\"");
  auto e = error_body(api_error(429, "rate_limit_exceeded", "busy", {}, "rate_limit_exceeded"));
  BOOST_TEST(e["error"]["message"] == "busy");
  BOOST_TEST(e["error"]["param"].is_null());
  BOOST_TEST(models_body("m", 1, 8192)["data"][0]["id"] == "m");
}

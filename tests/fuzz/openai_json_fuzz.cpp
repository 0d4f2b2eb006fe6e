// Fuzz target: `kvflow serve`'s JSON bodies. parse_request on both
// endpoints, under limits the first 4 bytes choose, then what the server
// builds from an accepted request (check_context, the response, a stream
// chunk, the SSE text).
// Properties: only api_error escapes, with a 400 or 404 status; an accepted
// request respects every limit (model, token ids inside the vocabulary,
// stop strings, temperature, top_p, max_tokens, a non-empty prompt); every
// reply built from it serializes.

#include <cstddef>
#include <cstdint>
#include <string>

#include "actors/frontend/openai_json.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace kvflow::frontend;

namespace {

void check_accepted(const generation_request& r, const parse_limits& l, endpoint kind) {
  KVFLOW_FUZZ_CHECK(r.kind == kind, "endpoint changed");
  KVFLOW_FUZZ_CHECK(r.model == l.model, "another model accepted");
  if (kind == endpoint::completions) {
    KVFLOW_FUZZ_CHECK(r.prompt_is_ids ? !r.prompt_ids.empty() : !r.prompt_text.empty(), "empty prompt accepted");
    KVFLOW_FUZZ_CHECK(r.prompt_is_ids || l.has_tokenizer, "text prompt without a tokenizer");
  } else {
    KVFLOW_FUZZ_CHECK(!r.messages.empty() && l.has_tokenizer, "chat without messages or tokenizer");
  }
  for (auto id : r.prompt_ids) KVFLOW_FUZZ_CHECK(id >= 0 && id < l.vocab_size, "prompt id outside the vocabulary");
  for (auto id : r.stop_token_ids) KVFLOW_FUZZ_CHECK(id >= 0 && id < l.vocab_size, "stop id outside the vocabulary");
  KVFLOW_FUZZ_CHECK(r.stop.size() <= l.max_stop, "too many stop strings");
  for (auto& s : r.stop) KVFLOW_FUZZ_CHECK(!s.empty(), "empty stop string kept");
  KVFLOW_FUZZ_CHECK(r.temperature >= 0 && r.temperature <= 2, "temperature out of range");
  KVFLOW_FUZZ_CHECK(r.top_p > 0 && r.top_p <= 1, "top_p out of range");
  KVFLOW_FUZZ_CHECK(!r.max_tokens || *r.max_tokens >= 1, "max_tokens below 1");
  KVFLOW_FUZZ_CHECK(!r.include_usage || r.stream, "include_usage without a stream");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const auto kind = (data[0] & 1) ? endpoint::chat : endpoint::completions;
  parse_limits l;
  l.model = "m";
  l.has_tokenizer = (data[0] & 2) == 0;
  l.vocab_size = 1 + (data[1] | (data[2] << 8));
  l.max_stop = data[3] % 20;
  const std::string body(reinterpret_cast<const char*>(data + 4), size - 4);
  generation_request r;
  try {
    r = parse_request(kind, body, l);
  } catch (const api_error& e) {
    KVFLOW_FUZZ_CHECK(e.status() == 400 || e.status() == 404, "a refusal that is not 400 or 404");
    KVFLOW_FUZZ_CHECK(!error_body(e).dump().empty(), "error body");
    return 0;
  }
  check_accepted(r, l, kind);
  // The prompt's length as the tokenizer might count it, against a context.
  const std::size_t prompt_tokens = r.prompt_is_ids ? r.prompt_ids.size() : body.size() % 9000;
  try {
    auto n = check_context(r, prompt_tokens, 8192, 256);
    KVFLOW_FUZZ_CHECK(n >= 1 && prompt_tokens + n <= 8192, "context check let a request past the window");
  } catch (const api_error& e) {
    KVFLOW_FUZZ_CHECK(e.status() == 400, "context refusal that is not 400");
  }
  // Replies echo what the client sent (stop strings, chat text): arbitrary
  // bytes must serialize.
  generation_result g;
  g.id = "cmpl-0";
  g.model = r.model;
  g.text = r.prompt_text + (r.messages.empty() ? std::string() : r.messages.back().content);
  for (auto& s : r.stop) g.text += s;
  g.token_ids = r.prompt_ids;
  g.finish_reason = "stop";
  KVFLOW_FUZZ_CHECK(!dump(response_body(kind, g)).empty(), "response body");
  auto ev = sse_event(chunk_body(kind, g.id, 0, g.model, g.text, g.token_ids, true, ""));
  KVFLOW_FUZZ_CHECK(ev.compare(0, 6, "data: ") == 0 && ev.size() >= 8 && ev.substr(ev.size() - 2) == "\n\n",
                    "SSE framing");
  return 0;
}

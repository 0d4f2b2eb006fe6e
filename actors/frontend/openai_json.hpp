#pragma once
// The OpenAI-compatible wire format of `kvflow serve`: request parsing and
// validation, response and stream-chunk building, error bodies. Pure: no
// sockets, no runtime, no clocks (callers pass ids and times in).

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/runtime.hpp"

namespace kvflow::frontend {

/// A request the server refuses: the HTTP status, OpenAI's error type
/// ("invalid_request_error", "authentication_error", ...), the message and
/// the parameter at fault (empty when none).
class api_error : public std::runtime_error {
 public:
  api_error(int status, std::string type, const std::string& message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string type_, param_, code_;
};

/// 400 invalid_request_error about `param`.
api_error bad_request(const std::string& message, const std::string& param = {});

enum class endpoint { completions, chat };

/// What the parser checks a request against.
struct parse_limits {
  std::string model;            ///< the served model name; a request naming another gets 404
  int vocab_size = 0;           ///< token ids in a prompt must be below it
  bool has_tokenizer = true;    ///< without one, prompts are token ids and stop strings are refused
  std::uint32_t max_stop = 16;  ///< stop strings per request
};

/// A validated /v1/completions or /v1/chat/completions request.
struct generation_request {
  endpoint kind = endpoint::completions;
  std::string model;
  std::string prompt_text;               ///< completions: a text prompt
  std::vector<std::int32_t> prompt_ids;  ///< completions: a prompt of token ids (OpenAI allows it)
  bool prompt_is_ids = false;
  std::vector<chat_turn> messages;          ///< chat
  std::optional<std::uint32_t> max_tokens;  ///< absent: the server's default, clipped to the context
  float temperature = 1.0f;                 ///< OpenAI's default; 0 is greedy
  float top_p = 1.0f;
  std::optional<std::uint64_t> seed;         ///< absent: a fresh seed per request
  std::vector<std::string> stop;             ///< stop strings, not shown in the reply
  std::vector<std::int32_t> stop_token_ids;  ///< vLLM's extension: token ids that end the reply
  bool stream = false;
  bool include_usage = false;  ///< stream_options.include_usage: a last chunk with usage
};

/// Parses and validates a request body; throws api_error (400 for bad JSON
/// or parameters, 404 for an unknown model).
generation_request parse_request(endpoint kind, const std::string& body, const parse_limits& limits);

/// The number of tokens to generate: the request's max_tokens (400 when
/// prompt plus max_tokens exceeds the context window) or `default_max`
/// clipped to what the context leaves (400 when the prompt alone fills it).
std::uint32_t check_context(const generation_request& r, std::size_t prompt_tokens, int context_tokens,
                            std::uint32_t default_max);

/// One finished generation, as a non-streamed response reports it.
struct generation_result {
  std::string id;            ///< "cmpl-..." or "chatcmpl-..."
  std::int64_t created = 0;  ///< Unix seconds
  std::string model;
  std::string text;
  std::vector<std::int32_t> token_ids;  ///< generated ids, shown as they count in usage
  std::string finish_reason;            ///< "stop", "length" or "abort"
  std::uint32_t prompt_tokens = 0;
  restore_report report;  ///< the runtime's breakdown, reported under "kvflow"
};

/// The body of a non-streamed completion or chat completion.
nlohmann::json response_body(endpoint kind, const generation_result& r);

/// One streamed chunk: a text delta with its token ids; a chat stream's
/// first chunk also carries the role; the last one carries finish_reason.
nlohmann::json chunk_body(endpoint kind, const std::string& id, std::int64_t created, const std::string& model,
                          const std::string& text, const std::vector<std::int32_t>& token_ids, bool first,
                          const std::string& finish_reason);

/// The streamed usage chunk (stream_options.include_usage): no choices.
nlohmann::json usage_chunk(endpoint kind, const generation_result& r);

/// "data: <json>\n\n"; invalid UTF-8 in text becomes U+FFFD instead of throwing.
std::string sse_event(const nlohmann::json& j);
/// The stream's end marker, "data: [DONE]\n\n".
std::string sse_done();

/// Compact JSON text that replaces invalid UTF-8 instead of throwing.
std::string dump(const nlohmann::json& j);

/// {"error": {"message", "type", "param", "code"}}
nlohmann::json error_body(const api_error& e);

/// GET /v1/models
nlohmann::json models_body(const std::string& model, std::int64_t created, int context_tokens);

}  // namespace kvflow::frontend

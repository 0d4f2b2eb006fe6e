#pragma once
// A client of an OpenAI-compatible server (/v1/completions,
// /v1/chat/completions, /v1/models) that times each request the way vLLM's
// benchmark does: TTFT at the first chunk with content, one inter-token gap
// per further content chunk, end-to-end at the end of the answer.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace httplib {
class Client;
}

namespace kvflow::load {

/// Where and how to reach the server.
struct endpoint_config {
  /// "http://host:port" or "https://host:port", optionally with a path
  /// prefix ("http://host:8000/v1" and "http://host:8000" both work).
  std::string base_url = "http://127.0.0.1:8000";
  std::string api_key;       ///< sent as "Authorization: Bearer KEY" when set
  std::string model;         ///< the body's "model"
  double timeout_s = 600;    ///< connect and per-read timeout
  bool stream_usage = true;  ///< ask for usage in streams (stream_options.include_usage)
  /// Reuse connections. Off by default: a server with a thread per connection
  /// (cpp-httplib's, so kvflow serve's) holds a thread for every idle kept-alive
  /// connection, and a burst with more connections than threads then stalls
  /// until a keep-alive times out (5 s, measured against cpp-httplib).
  bool keep_alive = false;
};

/// The base URL split into what httplib needs; throws kvflow::error
/// (invalid_argument) on a scheme other than http/https or no host.
struct parsed_url {
  std::string scheme_host_port;  ///< e.g. "http://127.0.0.1:8000"
  std::string api_prefix;        ///< e.g. "/v1" or "/proxy/v1"
};
parsed_url parse_base_url(const std::string& url);

/// One request to send. `body` holds everything but "model" and "stream"
/// (messages or prompt, max_tokens, sampling parameters, ...).
struct api_request {
  std::string endpoint = "completions";  ///< "completions" or "chat"
  nlohmann::json body = nlohmann::json::object();
  bool stream = true;
};

/// What came back. Times in seconds from the moment the request was sent.
struct api_result {
  bool ok = false;
  int status = 0;     ///< HTTP status; 0 when the server was not reached
  std::string error;  ///< empty when ok
  double ttft_s = 0, e2el_s = 0;
  std::vector<double> itl_s;
  std::string text;
  std::vector<std::int32_t> token_ids;  ///< generated ids, where the server sends them (presets without a tokenizer)
  std::int64_t prompt_tokens = -1;      ///< from "usage"; -1 when the server sent none
  std::int64_t output_tokens = -1;      ///< from "usage"; else the number of content chunks
};

/// Folds one server-sent-events payload into `r`; used by the client and by
/// tests. Call feed() with bytes as they arrive and finish() at the end.
class sse_parser {
 public:
  explicit sse_parser(bool chat) : chat_(chat) {}
  /// `now_s` is when these bytes arrived (seconds since the request was sent).
  void feed(const char* data, std::size_t n, double now_s, api_result& r);
  /// Marks the end of the stream: sets ok, the error when no content came,
  /// and output_tokens when usage did not.
  void finish(double now_s, api_result& r);

 private:
  void event(const std::string& data, double now_s, api_result& r);
  bool chat_;
  std::string buffer_;
  bool done_ = false, failed_ = false;
  double last_s_ = -1;
  std::int64_t chunks_ = 0;
};

/// One connection (kept alive) to the server. Not thread-safe: one per thread.
class openai_client {
 public:
  /// Throws kvflow::error(invalid_argument) on a bad base URL.
  explicit openai_client(const endpoint_config& cfg);
  ~openai_client();
  openai_client(const openai_client&) = delete;
  openai_client& operator=(const openai_client&) = delete;

  /// Sends one request and waits for the whole answer. Never throws for what
  /// the server does: refusals, bad JSON and broken connections come back as
  /// a result with ok = false and the reason.
  api_result send(const api_request& req);

  /// The ids of /v1/models. Throws kvflow::error: peer_down when the server
  /// cannot be reached, invalid_argument when it answers with an error or
  /// something that is not a model list.
  std::vector<std::string> models();

 private:
  endpoint_config cfg_;
  parsed_url url_;
  std::unique_ptr<httplib::Client> http_;
};

}  // namespace kvflow::load

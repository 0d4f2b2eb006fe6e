#pragma once
// An OpenAI-compatible stand-in for the kvflow load tests, started in-process
// on a loopback port: /v1/models, /v1/completions and /v1/chat/completions,
// streamed (a role-only chunk, then `first_delay_ms`, then one content chunk
// per word `chunk_gap_ms` apart, usage, [DONE]) or whole.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace kvflow::load::testing {

using json = nlohmann::json;

inline constexpr int first_delay_ms = 60;  // before the first chunk
inline constexpr int chunk_gap_ms = 5;     // between chunks
inline const std::vector<std::string> reply_words{"alpha", " beta", " gamma", " delta"};

inline std::int64_t words_in(const std::string& s) {
  std::istringstream in(s);
  std::string w;
  std::int64_t n = 0;
  while (in >> w) ++n;
  return n;
}

// An OpenAI-compatible stand-in: /v1/models, /v1/completions and
// /v1/chat/completions, streamed or not; `fail_every` > 0 answers every
// n-th request with HTTP 500; `key` set requires that bearer key.
class fake_server {
 public:
  explicit fake_server(int fail_every = 0, std::string key = "") : fail_every_(fail_every), key_(std::move(key)) {
    srv_.Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"object":"list","data":[{"id":"fake-model","object":"model"}]})", "application/json");
    });
    srv_.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& s) { answer(q, s, true); });
    srv_.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& s) { answer(q, s, false); });
    port_ = srv_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("fake server: no loopback port");
    thread_ = std::thread([this] { srv_.listen_after_bind(); });
    for (int i = 0; i < 500 && !srv_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ~fake_server() {
    srv_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<json> bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }
  /// The most requests it was answering at once.
  int max_in_flight() const { return max_in_flight_; }

 private:
  // Counts a request in flight until its answer (streamed or not) is
  // written. A stream lets go before its last event: the client starts its
  // next request once it reads that event, while the content provider that
  // holds the guard lives until httplib has finished with the response.
  struct in_flight_guard {
    fake_server* f;
    std::atomic<bool> counted{true};
    explicit in_flight_guard(fake_server* s) : f(s) {
      int now = ++f->in_flight_;
      int seen = f->max_in_flight_;
      while (now > seen && !f->max_in_flight_.compare_exchange_weak(seen, now)) {
      }
    }
    void release() {
      if (counted.exchange(false)) --f->in_flight_;
    }
    ~in_flight_guard() { release(); }
  };

  void answer(const httplib::Request& q, httplib::Response& s, bool chat) {
    auto guard = std::make_shared<in_flight_guard>(this);
    json body = json::parse(q.body);
    int n = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      bodies_.push_back(body);
      n = static_cast<int>(bodies_.size());
    }
    if (!key_.empty() && q.get_header_value("Authorization") != "Bearer " + key_) {
      s.status = 401;
      s.set_content(R"({"error":{"message":"bad API key","type":"invalid_request_error"}})", "application/json");
      return;
    }
    if (fail_every_ > 0 && n % fail_every_ == 0) {
      s.status = 500;
      s.set_content(R"({"error":{"message":"injected failure"}})", "application/json");
      return;
    }
    std::int64_t prompt = 0;
    if (chat)
      for (const auto& m : body.at("messages")) prompt += words_in(m.at("content").get<std::string>());
    else if (body.at("prompt").is_array())
      prompt = static_cast<std::int64_t>(body.at("prompt").size());
    else
      prompt = words_in(body.at("prompt").get<std::string>());
    auto n_out = static_cast<std::size_t>(std::min<std::int64_t>(body.value("max_tokens", 4), 4));
    json usage = {{"prompt_tokens", prompt}, {"completion_tokens", n_out}, {"total_tokens", prompt + n_out}};
    if (!body.value("stream", false)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(first_delay_ms));
      std::string text;
      for (std::size_t i = 0; i < n_out; ++i) text += reply_words[i];
      json choice = chat ? json{{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}}}
                         : json{{"index", 0}, {"text", text}};
      s.set_content(json{{"id", "x"}, {"choices", {choice}}, {"usage", usage}}.dump(), "application/json");
      return;
    }
    bool want_usage = body.contains("stream_options") && body["stream_options"].value("include_usage", false);
    s.set_chunked_content_provider("text/event-stream", [=](std::size_t, httplib::DataSink& sink) {
      auto hold = guard;  // in flight until the stream ends
      auto send = [&](const json& j) {
        std::string ev = "data: " + j.dump() + "\n\n";
        sink.write(ev.data(), ev.size());
      };
      if (chat) send({{"choices", {{{"index", 0}, {"delta", {{"role", "assistant"}}}}}}});  // no content yet
      std::this_thread::sleep_for(std::chrono::milliseconds(first_delay_ms));
      for (std::size_t i = 0; i < n_out; ++i) {
        if (i) std::this_thread::sleep_for(std::chrono::milliseconds(chunk_gap_ms));
        send(chat ? json{{"choices", {{{"index", 0}, {"delta", {{"content", reply_words[i]}}}}}}}
                  : json{{"choices", {{{"index", 0}, {"text", reply_words[i]}}}}});
      }
      if (want_usage) send({{"choices", json::array()}, {"usage", usage}});
      std::string done = "data: [DONE]\n\n";
      hold->release();
      sink.write(done.data(), done.size());
      sink.done();
      return true;
    });
  }

  httplib::Server srv_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<json> bodies_;
  int fail_every_;
  std::string key_;
  std::atomic<int> in_flight_{0}, max_in_flight_{0};
};

}  // namespace kvflow::load::testing

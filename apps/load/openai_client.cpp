#include "apps/load/openai_client.hpp"

#include <chrono>

#include <httplib.h>

#include "messages/error.hpp"

namespace kvflow::load {
namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

// The error message of an OpenAI-style error body, or the body itself (cut).
std::string error_text(const std::string& body) {
  try {
    auto j = json::parse(body);
    if (j.is_object() && j.contains("error")) {
      const auto& e = j["error"];
      if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
      if (e.is_string()) return e.get<std::string>();
    }
  } catch (const json::exception&) {
  }
  return body.size() > 200 ? body.substr(0, 200) + "..." : body;
}

// The generated text of one choice: "text" for completions, "message" (whole
// answers) or "delta" (stream chunks) content for chat.
std::string choice_text(const json& j, bool chat) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return {};
  const auto& c = j["choices"][0];
  if (!c.is_object()) return {};
  if (!chat) return c.contains("text") && c["text"].is_string() ? c["text"].get<std::string>() : std::string();
  for (const char* key : {"delta", "message"}) {
    if (c.contains(key) && c[key].is_object()) {
      const auto& m = c[key];
      if (m.contains("content") && m["content"].is_string()) return m["content"].get<std::string>();
    }
  }
  return {};
}

// Generated token ids of one choice ("token_ids", as vLLM's return_token_ids
// and kvflow serve for models without a tokenizer); appended to `out`.
void choice_token_ids(const json& j, std::vector<std::int32_t>& out) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return;
  const auto& c = j["choices"][0];
  if (!c.is_object() || !c.contains("token_ids") || !c["token_ids"].is_array()) return;
  for (const auto& id : c["token_ids"])
    if (id.is_number_integer()) out.push_back(id.get<std::int32_t>());
}

void read_usage(const json& j, api_result& r) {
  if (!j.is_object() || !j.contains("usage") || !j["usage"].is_object()) return;
  const auto& u = j["usage"];
  if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
    r.prompt_tokens = u["prompt_tokens"].get<std::int64_t>();
  if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer())
    r.output_tokens = u["completion_tokens"].get<std::int64_t>();
}

double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

}  // namespace

parsed_url parse_base_url(const std::string& url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos)
    throw error(errc::invalid_argument, "--url " + url + ": expected http://HOST:PORT (or https://)");
  auto scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https")
    throw error(errc::invalid_argument, "--url " + url + ": scheme '" + scheme + "' is neither http nor https");
  auto host_end = url.find('/', scheme_end + 3);
  parsed_url p;
  p.scheme_host_port = url.substr(0, host_end);
  if (p.scheme_host_port.size() == scheme_end + 3) throw error(errc::invalid_argument, "--url " + url + ": no host");
  std::string path = host_end == std::string::npos ? "" : url.substr(host_end);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() < 3 || path.compare(path.size() - 3, 3, "/v1") != 0) path += "/v1";
  p.api_prefix = path;
  return p;
}

void sse_parser::feed(const char* data, std::size_t n, double now_s, api_result& r) {
  buffer_.append(data, n);
  // Events end with a blank line; servers may use \n or \r\n.
  for (;;) {
    auto end = buffer_.find("\n\n");
    auto end_crlf = buffer_.find("\r\n\r\n");
    std::size_t cut, skip;
    if (end_crlf != std::string::npos && (end == std::string::npos || end_crlf < end)) {
      cut = end_crlf;
      skip = 4;
    } else if (end != std::string::npos) {
      cut = end;
      skip = 2;
    } else {
      break;
    }
    std::string ev = buffer_.substr(0, cut);
    buffer_.erase(0, cut + skip);
    std::string payload;
    std::size_t pos = 0;
    while (pos <= ev.size()) {
      auto nl = ev.find('\n', pos);
      std::string line = ev.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("data:", 0) == 0) {
        std::string d = line.substr(5);
        if (!d.empty() && d[0] == ' ') d.erase(0, 1);
        payload += payload.empty() ? d : "\n" + d;
      }
      if (nl == std::string::npos) break;
      pos = nl + 1;
    }
    if (!payload.empty()) event(payload, now_s, r);
  }
}

void sse_parser::event(const std::string& data, double now_s, api_result& r) {
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  json j;
  try {
    j = json::parse(data);
  } catch (const json::parse_error&) {
    failed_ = true;
    if (r.error.empty()) r.error = "stream chunk is not JSON: " + data.substr(0, 120);
    return;
  }
  if (j.is_object() && j.contains("error")) {
    failed_ = true;
    if (r.error.empty()) r.error = "error in stream: " + error_text(data);
    return;
  }
  read_usage(j, r);
  auto text = choice_text(j, chat_);
  auto ids_before = r.token_ids.size();
  choice_token_ids(j, r.token_ids);
  // Content is text, or token ids where a model has no tokenizer to detokenize.
  if (text.empty() && r.token_ids.size() == ids_before) return;
  if (chunks_ == 0)
    r.ttft_s = now_s;
  else
    r.itl_s.push_back(now_s - last_s_);
  last_s_ = now_s;
  ++chunks_;
  r.text += text;
}

void sse_parser::finish(double now_s, api_result& r) {
  r.e2el_s = now_s;
  if (!buffer_.empty()) {
    // A last event without its blank line still counts.
    buffer_ += "\n\n";
    std::string rest;
    rest.swap(buffer_);
    feed(rest.data(), rest.size(), now_s, r);
  }
  if (r.output_tokens < 0) r.output_tokens = chunks_;
  if (failed_) return;
  if (chunks_ == 0) {
    r.error = "never received a chunk with content (no TTFT)";
    return;
  }
  r.ok = true;
}

openai_client::openai_client(const endpoint_config& cfg) : cfg_(cfg), url_(parse_base_url(cfg.base_url)) {
  http_ = std::make_unique<httplib::Client>(url_.scheme_host_port);
  if (!http_->is_valid()) throw error(errc::invalid_argument, "--url " + cfg.base_url + ": not a usable address");
  auto secs = static_cast<time_t>(cfg.timeout_s);
  auto usecs = static_cast<time_t>((cfg.timeout_s - static_cast<double>(secs)) * 1e6);
  http_->set_connection_timeout(secs, usecs);
  http_->set_read_timeout(secs, usecs);
  http_->set_write_timeout(secs, usecs);
  http_->set_keep_alive(cfg.keep_alive);
  http_->set_tcp_nodelay(true);
  if (!cfg.api_key.empty()) http_->set_bearer_token_auth(cfg.api_key);
}

openai_client::~openai_client() = default;

api_result openai_client::send(const api_request& req) {
  api_result r;
  bool chat = req.endpoint == "chat";
  json body = req.body;
  body["model"] = cfg_.model;
  body["stream"] = req.stream;
  if (req.stream && cfg_.stream_usage && !body.contains("stream_options"))
    body["stream_options"] = {{"include_usage", true}};

  httplib::Request hreq;
  hreq.method = "POST";
  hreq.path = url_.api_prefix + (chat ? "/chat/completions" : "/completions");
  hreq.headers = {{"Accept", req.stream ? "text/event-stream" : "application/json"}};
  hreq.body = body.dump();
  hreq.set_header("Content-Type", "application/json");

  sse_parser sse(chat);
  std::string raw;  // whole answers and error bodies
  int status = 0;
  auto t0 = clock_type::now();
  hreq.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  hreq.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    double now = since(t0);
    if (req.stream && status >= 200 && status < 300)
      sse.feed(data, n, now, r);
    else if (raw.size() < (64u << 20))
      raw.append(data, n);
    return true;
  };
  httplib::Response hres;
  httplib::Error err = httplib::Error::Success;
  bool sent = http_->send(hreq, hres, err);
  double end = since(t0);
  r.status = status ? status : (hres.status > 0 ? hres.status : 0);
  if (!sent) {
    r.e2el_s = end;
    r.error = "request failed: " + httplib::to_string(err);
    if (r.status) r.error += " (HTTP " + std::to_string(r.status) + ")";
    return r;
  }
  if (r.status < 200 || r.status >= 300) {
    r.e2el_s = end;
    r.error = "HTTP " + std::to_string(r.status) + ": " + error_text(raw);
    return r;
  }
  if (req.stream) {
    sse.finish(end, r);
    return r;
  }
  r.e2el_s = end;
  r.ttft_s = end;  // a whole answer: its first token arrives with its last
  try {
    auto j = json::parse(raw);
    r.text = choice_text(j, chat);
    choice_token_ids(j, r.token_ids);
    read_usage(j, r);
    if (!j.is_object() || !j.contains("choices")) {
      r.error = "answer has no \"choices\": " + raw.substr(0, 120);
      return r;
    }
  } catch (const json::parse_error&) {
    r.error = "answer is not JSON: " + raw.substr(0, 120);
    return r;
  }
  if (r.output_tokens < 0)
    r.output_tokens = !r.token_ids.empty() ? static_cast<std::int64_t>(r.token_ids.size()) : (r.text.empty() ? 0 : 1);
  r.ok = true;
  return r;
}

std::vector<std::string> openai_client::models() {
  auto res = http_->Get((url_.api_prefix + "/models").c_str());
  if (!res)
    throw error(errc::peer_down, "cannot reach " + cfg_.base_url + " (" + url_.scheme_host_port + url_.api_prefix +
                                     "/models): " + httplib::to_string(res.error()));
  if (res->status < 200 || res->status >= 300)
    throw error(errc::invalid_argument, url_.scheme_host_port + url_.api_prefix + "/models answered HTTP " +
                                            std::to_string(res->status) + ": " + error_text(res->body));
  std::vector<std::string> ids;
  try {
    auto j = json::parse(res->body);
    for (const auto& m : j.at("data")) ids.push_back(m.at("id").get<std::string>());
  } catch (const json::exception& e) {
    throw error(errc::invalid_argument,
                url_.scheme_host_port + url_.api_prefix + "/models did not answer with a model list: " + e.what());
  }
  return ids;
}

}  // namespace kvflow::load

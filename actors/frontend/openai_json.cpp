#include "actors/frontend/openai_json.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvflow::frontend {
namespace {

using json = nlohmann::json;

const char* object_name(endpoint kind, bool chunk) {
  if (kind == endpoint::chat) return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

// A value that may be absent or null: OpenAI clients send null for "unset".
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number(const json& v, const char* name) {
  if (!v.is_number()) throw bad_request(std::string("'") + name + "' must be a number", name);
  double d = v.get<double>();
  if (!std::isfinite(d)) throw bad_request(std::string("'") + name + "' must be finite", name);
  return d;
}

std::int64_t integer(const json& v, const char* name) {
  if (!v.is_number_integer()) throw bad_request(std::string("'") + name + "' must be an integer", name);
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
    throw bad_request(std::string("'") + name + "' is too large", name);
  return v.get<std::int64_t>();
}

std::vector<std::int32_t> token_ids(const json& v, const char* name, const parse_limits& limits) {
  std::vector<std::int32_t> ids;
  for (auto& t : v) {
    if (!t.is_number_integer()) throw bad_request(std::string("'") + name + "' must be an array of token ids", name);
    auto id = t.get<std::int64_t>();
    if (id < 0 || id >= limits.vocab_size)
      throw bad_request("token id " + std::to_string(id) + " in '" + name + "' is outside the vocabulary of " +
                            std::to_string(limits.vocab_size),
                        name);
    ids.push_back(static_cast<std::int32_t>(id));
  }
  return ids;
}

void parse_prompt(const json& body, generation_request& r, const parse_limits& limits) {
  auto* p = field(body, "prompt");
  if (!p) throw bad_request("'prompt' is required", "prompt");
  // One prompt per request: ["text"] and [[ids]] are a batch of one. One
  // level only: unwrapping [[[...]]] again and again took minutes for a
  // 200 KB body (fuzz regression openai_json/deep_prompt).
  if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
    if (p->size() != 1) throw bad_request("batched prompts are not supported: send one prompt per request", "prompt");
    p = &(*p)[0];
  }
  if (p->is_string()) {
    if (!limits.has_tokenizer)
      throw bad_request("model " + limits.model + " has no tokenizer: send 'prompt' as an array of token ids",
                        "prompt");
    r.prompt_text = p->get<std::string>();
    if (r.prompt_text.empty()) throw bad_request("'prompt' is empty", "prompt");
    return;
  }
  if (p->is_array()) {
    r.prompt_ids = token_ids(*p, "prompt", limits);
    if (r.prompt_ids.empty()) throw bad_request("'prompt' is empty", "prompt");
    r.prompt_is_ids = true;
    return;
  }
  throw bad_request("'prompt' must be a string or an array of token ids", "prompt");
}

std::string message_content(const json& m) {
  auto* c = field(m, "content");
  if (!c) return {};
  if (c->is_string()) return c->get<std::string>();
  if (c->is_array()) {
    // Content parts: text ones are joined; kvflow's models read text only.
    std::string text;
    for (auto& part : *c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        throw bad_request("only text content parts are supported", "messages");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw bad_request("a message's 'content' must be a string or an array of text parts", "messages");
}

void parse_messages(const json& body, generation_request& r, const parse_limits& limits) {
  auto* ms = field(body, "messages");
  if (!ms) throw bad_request("'messages' is required", "messages");
  if (!ms->is_array() || ms->empty()) throw bad_request("'messages' must be a non-empty array", "messages");
  if (!limits.has_tokenizer)
    throw bad_request(
        "model " + limits.model + " has no tokenizer or chat template: use /v1/completions with token ids", "messages");
  for (auto& m : *ms) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw bad_request("each message needs a string 'role'", "messages");
    auto role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      throw bad_request("message role '" + role + "' (use system, user or assistant)", "messages");
    r.messages.push_back({role, message_content(m)});
  }
}

void parse_stop(const json& body, generation_request& r, const parse_limits& limits) {
  if (auto* s = field(body, "stop")) {
    if (s->is_string()) {
      r.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (auto& x : *s) {
        if (!x.is_string()) throw bad_request("'stop' must be a string or an array of strings", "stop");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      throw bad_request("'stop' must be a string or an array of strings", "stop");
    }
    r.stop.erase(std::remove(r.stop.begin(), r.stop.end(), std::string()), r.stop.end());
    if (r.stop.size() > limits.max_stop)
      throw bad_request("at most " + std::to_string(limits.max_stop) + " stop strings", "stop");
    if (!r.stop.empty() && !limits.has_tokenizer)
      throw bad_request("model " + limits.model + " has no tokenizer: use 'stop_token_ids' instead of 'stop'", "stop");
  }
  if (auto* s = field(body, "stop_token_ids")) {
    if (!s->is_array()) throw bad_request("'stop_token_ids' must be an array of token ids", "stop_token_ids");
    r.stop_token_ids = token_ids(*s, "stop_token_ids", limits);
  }
}

// Parameters kvflow does not implement: refused when set to anything but
// their neutral value, so a client never silently gets something else.
void refuse_unsupported(const json& body) {
  if (auto* n = field(body, "n"); n && !(n->is_number_integer() && n->get<std::int64_t>() == 1))
    throw bad_request("only n = 1 is supported", "n");
  if (auto* b = field(body, "best_of"); b && !(b->is_number_integer() && b->get<std::int64_t>() == 1))
    throw bad_request("only best_of = 1 is supported", "best_of");
  if (auto* e = field(body, "echo"); e && !(e->is_boolean() && !e->get<bool>()))
    throw bad_request("'echo' is not supported", "echo");
  if (auto* l = field(body, "logprobs"); l && !(l->is_boolean() && !l->get<bool>()))
    throw bad_request("'logprobs' is not supported", "logprobs");
  // The cache salt is the server's to derive from the API key (tenants.hpp).
  // vLLM takes "cache_salt" from the client; here a request naming a salt or
  // tenant is refused rather than quietly given another.
  for (const char* p : {"cache_salt", "salt", "tenant", "tenant_salt"})
    if (body.contains(p))
      throw bad_request(std::string("'") + p + "' is not accepted: the server derives the cache salt from the API key",
                        p);
  for (const char* p : {"presence_penalty", "frequency_penalty"})
    if (auto* v = field(body, p); v && !(v->is_number() && v->get<double>() == 0))
      throw bad_request(std::string("'") + p + "' is not supported (only 0)", p);
}

}  // namespace

api_error::api_error(int status, std::string type, const std::string& message, std::string param, std::string code)
    : std::runtime_error(message),
      status_(status),
      type_(std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

api_error bad_request(const std::string& message, const std::string& param) {
  return api_error(400, "invalid_request_error", message, param);
}

generation_request parse_request(endpoint kind, const std::string& body, const parse_limits& limits) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) throw bad_request("the request body is not valid JSON");
  if (!j.is_object()) throw bad_request("the request body must be a JSON object");
  generation_request r;
  r.kind = kind;
  if (auto* m = field(j, "model")) {
    if (!m->is_string()) throw bad_request("'model' must be a string", "model");
    r.model = m->get<std::string>();
    if (r.model != limits.model)
      throw api_error(404, "invalid_request_error",
                      "the model '" + r.model + "' does not exist (this server has '" + limits.model + "')", "model",
                      "model_not_found");
  } else {
    r.model = limits.model;
  }
  if (kind == endpoint::completions)
    parse_prompt(j, r, limits);
  else
    parse_messages(j, r, limits);
  refuse_unsupported(j);
  // max_completion_tokens is the chat API's newer name for max_tokens.
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (auto* v = field(j, name)) {
      auto n = integer(*v, name);
      if (n < 1 || n > std::numeric_limits<std::int32_t>::max())
        throw bad_request(std::string("'") + name + "' must be at least 1", name);
      r.max_tokens = static_cast<std::uint32_t>(n);
    }
  if (auto* v = field(j, "temperature")) {
    auto t = number(*v, "temperature");
    if (t < 0 || t > 2) throw bad_request("'temperature' must be between 0 and 2", "temperature");
    r.temperature = static_cast<float>(t);
  }
  if (auto* v = field(j, "top_p")) {
    auto p = number(*v, "top_p");
    if (p <= 0 || p > 1) throw bad_request("'top_p' must be in (0, 1]", "top_p");
    r.top_p = static_cast<float>(p);
  }
  if (auto* v = field(j, "seed")) r.seed = static_cast<std::uint64_t>(integer(*v, "seed"));
  parse_stop(j, r, limits);
  if (auto* v = field(j, "stream")) {
    if (!v->is_boolean()) throw bad_request("'stream' must be true or false", "stream");
    r.stream = v->get<bool>();
  }
  if (auto* v = field(j, "stream_options")) {
    if (!v->is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
    if (!r.stream) throw bad_request("'stream_options' is only allowed with stream: true", "stream_options");
    auto u = v->find("include_usage");
    if (u != v->end() && !u->is_null()) {
      if (!u->is_boolean()) throw bad_request("'include_usage' must be true or false", "stream_options");
      r.include_usage = u->get<bool>();
    }
  }
  return r;
}

std::uint32_t check_context(const generation_request& r, std::size_t prompt_tokens, int context_tokens,
                            std::uint32_t default_max) {
  auto context = static_cast<std::size_t>(std::max(context_tokens, 0));
  auto param = r.kind == endpoint::chat ? "messages" : "prompt";
  if (prompt_tokens >= context)
    throw bad_request("this model's maximum context length is " + std::to_string(context) + " tokens, but the " +
                          param + " has " + std::to_string(prompt_tokens) + " tokens",
                      param);
  auto left = context - prompt_tokens;
  if (!r.max_tokens) return static_cast<std::uint32_t>(std::min<std::size_t>(default_max, left));
  if (*r.max_tokens > left)
    throw bad_request("this model's maximum context length is " + std::to_string(context) + " tokens, but " +
                          std::to_string(prompt_tokens + *r.max_tokens) + " were requested (" +
                          std::to_string(prompt_tokens) + " in the " + param + ", " + std::to_string(*r.max_tokens) +
                          " in max_tokens)",
                      "max_tokens");
  return *r.max_tokens;
}

namespace {

json usage(const generation_result& r) {
  auto completion = static_cast<std::uint32_t>(r.token_ids.size());
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", completion},
          {"total_tokens", r.prompt_tokens + completion}};
}

// kvflow's own breakdown of the restore, beside OpenAI's fields.
json restore_part(const restore_report& rep) {
  json tiers = json::array();
  for (auto& t : rep.tiers)
    tiers.push_back({{"tier", t.tier}, {"lookups", t.lookups}, {"hits", t.hits}, {"bytes_loaded", t.bytes_loaded}});
  return {{"ttft_s", rep.ttft_s},
          {"chunks", rep.chunks},
          {"cached_chunks", rep.cached_chunks},
          {"cells_computed", rep.cells_computed},
          {"cells_loaded", rep.cells_loaded},
          {"policy", rep.policy},
          {"tiers", tiers}};
}

}  // namespace

json response_body(endpoint kind, const generation_result& r) {
  json choice = {{"index", 0}, {"finish_reason", r.finish_reason}, {"logprobs", nullptr}, {"token_ids", r.token_ids}};
  if (kind == endpoint::chat)
    choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  else
    choice["text"] = r.text;
  return {{"id", r.id},
          {"object", object_name(kind, false)},
          {"created", r.created},
          {"model", r.model},
          {"choices", json::array({choice})},
          {"usage", usage(r)},
          {"kvflow", restore_part(r.report)}};
}

json chunk_body(endpoint kind, const std::string& id, std::int64_t created, const std::string& model,
                const std::string& text, const std::vector<std::int32_t>& token_ids, bool first,
                const std::string& finish_reason) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"token_ids", token_ids}};
  choice["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  if (kind == endpoint::chat) {
    json delta = {{"content", text}};
    if (first) delta["role"] = "assistant";
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", object_name(kind, true)},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json usage_chunk(endpoint kind, const generation_result& r) {
  return {{"id", r.id},
          {"object", object_name(kind, true)},
          {"created", r.created},
          {"model", r.model},
          {"choices", json::array()},
          {"usage", usage(r)},
          {"kvflow", restore_part(r.report)}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& j) { return "data: " + dump(j) + "\n\n"; }

std::string sse_done() { return "data: [DONE]\n\n"; }

json error_body(const api_error& e) {
  return {{"error",
           {{"message", e.what()},
            {"type", e.type()},
            {"param", e.param().empty() ? json(nullptr) : json(e.param())},
            {"code", e.code().empty() ? json(nullptr) : json(e.code())}}}};
}

json models_body(const std::string& model, std::int64_t created, int context_tokens) {
  json m = {{"id", model},
            {"object", "model"},
            {"created", created},
            {"owned_by", "kvflow"},
            {"max_model_len", context_tokens}};
  return {{"object", "list"}, {"data", json::array({m})}};
}

}  // namespace kvflow::frontend

#define BOOST_TEST_MODULE actors.frontend.http_server
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <regex>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "actors/frontend/http_server.hpp"
#include "actors/runtime.hpp"

using namespace kvflow;
using namespace kvflow::frontend;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// One runtime (SmolLM2 on the CPU, small chunks so short prompts span
// several) shared by every case; each case starts the servers it needs.
struct world {
  std::unique_ptr<runtime> rt;
  world() {
    runtime_options o;
    o.backend = "cpu";
    o.chunk_tokens = 16;
    o.host_tier_gb = 0.25;
    rt = std::make_unique<runtime>(o);
  }
};
world* the_world = nullptr;
struct world_fixture {
  world w;
  world_fixture() { the_world = &w; }
  ~world_fixture() { the_world = nullptr; }
};
BOOST_TEST_GLOBAL_FIXTURE(world_fixture);

runtime& rt() { return *the_world->rt; }

std::unique_ptr<http_server> serve(server_options o = {}) {
  o.port = 0;
  auto s = std::make_unique<http_server>(rt(), o);
  s->start();
  return s;
}

struct answer {
  int status = 0;
  json body;
  std::string retry_after;
};

answer post(http_server& s, const std::string& path, const std::string& body, const std::string& key = {}) {
  httplib::Client c("127.0.0.1", s.port());
  c.set_read_timeout(60, 0);
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  auto r = c.Post(path.c_str(), h, body, "application/json");
  BOOST_REQUIRE_MESSAGE(r, "no answer from " << path);
  answer a{r->status, json::parse(r->body, nullptr, false), r->get_header_value("Retry-After")};
  return a;
}

answer get(http_server& s, const std::string& path, const std::string& key = {}) {
  httplib::Client c("127.0.0.1", s.port());
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  auto r = c.Get(path.c_str(), h);
  BOOST_REQUIRE(r);
  return {r->status, json::parse(r->body, nullptr, false), {}};
}

// A counter's value in the Prometheus text (0 when absent).
double metric(http_server& s, const std::string& series) {
  httplib::Client c("127.0.0.1", s.port());
  auto r = c.Get("/metrics");
  BOOST_REQUIRE(r && r->status == 200);
  std::istringstream in(r->body);
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, series.size() + 1, series + " ") == 0) return std::stod(line.substr(series.size() + 1));
  return 0;
}

// A streamed reply read off a raw socket, so the test sees each event when
// it arrives and can hang up in the middle.
struct stream_reply {
  int status = 0;
  std::vector<std::string> events;  // the text after "data: "
  std::vector<std::chrono::steady_clock::time_point> times;
};

stream_reply post_stream(int port, const std::string& path, const json& body,
                         std::function<bool(const stream_reply&)> keep_going = nullptr) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  auto text = body.dump();
  auto req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(text.size()) + "\r\nConnection: close\r\n\r\n" + text;
  BOOST_REQUIRE(::send(fd, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size()));
  stream_reply out;
  std::string raw, body_bytes, sse;
  bool headers = false;
  char buf[4096];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
    if (!headers) {
      auto end = raw.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      out.status = std::stoi(raw.substr(9, 3));
      headers = true;
      raw.erase(0, end + 4);
    }
    // Chunked transfer coding: "<hex>\r\n<data>\r\n"...
    for (;;) {
      auto line = raw.find("\r\n");
      if (line == std::string::npos) break;
      auto size = std::stoul(raw.substr(0, line), nullptr, 16);
      if (raw.size() < line + 2 + size + 2) break;
      sse += raw.substr(line + 2, size);
      raw.erase(0, line + 2 + size + 2);
    }
    for (auto end = sse.find("\n\n"); end != std::string::npos; end = sse.find("\n\n")) {
      auto event = sse.substr(0, end);
      sse.erase(0, end + 2);
      if (event.compare(0, 6, "data: ") == 0) {
        out.events.push_back(event.substr(6));
        out.times.push_back(std::chrono::steady_clock::now());
      }
    }
    if (keep_going && !keep_going(out)) break;
  }
  ::close(fd);
  return out;
}

// What a stream said: the text and ids of its chunks, its finish reason.
struct stream_summary {
  std::string text;
  std::vector<std::int32_t> ids;
  std::string finish_reason;
  bool done = false;
  bool role = false;
};

stream_summary summarize(const stream_reply& r, bool chat) {
  stream_summary s;
  for (auto& e : r.events) {
    if (e == "[DONE]") {
      s.done = true;
      continue;
    }
    auto j = json::parse(e);
    if (j["choices"].empty()) continue;
    auto& c = j["choices"][0];
    s.text += chat ? c["delta"].value("content", "") : c["text"].get<std::string>();
    if (chat && c["delta"].contains("role")) s.role = true;
    for (auto& id : c["token_ids"]) s.ids.push_back(id.get<std::int32_t>());
    if (!c["finish_reason"].is_null()) s.finish_reason = c["finish_reason"];
  }
  return s;
}

// The runtime's own greedy reply, as the server reports it: the stop token
// that ended it is not part of the reply.
struct expected_reply {
  std::string text;
  std::vector<std::int32_t> ids;
};

expected_reply direct(const std::vector<std::int32_t>& prompt, std::uint32_t n) {
  submit_options so;
  so.max_new_tokens = n;
  so.store = false;
  auto r = rt().submit(prompt, so).get();
  auto ids = r.tokens;
  if (r.finish_reason == "stop") ids.pop_back();
  return {r.text, ids};
}

const std::string document =
    "The lighthouse keeper's log: the wind turned north-east on Monday and the swell rose to four metres. "
    "Two fishing boats sheltered in the harbour overnight and left at dawn.";

template <typename P>
bool eventually(P pred, std::chrono::milliseconds limit = 10s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

}  // namespace

BOOST_AUTO_TEST_CASE(completion_equals_the_runtimes_greedy_reply) {
  auto s = serve();
  std::string prompt = "The capital of France is";
  auto want = direct(rt().tokenize(prompt), 6);
  auto a = post(*s, "/v1/completions",
                json{{"model", s->model_name()}, {"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}}.dump());
  BOOST_TEST_REQUIRE(a.status == 200);
  BOOST_TEST(a.body["object"] == "text_completion");
  BOOST_TEST(a.body["choices"][0]["text"] == want.text);
  BOOST_TEST(a.body["choices"][0]["token_ids"].get<std::vector<std::int32_t>>() == want.ids);
  BOOST_TEST(a.body["usage"]["prompt_tokens"] == rt().tokenize(prompt).size());
  BOOST_TEST(a.body["usage"]["completion_tokens"] == want.ids.size());

  // Streamed: the same text, chunk by chunk, then [DONE].
  auto r = post_stream(s->port(), "/v1/completions",
                       {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}, {"stream", true}});
  BOOST_TEST(r.status == 200);
  auto sum = summarize(r, false);
  BOOST_TEST(sum.done);
  BOOST_TEST(sum.text == want.text);
  BOOST_TEST(sum.ids == want.ids);
  // Tokens come as they are decoded (a slow reader may get two in one chunk).
  BOOST_TEST(r.events.size() >= 4u);
  BOOST_TEST(!sum.finish_reason.empty());
}

BOOST_AUTO_TEST_CASE(chat_equals_the_runtimes_greedy_reply) {
  auto s = serve();
  std::vector<chat_turn> turns = {{"user", "What is the capital of France?"}};
  auto want = direct(rt().chat_tokens(turns), 8);
  json body = {
      {"messages", {{{"role", "user"}, {"content", turns[0].content}}}}, {"max_tokens", 12}, {"temperature", 0}};
  auto a = post(*s, "/v1/chat/completions", body.dump());
  BOOST_TEST_REQUIRE(a.status == 200);
  BOOST_TEST(a.body["object"] == "chat.completion");
  BOOST_TEST(a.body["choices"][0]["message"]["role"] == "assistant");
  BOOST_TEST(a.body["choices"][0]["message"]["content"] == want.text);
  BOOST_TEST(!want.text.empty());

  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = post_stream(s->port(), "/v1/chat/completions", body);
  auto sum = summarize(r, true);
  BOOST_TEST(sum.role);
  BOOST_TEST(sum.done);
  BOOST_TEST(sum.text == want.text);
  BOOST_TEST(sum.finish_reason == a.body["choices"][0]["finish_reason"].get<std::string>());
  // The usage chunk comes last before [DONE].
  BOOST_REQUIRE(r.events.size() >= 2);
  auto usage = json::parse(r.events[r.events.size() - 2]);
  BOOST_TEST(usage["usage"]["completion_tokens"] == want.ids.size());
}

BOOST_AUTO_TEST_CASE(stop_strings_cut_the_reply) {
  auto s = serve();
  std::string prompt = "Count: one, two, three, four, five, six,";
  auto want = direct(rt().tokenize(prompt), 8);
  // Stop at the reply's second character: what comes before it is shown.
  BOOST_REQUIRE(want.text.size() > 2);
  auto stop = want.text.substr(1, 1);
  auto a = post(*s, "/v1/completions",
                json{{"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}, {"stop", stop}}.dump());
  BOOST_TEST_REQUIRE(a.status == 200);
  BOOST_TEST(a.body["choices"][0]["finish_reason"] == "stop");
  BOOST_TEST(a.body["choices"][0]["text"] == want.text.substr(0, want.text.find(stop)));
}

BOOST_AUTO_TEST_CASE(metrics_move_and_a_repeat_hits_the_cache) {
  auto s = serve();
  auto body = json{{"prompt", document}, {"max_tokens", 2}, {"temperature", 0}}.dump();
  auto requests = metric(*s, "kvflow_requests_total{endpoint=\"completions\",finish_reason=\"length\"}");
  auto hits = metric(*s, "kvflow_cache_hits_total{tier=\"host\"}");
  auto first = post(*s, "/v1/completions", body);
  BOOST_TEST_REQUIRE(first.status == 200);
  BOOST_TEST(first.body["kvflow"]["cached_chunks"] == 0);
  rt().flush();
  auto second = post(*s, "/v1/completions", body);
  BOOST_TEST_REQUIRE(second.status == 200);
  BOOST_TEST(second.body["kvflow"]["cached_chunks"].get<int>() > 0);
  BOOST_TEST(second.body["kvflow"]["cells_loaded"].get<int>() > 0);
  BOOST_TEST(second.body["choices"][0]["text"] == first.body["choices"][0]["text"]);
  BOOST_TEST(metric(*s, "kvflow_requests_total{endpoint=\"completions\",finish_reason=\"length\"}") == requests + 2);
  BOOST_TEST(metric(*s, "kvflow_cache_hits_total{tier=\"host\"}") > hits);
  BOOST_TEST(metric(*s, "kvflow_cells_total{how=\"loaded\"}") > 0);
  BOOST_TEST(metric(*s, "kvflow_grants_total{kind=\"load\"}") > 0);
  BOOST_TEST(metric(*s, "kvflow_cache_loaded_bytes_total{tier=\"host\"}") > 0);
  BOOST_TEST(metric(*s, "kvflow_generation_tokens_total") >= 4);
  BOOST_TEST(metric(*s, "kvflow_time_to_first_token_seconds_count") >= 2);
  BOOST_TEST(metric(*s, "kvflow_inter_token_latency_seconds_count") >= 2);
  BOOST_TEST(metric(*s, "kvflow_http_responses_total{code=\"200\"}") >= 2);
  BOOST_TEST(metric(*s, "kvflow_requests_running") == 0);
  BOOST_TEST(get(*s, "/health").status == 200);
  auto models = get(*s, "/v1/models");
  BOOST_TEST(models.body["data"][0]["id"] == s->model_name());
}

BOOST_AUTO_TEST_CASE(bad_input_gets_its_status_and_the_server_keeps_serving) {
  server_options o;
  o.max_body_bytes = 64 * 1024;
  auto s = serve(o);
  auto status = [&](const std::string& path, const std::string& body) {
    auto a = post(*s, path, body);
    // Every refusal is an OpenAI-style error body.
    BOOST_TEST(a.body["error"]["message"].is_string(), path << " " << body.substr(0, 80));
    return a.status;
  };
  BOOST_TEST(status("/v1/completions", "{not json") == 400);
  BOOST_TEST(status("/v1/completions", R"({"model":"gpt-4","prompt":"x"})") == 404);
  BOOST_TEST(status("/v1/completions", R"({"prompt":"x","temperature":-1})") == 400);
  BOOST_TEST(status("/v1/completions", R"({"prompt":"x","top_p":1.5})") == 400);
  BOOST_TEST(status("/v1/completions", R"({"prompt":"x","max_tokens":-3})") == 400);
  BOOST_TEST(status("/v1/completions", R"({"prompt":"x","max_tokens":100000})") == 400);
  BOOST_TEST(status("/v1/chat/completions", R"({"messages":"hi"})") == 400);
  BOOST_TEST(status("/v1/nothing", "{}") == 404);
  // A prompt beyond the context window (8192 positions), as token ids.
  auto info = rt().model();
  json ids = json::array();
  for (int i = 0; i < info.context_tokens + 1; ++i) ids.push_back(1);
  BOOST_TEST(status("/v1/completions", json{{"prompt", ids}, {"max_tokens", 1}}.dump()) == 400);
  // A body over max_body_bytes.
  BOOST_TEST(status("/v1/completions", json{{"prompt", std::string(70 * 1024, 'a')}}.dump()) == 413);
  auto a = post(*s, "/v1/completions", R"({"prompt":"Hello","max_tokens":2})");
  BOOST_TEST(a.status == 200);
  BOOST_TEST(metric(*s, "kvflow_http_responses_total{code=\"400\"}") >= 6);
}

BOOST_AUTO_TEST_CASE(api_keys_authenticate_and_tenants_never_share_a_cache) {
  server_options o;
  o.api_keys = {{"sk-alice", "alice"}, {"sk-bob", "bob"}};
  auto s = serve(o);
  auto body = json{{"prompt", "Tenant test. " + document}, {"max_tokens", 1}, {"temperature", 0}}.dump();
  BOOST_TEST(post(*s, "/v1/completions", body).status == 401);
  BOOST_TEST(post(*s, "/v1/completions", body, "sk-mallory").status == 401);
  BOOST_TEST(get(*s, "/v1/models").status == 401);
  BOOST_TEST(get(*s, "/v1/models", "sk-bob").status == 200);
  BOOST_TEST(get(*s, "/health").status == 200);

  auto alice1 = post(*s, "/v1/completions", body, "sk-alice");
  BOOST_TEST_REQUIRE(alice1.status == 200);
  rt().flush();
  auto alice2 = post(*s, "/v1/completions", body, "sk-alice");
  BOOST_TEST(alice2.body["kvflow"]["cached_chunks"].get<int>() > 0);
  auto hits =
      metric(*s, "kvflow_cache_hits_total{tier=\"host\"}") + metric(*s, "kvflow_cache_hits_total{tier=\"disk\"}");
  // Bob sends the same prompt: alice's chunks are not his.
  auto bob = post(*s, "/v1/completions", body, "sk-bob");
  BOOST_TEST_REQUIRE(bob.status == 200);
  BOOST_TEST(bob.body["kvflow"]["cached_chunks"] == 0);
  BOOST_TEST(metric(*s, "kvflow_cache_hits_total{tier=\"host\"}") +
                 metric(*s, "kvflow_cache_hits_total{tier=\"disk\"}") ==
             hits);
  BOOST_TEST(bob.body["choices"][0]["token_ids"] == alice1.body["choices"][0]["token_ids"]);

  // A body field naming a salt or tenant is refused; headers that try to
  // are ignored: bob still misses what only alice cached.
  auto sneaky = json::parse(body);
  sneaky["cache_salt"] = "tenant:alice";
  BOOST_TEST(post(*s, "/v1/completions", sneaky.dump(), "sk-bob").status == 400);
  auto other = json{{"prompt", "Header test. " + document}, {"max_tokens", 1}, {"temperature", 0}}.dump();
  BOOST_TEST_REQUIRE(post(*s, "/v1/completions", other, "sk-alice").status == 200);
  rt().flush();
  httplib::Client c("127.0.0.1", s->port());
  c.set_read_timeout(60, 0);
  httplib::Headers h{{"Authorization", "Bearer sk-bob"},
                     {"X-Tenant", "alice"},
                     {"X-Kvflow-Tenant", "alice"},
                     {"X-Cache-Salt", "tenant:alice"},
                     {"OpenAI-Organization", "alice"}};
  auto r = c.Post("/v1/completions", h, other, "application/json");
  BOOST_REQUIRE(r);
  BOOST_TEST_REQUIRE(r->status == 200);
  BOOST_TEST(json::parse(r->body)["kvflow"]["cached_chunks"] == 0);
}

BOOST_AUTO_TEST_CASE(full_queue_gives_429_and_a_client_that_hangs_up_frees_its_request) {
  server_options o;
  o.max_running = 1;
  o.max_waiting = 0;
  o.retry_after_s = 2;
  auto s = serve(o);
  auto generated = metric(*s, "kvflow_generation_tokens_total");
  rt().flush();
  const auto base = rt().counters();
  answer busy;
  // Hold a long stream open; once it has sent two events, the one slot is
  // taken: another request is refused; then hang up.
  auto r = post_stream(s->port(), "/v1/completions",
                       {{"prompt", "Once upon a time"}, {"max_tokens", 400}, {"stream", true}, {"temperature", 0.8}},
                       [&](const stream_reply& sr) {
                         if (sr.events.size() < 2) return true;
                         busy = post(*s, "/v1/completions", R"({"prompt":"x","max_tokens":1})");
                         return false;
                       });
  BOOST_TEST(r.status == 200);
  BOOST_TEST(busy.status == 429);
  BOOST_TEST(busy.retry_after == "2");
  BOOST_TEST(busy.body["error"]["type"] == "rate_limit_exceeded");
  BOOST_TEST(eventually([&] { return s->running() == 0; }));
  BOOST_TEST(metric(*s, "kvflow_requests_running") == 0);
  BOOST_TEST(metric(*s, "kvflow_requests_total{endpoint=\"completions\",finish_reason=\"abort\"}") >= 1);
  // Far fewer than the 400 tokens asked for were decoded.
  BOOST_TEST(metric(*s, "kvflow_generation_tokens_total") - generated < 200);
  BOOST_TEST(metric(*s, "kvflow_http_responses_total{code=\"429\"}") == 1);
  // Every pool the abandoned request held is back (its stored chunks written).
  // Descriptors count the whole process: a keep-alive socket of an earlier
  // exchange may still have been open when the baseline was taken, so a
  // leak is more descriptors than then, not a different count.
  BOOST_TEST(eventually([&] {
    rt().flush();
    auto c = rt().counters();
    return c.requests == base.requests && c.loads_in_flight == base.loads_in_flight &&
           c.disk_reads == base.disk_reads && c.disk_writes == base.disk_writes && c.host_leases == base.host_leases &&
           c.staging_buffers == base.staging_buffers && c.open_fds <= base.open_fds;
  }));
  {
    auto c = rt().counters();
    BOOST_TEST_MESSAGE("counters now/base: requests "
                       << c.requests << "/" << base.requests << " loads " << c.loads_in_flight << "/"
                       << base.loads_in_flight << " reads " << c.disk_reads << "/" << base.disk_reads << " writes "
                       << c.disk_writes << "/" << base.disk_writes << " leases " << c.host_leases << "/"
                       << base.host_leases << " staging " << c.staging_buffers << "/" << base.staging_buffers << " fds "
                       << c.open_fds << "/" << base.open_fds);
  }
  BOOST_TEST(metric(*s, "kvflow_pool{counter=\"requests\"}") == 0);
  BOOST_TEST(post(*s, "/v1/completions", R"({"prompt":"Hello","max_tokens":1})").status == 200);
}

BOOST_AUTO_TEST_CASE(concurrent_streams_decode_together) {
  auto s = serve();
  stream_reply a, b;
  auto body = [](const std::string& p) {
    return json{{"prompt", p}, {"max_tokens", 16}, {"temperature", 0}, {"stream", true}};
  };
  std::thread ta([&] { a = post_stream(s->port(), "/v1/completions", body("The weather today is")); });
  std::thread tb([&] { b = post_stream(s->port(), "/v1/completions", body("My favourite food is")); });
  ta.join();
  tb.join();
  auto sa = summarize(a, false), sb = summarize(b, false);
  BOOST_TEST_REQUIRE(sa.ids.size() >= 8u);
  BOOST_TEST_REQUIRE(sb.ids.size() >= 8u);
  // Each stream's tokens arrive while the other's are still coming: decode
  // steps of the two requests interleave instead of running one after the other.
  BOOST_TEST((a.times.front() < b.times[b.times.size() - 3] && b.times.front() < a.times[a.times.size() - 3]));
  BOOST_TEST(sa.text == direct(rt().tokenize("The weather today is"), 16).text);
}

BOOST_AUTO_TEST_CASE(stop_ends_streams_in_flight_and_refuses_new_requests) {
  server_options o;
  o.shutdown_grace_s = 0;
  auto s = serve(o);
  stream_reply r;
  std::atomic<bool> started{false};
  std::thread t([&] {
    r = post_stream(s->port(), "/v1/completions",
                    {{"prompt", "Once upon a time"}, {"max_tokens", 400}, {"stream", true}},
                    [&](const stream_reply& sr) {
                      if (!sr.events.empty()) started = true;
                      return true;
                    });
  });
  BOOST_REQUIRE(eventually([&] { return started.load(); }));
  s->stop();
  t.join();
  auto sum = summarize(r, false);
  BOOST_TEST(sum.finish_reason == "abort");
  BOOST_TEST(sum.done);
  BOOST_TEST(sum.ids.size() < 400u);
  BOOST_TEST(s->running() == 0u);
}

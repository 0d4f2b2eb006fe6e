#include "actors/frontend/http_server.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <sys/socket.h>

#include <httplib.h>

#include "actors/frontend/admission.hpp"
#include "actors/frontend/api_request.hpp"
#include "actors/frontend/metrics.hpp"
#include "actors/frontend/openai_json.hpp"
#include "actors/frontend/tenants.hpp"
#include "actors/frontend/text_stream.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"
#include "messages/mix.hpp"

namespace kvflow::frontend {
namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

// One request's state shared by the runtime's callbacks (actor threads) and
// the HTTP thread that answers it.
struct generation {
  std::mutex m;
  std::condition_variable cv;
  std::deque<std::pair<std::int32_t, clock_type::time_point>> tokens;
  bool done = false;
  std::exception_ptr failure;
  restore_report report;
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  std::atomic<bool> stop_string{false};  // ended by a stop string: finish_reason "stop"
  std::atomic<bool> aborted{false};      // cancelled by the server's shutdown

  struct events {
    std::vector<std::pair<std::int32_t, clock_type::time_point>> tokens;
    bool done = false;
  };
  // Tokens that arrived since the last call, waiting up to `wait` for one.
  events take(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(m);
    cv.wait_for(lock, wait, [&] { return !tokens.empty() || done; });
    events e;
    e.tokens.assign(tokens.begin(), tokens.end());
    tokens.clear();
    // The runtime calls done after the last token: done means all are here.
    e.done = done;
    return e;
  }
};

// The HTTP side of one reply: turns token events into text, records
// latencies, and stops the request at a stop string.
class reply {
 public:
  reply(std::shared_ptr<generation> g, text_stream ts, clock_type::time_point arrival, metrics& stats)
      : g_(std::move(g)), ts_(std::move(ts)), arrival_(arrival), last_(arrival), stats_(stats) {}

  struct delta {
    std::string text;
    std::vector<std::int32_t> ids;
    bool done = false;
  };

  delta next(std::chrono::milliseconds wait) {
    auto e = g_->take(wait);
    delta d;
    for (auto& [token, at] : e.tokens) {
      if (!seen_first_)
        stats_.time_to_first_token(seconds(at - arrival_));
      else
        stats_.inter_token(seconds(at - last_));
      seen_first_ = true;
      last_ = at;
      d.text += ts_.push(token);
      if (ts_.stopped() && !g_->stop_string.exchange(true)) g_->cancel->store(true);
    }
    if (e.done) {
      d.text += ts_.finish();
      d.done = true;
    }
    auto& ids = ts_.tokens();
    d.ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(ids_sent_), ids.end());
    ids_sent_ = ids.size();
    return d;
  }

  // Valid once next() said done.
  std::string finish_reason() const {
    if (ts_.stopped()) return "stop";
    if (g_->aborted) return "abort";
    return g_->report.finish_reason == "cancelled" ? "abort" : g_->report.finish_reason;
  }
  const text_stream& stream() const { return ts_; }
  generation& gen() { return *g_; }

 private:
  std::shared_ptr<generation> g_;
  text_stream ts_;
  clock_type::time_point arrival_, last_;
  metrics& stats_;
  bool seen_first_ = false;
  std::size_t ids_sent_ = 0;
};

// httplib's own pool queues accepted connections without bound. This one
// holds at most `max_pending` waiting for a thread; beyond that the accept
// loop waits, and further connections wait in the kernel's listen backlog.
class bounded_pool : public httplib::TaskQueue {
 public:
  bounded_pool(std::size_t threads, std::size_t max_pending) : max_pending_(max_pending) {
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~bounded_pool() override = default;

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(m_);
    room_.wait(lock, [&] { return jobs_.size() < max_pending_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    lock.unlock();
    ready_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(m_);
      shutdown_ = true;
    }
    ready_.notify_all();
    room_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(m_);
        ready_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shut down and drained
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      room_.notify_one();
      fn();
    }
  }

  const std::size_t max_pending_;
  std::mutex m_;
  std::condition_variable ready_, room_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  bool shutdown_ = false;
};

}  // namespace

struct http_server::impl {
  runtime& rt;
  server_options opts;
  model_info info;
  std::string model;
  tenants keys;
  admission adm;
  metrics stats;
  httplib::Server svr;
  std::thread thread;
  int port = 0;
  std::atomic<bool> closing{false};
  bool stopped = false;
  std::mutex stop_m;
  std::int64_t started = 0;
  std::uint64_t id_base;
  std::atomic<std::uint64_t> next_id{0};
  std::mutex active_m;
  std::set<std::shared_ptr<generation>> active;
  // Streams whose response is still being written: stop() waits for them,
  // since httplib ends a content provider as soon as the server stops.
  std::mutex streams_m;
  std::condition_variable streams_cv;
  std::size_t streams = 0;

  int listen_fd = -1;  // the bound socket (httplib owns it)

  impl(runtime& r, server_options o)
      : rt(r),
        opts(std::move(o)),
        info(rt.model()),
        keys(opts.api_keys, {opts.api_keys.empty() ? std::string() : load_tenant_secret(opts.tenant_secret_file)}),
        adm(opts.max_running, opts.max_waiting),
        started(static_cast<std::int64_t>(std::time(nullptr))),
        id_base(std::random_device{}() ^ (static_cast<std::uint64_t>(std::random_device{}()) << 32)) {
    model = opts.served_model_name;
    if (model.empty()) {
      auto& ro = rt.options();
      model = !ro.preset.empty() ? ro.preset : std::filesystem::path(info.name).stem().string();
    }
  }

  std::string fresh_id(const char* prefix) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(splitmix64(id_base + next_id++)));
    return prefix + std::string(hex);
  }

  void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(dump(body), "application/json");
  }

  void send_error(httplib::Response& res, const api_error& e) {
    send_json(res, e.status(), error_body(e));
    if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
  }

  parse_limits limits() const {
    parse_limits l;
    l.model = model;
    l.vocab_size = info.vocab_size;
    l.has_tokenizer = info.has_tokenizer;
    return l;
  }

  std::vector<std::int32_t> prompt_tokens(const generation_request& r) {
    if (r.kind == endpoint::chat) return rt.chat_tokens(r.messages);
    if (r.prompt_is_ids) return r.prompt_ids;
    return rt.tokenize(r.prompt_text);
  }

  // Submits to the runtime; the admission slot is given back when the
  // runtime is done with the request (also after a client went away).
  std::shared_ptr<generation> submit(const generation_request& r, std::vector<std::int32_t> prompt,
                                     std::uint32_t max_new, const std::string& salt, const std::string& endpoint_name,
                                     clock_type::time_point arrival) {
    auto g = std::make_shared<generation>();
    submit_options so;
    so.max_new_tokens = max_new;
    so.temperature = r.temperature;
    so.top_p = r.top_p;
    so.seed = r.seed ? *r.seed : splitmix64(id_base ^ (next_id++ << 1));
    so.stop_token_ids = r.stop_token_ids;
    // From the API key alone (read_api_request); empty on an open server:
    // its single tenant keeps the runtime's own salt.
    so.tenant_salt = salt;
    so.cancel = g->cancel;
    std::weak_ptr<generation> weak = g;
    so.on_token = [weak](std::int32_t token) {
      if (auto g = weak.lock()) {
        {
          std::lock_guard<std::mutex> lock(g->m);
          g->tokens.emplace_back(token, clock_type::now());
        }
        g->cv.notify_all();
      }
    };
    {
      std::lock_guard<std::mutex> lock(active_m);
      active.insert(g);
    }
    auto done = [this, g, endpoint_name, arrival](std::exception_ptr e, restore_report rep) {
      std::string reason = e                                                ? "error"
                           : g->stop_string                                 ? "stop"
                           : g->aborted || rep.finish_reason == "cancelled" ? "abort"
                                                                            : rep.finish_reason;
      if (!e)
        stats.finished(endpoint_name, rep, rep.prompt_tokens, static_cast<std::uint32_t>(rep.tokens.size()), reason,
                       seconds(clock_type::now() - arrival));
      {
        std::lock_guard<std::mutex> lock(active_m);
        active.erase(g);
      }
      // The slot is free before the reply is written, so a client never sees
      // its own finished request still running; nothing below touches the
      // server, which stop() may destroy once the slots are free.
      adm.release();
      {
        std::lock_guard<std::mutex> lock(g->m);
        g->done = true;
        g->failure = e;
        g->report = std::move(rep);
      }
      g->cv.notify_all();
    };
    try {
      rt.submit(std::move(prompt), std::move(so), done);
    } catch (...) {
      std::lock_guard<std::mutex> lock(active_m);
      active.erase(g);
      adm.release();
      throw;
    }
    return g;
  }

  generation_result result_of(reply& rp, const std::string& id, std::int64_t created) {
    auto& g = rp.gen();
    generation_result out;
    out.id = id;
    out.created = created;
    out.model = model;
    out.text = rp.stream().text();
    out.token_ids = rp.stream().tokens();
    out.finish_reason = rp.finish_reason();
    out.prompt_tokens = g.report.prompt_tokens;
    out.report = g.report;
    out.report.tokens.clear();
    out.report.text.clear();
    return out;
  }

  static api_error failure_error(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return api_error(500, "server_error", std::string("generation failed: ") + x.what());
    } catch (...) {
      return api_error(500, "server_error", "generation failed");
    }
  }

  void generate(endpoint kind, const httplib::Request& req, httplib::Response& res) {
    auto arrival = clock_type::now();
    try {
      if (closing) throw api_error(503, "server_error", "the server is shutting down");
      auto in = read_api_request(kind, req.get_header_value("Authorization"), req.body, keys, limits());
      auto& r = in.request;
      auto prompt = prompt_tokens(r);
      auto max_new = check_context(r, prompt.size(), info.context_tokens, opts.default_max_tokens);
      switch (adm.acquire()) {
        case admission::outcome::admitted:
          break;
        case admission::outcome::queue_full:
          res.set_header("Retry-After", std::to_string(opts.retry_after_s));
          throw api_error(429, "rate_limit_exceeded",
                          "the server is busy: " + std::to_string(adm.max_running()) + " requests running and " +
                              std::to_string(adm.max_waiting()) + " waiting; retry later",
                          {}, "rate_limit_exceeded");
        case admission::outcome::closed:
          throw api_error(503, "server_error", "the server is shutting down");
      }
      auto endpoint_name = kind == endpoint::chat ? "chat" : "completions";
      auto g = submit(r, std::move(prompt), max_new, in.salt, endpoint_name, arrival);
      std::vector<std::int32_t> hidden = info.stop_tokens;
      hidden.insert(hidden.end(), r.stop_token_ids.begin(), r.stop_token_ids.end());
      text_stream::decode_fn decode;
      if (info.has_tokenizer) decode = [this](const std::vector<std::int32_t>& ids) { return rt.detokenize(ids); };
      auto rp = std::make_shared<reply>(g, text_stream(decode, r.stop, hidden), arrival, stats);
      auto id = fresh_id(kind == endpoint::chat ? "chatcmpl-" : "cmpl-");
      auto created = static_cast<std::int64_t>(std::time(nullptr));
      if (!r.stream) {
        while (!rp->next(std::chrono::milliseconds(100)).done) {
        }
        if (g->failure) throw failure_error(g->failure);
        return send_json(res, 200, response_body(kind, result_of(*rp, id, created)));
      }
      stream(kind, r, rp, id, created, res);
    } catch (const api_error& e) {
      send_error(res, e);
    } catch (const error& e) {
      // The runtime refused what the checks above let through.
      send_error(res, api_error(e.code() == errc::out_of_range || e.code() == errc::invalid_argument ? 400 : 500,
                                "invalid_request_error", e.what()));
    }
  }

  void stream(endpoint kind, const generation_request& r, std::shared_ptr<reply> rp, const std::string& id,
              std::int64_t created, httplib::Response& res) {
    auto first = std::make_shared<bool>(true);
    bool include_usage = r.include_usage;
    {
      std::lock_guard<std::mutex> lock(streams_m);
      ++streams;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, kind, rp, id, created, first, include_usage](std::size_t, httplib::DataSink& sink) {
          auto d = rp->next(std::chrono::milliseconds(50));
          std::string out;
          auto& g = rp->gen();
          if (!d.text.empty() || !d.ids.empty() || (d.done && !g.failure)) {
            out += sse_event(chunk_body(kind, id, created, model, d.text, d.ids, *first,
                                        d.done && !g.failure ? rp->finish_reason() : std::string()));
            *first = false;
          }
          if (d.done) {
            if (g.failure)
              out += sse_event(error_body(failure_error(g.failure)));
            else if (include_usage)
              out += sse_event(usage_chunk(kind, result_of(*rp, id, created)));
            out += sse_done();
          }
          // A client that went away cancels its request: the runtime frees
          // its decode slot at the next step.
          if (!out.empty() ? !sink.write(out.data(), out.size()) : !sink.is_writable()) {
            g.cancel->store(true);
            return false;
          }
          if (d.done) sink.done();
          return true;
        },
        // Called when the response goes away, whether or not it was written.
        [this, rp](bool success) {
          if (!success) rp->gen().cancel->store(true);
          std::lock_guard<std::mutex> lock(streams_m);
          --streams;
          streams_cv.notify_all();
        });
  }

  void routes() {
    svr.set_payload_max_length(opts.max_body_bytes);
    auto threads =
        opts.http_threads > 0 ? static_cast<std::size_t>(opts.http_threads) : opts.max_running + opts.max_waiting + 8;
    // Connections accepted and waiting for a thread (a descriptor and a
    // closure each): many, because beyond them the accept loop stops and
    // cpp-httplib 0.11's listen backlog of 5 overflows into connection
    // resets; accepted, each gets its answer (429 past the admission queue).
    const std::size_t pending = std::max<std::size_t>(threads, 4096);
    svr.new_task_queue = [threads, pending] { return new bounded_pool(threads, pending); };
    // httplib's own option (address reuse), and the listening socket kept
    // for start(): it widens the backlog.
    svr.set_socket_options([this](int sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_fd = sock;
    });
    svr.Post("/v1/completions",
             [this](const httplib::Request& q, httplib::Response& s) { generate(endpoint::completions, q, s); });
    svr.Post("/v1/chat/completions",
             [this](const httplib::Request& q, httplib::Response& s) { generate(endpoint::chat, q, s); });
    svr.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& s) {
      try {
        keys.authenticate(q.get_header_value("Authorization"));
        send_json(s, 200, models_body(model, started, info.context_tokens));
      } catch (const api_error& e) {
        send_error(s, e);
      }
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& s) {
      if (closing)
        send_json(s, 503, {{"status", "shutting down"}});
      else
        send_json(s, 200, {{"status", "ok"}});
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& s) {
      stats.queue(adm.running(), adm.waiting());
      stats.pools(rt.counters());
      s.set_content(stats.text(), "text/plain; version=0.0.4");
    });
    // httplib's own refusals (unknown route, oversized body, bad request
    // line) get an OpenAI-style body too.
    svr.set_error_handler([this](const httplib::Request&, httplib::Response& s) {
      if (!s.body.empty()) return;
      std::string message = s.status == 413
                                ? "the request body is larger than " + std::to_string(opts.max_body_bytes) + " bytes"
                            : s.status == 404 ? "no such endpoint"
                                              : "the request could not be read (HTTP " + std::to_string(s.status) + ")";
      s.set_content(dump(error_body(api_error(s.status, "invalid_request_error", message))), "application/json");
    });
    svr.set_exception_handler([this](const httplib::Request&, httplib::Response& s, std::exception_ptr e) {
      send_error(s, failure_error(e));
    });
    // Counted before the response is written (a logger runs after it, so a
    // client could read /metrics before its own answer counted).
    svr.set_post_routing_handler([this](const httplib::Request& q, httplib::Response& s) {
      if (q.path.compare(0, 4, "/v1/") == 0) stats.response(s.status);
    });
  }
};

http_server::http_server(runtime& rt, server_options opts) {
  if (opts.max_body_bytes == 0) throw error(errc::invalid_argument, "serve: max_body_bytes must be positive");
  if (opts.port < 0 || opts.port > 65535)
    throw error(errc::invalid_argument, "serve: port " + std::to_string(opts.port) + " outside 0-65535");
  if (opts.default_max_tokens == 0) throw error(errc::invalid_argument, "serve: default_max_tokens must be positive");
  impl_ = std::make_unique<impl>(rt, std::move(opts));
  impl_->routes();
}

http_server::~http_server() { stop(); }

int http_server::start() {
  auto& m = *impl_;
  if (m.thread.joinable()) return m.port;
  if (m.opts.port == 0) {
    m.port = m.svr.bind_to_any_port(m.opts.host);
    if (m.port < 0) m.port = 0;
  } else {
    m.port = m.svr.bind_to_port(m.opts.host, m.opts.port) ? m.opts.port : 0;
  }
  if (m.port <= 0)
    throw error(errc::io_failure, "serve: cannot listen on " + m.opts.host + ":" + std::to_string(m.opts.port) +
                                      " (address in use, or not an address of this machine?)");
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of connections
  // overflows it and waits out SYN retransmits (1, 3, 7 ... 63 s). Listening
  // again on the bound socket widens it to the system's limit.
  if (m.listen_fd >= 0 && ::listen(m.listen_fd, SOMAXCONN) != 0)
    logger("actors")->warn("serve: listen backlog stays at cpp-httplib's 5: {}", std::strerror(errno));
  m.thread = std::thread([&m] { m.svr.listen_after_bind(); });
  return m.port;
}

void http_server::stop() {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.stop_m);
  if (m.stopped) return;
  m.stopped = true;
  m.closing = true;
  m.adm.close();
  auto grace = std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(m.opts.shutdown_grace_s));
  if (!m.adm.wait_idle(grace)) {
    std::vector<std::shared_ptr<generation>> left;
    {
      std::lock_guard<std::mutex> a(m.active_m);
      left.assign(m.active.begin(), m.active.end());
    }
    logger("actors")->warn("serve: cancelling {} requests still running after {:.0f} s", left.size(),
                           m.opts.shutdown_grace_s);
    for (auto& g : left) {
      g->aborted = true;
      g->cancel->store(true);
    }
    m.adm.wait_idle(std::chrono::seconds(30));
  }
  {
    // Streams write their last chunk and [DONE] after their request ended.
    std::unique_lock<std::mutex> streams(m.streams_m);
    m.streams_cv.wait_for(streams, std::chrono::seconds(10), [&] { return m.streams == 0; });
  }
  m.svr.stop();
  if (m.thread.joinable()) m.thread.join();
}

int http_server::port() const { return impl_->port; }

std::string http_server::url() const { return "http://" + impl_->opts.host + ":" + std::to_string(impl_->port); }

const std::string& http_server::model_name() const { return impl_->model; }

std::size_t http_server::running() const { return impl_->adm.running(); }

std::size_t http_server::waiting() const { return impl_->adm.waiting(); }

const metrics& http_server::stats() const { return impl_->stats; }

}  // namespace kvflow::frontend

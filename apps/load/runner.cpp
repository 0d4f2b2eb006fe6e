#include "apps/load/runner.hpp"

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "messages/error.hpp"

namespace kvflow::load {
namespace {

using clock_type = std::chrono::steady_clock;

// A session's next turn, due at `ready`.
struct continuation {
  std::string session;
  clock_type::time_point ready;
};

struct job {
  request_record rec;
  api_request api;
  scenario_context ctx;
};

class load_run {
 public:
  load_run(request_source& source, const endpoint_config& endpoint, const run_options& opt)
      : source_(source), endpoint_(endpoint), opt_(opt), rng_(opt.seed) {}

  run_result run() {
    start_ = clock_type::now();
    std::thread progress;
    if (opt_.progress) progress = std::thread([this] { show_progress(); });
    try {
      dispatch();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!fatal_) fatal_ = std::current_exception();
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return in_flight_ == 0; });
      stopping_ = true;
    }
    jobs_cv_.notify_all();
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    double end = std::chrono::duration<double>(last_answer_ - start_).count();
    if (progress.joinable()) progress.join();
    if (fatal_) std::rethrow_exception(fatal_);
    run_result out;
    out.records = std::move(records_);
    std::sort(out.records.begin(), out.records.end(),
              [](const request_record& a, const request_record& b) { return a.index < b.index; });
    out.duration_s = out.records.empty() ? 0.0 : std::max(end, 0.0);
    return out;
  }

 private:
  double elapsed() const { return std::chrono::duration<double>(clock_type::now() - start_).count(); }
  // A fatal error, or the caller's stop flag (Ctrl-C): send nothing more.
  bool halted() const { return fatal_ != nullptr || (opt_.stop && opt_.stop->load()); }

  // Waits on cv_ until `pred` or `deadline`, waking every 100 ms so that a
  // stop flag set from a signal handler (which cannot notify) is seen.
  template <typename Pred>
  void wait(std::unique_lock<std::mutex>& lock, clock_type::time_point deadline, Pred pred) {
    while (!pred() && !halted() && clock_type::now() < deadline)
      cv_.wait_until(lock, std::min(deadline, clock_type::now() + std::chrono::milliseconds(100)));
  }
  bool over_time() const { return opt_.duration_s > 0 && elapsed() >= opt_.duration_s; }

  // Sleeps until `t` unless a fatal error comes first; false when it did.
  bool wait_until(clock_type::time_point t) {
    std::unique_lock<std::mutex> lock(mu_);
    wait(lock, t, [] { return false; });
    return !halted();
  }

  void dispatch() {
    std::exponential_distribution<double> gap(opt_.request_rate > 0 ? opt_.request_rate : 1.0);
    double next_arrival = 0;  // Poisson: the first request goes at once, as vLLM's
    for (std::size_t sent = 0;; ++sent) {
      if (opt_.num_requests && sent >= opt_.num_requests) return;
      if (over_time()) return;
      // When: the trace's clock, the Poisson process, or now.
      std::optional<double> due;
      bool own_clock = false;
      if (auto a = source_.next_arrival_s()) {
        due = a;
        own_clock = true;
      } else if (source_.exhausted()) {
        return;
      } else if (opt_.request_rate > 0) {
        due = next_arrival;
        next_arrival += gap(rng_);
      }
      if (due) {
        if (opt_.duration_s > 0 && *due >= opt_.duration_s) return;
        if (!wait_until(start_ + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(*due))))
          return;
      }
      // A slot under the cap.
      {
        std::unique_lock<std::mutex> lock(mu_);
        wait(lock, clock_type::time_point::max(),
             [&] { return opt_.concurrency <= 0 || in_flight_ < static_cast<std::size_t>(opt_.concurrency); });
        if (halted()) return;
      }
      // What: a session's next turn when one is ready, else new work.
      std::optional<job> j;
      while (!j) {
        scenario_context ctx;
        bool fresh = false;
        {
          std::unique_lock<std::mutex> lock(mu_);
          for (;;) {
            if (halted()) return;
            auto now = clock_type::now();
            auto ready =
                std::min_element(pending_.begin(), pending_.end(),
                                 [](const continuation& a, const continuation& b) { return a.ready < b.ready; });
            if (!own_clock && ready != pending_.end() && ready->ready <= now) {
              ctx.session = ready->session;
              pending_.erase(ready);
              break;
            }
            if (!source_done_) {
              fresh = true;
              break;
            }
            if (in_flight_ == 0 && pending_.empty()) return;  // nothing more will come
            // Until an answer comes in (notify) or the next turn is due.
            auto until = clock_type::now() + std::chrono::milliseconds(100);
            if (ready != pending_.end()) until = std::min(until, ready->ready);
            cv_.wait_until(lock, until);
            if (over_time()) return;
          }
          ctx.index = sent;
          ctx.turn = ctx.session.empty() ? 0 : turns_[ctx.session];
          ctx.now_s = elapsed();
        }
        auto req = source_.next(ctx);  // outside the lock: answers may come in meanwhile
        if (!req) {
          if (fresh) {
            std::lock_guard<std::mutex> lock(mu_);
            source_done_ = true;
          }
          continue;
        }
        job next;
        next.api = std::move(req->api);
        next.rec.index = sent;
        next.rec.session = !req->session.empty() ? req->session : ctx.session;
        next.rec.endpoint = next.api.endpoint;
        next.rec.prompt_tokens = req->prompt_tokens;
        next.ctx = ctx;
        next.ctx.session = next.rec.session;
        j = std::move(next);
      }
      submit(std::move(*j));
    }
  }

  void submit(job j) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!j.rec.session.empty()) {
      j.rec.turn = turns_[j.rec.session]++;
      j.ctx.turn = j.rec.turn;
    }
    if (jobs_.size() + 1 > idle_) {
      if (workers_.size() >= opt_.max_threads)
        throw error(errc::capacity_exceeded,
                    "more than " + std::to_string(opt_.max_threads) + " requests in flight; set --concurrency");
      workers_.emplace_back([this] { work(); });
    }
    j.rec.start_s = elapsed();
    ++in_flight_;
    jobs_.push_back(std::move(j));
    jobs_cv_.notify_one();
  }

  void work() {
    std::unique_ptr<openai_client> client;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      jobs_cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;
      job j = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      api_result res;
      try {
        if (!client) client = std::make_unique<openai_client>(endpoint_);
        res = client->send(j.api);
      } catch (const std::exception& e) {
        res.error = e.what();
      }
      auto& rec = j.rec;
      rec.ok = res.ok;
      rec.status = res.status;
      rec.error = res.error;
      rec.ttft_s = res.ttft_s;
      rec.e2el_s = res.e2el_s;
      rec.itl_s = std::move(res.itl_s);
      rec.text = std::move(res.text);
      rec.token_ids = std::move(res.token_ids);
      if (res.prompt_tokens >= 0) rec.prompt_tokens = res.prompt_tokens;
      rec.output_tokens = std::max<std::int64_t>(res.output_tokens, 0);
      std::optional<double> again;
      std::exception_ptr failure;
      try {
        j.ctx.now_s = elapsed();
        again = source_.on_response(j.ctx, rec);
      } catch (...) {
        failure = std::current_exception();
      }
      rec.text = std::string();
      rec.token_ids = std::vector<std::int32_t>();
      lock.lock();
      last_answer_ = clock_type::now();
      if (failure && !fatal_) fatal_ = failure;
      if (rec.ok)
        ++done_ok_;
      else
        ++done_failed_;
      if (again && !rec.session.empty())
        pending_.push_back({rec.session, clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                                                 std::chrono::duration<double>(*again))});
      records_.push_back(std::move(rec));
      --in_flight_;
      cv_.notify_all();
    }
  }

  void show_progress() {
    bool tty = ::isatty(STDERR_FILENO) == 1;
    auto period = tty ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000);
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      bool stop = cv_.wait_for(lock, period, [&] { return stopping_; });
      auto line = progress_line(done_ok_ + done_failed_, done_failed_, in_flight_, opt_.num_requests, elapsed(),
                                opt_.duration_s, 30);
      if (tty)
        std::cerr << "\r\033[K" << line << (stop ? "\n" : "") << std::flush;
      else if (!stop)
        std::cerr << "load: " << line << "\n";
      if (stop) return;
    }
  }

  request_source& source_;
  endpoint_config endpoint_;
  run_options opt_;
  std::mt19937_64 rng_;
  clock_type::time_point start_, last_answer_;

  std::mutex mu_;
  std::condition_variable cv_;       // answers, fatal errors, the end
  std::condition_variable jobs_cv_;  // work for the pool
  std::deque<job> jobs_;
  std::vector<std::thread> workers_;
  std::size_t idle_ = 0, in_flight_ = 0, done_ok_ = 0, done_failed_ = 0;
  bool stopping_ = false, source_done_ = false;
  std::vector<continuation> pending_;
  std::map<std::string, int> turns_;
  std::vector<request_record> records_;
  std::exception_ptr fatal_;
};

}  // namespace

trace_source::trace_source(std::vector<trace_entry> entries, const trace_options& opt)
    : entries_(std::move(entries)), opt_(opt) {
  if (!(opt_.speedup > 0)) throw error(errc::invalid_argument, "--speedup must be positive");
  if (!(opt_.scale > 0)) throw error(errc::invalid_argument, "--scale must be positive");
  if (opt_.scale != 1) {
    opt_.block_tokens = std::max(1, static_cast<int>(std::lround(opt_.block_tokens * opt_.scale)));
    for (auto& e : entries_) e.input_length = std::max(1, static_cast<int>(std::lround(e.input_length * opt_.scale)));
  }
}

std::optional<double> trace_source::next_arrival_s() {
  if (!opt_.use_timestamps || next_ >= entries_.size()) return std::nullopt;
  return (entries_[next_].timestamp_ms - entries_.front().timestamp_ms) / 1000.0 / opt_.speedup;
}

std::optional<scenario_request> trace_source::next(const scenario_context&) {
  if (next_ >= entries_.size()) return std::nullopt;
  const auto& e = entries_[next_];
  auto salt = static_cast<std::uint64_t>(next_);
  ++next_;
  scenario_request r;
  r.api.endpoint = "completions";
  r.api.stream = opt_.stream;
  if (opt_.token_ids)
    r.api.body["prompt"] = trace_prompt_tokens(e, opt_.block_tokens, opt_.vocab, salt);
  else
    r.api.body["prompt"] = trace_prompt_text(e, opt_.block_tokens, salt);
  r.api.body["max_tokens"] = opt_.max_output > 0 ? std::min(opt_.max_output, e.output_length) : e.output_length;
  r.session = e.session_id;
  r.prompt_tokens = e.input_length;
  return r;
}

run_result run_load(request_source& source, const endpoint_config& endpoint, const run_options& opt) {
  if (opt.request_rate < 0) throw error(errc::invalid_argument, "--request-rate must not be negative");
  if (opt.concurrency < 0) throw error(errc::invalid_argument, "--concurrency must not be negative");
  if (opt.duration_s < 0) throw error(errc::invalid_argument, "--duration must not be negative");
  load_run run(source, endpoint, opt);
  return run.run();
}

std::string progress_line(std::size_t done, std::size_t failed, std::size_t in_flight, std::size_t total,
                          double elapsed_s, double duration_s, int width) {
  double frac = -1;
  if (total > 0)
    frac = static_cast<double>(done) / static_cast<double>(total);
  else if (duration_s > 0)
    frac = elapsed_s / duration_s;
  std::string out;
  if (frac >= 0) {
    frac = std::min(1.0, frac);
    int fill = static_cast<int>(frac * width + 0.5);
    out = "[" + std::string(static_cast<std::size_t>(fill), '#') +
          std::string(static_cast<std::size_t>(width - fill), '.') + "] ";
  }
  char buf[160];
  if (total > 0)
    std::snprintf(buf, sizeof buf, "%zu/%zu  ok %zu  failed %zu  in flight %zu  %.1f s", done, total, done - failed,
                  failed, in_flight, elapsed_s);
  else
    std::snprintf(buf, sizeof buf, "%zu done  ok %zu  failed %zu  in flight %zu  %.1f s", done, done - failed, failed,
                  in_flight, elapsed_s);
  return out + buf;
}

}  // namespace kvflow::load

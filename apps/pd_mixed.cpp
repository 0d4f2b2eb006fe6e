// `kvflow pd --role mixed`: a mixed load (a burst of long prompts, then a
// burst of long generations) through prefill and decode instances in this
// process, each a gpu actor with its own engine and UCX worker, KV moving
// between them as one contiguous transfer. Run twice: fixed roles (round
// robin within a role) and load-aware placement (policies/pd_placement:
// place() by queue, utilisation and batch fill, pd_rebalancer switching
// roles). Reports throughput and mean TTFT of each.

#include "apps/pd_mixed.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "actors/clock.hpp"
#include "actors/gpu_actor.hpp"
#include "actors/pd_actor.hpp"
#include "actors/system_config.hpp"
#include "actors/workspace.hpp"
#include "messages/error.hpp"
#include "policies/pd_placement.hpp"

namespace kvflow::app {
namespace {

using policies::pd_role;

struct job {
  std::uint64_t id = 0;
  std::vector<std::int32_t> prompt;
  std::uint32_t max_new = 0;
  std::uint64_t arrival_ns = 0;
  int burst = 0;
};

struct outcome {
  int burst = 0;
  double ttft_s = 0, done_s = 0;
  std::size_t tokens = 0;
  std::size_t prefill = 0, decode = 0;  ///< the instances it ran on
};

struct instance {
  std::shared_ptr<model::engine> engine;
  caf::actor gpu, decode;
  std::unique_ptr<devices::net::transport> net;
  std::unique_ptr<pd_outbox> out;
  std::mutex m;
  std::condition_variable cv;
  std::deque<job> queue;
  std::atomic<std::uint64_t> queued_tokens{0};
  std::atomic<std::uint32_t> active{0};
  std::atomic<int> role{0};
  std::atomic<std::uint64_t> busy_ns{0};
  std::thread worker;
};

class mixed_run {
 public:
  mixed_run(caf::actor_system& sys, const mixed_options& o, bool load_aware,
            const std::vector<std::shared_ptr<model::engine>>& engines)
      : sys_(sys), o_(o), load_aware_(load_aware) {
    for (int i = 0; i < o.instances; ++i) {
      auto x = std::make_unique<instance>();
      x->engine = engines[static_cast<std::size_t>(i)];
      x->net = std::make_unique<devices::net::transport>(devices::net::transport_options{"tcp", "lo"});
      x->out = std::make_unique<pd_outbox>(*x->net, parse_pd_path(o.kv_path));
      x->gpu = caf::actor_cast<caf::actor>(sys.spawn<caf::detached>(gpu_actor, x->engine, 0u));
      auto shared_net = std::shared_ptr<devices::net::transport>(x->net.get(), [](devices::net::transport*) {});
      x->decode = caf::actor_cast<caf::actor>(sys.spawn(pd_decode_actor, x->engine, x->gpu, shared_net));
      x->role = static_cast<int>(i < o.prefill_instances ? pd_role::prefill : pd_role::decode);
      xs_.push_back(std::move(x));
    }
    costs_.decode_s_per_active = 1e-3;
  }

  ~mixed_run() {
    for (auto& x : xs_) {
      caf::anon_send_exit(x->decode, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(x->gpu, caf::exit_reason::user_shutdown);
    }
  }

  nlohmann::json run(const std::vector<job>& jobs_in, double burst2_at_s) {
    t0_ = now_ns();
    // Before any thread reads them: placement samples utilisation from the start.
    busy_at_sample_.assign(xs_.size(), 0);
    last_sample_ns_ = t0_;
    for (std::size_t i = 0; i < xs_.size(); ++i) xs_[i]->worker = std::thread([this, i] { work(i); });
    std::thread monitor([this] { watch(); });
    for (auto j : jobs_in) {
      const double at = j.burst == 0 ? 0.0 : burst2_at_s;
      // The second burst arrives at its time in the schedule (open-loop arrivals).
      std::this_thread::sleep_until(
          std::chrono::steady_clock::time_point(std::chrono::nanoseconds(t0_)) +
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(at)));
      j.arrival_ns = now_ns();
      submit(std::move(j));
    }
    {
      std::unique_lock<std::mutex> lock(done_m_);
      done_cv_.wait(lock, [&] { return outcomes_.size() + failures_ == jobs_in.size(); });
    }
    {
      std::lock_guard<std::mutex> lock(watch_m_);
      stop_ = true;
    }
    watch_cv_.notify_all();
    for (auto& x : xs_) {
      x->cv.notify_all();
      x->worker.join();
    }
    monitor.join();
    for (auto& c : collectors_) c.wait();
    return report();
  }

 private:
  std::vector<policies::pd_instance> snapshot() const {
    std::vector<policies::pd_instance> out;
    const double window = std::max(1e-9, static_cast<double>(now_ns() - last_sample_ns_));
    for (std::size_t i = 0; i < xs_.size(); ++i) {
      auto& x = *xs_[i];
      policies::pd_instance p;
      p.role = static_cast<pd_role>(x.role.load());
      p.queued_prefill_tokens = x.queued_tokens.load();
      p.active_decodes = x.active.load();
      p.max_decodes = static_cast<std::uint32_t>(o_.max_decodes);
      p.utilisation = std::min(1.0, static_cast<double>(x.busy_ns.load() - busy_at_sample_[i]) / window);
      out.push_back(p);
    }
    return out;
  }

  void submit(job j) {
    std::size_t target = 0;
    if (load_aware_) {
      std::lock_guard<std::mutex> lock(policy_m_);
      policies::pd_request r;
      r.prompt_tokens = j.prompt.size();
      target = policies::place(snapshot(), r, costs_)->prefill;
    } else {
      target = next_of(pd_role::prefill);
    }
    auto& x = *xs_[target];
    x.queued_tokens += j.prompt.size();
    {
      std::lock_guard<std::mutex> lock(x.m);
      x.queue.push_back(std::move(j));
    }
    x.cv.notify_one();
  }

  // Fixed roles: round robin among the instances of `role`.
  std::size_t next_of(pd_role role) {
    std::lock_guard<std::mutex> lock(policy_m_);
    auto& rr = role == pd_role::prefill ? rr_prefill_ : rr_decode_;
    for (std::size_t k = 0; k < xs_.size(); ++k) {
      auto i = (rr + k) % xs_.size();
      if (static_cast<pd_role>(xs_[i]->role.load()) == role) {
        rr = i + 1;
        return i;
      }
    }
    throw error(errc::invalid_argument, "pd mixed: no instance of a role");
  }

  std::size_t decode_target(std::size_t from) {
    if (!load_aware_) return next_of(pd_role::decode);
    std::lock_guard<std::mutex> lock(policy_m_);
    auto snap = snapshot();
    // The KV moves to another instance: this one's own decode actor would
    // take it from its own worker, which a real deployment does not do.
    int decoders = 0;
    for (auto& p : snap) decoders += p.role == pd_role::decode;
    if (decoders > 1 || snap[from].role != pd_role::decode) snap[from].up = false;
    policies::pd_request r;
    return policies::place(snap, r, costs_)->decode;
  }

  void work(std::size_t i) {
    auto& x = *xs_[i];
    caf::scoped_actor self{sys_};
    for (;;) {
      job j;
      {
        std::unique_lock<std::mutex> lock(x.m);
        x.cv.wait(lock, [&] { return stop_ || !x.queue.empty(); });
        if (x.queue.empty()) return;
        j = std::move(x.queue.front());
        x.queue.pop_front();
      }
      try {
        const auto start = now_ns();
        model::sampling s;
        auto p = pd_prefill(self, x.gpu, *x.engine, j.id, j.prompt, o_.chunk_tokens, s);
        x.busy_ns += now_ns() - start;
        x.queued_tokens -= j.prompt.size();
        const double ttft = static_cast<double>(now_ns() - j.arrival_ns) / 1e9;
        {
          // Learned online: what a prompt token costs here.
          std::lock_guard<std::mutex> lock(policy_m_);
          costs_.prefill_s_per_token =
              0.8 * costs_.prefill_s_per_token + 0.2 * p.prefill_s / static_cast<double>(j.prompt.size());
        }
        auto d = decode_target(i);
        auto& y = *xs_[d];
        y.active++;
        pd_handoff(self, y.decode, *x.out, p, j.max_new, s, {});
        p.ws.reset();
        auto id = j.id;
        auto burst = j.burst;
        auto arrival = j.arrival_ns;
        std::lock_guard<std::mutex> lock(done_m_);
        collectors_.push_back(std::async(std::launch::async, [this, &y, id, burst, arrival, ttft, i, d] {
          caf::scoped_actor me{sys_};
          auto r = pd_collect(me, y.decode, id);
          y.active--;
          std::lock_guard<std::mutex> lock2(done_m_);
          if (r.ok)
            outcomes_.push_back({burst, ttft, static_cast<double>(now_ns() - arrival) / 1e9, r.tokens.size(), i, d});
          else
            ++failures_;
          last_done_ns_ = now_ns();
          done_cv_.notify_all();
        }));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "pd mixed: request %llu failed: %s\n", static_cast<unsigned long long>(j.id), e.what());
        std::lock_guard<std::mutex> lock(done_m_);
        ++failures_;
        done_cv_.notify_all();
      }
    }
  }

  void watch() {
    policies::pd_rebalance_options ro;
    ro.hold_s = o_.hold_s;
    ro.cooldown_s = o_.hold_s;
    ro.prefill_target_s = 0.5;
    policies::pd_rebalancer rb(ro);
    // Samples the instances' load every 50 ms (the rebalancer's period);
    // the run's end wakes it at once.
    std::unique_lock<std::mutex> wl(watch_m_);
    while (!watch_cv_.wait_for(wl, std::chrono::milliseconds(50), [&] { return stop_.load(); })) {
      std::lock_guard<std::mutex> lock(policy_m_);
      auto snap = snapshot();
      for (std::size_t i = 0; i < xs_.size(); ++i) busy_at_sample_[i] = xs_[i]->busy_ns.load();
      last_sample_ns_ = now_ns();
      if (!load_aware_) continue;
      const double t = static_cast<double>(now_ns() - t0_) / 1e9;
      if (auto sw = rb.observe(t, snap, costs_)) {
        xs_[sw->instance]->role = static_cast<int>(sw->to);
        switches_.push_back(
            {{"at_s", t}, {"instance", sw->instance}, {"to", sw->to == pd_role::prefill ? "prefill" : "decode"}});
      }
    }
  }

  nlohmann::json report() {
    double end = static_cast<double>(last_done_ns_ - t0_) / 1e9;
    std::size_t tokens = 0;
    double ttft[3] = {0, 0, 0};
    int n[3] = {0, 0, 0};
    for (auto& r : outcomes_) {
      tokens += r.tokens;
      ttft[r.burst] += r.ttft_s;
      ttft[2] += r.ttft_s;
      ++n[r.burst];
      ++n[2];
    }
    auto mean = [&](int k) { return n[k] ? ttft[k] / n[k] : 0.0; };
    // Where each burst's requests prefilled and decoded: [burst][instance].
    nlohmann::json prefilled_on = {std::vector<int>(xs_.size(), 0), std::vector<int>(xs_.size(), 0)};
    nlohmann::json decoded_on = prefilled_on;
    for (auto& r : outcomes_) {
      prefilled_on[r.burst][r.prefill] = prefilled_on[r.burst][r.prefill].get<int>() + 1;
      decoded_on[r.burst][r.decode] = decoded_on[r.burst][r.decode].get<int>() + 1;
    }
    return {{"placement", load_aware_ ? "load_aware" : "fixed_roles"},
            {"requests", outcomes_.size()},
            {"failed", failures_},
            {"makespan_s", end},
            {"generated_tokens", tokens},
            {"throughput_tokens_per_s", end > 0 ? tokens / end : 0},
            {"throughput_requests_per_s", end > 0 ? outcomes_.size() / end : 0},
            {"mean_ttft_s", mean(2)},
            {"mean_ttft_long_prompts_s", mean(0)},
            {"mean_ttft_long_generations_s", mean(1)},
            {"prefilled_on_by_burst", prefilled_on},
            {"decoded_on_by_burst", decoded_on},
            {"role_switches", switches_}};
  }

  caf::actor_system& sys_;
  mixed_options o_;
  bool load_aware_;
  std::vector<std::unique_ptr<instance>> xs_;
  mutable std::mutex policy_m_;
  policies::pd_costs costs_;
  std::size_t rr_prefill_ = 0, rr_decode_ = 0;
  std::uint64_t t0_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex watch_m_;  // with watch_cv_: wakes the load sampler when the run ends
  std::condition_variable watch_cv_;
  std::vector<std::uint64_t> busy_at_sample_;
  std::uint64_t last_sample_ns_ = 0;
  std::mutex done_m_;
  std::condition_variable done_cv_;
  std::vector<outcome> outcomes_;
  std::size_t failures_ = 0;
  std::uint64_t last_done_ns_ = 0;
  std::vector<std::future<void>> collectors_;
  nlohmann::json switches_ = nlohmann::json::array();
};

// A CUDA engine's first forward loads its modules and makes its handles
// (130-160 ms for a llama-3-8b chunk): one chunk per engine before the runs,
// so that the first placement measured does not pay it alone.
void warm_up(model::engine& eng, int tokens) {
  workspace ws(0, std::vector<std::int32_t>(static_cast<std::size_t>(tokens), 0), tokens, eng);
  model::chunk_job job;
  job.tokens = ws.tokens().data();
  job.count = tokens;
  job.layer_end = eng.cfg().layers;
  job.out = ws.block(0);
  job.hidden = ws.hidden(0);
  eng.run(job);
  eng.synchronize();
}

}  // namespace

int run_pd_mixed(const mixed_options& o, const std::function<std::shared_ptr<model::engine>()>& make) {
  if (o.instances < 2 || o.prefill_instances < 1 || o.prefill_instances >= o.instances)
    throw error(errc::invalid_argument, "pd mixed: needs at least one prefill and one decode instance");
  system_config cfg;
  caf::actor_system sys{cfg};
  std::mt19937 rng(static_cast<std::uint32_t>(o.seed));
  std::vector<std::shared_ptr<model::engine>> engines;
  for (int i = 0; i < o.instances; ++i) {
    engines.push_back(make());
    warm_up(*engines.back(), std::min(o.chunk_tokens, engines.back()->cfg().max_positions));
  }
  const int vocab = engines.front()->cfg().vocab_size;
  std::vector<job> jobs;
  std::uint64_t id = 1;
  auto add = [&](int count, int prompt, int gen, int burst) {
    for (int k = 0; k < count; ++k) {
      job j;
      j.id = id++;
      j.prompt.resize(static_cast<std::size_t>(prompt));
      for (auto& t : j.prompt) t = static_cast<std::int32_t>(rng() % static_cast<unsigned>(vocab));
      j.max_new = static_cast<std::uint32_t>(gen);
      j.burst = burst;
      jobs.push_back(std::move(j));
    }
  };
  add(o.long_prompts, o.long_prompt_tokens, o.short_generation, 0);
  add(o.long_generations, o.short_prompt_tokens, o.long_generation_tokens, 1);
  nlohmann::json out = {
      {"load",
       {{"instances", o.instances},
        {"model", o.model},
        {"backend", o.backend},
        {"kv_path", o.kv_path},
        {"chunk_tokens", o.chunk_tokens},
        {"prefill_instances_at_start", o.prefill_instances},
        {"burst_1", std::to_string(o.long_prompts) + " x " + std::to_string(o.long_prompt_tokens) + " prompt tokens, " +
                        std::to_string(o.short_generation) + " new"},
        {"burst_2", std::to_string(o.long_generations) + " x " + std::to_string(o.short_prompt_tokens) +
                        " prompt tokens, " + std::to_string(o.long_generation_tokens) + " new, at " +
                        std::to_string(o.burst2_at_s) + " s"}}},
      {"runs", nlohmann::json::array()}};
  // Alternating, so that both see the same drift in the machine's load.
  for (int rep = 0; rep < o.repeats; ++rep)
    for (bool aware : {false, true}) {
      mixed_run run(sys, o, aware, engines);
      auto r = run.run(jobs, o.burst2_at_s);
      std::printf(
          "%-12s requests %zu (failed %zu), makespan %.2f s, %.1f tokens/s, mean TTFT %.3f s (long prompts %.3f, "
          "long generations %.3f), %zu role switches\n",
          r["placement"].get<std::string>().c_str(), r["requests"].get<std::size_t>(), r["failed"].get<std::size_t>(),
          r["makespan_s"].get<double>(), r["throughput_tokens_per_s"].get<double>(), r["mean_ttft_s"].get<double>(),
          r["mean_ttft_long_prompts_s"].get<double>(), r["mean_ttft_long_generations_s"].get<double>(),
          r["role_switches"].size());
      std::fflush(stdout);
      out["runs"].push_back(r);
    }
  for (const char* name : {"fixed_roles", "load_aware"}) {
    double ttft = 0, tput = 0;
    int n = 0;
    for (auto& r : out["runs"])
      if (r["placement"] == name) {
        ttft += r["mean_ttft_s"].get<double>();
        tput += r["throughput_tokens_per_s"].get<double>();
        ++n;
      }
    out["mean_over_repeats"][name] = {{"mean_ttft_s", ttft / n}, {"throughput_tokens_per_s", tput / n}};
    std::printf("%-12s over %d repeats: mean TTFT %.3f s, %.1f tokens/s\n", name, n, ttft / n, tput / n);
  }
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << out.dump(2) << "\n";
    if (!f) throw error(errc::io_failure, "pd mixed: cannot write " + o.out);
  }
  for (auto& r : out["runs"])
    if (r["failed"].get<std::size_t>() != 0) return 1;
  return 0;
}

}  // namespace kvflow::app

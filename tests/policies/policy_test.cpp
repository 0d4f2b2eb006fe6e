#define BOOST_TEST_MODULE policies.policy
#include <boost/test/unit_test.hpp>

// A deterministic event-driven harness (tests only): one GPU that runs
// granted compute cells one grant at a time at a true cost per cell, one
// link per tier that moves granted loads one at a time at a true bandwidth
// (optionally changing at a set time). Completions go back to the batch
// state, the cost model and the policy; the harness checks every grant
// against its own copy of the cells (each restored once, inputs present
// when a compute cell runs) and the caps, and records TTFT per request.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "messages/error.hpp"
#include "policies/grant_helpers.hpp"
#include "policies/policy.hpp"
#include "policies/restore_bound.hpp"

using namespace kvflow;
using namespace kvflow::policies;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr std::uint32_t layers32 = 32;
constexpr std::uint64_t chunk64mib = 64ull << 20;  // llama-3-8b, 512 tokens, bf16
constexpr double gbit = 1e9 / 8;

// llama-3-8b on an H100, 512-token chunks (cost_prior's defaults).
struct truth {
  double cell_s = 37e-3 / 32;
  double slope_s = (78e-3 - 37e-3) / 32 / 63;
  std::array<double, msg::tier_count> bw{400e9, 55e9, 1.5e9, 10 * gbit};
  double change_at = inf;  // from then on, change_tier moves at change_bw
  msg::tier change_tier = msg::tier::remote;
  double change_bw = 0;
  std::array<double, msg::tier_count> latency{};  // per load grant, before its bytes move
  // A compute grant's trip through the actors beyond its GPU time (the gpu
  // actor running a decode step first, say): half before the GPU may start
  // it, half before its completion reaches the scheduler.
  double gpu_round_trip = 0;

  double rate(msg::tier t, double now) const {
    return t == change_tier && now >= change_at ? change_bw : bw[static_cast<std::size_t>(t)];
  }
  // When a transfer of `bytes` started at `start` ends (a rate change mid-way applies).
  double finish(msg::tier t, double start, double bytes) const {
    start += latency[static_cast<std::size_t>(t)];
    double r0 = rate(t, start);
    double end = start + bytes / r0;
    if (t != change_tier || start >= change_at || end <= change_at) return end;
    double left = bytes - r0 * (change_at - start);
    return change_at + left / change_bw;
  }
};

struct request_spec {
  std::uint32_t chunks = 32, cached = 31, layers = layers32;
  std::vector<msg::tier> tiers;  // empty: all `tier`
  msg::tier tier = msg::tier::remote;
  std::uint64_t chunk_bytes = chunk64mib;
  double arrival = 0;
};

struct outcome {
  std::vector<double> ttft;                           // per request, in spec order
  std::vector<std::uint64_t> computed, loaded;        // cells
  std::vector<std::uint32_t> prefix_chunks_computed;  // chunks of [0, P) with any computed cell
  std::uint64_t ticks = 0, grants = 0;
  // Compute grants inside the cached prefix (the head), and their cells: the
  // device runs a one-cell grant far slower per cell than a whole piece.
  std::uint64_t head_grants = 0, head_cells = 0;
  std::vector<std::pair<double, std::uint64_t>> plan_trace;  // (time, planned split position) of request 0
  std::vector<std::uint64_t> tick_of_time;

  double mean() const { return std::accumulate(ttft.begin(), ttft.end(), 0.0) / ttft.size(); }
  double worst() const { return *std::max_element(ttft.begin(), ttft.end()); }
};

enum class own : std::uint8_t { pending, compute_granted, load_granted, computed, loaded };

class harness {
 public:
  /// `window`: the scheduler's admission window (scheduler_state::
  /// admission_window_s): a registration into an empty batch holds the
  /// links this long.
  harness(truth t, caps c, double window = 0) : truth_(t), caps_(c), window_(window) {}

  outcome run(policy& pol, const std::vector<request_spec>& specs, cost_model costs = cost_model{}) {
    batch_state batch(caps_);
    outcome out;
    out.ttft.assign(specs.size(), -1);
    out.computed.assign(specs.size(), 0);
    out.loaded.assign(specs.size(), 0);
    out.prefix_chunks_computed.assign(specs.size(), 0);
    grid_.assign(specs.size(), {});
    for (std::size_t i = 0; i < specs.size(); ++i) {
      auto& s = specs[i];
      grid_[i].assign(std::size_t(s.chunks) * s.layers, own::pending);
    }
    specs_ = &specs;
    now_ = 0;
    gpu_.clear();
    reports_.clear();
    sent_.clear();
    gpu_finished_ = -1;
    gpu_busy_until_ = 0;
    for (auto& l : links_) l.clear();
    links_busy_until_.fill(0);
    std::vector<bool> registered(specs.size(), false);
    used_ = usage{};
    std::size_t restored = 0;
    auto tick = [&] {
      auto grants = pol.decide(batch, costs);
      ++out.ticks;
      for (auto& g : grants) accept(g, out);
      BOOST_REQUIRE(used_.compute_cells == batch.in_flight().compute_cells);
      BOOST_REQUIRE(used_.load_bytes == batch.in_flight().load_bytes);
      if (!specs.empty()) {
        if (auto sp = pol.planned_split(0)) {
          auto pos = std::uint64_t(sp->chunk) * specs[0].layers + sp->layer;
          out.plan_trace.emplace_back(now_, pos);
        }
      }
    };
    double opens = inf;  // when held links open
    for (;;) {
      // Arrivals due now.
      bool arrived = false;
      for (std::size_t i = 0; i < specs.size(); ++i)
        if (!registered[i] && specs[i].arrival <= now_) {
          if (batch.requests().empty() && window_ > 0) {
            batch.hold_loads(true);
            opens = now_ + window_;
          }
          batch.add(registration(i), now_);
          registered[i] = true;
          arrived = true;
        }
      if (batch.loads_held() && opens <= now_) {
        batch.hold_loads(false);
        opens = inf;
        arrived = true;
      }
      if (arrived) tick();
      start_work();
      // The next event: a completion or an arrival.
      double next = inf;
      int which = -2;
      if (!gpu_.empty() && gpu_.front().running && gpu_busy_until_ < next) next = gpu_busy_until_, which = -1;
      if (!gpu_.empty() && !gpu_.front().running && gpu_.front().ready_at < next)
        next = gpu_.front().ready_at, which = -4;
      if (!reports_.empty() && reports_.front().second < next) next = reports_.front().second, which = -5;
      for (int t = 0; t < 4; ++t)
        if (!links_[t].empty() && links_busy_until_[t] < next) next = links_busy_until_[t], which = t;
      for (std::size_t i = 0; i < specs.size(); ++i)
        if (!registered[i] && specs[i].arrival < next) next = specs[i].arrival, which = -3;
      if (opens < next) next = opens, which = -3;
      if (which == -2) break;
      now_ = next;
      if (which == -3) continue;
      if (which == -4) continue;
      double finished_at = now_;
      job j;
      if (which == -5) {
        j = reports_.front().first;
        finished_at = j.finished;
        reports_.pop_front();
      } else {
        j = which == -1 ? gpu_.front() : links_[which].front();
      }
      if (which == -1) {
        gpu_.pop_front();
        if (truth_.gpu_round_trip > 0) {
          j.finished = now_;
          reports_.emplace_back(j, now_ + truth_.gpu_round_trip / 2);
          continue;
        }
      } else if (which >= 0) {
        links_[which].pop_front();
      }
      finish(j, out);
      msg::cell_done d;
      d.request_id = j.g.request_id;
      d.grant_id = j.g.grant_id;
      d.act = j.g.act;
      d.cells = j.g.cells;
      d.started_ns = static_cast<std::uint64_t>(j.started * 1e9);
      d.finished_ns = static_cast<std::uint64_t>(finished_at * 1e9);
      d.bytes = j.bytes;
      if (auto sample = batch.apply(d)) costs.observe(*sample);
      costs.observe(d);
      if (j.g.act == msg::action::compute) {
        // As the scheduler measures a grant's trip: sent to GPU start (when
        // the GPU had finished everything before it), GPU finish to heard.
        const double sent = sent_[j.g.grant_id];
        costs.observe_compute_trip(j.started - sent, j.started > gpu_finished_, now_ - finished_at);
        gpu_finished_ = std::max(gpu_finished_, finished_at);
      }
      auto i = static_cast<std::size_t>(j.g.request_id);
      if (out.ttft[i] < 0 && batch.find(j.g.request_id)->restored()) {
        out.ttft[i] = now_ - specs[i].arrival;
        batch.remove(j.g.request_id);
        ++restored;
        if (batch.requests().empty()) batch.hold_loads(false), opens = inf;  // as the scheduler does
      }
      tick();
    }
    if (restored != specs.size()) dump(batch, pol);
    BOOST_REQUIRE_MESSAGE(restored == specs.size(), pol.name() << ": stalled with " << specs.size() - restored
                                                               << " requests unrestored at t=" << now_);
    for (std::size_t i = 0; i < specs.size(); ++i)
      for (auto s : grid_[i]) BOOST_REQUIRE(s == own::computed || s == own::loaded);
    return out;
  }

 private:
  struct job {
    msg::grant g;
    std::uint64_t bytes = 0;
    double started = 0;
    bool running = false;
    double ready_at = 0, finished = 0;
  };

  msg::register_request registration(std::size_t i) const {
    auto& s = (*specs_)[i];
    msg::register_request r;
    r.request_id = i;
    r.chunk_tokens = 512;
    r.num_chunks = s.chunks;
    r.num_layers = s.layers;
    r.chunk_tiers = s.tiers.empty() ? std::vector<msg::tier>(s.cached, s.tier) : s.tiers;
    r.chunk_bytes = s.chunk_bytes;
    return r;
  }

  // On a stall: each unrestored request's cells, one line per chunk
  // (. pending, c/l granted, C/L done).
  void dump(const batch_state& batch, const policy& pol) const {
    for (auto& r : batch.requests()) {
      std::printf("%s: request %llu S=%u P=%u L=%u", pol.name(), (unsigned long long)r.id(), r.chunks(), r.cached(),
                  r.layers());
      if (auto sp = pol.planned_split(r.id())) std::printf(" split=(%u,%u)", sp->chunk, sp->layer);
      std::printf("\n");
      for (std::uint32_t c = 0; c < r.chunks(); ++c) {
        std::printf("  %3u ", c);
        for (std::uint32_t l = 0; l < r.layers(); ++l) std::printf("%c", ".clCL"[static_cast<int>(r.at(c, l))]);
        std::printf("\n");
      }
    }
  }

  own& cell(std::size_t i, std::uint32_t c, std::uint32_t l) {
    return grid_[i][std::size_t(c) * (*specs_)[i].layers + l];
  }

  // Every grant: cells never granted before, within the request, caps held.
  void accept(const msg::grant& g, outcome& out) {
    ++out.grants;
    auto i = static_cast<std::size_t>(g.request_id);
    BOOST_REQUIRE(i < specs_->size());
    auto& s = (*specs_)[i];
    auto& r = g.cells;
    if (g.act == msg::action::compute && r.chunk_end <= s.cached) {
      ++out.head_grants;
      out.head_cells += cell_count(r);
    }
    BOOST_REQUIRE(r.chunk_begin < r.chunk_end && r.chunk_end <= s.chunks);
    BOOST_REQUIRE(r.layer_begin < r.layer_end && r.layer_end <= s.layers);
    std::uint64_t n = cell_count(r);
    for (auto c = r.chunk_begin; c < r.chunk_end; ++c)
      for (auto l = r.layer_begin; l < r.layer_end; ++l) {
        BOOST_REQUIRE_MESSAGE(cell(i, c, l) == own::pending,
                              "cell (" << c << ", " << l << ") of request " << i << " granted twice");
        cell(i, c, l) = g.act == msg::action::compute ? own::compute_granted : own::load_granted;
      }
    job j{g, 0, 0};
    if (g.act == msg::action::compute) {
      BOOST_REQUIRE_MESSAGE(used_.compute_cells + n <= caps_.compute_cells || (used_.compute_cells == 0 && n == 1),
                            "compute cap exceeded: " << used_.compute_cells << " + " << n);
      used_.compute_cells += n;
      j.ready_at = now_ + truth_.gpu_round_trip / 2;
      sent_[g.grant_id] = now_;
      gpu_.push_back(j);
    } else {
      auto t = static_cast<std::size_t>(g.source);
      auto tiers = s.tiers.empty() ? std::vector<msg::tier>(s.cached, s.tier) : s.tiers;
      BOOST_REQUIRE(r.chunk_end <= tiers.size());
      for (auto c = r.chunk_begin; c < r.chunk_end; ++c) BOOST_REQUIRE(tiers[c] == g.source);
      j.bytes = n * (s.chunk_bytes / s.layers);
      BOOST_REQUIRE_MESSAGE(
          used_.load_bytes[t] + j.bytes <= caps_.load_bytes[t] || (used_.load_bytes[t] == 0 && n == 1),
          "load cap of tier " << t << " exceeded");
      used_.load_bytes[t] += j.bytes;
      links_[t].push_back(j);
    }
  }

  // Starts the head of each idle queue; a compute grant's inputs must be there.
  void start_work() {
    if (!gpu_.empty() && !gpu_.front().running && gpu_.front().ready_at <= now_) {
      auto& j = gpu_.front();
      auto i = static_cast<std::size_t>(j.g.request_id);
      double d = 0;
      for (auto c = j.g.cells.chunk_begin; c < j.g.cells.chunk_end; ++c)
        for (auto l = j.g.cells.layer_begin; l < j.g.cells.layer_end; ++l) {
          BOOST_REQUIRE_MESSAGE(l == 0 || cell(i, c, l - 1) == own::computed,
                                "compute (" << c << ", " << l << ") of request " << i << " before its lower layer");
          for (std::uint32_t e = 0; e < c; ++e) {
            auto st = cell(i, e, l);
            BOOST_REQUIRE_MESSAGE(st == own::computed || st == own::loaded,
                                  "compute (" << c << ", " << l << ") of request " << i << " before chunk " << e);
          }
          cell(i, c, l) = own::computed;  // runs in this order within the grant
          d += truth_.cell_s + truth_.slope_s * c;
        }
      j.started = now_;
      j.running = true;
      gpu_busy_until_ = now_ + d;
    }
    for (int t = 0; t < 4; ++t) {
      if (links_[t].empty() || links_[t].front().running) continue;
      auto& j = links_[t].front();
      j.started = now_;
      j.running = true;
      links_busy_until_[t] = truth_.finish(static_cast<msg::tier>(t), now_, double(j.bytes));
    }
  }

  void finish(const job& j, outcome& out) {
    auto i = static_cast<std::size_t>(j.g.request_id);
    auto n = cell_count(j.g.cells);
    if (j.g.act == msg::action::compute) {
      used_.compute_cells -= n;
      out.computed[i] += n;
      for (auto c = j.g.cells.chunk_begin; c < j.g.cells.chunk_end; ++c)
        if (c < (*specs_)[i].cached && j.g.cells.layer_begin == 0)
          out.prefix_chunks_computed[i] = std::max(out.prefix_chunks_computed[i], c + 1);
    } else {
      auto t = static_cast<std::size_t>(j.g.source);
      used_.load_bytes[t] -= j.bytes;
      out.loaded[i] += n;
      for (auto c = j.g.cells.chunk_begin; c < j.g.cells.chunk_end; ++c)
        for (auto l = j.g.cells.layer_begin; l < j.g.cells.layer_end; ++l) cell(i, c, l) = own::loaded;
    }
  }

  truth truth_;
  caps caps_;
  double window_ = 0;
  const std::vector<request_spec>* specs_ = nullptr;
  std::vector<std::vector<own>> grid_;
  double now_ = 0;
  std::deque<job> gpu_;
  double gpu_busy_until_ = 0;
  std::deque<std::pair<job, double>> reports_;  // GPU-finished compute grants and when the scheduler hears
  std::map<std::uint64_t, double> sent_;        // compute grant -> sent at
  double gpu_finished_ = -1;                    // the latest GPU finish the scheduler has heard of
  std::array<std::deque<job>, msg::tier_count> links_;
  std::array<double, msg::tier_count> links_busy_until_{};
  usage used_;
};

}  // namespace

namespace {

caps default_caps() {
  caps c;
  c.compute_cells = 64;
  c.load_bytes.fill(1ull << 30);
  return c;
}

// The scheduler's prior: llama-3-8b H100 costs and the tiers' nominal rates
// (unless given); the oracle gets the truth instead.
outcome run_policy(const std::string& name, const std::vector<request_spec>& specs, const truth& t,
                   caps c = default_caps(), policy_options opts = {}, std::optional<cost_prior> prior = {}) {
  if (name == "oracle") opts.truth = cost_model::fixed(t.cell_s, t.slope_s, t.bw, t.latency);
  auto pol = make_policy(name, opts);
  harness h(t, c);
  cost_prior p;
  p.bytes_per_s = t.bw;
  return h.run(*pol, specs, cost_model(prior ? *prior : p));
}

// A llama-3-8b request of 1024-token chunks whose first `cached` chunks lie
// on the remote tier.
msg::register_request remote_request(std::uint32_t chunks, std::uint32_t cached) {
  msg::register_request reg;
  reg.request_id = 1;
  reg.chunk_tokens = 1024;
  reg.num_chunks = chunks;
  reg.num_layers = layers32;
  reg.chunk_tiers.assign(cached, msg::tier::remote);
  reg.chunk_bytes = 2 * chunk64mib;
  return reg;
}

std::vector<request_spec> one(std::uint32_t chunks, std::uint32_t cached, msg::tier tier) {
  request_spec s;
  s.chunks = chunks;
  s.cached = cached;
  s.tier = tier;
  return {s};
}

}  // namespace

BOOST_AUTO_TEST_CASE(factory_knows_the_five_names) {
  for (auto& n : policy_names()) {
    policy_options o;
    o.truth = cost_model{};
    BOOST_CHECK_EQUAL(make_policy(n, o)->name(), n);
  }
  try {
    make_policy("round_robin");
    BOOST_FAIL("unknown name accepted");
  } catch (const kvflow::error& e) {
    BOOST_CHECK(e.code() == errc::not_found);
    BOOST_CHECK(std::string(e.what()).find("two_pointer") != std::string::npos);
  }
  BOOST_CHECK_THROW(make_policy("oracle"), kvflow::error);  // needs the true costs
}

BOOST_AUTO_TEST_CASE(batch_state_refuses_bad_grants) {
  caps c;
  c.compute_cells = 8;
  c.load_bytes.fill(4ull << 20);
  batch_state b(c);
  msg::register_request reg;
  reg.request_id = 7;
  reg.num_chunks = 4;
  reg.num_layers = 4;
  reg.chunk_tiers = {msg::tier::host, msg::tier::disk};
  reg.chunk_bytes = 4ull << 20;  // 1 MiB cells
  b.add(reg);
  BOOST_CHECK_THROW(b.add(reg), kvflow::error);
  auto bad_reg = reg;
  bad_reg.request_id = 8;
  bad_reg.chunk_tiers.assign(4, msg::tier::host);  // the last chunk cannot be cached
  BOOST_CHECK_THROW(b.add(bad_reg), kvflow::error);

  auto grant = [&](msg::action a, msg::cell_range r, msg::tier t = msg::tier::gpu) {
    msg::grant g;
    g.request_id = 7;
    g.act = a;
    g.cells = r;
    g.source = t;
    b.apply(g);
    return g;
  };
  auto code = [&](msg::action a, msg::cell_range r, msg::tier t = msg::tier::gpu) {
    try {
      grant(a, r, t);
    } catch (const kvflow::error& e) {
      return e.code();
    }
    return errc::none;
  };
  BOOST_CHECK(code(msg::action::compute, {1, 2, 0, 1}) == errc::invalid_argument);  // chunk 0 layer 0 missing
  BOOST_CHECK(code(msg::action::load, {2, 3, 0, 1}, msg::tier::host) == errc::invalid_argument);  // uncached
  BOOST_CHECK(code(msg::action::load, {1, 2, 0, 1}, msg::tier::host) == errc::invalid_argument);  // wrong tier
  BOOST_CHECK(code(msg::action::compute, {0, 1, 1, 2}) == errc::invalid_argument);                // layer 0 first
  auto g1 = grant(msg::action::compute, {0, 1, 0, 4});
  BOOST_CHECK(code(msg::action::compute, {0, 1, 0, 1}) == errc::invalid_argument);   // twice
  BOOST_CHECK(code(msg::action::compute, {1, 3, 0, 4}) == errc::capacity_exceeded);  // 4 + 8 > 8
  auto g2 = grant(msg::action::load, {1, 2, 0, 4}, msg::tier::disk);
  BOOST_CHECK(code(msg::action::load, {1, 2, 0, 1}, msg::tier::disk) != errc::none);
  BOOST_CHECK_EQUAL(b.in_flight().load_bytes[static_cast<std::size_t>(msg::tier::disk)], 4ull << 20);
  // Chunk 2 needs chunk 1's layers loaded, not just granted.
  BOOST_CHECK(code(msg::action::compute, {2, 3, 0, 1}) == errc::invalid_argument);
  msg::cell_done d;
  d.request_id = 7;
  d.grant_id = g2.grant_id;
  d.act = msg::action::load;
  d.cells = g2.cells;
  d.started_ns = 0;
  d.finished_ns = 4000000;
  auto sample = b.apply(d);
  BOOST_REQUIRE(sample.has_value());
  BOOST_CHECK(sample->source == msg::tier::disk);
  BOOST_CHECK_EQUAL(sample->bytes, 4ull << 20);
  grant(msg::action::compute, {2, 3, 0, 4});
  BOOST_CHECK_EQUAL(b.in_flight().compute_cells, 8u);
  BOOST_CHECK(b.find(7)->compute_top(2) == 4);
  (void)g1;
  b.remove(7);
  BOOST_CHECK_EQUAL(b.in_flight().compute_cells, 0u);
  BOOST_CHECK(b.find(7) == nullptr);
}

namespace {

// Caps with compute groups of 4 chunks and room for 64 of them.
caps group4_caps() {
  caps c;
  c.compute_cells = 64 * 4;
  c.compute_group = 4;
  c.load_bytes.fill(1ull << 30);
  return c;
}

}  // namespace

// compute_group 4: compute grants span four chunks, a few layers deep
// (compute_only: all layers; two_pointer: a quarter of them), not one chunk.
BOOST_AUTO_TEST_CASE(compute_grants_span_the_compute_group) {
  for (const char* name : {"compute_only", "two_pointer", "bidirectional"}) {
    batch_state b(group4_caps());
    b.add(remote_request(16, 15));
    auto pol = make_policy(name);
    auto grants = pol->decide(b, cost_model());
    bool found = false;
    for (auto& g : grants) {
      if (g.act != msg::action::compute) continue;
      found = true;
      BOOST_TEST_INFO(name << ": chunks [" << g.cells.chunk_begin << ", " << g.cells.chunk_end << ") layers ["
                           << g.cells.layer_begin << ", " << g.cells.layer_end << ")");
      BOOST_TEST(g.cells.chunk_end - g.cells.chunk_begin == 4u);
      break;
    }
    BOOST_TEST_INFO(name);
    BOOST_TEST(found);
  }
}

// A budget narrower than the group grants nothing while the GPU has work: a
// sliver (2 chunks a layer after a 4 x 3 grant) would leave the group's
// chunks a layer apart, and every later grant of them would run narrower.
// With nothing in flight it takes what fits, so the GPU never waits on it.
BOOST_AUTO_TEST_CASE(compute_grants_leave_no_sliver_of_the_group) {
  batch_state b(group4_caps());
  b.add(remote_request(16, 15));
  const auto& r = *b.find(1);
  std::vector<msg::grant> out;
  BOOST_TEST(detail::grant_head(b, r, 16ull * layers32, 14, out, 0) == 12u);
  BOOST_TEST_REQUIRE(out.size() == 1u);
  BOOST_TEST(out[0].cells.chunk_end - out[0].cells.chunk_begin == 4u);
  BOOST_TEST(out[0].cells.layer_end - out[0].cells.layer_begin == 3u);
  BOOST_TEST(detail::grant_head(b, r, 16ull * layers32, 2, out, 0) == 0u);
  // Once the 4 x 3 grant is done, the GPU is idle: 2 cells go.
  msg::cell_done done;
  done.grant_id = out[0].grant_id;
  done.act = msg::action::compute;
  done.cells = out[0].cells;
  b.apply(done);
  BOOST_TEST(detail::grant_head(b, r, 16ull * layers32, 2, out, 0) == 2u);
}

// two_pointer's and bidirectional's link queues are load_queue_chunks x
// load_group chunks deep, whatever the compute group: a wider forward must
// not queue more bytes. (Decisions repeated with nothing completing: the
// queue is what stops them.)
BOOST_AUTO_TEST_CASE(load_queue_follows_the_load_group_not_the_compute_group) {
  auto queued_bytes = [](const char* name, std::uint32_t compute_group, std::uint32_t load_group) {
    caps c;
    c.compute_cells = 64 * 4;
    c.compute_group = compute_group;
    c.load_group = load_group;
    c.load_bytes.fill(1ull << 34);
    batch_state b(c);
    const auto reg = remote_request(32, 31);
    b.add(reg);
    auto pol = make_policy(name);
    std::uint64_t bytes = 0;
    for (int round = 0; round < 16; ++round)
      for (auto& g : pol->decide(b, cost_model()))
        if (g.act == msg::action::load)
          bytes += std::uint64_t(g.cells.chunk_end - g.cells.chunk_begin) * (g.cells.layer_end - g.cells.layer_begin) *
                   (reg.chunk_bytes / reg.num_layers);
    return bytes;
  };
  const std::uint64_t chunk = remote_request(1, 0).chunk_bytes, queue = policy_options{}.load_queue_chunks;
  for (const char* name : {"two_pointer", "bidirectional"}) {
    BOOST_TEST_CONTEXT(name) {
      BOOST_TEST(queued_bytes(name, 1, 1) == queue * chunk);
      BOOST_TEST(queued_bytes(name, 4, 1) == queue * chunk);
      BOOST_TEST(queued_bytes(name, 1, 2) == 2 * queue * chunk);
    }
  }
}

// Held links (the scheduler's admission window) take no load, not even one
// cell on an idle link, while compute goes on; once they open, every
// loading policy loads again.
BOOST_AUTO_TEST_CASE(held_links_take_no_load_until_they_open) {
  for (const char* name : {"load_only", "bidirectional", "two_pointer"}) {
    BOOST_TEST_CONTEXT(name) {
      batch_state b(default_caps());
      b.add(remote_request(16, 15));
      b.hold_loads(true);
      BOOST_TEST(!b.fits_load(msg::tier::remote, 1, 1));
      auto pol = make_policy(name);
      auto count = [](const std::vector<msg::grant>& gs, msg::action act) {
        return std::count_if(gs.begin(), gs.end(), [&](const msg::grant& g) { return g.act == act; });
      };
      auto held = pol->decide(b, cost_model());
      BOOST_TEST(count(held, msg::action::load) == 0);
      if (std::string(name) != "load_only") BOOST_TEST(count(held, msg::action::compute) > 0);
      b.hold_loads(false);
      BOOST_TEST(b.fits_load(msg::tier::remote, 1, 1));
      BOOST_TEST(count(pol->decide(b, cost_model()), msg::action::load) > 0);
    }
  }
}

// (1) and (2): every policy restores every cell exactly once, runs compute
// only on present inputs and never exceeds a cap, on random shapes, tiers,
// caps (some below one grant), arrivals and rate changes.
BOOST_AUTO_TEST_CASE(every_policy_restores_each_cell_once_under_the_caps) {
  std::mt19937_64 rng(42);
  auto pick = [&](auto... v) {
    std::vector<std::common_type_t<decltype(v)...>> xs{v...};
    return xs[std::uniform_int_distribution<std::size_t>(0, xs.size() - 1)(rng)];
  };
  const msg::tier tiers[] = {msg::tier::host, msg::tier::disk, msg::tier::remote};
  for (int round = 0; round < 80; ++round) {
    truth t;
    t.bw[static_cast<std::size_t>(msg::tier::remote)] = pick(1.0, 10.0, 25.0, 40.0) * gbit;
    if (round % 3 == 0) {
      t.change_at = pick(0.05, 0.3);
      t.change_tier = pick(msg::tier::disk, msg::tier::remote);
      t.change_bw = pick(0.2, 4.0) * t.bw[static_cast<std::size_t>(t.change_tier)];
    }
    caps c;
    std::uint32_t layers = pick(1u, 4u, 8u, 32u);
    c.compute_cells = pick(std::uint64_t(1), std::uint64_t(3), std::uint64_t(layers), std::uint64_t(64));
    c.load_bytes.fill(pick(1ull << 20, 8ull << 20, 256ull << 20, 1ull << 30));
    c.compute_group = pick(1u, 1u, 2u, 4u);
    c.load_group = pick(1u, 1u, 2u);
    std::vector<request_spec> specs(std::uniform_int_distribution<int>(1, 4)(rng));
    for (auto& s : specs) {
      s.layers = layers;
      s.chunks = std::uniform_int_distribution<std::uint32_t>(1, 24)(rng);
      s.cached = std::uniform_int_distribution<std::uint32_t>(0, s.chunks - 1)(rng);
      s.chunk_bytes = std::uint64_t(layers) * pick(1ull << 20, 2ull << 20);
      for (std::uint32_t i = 0; i < s.cached; ++i) s.tiers.push_back(tiers[rng() % 3]);
      s.arrival = pick(0.0, 0.0, 0.02, 0.1);
    }
    for (auto& name : policy_names()) {
      BOOST_TEST_CONTEXT("round " << round << " policy " << name) {
        auto o = run_policy(name, specs, t, c);
        for (std::size_t i = 0; i < specs.size(); ++i) {
          BOOST_CHECK_EQUAL(o.computed[i] + o.loaded[i], std::uint64_t(specs[i].chunks) * specs[i].layers);
          BOOST_CHECK_GE(o.computed[i], std::uint64_t(specs[i].chunks - specs[i].cached) * specs[i].layers);
          BOOST_CHECK_GT(o.ttft[i], 0);
        }
        if (name == "compute_only")
          for (std::size_t i = 0; i < specs.size(); ++i) BOOST_CHECK_EQUAL(o.loaded[i], 0u);
        if (name == "load_only")
          for (std::size_t i = 0; i < specs.size(); ++i)
            BOOST_CHECK_EQUAL(o.loaded[i], std::uint64_t(specs[i].cached) * specs[i].layers);
      }
    }
  }
}

// (3) Cake meets within one chunk of where compute of [0, m) takes as long
// as loading [m, P).
BOOST_AUTO_TEST_CASE(bidirectional_meets_at_the_balance_point) {
  for (double link : {1.5e9, 10 * gbit, 25 * gbit, 40 * gbit}) {
    for (std::uint32_t chunks : {16u, 32u, 64u}) {
      truth t;
      t.bw[static_cast<std::size_t>(msg::tier::remote)] = link;
      std::uint32_t P = chunks - 1;
      double load_chunk = double(chunk64mib) / link;
      // Continuous balance: sum_{c<m} compute(c) = (P - m) * load_chunk.
      double m_star = 0;
      for (double m = 0; m <= P; m += 1e-3) {
        double comp = 32 * (m * t.cell_s + t.slope_s * m * (m - 1) / 2);
        if (comp >= (P - m) * load_chunk) {
          m_star = m;
          break;
        }
        m_star = m;
      }
      auto o = run_policy("bidirectional", one(chunks, P, msg::tier::remote), t);
      double met = o.prefix_chunks_computed[0];
      BOOST_TEST_MESSAGE("bidirectional " << chunks << " chunks at " << link / 1e9 << " GB/s: met at " << met
                                          << ", balance " << m_star);
      BOOST_CHECK_MESSAGE(std::fabs(met - m_star) <= 1.0, "met at chunk " << met << ", balance at " << m_star << " ("
                                                                          << chunks << " chunks, " << link / gbit
                                                                          << " Gbit/s)");
    }
  }
}

namespace {

struct scenario {
  std::string name;
  truth t;
  std::vector<request_spec> specs;
};

std::vector<scenario> batch_scenarios() {
  std::vector<scenario> out;
  truth ten;
  ten.bw[static_cast<std::size_t>(msg::tier::remote)] = 10 * gbit;
  {
    scenario s{"equal 8 x 16k, 10 Gbit/s", ten, {}};
    for (int i = 0; i < 8; ++i) s.specs.push_back(one(32, 31, msg::tier::remote)[0]);
    out.push_back(s);
  }
  {
    scenario s{"mixed 4k-32k, 10 Gbit/s", ten, {}};
    for (std::uint32_t chunks : {8u, 64u, 16u, 48u, 24u, 32u, 40u, 56u})
      s.specs.push_back(one(chunks, chunks - 1, msg::tier::remote)[0]);
    out.push_back(s);
  }
  {
    scenario s{"mixed tiers host/disk/10G", ten, {}};
    const msg::tier tiers[] = {msg::tier::host, msg::tier::disk, msg::tier::remote};
    std::uint32_t lens[] = {32, 16, 64, 24, 48, 8, 40, 32};
    for (int i = 0; i < 8; ++i) s.specs.push_back(one(lens[i], lens[i] - 1, tiers[i % 3])[0]);
    out.push_back(s);
  }
  {
    scenario s{"mixed, 10G drops to 2.5G at 0.5 s", ten, {}};
    s.t.change_at = 0.5;
    s.t.change_bw = 2.5 * gbit;
    for (std::uint32_t chunks : {8u, 64u, 16u, 48u, 24u, 32u, 40u, 56u})
      s.specs.push_back(one(chunks, chunks - 1, msg::tier::remote)[0]);
    out.push_back(s);
  }
  {
    scenario s{"mixed suffixes 25%, disk", ten, {}};
    for (std::uint32_t chunks : {8u, 64u, 16u, 48u, 24u, 32u, 40u, 56u})
      s.specs.push_back(one(chunks, chunks * 3 / 4, msg::tier::disk)[0]);
    out.push_back(s);
  }
  {
    // 16 requests, 4k-32k, arriving as a Poisson stream at about 70% of what
    // the GPU and the link restore together.
    scenario s{"Poisson 70%, mixed, 10 Gbit/s", ten, {}};
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<std::uint32_t> len(8, 64);
    std::exponential_distribution<double> gap(1 / 1.2);
    double at = 0;
    for (int i = 0; i < 16; ++i) {
      auto chunks = len(rng);
      auto spec = one(chunks, chunks - 1, msg::tier::remote)[0];
      spec.arrival = at;
      s.specs.push_back(spec);
      at += gap(rng);
    }
    out.push_back(s);
  }
  return out;
}

double p99(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(std::ceil(0.99 * v.size())) - 1];
}

// Per-request Cake at its best: the better mean of round robin and first
// come, first served (as the bench's records take it).
const outcome& cake_at_best(const outcome& round_robin, const outcome& fcfs) {
  return round_robin.mean() <= fcfs.mean() ? round_robin : fcfs;
}

}  // namespace

// (4) On every batch scenario two_pointer's mean TTFT is at or below
// per-request Cake's in either order (bidirectional: round robin;
// bidirectional_fcfs: first come, first served); prints each policy's ratio.
BOOST_AUTO_TEST_CASE(two_pointer_batch_mean_ttft_at_or_below_bidirectional) {
  for (auto& s : batch_scenarios()) {
    std::map<std::string, outcome> r;
    for (auto& n : policy_names()) r[n] = run_policy(n, s.specs, s.t);
    auto& tp = r["two_pointer"];
    auto& bd = r["bidirectional"];
    auto& fc = r["bidirectional_fcfs"];
    std::printf(
        "batch %-36s mean TTFT two_pointer %.3f s; bidirectional/two_pointer %.2fx (p99 %.2fx), "
        "bidirectional_fcfs %.2fx (p99 %.2fx), compute_only %.2fx, load_only %.2fx, two_pointer/oracle %.2fx\n",
        s.name.c_str(), tp.mean(), bd.mean() / tp.mean(), p99(bd.ttft) / p99(tp.ttft), fc.mean() / tp.mean(),
        p99(fc.ttft) / p99(tp.ttft), r["compute_only"].mean() / tp.mean(), r["load_only"].mean() / tp.mean(),
        tp.mean() / r["oracle"].mean());
    BOOST_CHECK_MESSAGE(tp.mean() <= bd.mean(),
                        s.name << ": two_pointer mean " << tp.mean() << " > bidirectional " << bd.mean());
    BOOST_CHECK_MESSAGE(tp.mean() <= fc.mean(),
                        s.name << ": two_pointer mean " << tp.mean() << " > bidirectional_fcfs " << fc.mean());
    // Head compute comes in whole pieces (a quarter chunk, 8 of 32 layers),
    // not in slivers of the room a completion frees.
    double per_grant = tp.head_grants ? double(tp.head_cells) / tp.head_grants : 0;
    BOOST_CHECK_MESSAGE(tp.head_grants == 0 || per_grant >= 6,
                        s.name << ": two_pointer head compute grants hold " << per_grant << " cells on average");
  }
}

// (5) A bandwidth drop mid-request moves the planned split towards compute
// within a few ticks, and more of the prefix ends up computed.
BOOST_AUTO_TEST_CASE(bandwidth_drop_shifts_work_to_compute) {
  truth steady;
  steady.bw[static_cast<std::size_t>(msg::tier::remote)] = 10 * gbit;
  auto spec = one(64, 63, msg::tier::remote);
  auto base = run_policy("two_pointer", spec, steady);
  truth drop = steady;
  drop.change_at = 0.4;
  drop.change_bw = 2 * gbit;
  auto pol = make_policy("two_pointer");
  harness h(drop, default_caps());
  auto o = h.run(*pol, spec);
  // The planned split at the drop and the first tick after it that plans more compute.
  std::uint64_t at_drop = 0;
  std::size_t i = 0;
  while (i < o.plan_trace.size() && o.plan_trace[i].first <= drop.change_at) at_drop = o.plan_trace[i++].second;
  std::size_t ticks_after = 0;
  bool shifted = false;
  for (; i < o.plan_trace.size(); ++i) {
    ++ticks_after;
    if (o.plan_trace[i].second >= at_drop + 32) {
      shifted = true;
      break;
    }
  }
  std::printf(
      "rate drop 10 -> 2 Gbit/s at 0.4 s: split moved a chunk towards compute %zu ticks later; cells "
      "computed %llu (steady %llu); TTFT %.3f s\n",
      ticks_after, (unsigned long long)o.computed[0], (unsigned long long)base.computed[0], o.ttft[0]);
  BOOST_CHECK(shifted);
  BOOST_CHECK_LE(ticks_after, 5u);
  BOOST_CHECK_GT(o.computed[0], base.computed[0] + 4 * 32);
  // Against the same plan that never learns of the drop (oracle of the old rates).
  policy_options frozen;
  frozen.truth = cost_model::fixed(steady.cell_s, steady.slope_s, steady.bw);
  auto stale = make_policy("oracle", frozen);
  harness h2(drop, default_caps());
  auto s = h2.run(*stale, spec);
  std::printf("  stale plan TTFT %.3f s: adapting is %.2fx faster\n", s.ttft[0], s.ttft[0] / o.ttft[0]);
  BOOST_CHECK_LT(o.ttft[0], s.ttft[0]);
}

namespace {

// A floor no schedule can beat: the best split of the cached prefix with both
// resources fully busy and the suffix computed with no wait for loads.
double lower_bound(const truth& t, const request_spec& s) {
  const double cell_load = double(s.chunk_bytes / s.layers) / t.bw[static_cast<std::size_t>(s.tier)];
  double suffix = 0;
  for (std::uint32_t c = s.cached; c < s.chunks; ++c) suffix += s.layers * (t.cell_s + t.slope_s * c);
  double best = inf, computed = 0;
  for (std::uint64_t z = 0; z <= std::uint64_t(s.cached) * s.layers; ++z) {
    if (z > 0) computed += t.cell_s + t.slope_s * double((z - 1) / s.layers);
    double loads = double(std::uint64_t(s.cached) * s.layers - z) * cell_load;
    best = std::min(best, std::max(computed + suffix, loads));
  }
  return best;
}

}  // namespace

// (6) At batch 1, a cold two_pointer (its first request, learning costs
// that are off by 10-20%) within 1.12x of the oracle (true costs in advance)
// over lengths and tiers; also prints the worst ratio to a
// schedule-independent lower bound. (Not 1.10: the oracle commits the split
// chunk's top layers to loads from the first tick, a cold two_pointer only
// once it measured compute and the link; at 1 Gbit/s and 4k that wait costs
// 10%. A warm scheduler, as in the bench, is held to 1.10 below.)
BOOST_AUTO_TEST_CASE(two_pointer_near_oracle_at_batch_one) {
  struct tier_case {
    const char* name;
    msg::tier t;
    double bw;
  };
  const tier_case tiers[] = {{"host", msg::tier::host, 55e9},       {"disk", msg::tier::disk, 1.5e9},
                             {"1G", msg::tier::remote, 1 * gbit},   {"10G", msg::tier::remote, 10 * gbit},
                             {"25G", msg::tier::remote, 25 * gbit}, {"40G", msg::tier::remote, 40 * gbit}};
  double worst = 0, worst_floor = 0;
  for (auto& tc : tiers) {
    std::printf("two_pointer/oracle (oracle/floor) %-5s", tc.name);
    for (std::uint32_t chunks : {8u, 16u, 32u, 64u}) {
      for (std::uint32_t suffix : {1u, chunks / 4}) {
        // The prior says the nominal rate and the H100 costs; the run is
        // slower on both (links deliver 80%, compute takes 10% longer).
        cost_prior prior;
        prior.bytes_per_s[static_cast<std::size_t>(tc.t)] = tc.bw;
        truth t;
        t.bw[static_cast<std::size_t>(tc.t)] = 0.8 * tc.bw;
        t.cell_s *= 1.1;
        t.slope_s *= 1.1;
        auto spec = one(chunks, chunks - suffix, tc.t);
        double ratio = run_policy("two_pointer", spec, t, default_caps(), {}, prior).ttft[0] /
                       run_policy("oracle", spec, t).ttft[0];
        worst = std::max(worst, ratio);
        double floor_ratio = run_policy("oracle", spec, t).ttft[0] / lower_bound(t, spec[0]);
        worst_floor = std::max(worst_floor, floor_ratio);
        std::printf(" %2uk/%2u:%.3f(%.2f)", chunks / 2, suffix, ratio, floor_ratio);
        BOOST_CHECK_MESSAGE(ratio <= 1.12, tc.name << " " << chunks << " chunks, suffix " << suffix << ": " << ratio);
      }
    }
    std::printf("\n");
  }
  std::printf("two_pointer/oracle worst %.3f; oracle/lower bound worst %.3f\n", worst, worst_floor);
}

// (7) One request whose load time is about its compute time: using both
// resources is >= 1.6x faster than the better single one.
BOOST_AUTO_TEST_CASE(two_pointer_beats_the_better_single_resource) {
  truth t;
  t.bw[static_cast<std::size_t>(msg::tier::remote)] = 10 * gbit;  // 16k: 1.72 s load, 1.51 s compute
  auto spec = one(32, 31, msg::tier::remote);
  auto tp = run_policy("two_pointer", spec, t).ttft[0];
  auto co = run_policy("compute_only", spec, t).ttft[0];
  auto lo = run_policy("load_only", spec, t).ttft[0];
  auto bd = run_policy("bidirectional", spec, t).ttft[0];
  std::printf(
      "16k at 10 Gbit/s: compute_only %.3f s, load_only %.3f s, bidirectional %.3f s, two_pointer %.3f s: "
      "%.2fx over the better single resource\n",
      co, lo, bd, tp, std::min(co, lo) / tp);
  BOOST_CHECK_GE(std::min(co, lo) / tp, 1.6);
}

// The bench's single-request points, in the harness: disk and 25 Gbit/s at
// 16k (issue 8 asks >= 1.3x and >= 1.6x over the better single resource on
// the H100; here the costs are cost_prior's defaults, so 25 Gbit/s loads take half the
// compute time and the best possible gain is lower).
BOOST_AUTO_TEST_CASE(single_request_gains_at_16k) {
  struct point {
    const char* name;
    msg::tier tier;
    double bw;
  };
  for (auto& pt : {point{"disk", msg::tier::disk, 1.5e9}, point{"25G", msg::tier::remote, 25 * gbit}}) {
    truth t;
    t.bw[static_cast<std::size_t>(pt.tier)] = pt.bw;
    auto spec = one(32, 31, pt.tier);
    auto tp = run_policy("two_pointer", spec, t).ttft[0];
    auto co = run_policy("compute_only", spec, t).ttft[0];
    auto lo = run_policy("load_only", spec, t).ttft[0];
    double ideal = 1 / (1 / co + 1 / lo);  // both resources, perfectly shared
    std::printf(
        "16k %-4s: compute_only %.3f s, load_only %.3f s, two_pointer %.3f s: %.2fx over the better single "
        "resource (perfect sharing would give %.2fx)\n",
        pt.name, co, lo, tp, std::min(co, lo) / tp, std::min(co, lo) / ideal);
    BOOST_CHECK_GE(std::min(co, lo) / tp, 0.9 * std::min(co, lo) / ideal);
  }
}

// A prior far from the run (another model, another machine): the costs are
// learned from the first completions and a 16k or 32k restore stays within
// 1.3x of the oracle's (the worst case: a link believed 4x faster makes the
// first tick commit every chunk's lowest layer to loads). (A 4k restore does not: its first load grants, made on the
// prior's word, commit a tail chunk that a link 4x slower than believed then
// takes longer to move than the whole oracle restore; the scheduler should
// seed the prior with the configured link rates.)
BOOST_AUTO_TEST_CASE(learns_from_a_wrong_prior) {
  double worst = 0;
  for (std::uint32_t chunks : {32u, 64u}) {
    for (double link : {1.0, 10.0, 40.0}) {
      for (double compute_scale : {0.25, 4.0}) {
        for (double bw_scale : {0.25, 4.0}) {
          truth t;
          t.bw[static_cast<std::size_t>(msg::tier::remote)] = link * gbit;
          cost_prior prior;
          prior.cell_s = t.cell_s * compute_scale;
          prior.cell_slope_s = t.slope_s * compute_scale;
          prior.bytes_per_s = t.bw;
          prior.bytes_per_s[static_cast<std::size_t>(msg::tier::remote)] *= bw_scale;
          auto spec = one(chunks, chunks - 1, msg::tier::remote);
          double ratio = run_policy("two_pointer", spec, t, default_caps(), {}, prior).ttft[0] /
                         run_policy("oracle", spec, t).ttft[0];
          worst = std::max(worst, ratio);
          BOOST_CHECK_MESSAGE(ratio <= 1.3, chunks << " chunks at " << link << " Gbit/s, prior compute x"
                                                   << compute_scale << ", bandwidth x" << bw_scale << ": " << ratio);
        }
      }
    }
  }
  std::printf("prior off by 4x in compute and bandwidth: two_pointer/oracle worst %.3f\n", worst);
}

// The bench's H100 points in the harness, batch 1 within 1.10x of the
// oracle (issue 8's bar): 1024-token chunks (128 MiB), costs fitted to the
// runtime's measured compute_only (23.2 ms a chunk at position 0, 2.2 ms
// more per chunk of position), a 256-token suffix sharing the last chunk
// (P = S - 1). The scheduler is warm, as in the bench (earlier restores
// taught it): its cost model has seen compute grants and a load, both 10%
// slower than this run's.
BOOST_AUTO_TEST_CASE(warm_two_pointer_near_oracle_at_h100_points) {
  struct tier_case {
    const char* name;
    msg::tier t;
    double bw;
  };
  const tier_case tiers[] = {{"disk", msg::tier::disk, 1.34e9},
                             {"1G", msg::tier::remote, 1 * gbit},
                             {"10G", msg::tier::remote, 10 * gbit},
                             {"25G", msg::tier::remote, 25 * gbit},
                             {"40G", msg::tier::remote, 40 * gbit}};
  double worst = 0;
  for (auto& tc : tiers) {
    std::printf("warm two_pointer/oracle %-5s", tc.name);
    for (std::uint32_t chunks : {4u, 8u, 16u, 32u}) {
      truth t;
      t.cell_s = 23.2e-3 / 32;
      t.slope_s = 2.2e-3 / 32;
      t.bw[static_cast<std::size_t>(tc.t)] = tc.bw;
      cost_prior prior;  // the default costs, the configured link rate
      prior.bytes_per_s[static_cast<std::size_t>(tc.t)] = tc.bw;
      cost_model warm(prior);
      msg::cell_done d;
      d.act = msg::action::compute;
      d.cells = msg::cell_range{0, 2, 0, 32};
      d.started_ns = 1;
      d.finished_ns = 1 + static_cast<std::uint64_t>(1.1 * 2 * 32 * (t.cell_s + 0.5 * t.slope_s) * 1e9);
      warm.observe(d);  // setup, ignored
      warm.observe(d);
      warm.observe(msg::rate_sample{tc.t, 100u << 20, static_cast<std::uint64_t>(1.1 * (100u << 20) / tc.bw * 1e9)});
      auto spec = one(chunks, chunks - 1, tc.t);
      spec[0].chunk_bytes = 2 * chunk64mib;
      auto pol = make_policy("two_pointer", {});
      harness h(t, default_caps());
      auto tp = h.run(*pol, spec, warm).ttft[0];
      auto orc = run_policy("oracle", spec, t).ttft[0];
      auto co = run_policy("compute_only", spec, t).ttft[0];
      worst = std::max(worst, tp / orc);
      std::printf(" %2uk:%.3f(%.3f s, compute_only %.3f s)", chunks, tp / orc, tp, co);
      BOOST_CHECK_MESSAGE(tp / orc <= 1.10, tc.name << " " << chunks << " chunks: " << tp / orc);
    }
    std::printf("\n");
  }
  std::printf("warm H100 points: two_pointer/oracle worst %.3f\n", worst);
}

namespace {

// One compute sample of a whole chunk at `cell` seconds a cell, after the
// ignored first (setup) one: the model's compute is then measured.
void warm_compute(cost_model& m, double cell) {
  msg::cell_done d;
  d.act = msg::action::compute;
  d.cells = msg::cell_range{0, 1, 0, 32};
  d.started_ns = 1;
  d.finished_ns = 1 + static_cast<std::uint64_t>(32 * cell * 1e9);
  m.observe(d);  // setup, ignored
  m.observe(d);
}

}  // namespace

// The first tick of the H100's 4k restore at 10 Gbit/s (3 cached chunks, the
// split inside the last): a warm scheduler (compute and the link measured)
// claims that chunk's layers above the split at once; a cold one, on prior
// costs only, claims no part of a chunk (whole chunks only: here the prior's
// slower compute puts its split at chunk 2's start).
BOOST_AUTO_TEST_CASE(claims_the_split_chunk_early_only_when_warm) {
  const auto reg = remote_request(4, 3);
  const double cell = 23.2e-3 / 32, bw = 10 * gbit;
  // The lowest layer of chunk 2 that the first tick loads (L: none).
  auto first_load_layer = [&](bool warm) {
    cost_prior prior;
    prior.bytes_per_s[static_cast<std::size_t>(msg::tier::remote)] = bw;
    cost_model m(prior);
    if (warm) {
      warm_compute(m, cell);
      m.observe(msg::rate_sample{msg::tier::remote, 100u << 20, static_cast<std::uint64_t>((100u << 20) / bw * 1e9)});
    }
    batch_state b(default_caps());
    b.add(reg);
    auto pol = make_policy("two_pointer", {});
    std::uint32_t lowest = layers32;
    for (auto& g : pol->decide(b, m))
      if (g.act == msg::action::load && g.cells.chunk_begin <= 2 && g.cells.chunk_end > 2)
        lowest = std::min(lowest, g.cells.layer_begin);
    return lowest;
  };
  auto warm = first_load_layer(true), cold = first_load_layer(false);
  BOOST_TEST(warm > 0u);
  BOOST_TEST(warm < layers32);
  BOOST_TEST((cold == 0u || cold == layers32));
}

// Two remote nodes, one fast and one slow: two_pointer plans each chunk at
// the rate of the node that holds it, so a prompt held by the fast node
// loads more of its prefix than the same prompt held by the slow one, and
// a prompt with no links plans at the tier's rate.
BOOST_AUTO_TEST_CASE(two_pointer_plans_each_node_at_its_own_rate) {
  cost_model m;
  warm_compute(m, 23.2e-3 / 32);
  auto sample = [&](double bw, std::uint16_t link) {
    m.observe(
        msg::rate_sample{msg::tier::remote, 100u << 20, static_cast<std::uint64_t>((100u << 20) / bw * 1e9), link});
  };
  sample(25 * gbit, 1);
  sample(5 * gbit, 2);
  sample(10 * gbit, 0);
  auto split = [&](std::uint16_t link) {
    auto reg = remote_request(17, 16);
    if (link) reg.chunk_links.assign(16, link);
    batch_state b(default_caps());
    b.add(reg);
    auto pol = make_policy("two_pointer", {});
    pol->decide(b, m);
    auto sp = pol->planned_split(1);
    BOOST_REQUIRE(sp);
    return std::uint64_t(sp->chunk) * layers32 + sp->layer;
  };
  auto fast = split(1), slow = split(2), tier = split(0);
  BOOST_TEST_MESSAGE("split at 25 / 10 / 5 Gbit/s: " << fast << " / " << tier << " / " << slow);
  BOOST_TEST(fast < tier);
  BOOST_TEST(tier < slow);
}

// A small model's restore (smollm2-135m on the H100: 0.14 ms a cell, 786 KB
// a cell) from an O_DIRECT disk whose every read also waits 0.3 ms: the
// scheduler, warmed by loads of one and three cells, learns the latency and
// stays within 1.10x of the oracle; a model blind to latency (fitted to the
// three-cell grants' rate, as an average rate would be) commits the split
// chunk to one-cell loads that take half again as long as it planned.
BOOST_AUTO_TEST_CASE(learns_a_links_latency) {
  double worst = 0;
  for (std::uint32_t chunks : {4u, 8u}) {
    truth t;
    t.cell_s = 0.14e-3;
    t.slope_s = 0.01e-3;
    const auto disk = static_cast<std::size_t>(msg::tier::disk);
    t.bw[disk] = 1.5e9;
    t.latency[disk] = 0.3e-3;
    request_spec s;
    s.chunks = chunks;
    s.cached = chunks - 1;
    s.layers = 30;
    s.tier = msg::tier::disk;
    s.chunk_bytes = 30ull * 786432;
    auto warm = [&](bool latency_seen) {
      cost_prior prior;
      prior.cell_s = t.cell_s;
      prior.cell_slope_s = t.slope_s;
      cost_model m(prior);
      const double cell = 786432;
      for (int i = 0; i < 6; ++i) {
        for (double n : {1.0, 3.0}) {
          if (!latency_seen && n == 1.0) continue;
          double secs = t.latency[disk] + n * cell / t.bw[disk];
          m.observe(msg::rate_sample{msg::tier::disk, static_cast<std::uint64_t>(n * cell),
                                     static_cast<std::uint64_t>(secs * 1e9)});
        }
      }
      return m;
    };
    auto run_warm = [&](bool latency_seen) {
      auto pol = make_policy("two_pointer", {});
      harness h(t, default_caps());
      cost_model m = warm(latency_seen);
      msg::cell_done d;  // two compute grants: the first is setup
      d.act = msg::action::compute;
      d.cells = msg::cell_range{0, 1, 0, 8};
      d.started_ns = 1;
      d.finished_ns = 1 + static_cast<std::uint64_t>(8 * t.cell_s * 1e9);
      m.observe(d);
      m.observe(d);
      return h.run(*pol, {s}, m).ttft[0];
    };
    double orc = run_policy("oracle", {s}, t).ttft[0];
    double tp = run_warm(true), blind = run_warm(false);
    double co = run_policy("compute_only", {s}, t).ttft[0];
    std::printf(
        "latency 0.3 ms, %u chunks: oracle %.2f ms, two_pointer %.2f ms (%.3fx), blind to latency %.2f ms (%.3fx), "
        "compute_only %.2f ms\n",
        chunks, orc * 1e3, tp * 1e3, tp / orc, blind * 1e3, blind / orc, co * 1e3);
    worst = std::max(worst, tp / orc);
    BOOST_CHECK_MESSAGE(tp / orc <= 1.10, chunks << " chunks: " << tp / orc);
  }
}

namespace {

// The H200 bench's batch points in the harness: llama-3-8b, 1024-token
// chunks (128 MiB), compute fitted to compute_only through the runtime
// (16k in 0.61 s: 27 ms a chunk at position 0, 1.5 ms more per chunk of
// position), 8 prompts of 4k-16k in whole chunks arriving together, a
// 256-token suffix in the last chunk; the link capped at 0.1 s of its rate
// in flight, as the scheduler does.
struct h200_point {
  const char* name;
  msg::tier tier;
  double bw, latency;
};

const h200_point h200_points[] = {{"10G", msg::tier::disk, 10 * gbit, 0},
                                  {"disk", msg::tier::disk, 1.8e9, 0.3e-3},
                                  {"disk0", msg::tier::disk, 1.8e9, 0}};

scenario h200_batch(const h200_point& pt, std::uint64_t seed) {
  scenario s{pt.name, {}, {}};
  s.t.cell_s = 27e-3 / 32;
  s.t.slope_s = 1.5e-3 / 32;
  s.t.bw[static_cast<std::size_t>(pt.tier)] = pt.bw;
  s.t.latency[static_cast<std::size_t>(pt.tier)] = pt.latency;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint32_t> len(4, 16);
  // Seed 0: the bench's own batch (kvflow bench --contexts 16384 --batch 8, seed 1).
  const std::uint32_t bench[] = {8, 15, 16, 16, 4, 12, 7, 14};
  for (int i = 0; i < 8; ++i) {
    request_spec r = one(seed == 0 ? bench[i] : len(rng), 0, pt.tier)[0];
    r.cached = r.chunks - 1;
    r.chunk_bytes = 2 * chunk64mib;
    s.specs.push_back(r);
  }
  return s;
}

caps h200_caps(const h200_point& pt) {
  caps c = default_caps();
  c.load_bytes.fill(std::min<std::uint64_t>(4 * chunk64mib, static_cast<std::uint64_t>(pt.bw * 0.1)));
  return c;
}

batch_bound bound_of(const scenario& s) {
  std::vector<bound_inputs> in;
  for (auto& r : s.specs) {
    bound_inputs b;
    for (std::uint32_t c = 0; c < r.chunks; ++c) b.chunk_compute_s.push_back(r.layers * (s.t.cell_s + s.t.slope_s * c));
    b.cached = r.cached;
    b.layers = r.layers;
    b.cell_load_s = double(r.chunk_bytes / r.layers) / s.t.bw[static_cast<std::size_t>(r.tier)];
    in.push_back(b);
  }
  return lowest_batch_ttft(in);
}

}  // namespace

// Batch 8 at the H200's points: two_pointer's mean TTFT against
// bidirectional's and the batch bound, p99 no worse than bidirectional's.
BOOST_AUTO_TEST_CASE(h200_batch8_against_bidirectional_and_the_bound) {
  for (auto& pt : h200_points) {
    for (std::uint64_t seed : {0u, 1u, 2u, 3u}) {
      auto s = h200_batch(pt, seed);
      auto c = h200_caps(pt);
      std::map<std::string, outcome> r;
      for (auto& n : policy_names()) r[n] = run_policy(n, s.specs, s.t, c);
      auto& tp = r["two_pointer"];
      auto& bd = cake_at_best(r["bidirectional"], r["bidirectional_fcfs"]);
      auto bound = bound_of(s);
      std::printf(
          "h200 batch 8 %-4s seed %llu: two_pointer %.3f s, Cake/two_pointer %.2fx (p99 %.2fx; round robin "
          "%.2fx, first come first served %.2fx), two_pointer/bound %.2fx, oracle/bound %.2fx, Cake/bound %.2fx, "
          "compute_only %.2fx, load_only %.2fx\n",
          pt.name, (unsigned long long)seed, tp.mean(), bd.mean() / tp.mean(), p99(bd.ttft) / p99(tp.ttft),
          r["bidirectional"].mean() / tp.mean(), r["bidirectional_fcfs"].mean() / tp.mean(),
          tp.mean() / bound.mean_ttft_s, r["oracle"].mean() / bound.mean_ttft_s, bd.mean() / bound.mean_ttft_s,
          r["compute_only"].mean() / tp.mean(), r["load_only"].mean() / tp.mean());
      double last = *std::max_element(bound.ttft_s.begin(), bound.ttft_s.end());
      std::printf("   last: two_pointer/bound %.3fx Cake/bound %.3fx\n", tp.worst() / last, bd.worst() / last);
      // The bound holds for every policy, finishing position by position.
      auto sorted_bound = bound.ttft_s;
      std::sort(sorted_bound.begin(), sorted_bound.end());
      for (auto& [name, o] : r) {
        auto v = o.ttft;
        std::sort(v.begin(), v.end());
        for (std::size_t k = 0; k < v.size(); ++k)
          BOOST_CHECK_MESSAGE(v[k] >= sorted_bound[k] * (1 - 1e-9), name << " " << pt.name << " finisher " << k
                                                                         << " at " << v[k] << " s beats the bound "
                                                                         << sorted_bound[k]);
      }
      // two_pointer sits near the bound; Cake cannot lose more than the
      // bound allows (here 1.2-1.8x), so the bar is relative.
      BOOST_CHECK_MESSAGE(tp.mean() <= 1.12 * bound.mean_ttft_s, pt.name << " seed " << seed << ": two_pointer "
                                                                         << tp.mean() / bound.mean_ttft_s
                                                                         << "x the bound");
      BOOST_CHECK_MESSAGE(bd.mean() / tp.mean() >= 0.9 * bd.mean() / bound.mean_ttft_s,
                          pt.name << " seed " << seed << ": gain over Cake " << bd.mean() / tp.mean() << "x of at most "
                                  << bd.mean() / bound.mean_ttft_s);
      BOOST_CHECK_MESSAGE(tp.worst() <= 1.07 * bd.worst(), pt.name << " seed " << seed << ": last two_pointer "
                                                                   << tp.worst() << " s, Cake " << bd.worst() << " s");
    }
  }
}

// The runtime's conditions of the same batches: compute grants two chunks
// wide under 256 cells (compute_group 2048 tokens of 1024-token chunks),
// and requests registering apart, not at one instant (H200, kvflow bench
// --batch 8: 8 registrations in 1.1 ms). Without the scheduler's admission
// window, the first request plans alone and fills the link's queue (0.1 s
// of it) before the shorter ones arrive; with it (2 ms), the batch is
// planned together. Either way the plan counts every request's work in
// flight on the GPU and the link ahead of the next grant (FIFO). (The
// runtime keeps the window off by default: on the H200 it cost a single
// restore from disk 6%; batch_window/README.md.)
BOOST_AUTO_TEST_CASE(h200_batch8_registering_apart) {
  double worst = 0, worst_without = 0, sum = 0, sum_without = 0;
  for (auto& pt : h200_points) {
    for (std::uint64_t seed : {0u, 1u, 2u, 3u}) {
      auto s = h200_batch(pt, seed);
      for (std::size_t i = 0; i < s.specs.size(); ++i) s.specs[i].arrival = double(i) * 0.15e-3;
      auto c = h200_caps(pt);
      c.compute_group = 2;
      c.compute_cells = 256;
      auto run = [&](double window) {
        auto pol = make_policy("two_pointer", {});
        harness h(s.t, c, window);
        cost_prior p;
        p.bytes_per_s = s.t.bw;
        return h.run(*pol, s.specs, cost_model(p));
      };
      auto with = run(2e-3), without = run(0);
      auto rr = run_policy("bidirectional", s.specs, s.t, c), fcfs = run_policy("bidirectional_fcfs", s.specs, s.t, c);
      auto& cake = cake_at_best(rr, fcfs);
      const double bound = bound_of(s).mean_ttft_s;
      std::printf(
          "h200 batch 8 apart %-4s seed %llu: two_pointer/bound %.3fx with the window, %.3fx without; "
          "Cake/two_pointer %.2fx\n",
          pt.name, (unsigned long long)seed, with.mean() / bound, without.mean() / bound, cake.mean() / with.mean());
      worst = std::max(worst, with.mean() / bound);
      worst_without = std::max(worst_without, without.mean() / bound);
      sum += with.mean() / bound;
      sum_without += without.mean() / bound;
      // The disk's 0.3 ms a grant and the two-chunk grants cost most here
      // (registering together with one-chunk grants: 1.02-1.08x).
      BOOST_CHECK_MESSAGE(with.mean() <= 1.12 * bound,
                          pt.name << " seed " << seed << ": two_pointer " << with.mean() / bound << "x the bound");
      BOOST_CHECK_MESSAGE(with.worst() <= 1.07 * cake.worst(), pt.name << " seed " << seed << ": last two_pointer "
                                                                       << with.worst() << " s, Cake " << cake.worst()
                                                                       << " s");
    }
  }
  std::printf("h200 batch 8 apart: worst two_pointer/bound %.3fx with the window, %.3fx without\n", worst,
              worst_without);
  BOOST_CHECK_MESSAGE(sum < sum_without, "the window gained nothing: " << sum << " against " << sum_without);
}

// A link with a fixed latency per grant (a disk read's, a pacer's): a warm
// two_pointer, which has learned the latency, loads a chunk's layers in
// grants long enough to amortise it (with one-layer grants: 1.06-1.28x the
// bound at 0.3-1 ms; now 1.03-1.13x).
BOOST_AUTO_TEST_CASE(warm_two_pointer_amortises_load_latency) {
  for (double lat : {0.3e-3, 1e-3}) {
    for (double bw : {1.8e9, 10 * gbit, 25 * gbit}) {
      truth t;
      t.cell_s = 27e-3 / 32;
      t.slope_s = 1.5e-3 / 32;
      t.bw[static_cast<std::size_t>(msg::tier::disk)] = bw;
      t.latency[static_cast<std::size_t>(msg::tier::disk)] = lat;
      cost_prior prior;
      prior.bytes_per_s[static_cast<std::size_t>(msg::tier::disk)] = bw;
      prior.cell_s = t.cell_s;
      prior.cell_slope_s = t.slope_s;
      cost_model warm(prior);
      const double cell = 4u << 20;
      for (int i = 0; i < 6; ++i)
        for (double n : {1.0, 4.0})
          warm.observe(msg::rate_sample{msg::tier::disk, static_cast<std::uint64_t>(n * cell),
                                        static_cast<std::uint64_t>((lat + n * cell / bw) * 1e9)});
      msg::cell_done d;
      d.act = msg::action::compute;
      d.cells = msg::cell_range{0, 2, 0, 32};
      d.started_ns = 1;
      d.finished_ns = 1 + static_cast<std::uint64_t>(2 * 32 * (t.cell_s + 0.5 * t.slope_s) * 1e9);
      warm.observe(d);  // setup, ignored
      warm.observe(d);
      auto spec = one(16, 15, msg::tier::disk);
      spec[0].chunk_bytes = 2 * chunk64mib;
      h200_point pt{"latency", msg::tier::disk, bw, lat};
      auto pol = make_policy("two_pointer", {});
      harness h(t, h200_caps(pt));
      auto o = h.run(*pol, spec, warm);
      auto bound = bound_of(scenario{"latency", t, spec});
      std::printf("load latency %.1f ms at %.2f GB/s: two_pointer %.3f s = %.3fx the bound\n", lat * 1e3, bw / 1e9,
                  o.ttft[0], o.ttft[0] / bound.mean_ttft_s);
      BOOST_CHECK_MESSAGE(o.ttft[0] <= 1.15 * bound.mean_ttft_s,
                          lat * 1e3 << " ms, " << bw / 1e9 << " GB/s: " << o.ttft[0] / bound.mean_ttft_s);
    }
  }
}

// Compute grants that spend 20-50 ms beyond their GPU work on the way (the
// gpu actor runs a decode step of other requests before each: kvflow serve's
// rag at 2 requests/s, where two_pointer lost to load_only): once
// two_pointer has learned the trip it keeps enough compute in flight to
// cover it, and stays ahead of both single resources and of bidirectional's
// batch. (With the quarter-chunk queue alone: 50 ms, batch 1 1.106 s against
// compute_only's 0.750 s.)
BOOST_AUTO_TEST_CASE(two_pointer_covers_compute_trips) {
  for (double trip : {0.02, 0.05}) {
    for (auto& pt : h200_points) {
      if (std::string(pt.name) == "disk0") continue;
      auto s = h200_batch(pt, 0);
      s.t.gpu_round_trip = trip;
      auto c = h200_caps(pt);
      for (int b : {1, 8}) {
        std::vector<request_spec> specs = s.specs;
        if (b == 1) {
          specs = one(16, 15, pt.tier);
          specs[0].chunk_bytes = 2 * chunk64mib;
        }
        std::map<std::string, double> mean;
        for (auto n : {"compute_only", "load_only", "bidirectional", "two_pointer"})
          mean[n] = run_policy(n, specs, s.t, c).mean();
        std::printf(
            "compute trip %.0f ms, %-4s batch %d: two_pointer %.3f s, compute_only %.3f, load_only %.3f, "
            "bidirectional %.3f\n",
            trip * 1e3, pt.name, b, mean["two_pointer"], mean["compute_only"], mean["load_only"],
            mean["bidirectional"]);
        BOOST_CHECK_MESSAGE(
            mean["two_pointer"] < std::min(mean["compute_only"], mean["load_only"]),
            trip << " s trip, " << pt.name << " batch " << b << ": two_pointer " << mean["two_pointer"]);
        if (b > 1)
          BOOST_CHECK_MESSAGE(mean["two_pointer"] * 1.3 < mean["bidirectional"],
                              trip << " s trip, " << pt.name << ": two_pointer " << mean["two_pointer"]
                                   << ", bidirectional " << mean["bidirectional"]);
      }
    }
  }
}

// A link whose every grant pays a fixed latency (an O_DIRECT read per chunk
// and the actors' round trip), restored cold: with the tier's latency as a
// prior, two_pointer's grants of a claimed chunk span several layers from
// the first tick (fewer grants, each paying the latency once), where
// without it every grant is one layer until samples of several sizes have
// measured the latency.
BOOST_AUTO_TEST_CASE(a_latency_prior_makes_load_grants_deep_from_the_start) {
  truth t;
  t.cell_s = 27e-3 / 32;
  t.slope_s = 1.5e-3 / 32;
  const auto disk = static_cast<std::size_t>(msg::tier::disk);
  t.bw[disk] = 1.8e9;
  t.latency[disk] = 0.5e-3;
  auto spec = one(64, 63, msg::tier::disk);
  spec[0].chunk_bytes = 32u << 20;  // 256-token chunks of llama-3-8b: 1 MiB cells
  for (const std::string name : {"two_pointer"}) {
    cost_prior cold;
    cold.bytes_per_s = t.bw;
    cold.cell_s = t.cell_s;
    cold.cell_slope_s = t.slope_s;
    cost_prior told = cold;
    told.latency_s[disk] = t.latency[disk];
    auto without = run_policy(name, spec, t, default_caps(), {}, cold);
    auto with = run_policy(name, spec, t, default_caps(), {}, told);
    std::printf("%s cold, 0.5 ms a grant: %.3f s in %llu grants without the latency prior, %.3f s in %llu with it\n",
                name.c_str(), without.ttft[0], static_cast<unsigned long long>(without.grants), with.ttft[0],
                static_cast<unsigned long long>(with.grants));
    BOOST_TEST_CONTEXT(name) {
      BOOST_CHECK_LT(with.grants, without.grants);
      BOOST_CHECK_LT(with.ttft[0], 0.95 * without.ttft[0]);
    }
  }
}

#define BOOST_TEST_MODULE actors.faults
#include <boost/test/unit_test.hpp>

// What kvflow promises under faults (README, "What kvflow promises under
// faults"): each case injects one fault into a CPU runtime of the tiny
// preset and ends with the request's output equal to a full recompute and
// every pool counter (requests, loads in flight, disk reads and writes, host
// leases, staging buffers, open descriptors) back at its baseline.

#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "actors/runtime.hpp"
#include "messages/error.hpp"
#include "tests/actors/restore_reference.hpp"

extern char** environ;

using namespace kvflow;
using namespace std::chrono_literals;

namespace kvflow {
// Found by argument-dependent lookup from Boost.Test's messages.
std::ostream& operator<<(std::ostream& out, const resource_counters& c) {
  return out << "requests " << c.requests << ", loads " << c.loads_in_flight << ", disk reads " << c.disk_reads
             << ", disk writes " << c.disk_writes << ", host leases " << c.host_leases << ", staging "
             << c.staging_buffers << " (" << c.staging_bytes << " B), fds " << c.open_fds;
}
}  // namespace kvflow

namespace {

constexpr int chunk = 16;
constexpr std::uint64_t seed = 7;

// The generated tokens of a fresh, fault-free runtime that computes
// everything: with full_prefill's digest, the output a faulty run must equal.
struct recompute {
  reference ref;
  std::vector<std::int32_t> generated;
};

submit_options restore_options(const std::string& policy = "load_only") {
  auto so = checked_restore(policy);
  so.max_new_tokens = 4;
  return so;
}

// The tiny preset on the CPU, chunks of `chunk` tokens, a disk tier in
// `disk_dir` and no host tier.
runtime_options tiny_options(const std::string& disk_dir) {
  runtime_options o;
  o.preset = "tiny-test";
  o.backend = "cpu";
  o.seed = seed;
  o.chunk_tokens = chunk;
  o.host_tier_gb = 0;
  o.disk_dir = disk_dir;
  return o;
}

recompute full_recompute(const std::vector<std::int32_t>& tokens) {
  temp_dir dir("faults-ref");
  auto o = cpu_options("tiny-test", chunk, dir, 0);
  o.seed = seed;
  runtime rt(o);
  auto r = rt.submit(tokens, restore_options("compute_only")).get();
  return {full_prefill("tiny-test", seed, tokens, chunk), r.tokens};
}

void check_equals_recompute(const restore_report& r, const recompute& want) {
  BOOST_CHECK_EQUAL(r.kv_sha256, want.ref.kv_sha256);
  BOOST_CHECK_EQUAL(r.first_token, want.ref.first_token);
  BOOST_CHECK(r.tokens == want.generated);
}

// `fresh_spares`: a tier actor was started again since `b`, with its
// initial spare staging buffers only: staging may then be below `b`, never above.
bool same(const resource_counters& a, const resource_counters& b, bool fresh_spares = false) {
  const bool staging = fresh_spares ? a.staging_buffers <= b.staging_buffers && a.staging_bytes <= b.staging_bytes
                                    : a.staging_buffers == b.staging_buffers && a.staging_bytes == b.staging_bytes;
  return a.requests == b.requests && a.loads_in_flight == b.loads_in_flight && a.disk_reads == b.disk_reads &&
         a.disk_writes == b.disk_writes && a.host_leases == b.host_leases && staging && a.open_fds == b.open_fds;
}

// Flushes, then waits (a few seconds at most) for I/O that outlives its
// request (a killed tier's reads) to end; checks every counter is back.
void check_counters_back(runtime& rt, const resource_counters& base, bool fresh_spares = false) {
  rt.flush();
  auto until = std::chrono::steady_clock::now() + 10s;
  auto now = rt.counters();
  while (!same(now, base, fresh_spares) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
    now = rt.counters();
  }
  BOOST_TEST_INFO("baseline: " << base);
  BOOST_TEST_INFO("now:      " << now);
  BOOST_CHECK(same(now, base, fresh_spares));
}

// A runtime whose disk tier holds `tokens`' chunks, and its counters after
// a warm-up restore of another prompt (staging buffers made, files open
// once): the baseline every case returns to.
struct rig {
  temp_dir dir;
  std::vector<std::int32_t> tokens;
  recompute want;
  std::unique_ptr<runtime> rt;
  resource_counters base;

  // `warm_policy`: of the warm-up restore (compute_only where loads stall).
  rig(const std::string& name, runtime_options o, int prompt_chunks = 8, const std::string& warm_policy = "load_only",
      double host_gb = 0)
      : dir("faults-" + name) {
    std::mt19937 rng(11);
    tokens = random_tokens(rng, prompt_chunks * chunk + 5, 512);
    want = full_recompute(tokens);
    auto base_opts = cpu_options("tiny-test", chunk, dir, host_gb);
    o.preset = base_opts.preset;
    o.backend = base_opts.backend;
    o.chunk_tokens = chunk;
    o.host_tier_gb = host_gb;
    o.disk_dir = o.disk_dir.empty() ? dir.path : o.disk_dir;
    o.seed = seed;
    rt = std::make_unique<runtime>(o);
    auto warm = random_tokens(rng, prompt_chunks * chunk + 5, 512);
    store(warm);
    rt->submit(warm, restore_options(warm_policy)).get();
    store(tokens);
    rt->flush();
    base = rt->counters();
  }
  void store(const std::vector<std::int32_t>& t) {
    submit_options so;
    so.max_new_tokens = 1;
    so.policy = "compute_only";
    rt->submit(t, so).get();
    rt->flush();
  }
};

std::size_t files_with(const std::string& dir, const std::string& part) {
  std::size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().find(part) != std::string::npos) ++n;
  return n;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_disk_read_error_recomputes_the_chunk) {
  runtime_options o;
  o.faults = "disk_read_error=1";
  rig g("eio", o);
  auto files = files_with(g.dir.path, ".kvc");
  auto r = g.rt->submit(g.tokens, restore_options()).get();
  check_equals_recompute(r, g.want);
  // The first attempt lost its chunks to EIO, dropped them and restored again.
  BOOST_CHECK_EQUAL(r.cells_loaded, 0u);
  BOOST_CHECK_LT(files_with(g.dir.path, ".kvc"), files);
  check_counters_back(*g.rt, g.base);
}

BOOST_AUTO_TEST_CASE(a_file_truncated_under_its_reader_is_a_miss) {
  runtime_options o;
  o.faults = "disk_truncate=1";
  rig g("truncate", o);
  auto r = g.rt->submit(g.tokens, restore_options()).get();
  check_equals_recompute(r, g.want);
  BOOST_CHECK_EQUAL(r.cells_loaded, 0u);
  check_counters_back(*g.rt, g.base);
}

BOOST_AUTO_TEST_CASE(an_injected_full_disk_stores_nothing_and_recomputes) {
  runtime_options o;
  o.faults = "disk_write_full=1";
  rig g("enospc", o);
  // Every write failed after its header: no chunk file, no half-written one.
  BOOST_CHECK_EQUAL(files_with(g.dir.path, ".kvc"), 0u);
  auto r = g.rt->submit(g.tokens, restore_options()).get();
  check_equals_recompute(r, g.want);
  BOOST_CHECK_EQUAL(r.cached_chunks, 0u);
  check_counters_back(*g.rt, g.base);
}

// A real full file system: a 256 KiB tmpfs holds about twelve 20 KiB chunk
// files: the warm-up prompt's eight and a few of the next prompt's. Needs
// root (mount); skipped without.
BOOST_AUTO_TEST_CASE(a_real_full_disk_keeps_only_whole_chunks) {
  temp_dir mnt("tmpfs");
  std::filesystem::create_directories(mnt.path);
  if (::mount("tmpfs", mnt.path.c_str(), "tmpfs", 0, "size=256k") != 0) {
    BOOST_TEST_MESSAGE("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << ")");
    return;
  }
  {
    runtime_options o;
    o.disk_dir = mnt.path + "/cache";
    rig g("tmpfs", o);
    // Some of this prompt's chunks found no room; none is left half written.
    auto whole = files_with(o.disk_dir, ".kvc");
    BOOST_CHECK_GT(whole, 8u);
    BOOST_CHECK_LT(whole, 16u);
    BOOST_CHECK_EQUAL(files_with(o.disk_dir, ".tmp."), 0u);
    auto r = g.rt->submit(g.tokens, restore_options()).get();
    check_equals_recompute(r, g.want);
    BOOST_CHECK_GT(r.cached_chunks, 0u);
    BOOST_CHECK_LT(r.cached_chunks, 8u);
    check_counters_back(*g.rt, g.base);
  }
  BOOST_CHECK_EQUAL(::umount(mnt.path.c_str()), 0);
}

// A tier that never answers a load grant: the grant's deadline ends the
// request with deadline_exceeded, and nothing stays held.
BOOST_AUTO_TEST_CASE(a_stuck_tier_fails_the_request_at_its_deadline) {
  runtime_options o;
  o.faults = "tier_stall=1";
  o.step_timeout_s = 0.5;
  rig g("stall", o, 4, "compute_only");
  auto start = std::chrono::steady_clock::now();
  try {
    g.rt->submit(g.tokens, restore_options()).get();
    BOOST_FAIL("a request loading from a stuck tier succeeded");
  } catch (const error& e) {
    BOOST_TEST_MESSAGE(e.what());
    BOOST_CHECK(e.code() == errc::deadline_exceeded);
    BOOST_CHECK(std::string(e.what()).find("deadline") != std::string::npos);
  }
  auto waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_CHECK_GE(waited, 0.45);
  BOOST_CHECK_LT(waited, 5.0);
  // A compute-only request does not touch the stuck tier: the output is right.
  auto r = g.rt->submit(g.tokens, restore_options("compute_only")).get();
  check_equals_recompute(r, g.want);
  check_counters_back(*g.rt, g.base);
}

// The request's own deadline, shorter than the step's: it ends first.
BOOST_AUTO_TEST_CASE(a_request_deadline_ends_a_request_waiting_on_a_stuck_tier) {
  runtime_options o;
  o.faults = "tier_stall=1";
  rig g("deadline", o, 4, "compute_only");
  auto so = restore_options();
  so.deadline_s = 0.3;
  auto start = std::chrono::steady_clock::now();
  BOOST_CHECK_EXCEPTION(g.rt->submit(g.tokens, so).get(), error,
                        [](const error& e) { return e.code() == errc::deadline_exceeded; });
  auto waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_CHECK_LT(waited, 5.0);
  check_counters_back(*g.rt, g.base);
}

// Every completion sent twice, the copy after later ones (the disk tier's
// read completions and the request's cellDone to the scheduler): each grant
// counts once and concurrent restores stay exact.
BOOST_AUTO_TEST_CASE(duplicated_and_reordered_completions_count_once) {
  runtime_options o;
  o.faults = "duplicate_completion=1";
  rig g("dup", o);
  for (const auto& policy : all_policies) {
    BOOST_TEST_CONTEXT(policy) {
      std::vector<std::future<restore_report>> running;
      for (int i = 0; i < 3; ++i) running.push_back(g.rt->submit(g.tokens, restore_options(policy)));
      for (auto& f : running) {
        auto r = f.get();
        check_equals_recompute(r, g.want);
        BOOST_CHECK_EQUAL(r.cells_computed + r.cells_loaded, r.chunks * 4u);
      }
    }
  }
  BOOST_CHECK_GT(g.rt->counters().faults_injected, 0u);
  check_counters_back(*g.rt, g.base);
}

// The disk tier's actor killed while a paced load is on the link: the
// request restores again with the new tier actor; the old reads end and
// free their buffers.
BOOST_AUTO_TEST_CASE(a_tier_actor_killed_mid_load_restores_again) {
  rig g("kill", runtime_options{});
  // About 0.25 s a chunk: the load is surely in flight when the kill comes.
  g.rt->set_disk_rate(0.0005);
  auto f = g.rt->submit(g.tokens, restore_options());
  auto until = std::chrono::steady_clock::now() + 10s;
  while (g.rt->counters().loads_in_flight == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  BOOST_REQUIRE_GT(g.rt->counters().loads_in_flight, 0);
  g.rt->restart_tier("disk");
  g.rt->set_disk_rate(0);
  auto r = f.get();
  check_equals_recompute(r, g.want);
  check_counters_back(*g.rt, g.base, true);
  BOOST_CHECK_THROW(g.rt->restart_tier("remote"), error);
}

// The child role of the next case (this binary run again with
// KVFLOW_FAULT_CHILD=DIR): stores a prompt of 24 chunks in DIR with writes
// paced to about 5 chunks a second, and is killed in the middle of it.
struct child_role {
  child_role() {
    const char* dir = std::getenv("KVFLOW_FAULT_CHILD");
    if (dir == nullptr) return;
    auto o = tiny_options(dir);
    o.disk_write_gbps = 0.0008;
    {
      runtime rt(o);
      std::mt19937 rng(12);
      submit_options so;
      so.max_new_tokens = 1;
      so.policy = "compute_only";
      rt.submit(random_tokens(rng, 24 * chunk + 5, 512), so).get();
      rt.flush();
    }
    std::_Exit(0);
  }
};
BOOST_TEST_GLOBAL_FIXTURE(child_role);

BOOST_AUTO_TEST_CASE(a_process_killed_during_a_store_serves_its_whole_chunks_after) {
  temp_dir dir("sigkill");
  std::filesystem::create_directories(dir.path);
  std::string env_dir = "KVFLOW_FAULT_CHILD=" + dir.path;
  std::vector<char*> env{const_cast<char*>(env_dir.c_str())};
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  env.push_back(nullptr);
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  char* argv[] = {const_cast<char*>(self.c_str()), nullptr};
  pid_t child = 0;
  BOOST_REQUIRE_EQUAL(::posix_spawn(&child, self.c_str(), nullptr, nullptr, argv, env.data()), 0);
  // Killed once a few chunks are whole and the next one is half written.
  // Whole and half-written files are counted from one listing: counted in
  // two, a file the child creates in between made "whole" wrap below zero.
  auto until = std::chrono::steady_clock::now() + 20s;
  std::size_t whole = 0, half = 0;
  for (;;) {
    whole = half = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path)) {
      auto name = e.path().filename().string();
      if (name.find(".tmp.") != std::string::npos)
        ++half;
      else if (name.size() > 4 && name.compare(name.size() - 4, 4, ".kvc") == 0)
        ++whole;
    }
    if ((whole >= 4 && half > 0) || std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(2ms);
  }
  BOOST_CHECK_EQUAL(::kill(child, SIGKILL), 0);
  int status = 0;
  ::waitpid(child, &status, 0);
  BOOST_REQUIRE(WIFSIGNALED(status));
  BOOST_REQUIRE_GE(whole, 4u);
  BOOST_REQUIRE_LT(whole, 24u);
  BOOST_TEST_MESSAGE("killed with " << whole << " whole chunk files and " << files_with(dir.path, ".tmp.")
                                    << " half-written");

  std::mt19937 rng(12);
  auto tokens = random_tokens(rng, 24 * chunk + 5, 512);
  auto want = full_recompute(tokens);
  runtime rt(tiny_options(dir.path));
  // The restart removed the half-written file and serves the whole ones.
  BOOST_CHECK_EQUAL(files_with(dir.path, ".tmp."), 0u);
  auto base = rt.counters();
  auto r = rt.submit(tokens, restore_options()).get();
  check_equals_recompute(r, want);
  BOOST_CHECK_GE(r.cached_chunks, whole);
  BOOST_CHECK_GT(r.cells_loaded, 0u);
  rt.flush();
  auto now = rt.counters();
  BOOST_CHECK_EQUAL(now.requests, base.requests);
  BOOST_CHECK_EQUAL(now.loads_in_flight, 0);
  BOOST_CHECK_EQUAL(now.disk_reads, 0);
  BOOST_CHECK_EQUAL(now.host_leases, 0);
}

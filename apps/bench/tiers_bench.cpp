// kvflow_tiers_bench: the storage tiers against their raw baselines, same run.
//   host pool -> GPU   vs a plain cudaMemcpyAsync from pinned memory
//   disk -> GPU        vs a raw O_DIRECT read of the same bytes, same depth
//   paced host tier    at 1, 10, 25 Gbit/s vs the set rate
// Writes tiers.json and tiers.md under --out.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "devices/disk/disk_store.hpp"
#include "devices/host/host_pool.hpp"
#include "devices/keys.hpp"
#include "devices/rate_limiter.hpp"
#include "messages/kv_shape.hpp"
#include "messages/log.hpp"

#ifdef KVFLOW_HAVE_CUDA
#include "devices/gpu/gpu_pool.hpp"
#include "platform/cuda.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_copy.hpp"
#endif

using namespace kvflow;
using namespace kvflow::devices;
using bench_clock = std::chrono::steady_clock;

namespace {

struct record {
  std::string path;
  double gbps = 0, baseline_gbps = 0;
  std::uint64_t bytes = 0;
  std::string acceptance;
  bool pass = false;
};

double seconds_since(bench_clock::time_point t) {
  return std::chrono::duration<double>(bench_clock::now() - t).count();
}
double gbit(std::uint64_t bytes, double secs) { return static_cast<double>(bytes) * 8 / secs / 1e9; }

#ifdef KVFLOW_HAVE_CUDA

// llama-3-8b: 256 tokens x 32 layers x 8 kv heads x 128 dims x K,V x bf16 = 32 MiB.
const model::kv_shape llama_shape{32, 8, 256, 128, model::dtype::bf16};

std::vector<msg::chunk_key> bench_keys(std::size_t n) {
  model_fingerprint fp{};
  fp.fill(0x8b);
  std::vector<std::int32_t> tokens(n * 256);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>(i * 7919 % 128000);
  return chunk_keys(fp, "bench", tokens, 256);
}

void fill_pattern(std::uint8_t* p, std::size_t n, std::uint32_t seed) {
  auto* w = reinterpret_cast<std::uint64_t*>(p);
  std::uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (std::size_t i = 0; i < n / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w[i] = x;
  }
}

// Host pool -> GPU: a lease per chunk and one copy per chunk block.
double host_to_gpu(host_pool& pool, const std::vector<msg::chunk_key>& keys, gpu_pool& gpu, cudaStream_t s) {
  std::vector<host_block> leases;
  std::vector<platform::copy_ticket> tickets;
  leases.reserve(keys.size());
  tickets.reserve(keys.size());
  const auto t0 = bench_clock::now();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    leases.push_back(pool.acquire(keys[i]));
    tickets.push_back(platform::copy_to_device(gpu.data(static_cast<std::int64_t>(i % gpu.block_count())),
                                               leases.back().data(), pool.block_bytes(), s));
  }
  for (auto& t : tickets) t.wait();
  return seconds_since(t0);
}

// Baseline: the same bytes from one plain pinned buffer, one cudaMemcpyAsync each.
double plain_pinned_to_gpu(const std::uint8_t* pinned, std::size_t chunks, std::size_t bytes, gpu_pool& gpu,
                           cudaStream_t s) {
  const auto t0 = bench_clock::now();
  for (std::size_t i = 0; i < chunks; ++i)
    platform::enqueue_copy(gpu.data(static_cast<std::int64_t>(i % gpu.block_count())), pinned + i * bytes, bytes,
                           cudaMemcpyHostToDevice, s);
  KVFLOW_CUDA_CHECK(cudaStreamSynchronize(s));
  return seconds_since(t0);
}

// The last chunk copied must match its host block.
void check_last_chunk(gpu_pool& gpu, host_pool& pool, const std::vector<msg::chunk_key>& keys, std::size_t bytes,
                      cudaStream_t s, const char* path) {
  std::vector<std::uint8_t> back(bytes);
  const std::size_t last = keys.size() - 1;
  platform::copy_to_host(back.data(), gpu.data(static_cast<std::int64_t>(last % gpu.block_count())), bytes, s).wait();
  host_block b = pool.acquire(keys[last]);
  if (std::memcmp(back.data(), b.data(), bytes) != 0) std::printf("ERROR: %s copy differs\n", path);
}

// Disk -> GPU through the disk tier: one O_DIRECT read per chunk into a
// pinned staging slot, checksum checks, one cudaMemcpyAsync per span.
double disk_to_gpu(disk_store& disk, const std::vector<msg::chunk_key>& keys, gpu_pool& gpu, cudaStream_t s,
                   unsigned depth, std::size_t& misses) {
  const layer_range all{0, static_cast<std::uint32_t>(llama_shape.layers)};
  struct slot {
    pinned_buffer staging;
    std::future<void> read;
    platform::copy_ticket copy;
    bool busy = false;
  };
  std::vector<slot> slots(depth);
  for (auto& sl : slots) sl.staging = pinned_buffer(disk.staging_bytes(all));
  std::atomic<std::size_t> missed{0};
  auto settle = [](slot& sl) {
    if (!sl.busy) return;
    sl.read.get();
    sl.copy.wait();
    sl.busy = false;
  };
  const auto t0 = bench_clock::now();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    slot& sl = slots[i % depth];
    settle(sl);
    auto done = std::make_shared<std::promise<void>>();
    sl.read = done->get_future();
    sl.busy = true;
    std::uint8_t* dst = gpu.data(static_cast<std::int64_t>(i % gpu.block_count()));
    disk.read_async(keys[i], all, sl.staging.data(),
                    [&sl, done, dst, s, &missed](bool ok, const std::uint8_t* data, std::size_t n) {
                      if (ok)
                        sl.copy = platform::copy_to_device(dst, data, n, s);
                      else
                        ++missed;
                      done->set_value();
                    });
  }
  for (auto& sl : slots) settle(sl);
  misses = missed;
  return seconds_since(t0);
}

// Baseline: raw O_DIRECT reads of the same payload bytes at the same depth,
// nothing else (no checks, no copies).
double raw_direct_read(const disk_store& disk, const std::vector<msg::chunk_key>& keys, unsigned depth,
                       std::size_t bytes) {
  auto engine = io_engine::create(disk.options().use_io_uring, depth);
  std::vector<pinned_buffer> bufs;
  for (unsigned i = 0; i < depth; ++i) bufs.emplace_back(align_up(bytes));
  std::vector<std::future<long long>> pending(depth);
  std::vector<platform::unique_fd> fds(depth);
  auto settle = [&](unsigned k) {
    if (!pending[k].valid()) return;
    if (pending[k].get() < static_cast<long long>(bytes)) std::fprintf(stderr, "raw read short\n");
    fds[k].reset();
  };
  const auto t0 = bench_clock::now();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const unsigned k = static_cast<unsigned>(i % depth);
    settle(k);
    const std::string path = disk.options().directory + "/" + key_hex(keys[i]) + ".kvc";
    fds[k] = open_for_read(path, true);
    auto p = std::make_shared<std::promise<long long>>();
    pending[k] = p->get_future();
    engine->read(fds[k].get(), bufs[k].data(), align_up(bytes), chunk_header_bytes,
                 [p](long long r) { p->set_value(r); });
  }
  for (unsigned k = 0; k < depth; ++k) settle(k);
  return seconds_since(t0);
}

// A paced host tier: layer-range copies of `piece` bytes through a limiter.
double paced_host_to_gpu(host_pool& pool, const std::vector<msg::chunk_key>& keys, gpu_pool& gpu, cudaStream_t s,
                         rate_limiter& lim, std::uint64_t total, std::size_t piece) {
  std::vector<platform::copy_ticket> tickets;
  std::uint64_t moved = 0;
  std::size_t i = 0;
  const auto t0 = bench_clock::now();
  while (moved < total) {
    host_block b = pool.acquire(keys[i % keys.size()]);
    const std::size_t off = (i * piece) % pool.block_bytes();
    lim.acquire(piece);
    tickets.push_back(platform::copy_to_device(gpu.data(static_cast<std::int64_t>(i % gpu.block_count())) + off,
                                               b.data() + off, piece, s));
    if (tickets.size() > 64) {
      tickets.front().wait();
      tickets.erase(tickets.begin());
    }
    moved += piece;
    ++i;
  }
  for (auto& t : tickets) t.wait();
  return seconds_since(t0);
}

#endif  // KVFLOW_HAVE_CUDA

void write_results(const std::string& out, const std::string& device, const std::vector<record>& recs,
                   const std::string& notes) {
  std::filesystem::create_directories(out);
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : recs)
    j.push_back({{"path", r.path},
                 {"gbps", r.gbps},
                 {"baseline_gbps", r.baseline_gbps},
                 {"ratio", r.baseline_gbps > 0 ? r.gbps / r.baseline_gbps : 0.0},
                 {"bytes", r.bytes},
                 {"device", device},
                 {"acceptance", r.acceptance},
                 {"pass", r.pass}});
  std::ofstream(out + "/tiers.json") << j.dump(2) << "\n";
  std::ofstream md(out + "/tiers.md");
  md << "# Storage tiers on " << device << "\n\n"
     << "Rates in Gbit/s (1e9 bits/s); each path against its baseline in the same run (best of the reps).\n\n"
     << "| path | Gbit/s | baseline Gbit/s | ratio | bytes | acceptance | pass |\n"
     << "|---|---:|---:|---:|---:|---|---|\n";
  char buf[512];
  for (const auto& r : recs) {
    std::snprintf(buf, sizeof buf, "| %s | %.2f | %.2f | %.3f | %llu | %s | %s |\n", r.path.c_str(), r.gbps,
                  r.baseline_gbps, r.baseline_gbps > 0 ? r.gbps / r.baseline_gbps : 0.0,
                  static_cast<unsigned long long>(r.bytes), r.acceptance.c_str(), r.pass ? "yes" : "NO");
    md << buf;
  }
  md << "\n" << notes << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvflow_tiers_bench: host, disk and paced tiers against raw baselines"};
  std::string out = "apps/bench/results";
  std::string dir = "/tmp/kvflow-tiers-bench";
  std::size_t chunks = 64;
  unsigned depth = 4;
  int reps = 3;
  bool uring = true;
  double pace_seconds = 1.0;
  app.add_option("--out", out, "folder for tiers.json and tiers.md");
  app.add_option("--dir", dir, "cache folder for the disk tier (emptied first)");
  app.add_option("--chunks", chunks, "chunks of 32 MiB (llama-3-8b, 256 tokens)")->check(CLI::Range(4, 4096));
  app.add_option("--depth", depth, "reads in flight")->check(CLI::Range(1, 64));
  app.add_option("--reps", reps, "repetitions of each measurement (best is kept)")->check(CLI::Range(1, 20));
  app.add_option("--pace-seconds", pace_seconds, "duration of each paced run");
  app.add_flag("!--no-uring", uring, "use the pread pool instead of io_uring");
  CLI11_PARSE(app, argc, argv);

#ifndef KVFLOW_HAVE_CUDA
  std::printf("kvflow_tiers_bench: built without CUDA, nothing to measure\n");
  return 77;
#else
  if (!platform::cuda_device_available()) {
    std::printf("kvflow_tiers_bench: no CUDA device found, nothing to measure\n");
    return 77;
  }
  init_logging("warn");
  cudaDeviceProp prop{};
  KVFLOW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::string device = prop.name;
  const std::size_t bytes = llama_shape.bytes();
  const std::uint64_t total = static_cast<std::uint64_t>(bytes) * chunks;
  const auto keys = bench_keys(chunks);
  std::printf("device %s, %zu chunks of %zu MiB (%.2f GiB), depth %u\n", device.c_str(), chunks, bytes >> 20,
              static_cast<double>(total) / (1ull << 30), depth);

  cudaStream_t stream;
  KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  gpu_pool gpu(0, 16 * bytes, bytes);
  std::vector<record> recs;

  // Host pool, filled with distinct chunks.
  host_pool pool(chunks * bytes, bytes);
  {
    pinned_buffer src(bytes);
    for (std::size_t i = 0; i < chunks; ++i) {
      fill_pattern(src.data(), bytes, static_cast<std::uint32_t>(i));
      pool.put(keys[i], layer_range{0, 32}, llama_shape.layer_bytes(), src.data());
    }
  }
  pinned_buffer plain(total);
  std::memcpy(plain.data(), pool.arena(), total);
  std::printf("host pool pinned: %s, plain buffer pinned: %s\n", pool.pinned() ? "yes" : "no",
              plain.pinned() ? "yes" : "no");
  host_to_gpu(pool, keys, gpu, stream);  // warm up
  plain_pinned_to_gpu(plain.data(), chunks, bytes, gpu, stream);
  double best_pool = 1e30, best_plain = 1e30;
  for (int r = 0; r < reps; ++r) {
    best_plain = std::min(best_plain, plain_pinned_to_gpu(plain.data(), chunks, bytes, gpu, stream));
    best_pool = std::min(best_pool, host_to_gpu(pool, keys, gpu, stream));
  }
  check_last_chunk(gpu, pool, keys, bytes, stream, "host -> GPU");
  record hr;
  hr.path = "host_pool->gpu";
  hr.gbps = gbit(total, best_pool);
  hr.baseline_gbps = gbit(total, best_plain);
  hr.bytes = total;
  hr.acceptance = ">= 0.90 of plain pinned cudaMemcpyAsync";
  hr.pass = hr.gbps >= 0.9 * hr.baseline_gbps;
  recs.push_back(hr);
  std::printf("%s: %.2f Gbit/s vs %.2f\n", hr.path.c_str(), hr.gbps, hr.baseline_gbps);

  // Disk tier, written through the tier's own path (temp, fsync, rename).
  std::filesystem::remove_all(dir);
  disk_options dopt;
  dopt.directory = dir;
  dopt.fingerprint.fill(0x8b);
  dopt.shape = llama_shape;
  dopt.io_depth = depth;
  dopt.use_io_uring = uring;
  std::string engine;
  {
    disk_store disk(dopt);
    engine = disk.engine_name();
    const auto tw = bench_clock::now();
    for (std::size_t i = 0; i < chunks; ++i) {
      host_block b = pool.acquire(keys[i]);
      disk.write(keys[i], layer_range{0, 32}, b.data());
    }
    std::printf("disk write (fsync each): %.2f Gbit/s, engine %s\n", gbit(total, seconds_since(tw)), engine.c_str());
    double best_disk = 1e30, best_raw = 1e30;
    std::size_t misses = 0;
    for (int r = 0; r < reps; ++r) {
      // Alternate which goes first so neither gains from a warmer device.
      if (r % 2 == 0) {
        best_raw = std::min(best_raw, raw_direct_read(disk, keys, depth, bytes));
        best_disk = std::min(best_disk, disk_to_gpu(disk, keys, gpu, stream, depth, misses));
      } else {
        best_disk = std::min(best_disk, disk_to_gpu(disk, keys, gpu, stream, depth, misses));
        best_raw = std::min(best_raw, raw_direct_read(disk, keys, depth, bytes));
      }
      if (misses != 0) std::printf("ERROR: %zu disk misses\n", misses);
    }
    check_last_chunk(gpu, pool, keys, bytes, stream, "disk -> GPU");
    record dr;
    dr.path = "disk->gpu (" + engine + ", O_DIRECT, depth " + std::to_string(depth) + ")";
    dr.gbps = gbit(total, best_disk);
    dr.baseline_gbps = gbit(total, best_raw);
    dr.bytes = total;
    dr.acceptance = ">= 0.90 of raw O_DIRECT read";
    dr.pass = dr.gbps >= 0.9 * dr.baseline_gbps && misses == 0;
    recs.push_back(dr);
    std::printf("%s: %.2f Gbit/s vs %.2f\n", dr.path.c_str(), dr.gbps, dr.baseline_gbps);
  }
  std::filesystem::remove_all(dir);

  // Paced host tier: 4-layer spans (4 MiB) through the link's clock (devices/rate_limiter).
  for (double set : {1.0, 10.0, 25.0}) {
    rate_limiter lim(rate_limiter::gbit_per_s(set));
    const std::size_t piece = llama_shape.span_bytes(0, 4);
    const auto want = static_cast<std::uint64_t>(rate_limiter::gbit_per_s(set) * pace_seconds);
    const std::uint64_t paced_total = (want + piece - 1) / piece * piece;
    const double secs = paced_host_to_gpu(pool, keys, gpu, stream, lim, paced_total, piece);
    record pr;
    pr.path = "paced host->gpu @" + std::to_string(static_cast<int>(set)) + " Gbit/s";
    pr.gbps = gbit(paced_total, secs);
    pr.baseline_gbps = set;
    pr.bytes = paced_total;
    pr.acceptance = "within 5% of the set rate";
    pr.pass = std::abs(pr.gbps / set - 1) <= 0.05;
    recs.push_back(pr);
    std::printf("%s: %.3f Gbit/s\n", pr.path.c_str(), pr.gbps);
  }

  const std::string notes =
      "Chunks: llama-3-8b, 256 tokens x 32 layers x 8 kv heads x 128 dims x K,V x bf16 = 32 MiB each. "
      "host_pool->gpu: one pinned lease and one cudaMemcpyAsync per chunk block, event per copy; baseline: "
      "cudaMemcpyAsync of the same bytes from one plain cudaHostAlloc buffer. disk->gpu: chunk files written "
      "by the disk tier, each read as one O_DIRECT read into a pinned staging slot, XXH3 of every layer checked, "
      "then one cudaMemcpyAsync; baseline: O_DIRECT reads of the same payload bytes through the same engine and "
      "depth with nothing else. Paced: 4 MiB layer spans through the tier's link clock, measured from the "
      "first grant to the last copy's completion.";
  write_results(out, device, recs, notes);
  KVFLOW_CUDA_CHECK(cudaStreamDestroy(stream));
  bool ok = true;
  for (const auto& r : recs) ok = ok && r.pass;
  std::printf("results in %s: %s\n", out.c_str(), ok ? "all pass" : "SOME FAIL");
  return 0;
#endif
}

#pragma once
// kvflow's embedding API: the one header a service includes to run kvflow's
// actor system in-process, submit prompts and get the first token, TTFT and
// a restore breakdown back.

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace kvflow {

/// Where the model comes from and how restores are scheduled. Defaults run
/// SmolLM2-135M-Instruct on the CPU with a host and a disk tier.
struct runtime_options {
  std::string model_path;          ///< GGUF, safetensors file or HF folder; empty: the default model
  std::string preset;              ///< with random weights instead of a file ("tiny-test", "llama-3-8b", ...)
  std::uint64_t seed = 1;          ///< for random weights
  std::string backend = "auto";    ///< "cpu", "cuda" or "auto" (cuda where a GPU is found)
  int threads = 0;                 ///< CPU backend threads; 0: all cores
  int chunk_tokens = 256;          ///< tokens per chunk
  std::string policy = "two_pointer";
  double host_tier_gb = 4;         ///< pinned host pool capacity; 0 disables the tier
  std::string disk_dir;            ///< chunk file folder; empty: no disk tier
  double disk_tier_gb = 32;         ///< chunk files kept (least recently used go first); 0: no limit
  double disk_gbps = 0;            ///< pace disk reads to this many Gbit/s; 0: unpaced
  std::string tenant_salt = "default";  ///< from the server's tenant, never from a client
  std::size_t max_compute_cells = 0;   ///< cells in flight per GPU; 0: the policy default
  /// Bytes of granted loads not yet done, per tier link; 0: two chunks'
  /// worth. Small keeps the split adaptable: a granted load is never revoked.
  std::size_t max_load_bytes_in_flight = 0;
  /// A cluster of `kvflow node` processes whose tiers this runtime uses as
  /// one remote tier: a file of one "[name] host:port" per line, and/or
  /// members given directly. Empty: no remote tier.
  std::string cluster_file;
  std::vector<std::string> cluster_members;
  std::size_t cluster_replicas = 0;  ///< stores also go to this many next owners
  bool local_tiers = true;           ///< false: no host or disk tier of its own, only the cluster's
  double remote_gbps = 0;            ///< the remote link's expected rate (a prior; measured loads refine it)
  std::string ucx_tls;               ///< UCX transports for KV across nodes (empty: UCX's choice)
  std::string ucx_devices;           ///< UCX network devices (empty: all)
};

struct submit_options {
  std::uint32_t max_new_tokens = 32;
  float temperature = 0;           ///< 0: greedy
  float top_p = 1;
  std::uint64_t seed = 0;
  std::string policy;              ///< empty: the runtime's policy
  bool store = true;               ///< store the prompt's new chunks to the tiers afterwards
  bool digest_kv = false;          ///< report a SHA-256 of the restored prompt KV (tests, checks)
  bool trace = false;              ///< report every grant's span (restore_report::spans)
};

/// One grant a request carried out: compute cells on the GPU or a load of
/// cells from a tier, chunks [chunk_begin, chunk_end) x layers [layer_begin,
/// layer_end). Times are seconds after submit; a compute grant's start is
/// when the GPU reached it (not when it was queued).
struct cell_span {
  bool compute = true;
  std::string source;              ///< "gpu", "host" or "disk"
  std::uint32_t chunk_begin = 0, chunk_end = 0, layer_begin = 0, layer_end = 0;
  double start_s = 0, end_s = 0;
};

/// What one request did.
struct restore_report {
  std::uint64_t request_id = 0;
  std::string policy;
  std::int32_t first_token = -1;
  double ttft_s = 0;               ///< submit to first token on the host
  double total_s = 0;              ///< submit to last generated token
  std::uint32_t prompt_tokens = 0;
  std::uint32_t chunks = 0;
  std::uint32_t cached_chunks = 0; ///< prefix chunks found in a tier
  std::uint32_t cells_computed = 0;
  std::uint32_t cells_loaded = 0;
  std::uint64_t bytes_from_host = 0;
  std::uint64_t bytes_from_disk = 0;
  std::uint64_t bytes_from_remote = 0;
  std::vector<std::int32_t> tokens;  ///< generated tokens, the first included
  std::string text;                  ///< decoded, when the model has a tokenizer
  std::string kv_sha256;             ///< hex digest of every prompt chunk's block, when asked for
  std::vector<cell_span> spans;      ///< every grant in completion order, when traced
};

struct chat_turn {
  std::string role;     ///< "system", "user" or "assistant"
  std::string content;
};

/// An actor system with one gpu actor per device (or the CPU engine), one
/// tier actor per storage tier and the scheduler. Thread-safe: submit from
/// any thread. Destruction waits for requests in flight.
class runtime {
 public:
  /// Loads the model and starts the actors; throws kvflow::error with
  /// context when the model or a tier cannot be set up.
  explicit runtime(runtime_options opts = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Submits a token sequence; the future holds the report or throws
  /// kvflow::error. A chunk that leaves its tier between lookup and load
  /// (evicted, corrupt, deleted) does not fail the request: it restores
  /// again once, computing what was lost (TTFT counts from this call).
  std::future<restore_report> submit(std::vector<std::int32_t> tokens, submit_options opts = {});
  /// Same with a callback, called on an actor thread exactly once.
  void submit(std::vector<std::int32_t> tokens, submit_options opts,
              std::function<void(std::exception_ptr, restore_report)> done);
  /// Applies the model's chat template and submits.
  std::future<restore_report> submit_chat(const std::vector<chat_turn>& turns, submit_options opts = {});

  /// Text of tokens (needs a tokenizer), and text to tokens.
  std::string detokenize(const std::vector<std::int32_t>& tokens) const;
  std::vector<std::int32_t> tokenize(const std::string& text) const;

  /// Drops every cached chunk from every tier (for cold runs).
  void clear_cache();

  /// Waits until every chunk stored so far is in its tiers (write-behind done).
  void flush();

  /// Paces the disk tier's reads to `gbps` Gbit/s from now on (0: unpaced),
  /// also in the middle of a request.
  void set_disk_rate(double gbps);

  const runtime_options& options() const;
  std::string describe() const;  ///< model, backend, tiers: one line

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace kvflow

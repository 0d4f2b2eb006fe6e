#pragma once
// One request's restore memory in this process. Actors pass a handle to it
// in messages; the KV bytes stay where they are.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>

#include "kernels/model/engine.hpp"
#include "messages/types.hpp"

namespace kvflow {

/// The tokens of a request, one KV block and one hidden state per chunk of
/// its prompt, and one 1-token block per generated token. Memory comes from
/// (and goes back to) the engine that computes on it; blocks are allocated
/// when the workspace is made so loads and computes can fill them in any
/// order. Not thread-safe: the actors that touch a chunk's block are
/// serialised by the request's grants (a cell is granted once).
class workspace {
 public:
  workspace(std::uint64_t request_id, std::vector<std::int32_t> tokens, int chunk_tokens, model::engine& eng);
  ~workspace();
  workspace(const workspace&) = delete;
  workspace& operator=(const workspace&) = delete;

  std::uint64_t request_id() const { return request_id_; }
  const std::vector<std::int32_t>& tokens() const { return tokens_; }
  int chunk_tokens() const { return chunk_tokens_; }
  int num_chunks() const { return static_cast<int>(blocks_.size()); }
  /// Tokens in chunk c: chunk_tokens, or fewer for the last one.
  int chunk_count(int c) const;
  model::kv_block& block(int c) { return blocks_[c]; }
  const std::vector<model::kv_block>& blocks() const { return blocks_; }
  /// The hidden state of chunk c, allocated on first use.
  model::hidden_state& hidden(int c);
  model::engine& engine() { return engine_; }

  /// Appends a 1-token block for a generated token and returns it.
  model::kv_block& append_decode_block();
  /// Prompt blocks followed by decode blocks: the KV of every position so far.
  std::vector<model::kv_block> all_blocks() const;
  std::vector<std::int32_t>& generated() { return generated_; }

  /// Chunk keys of the full chunks of the prompt (devices/keys.hpp).
  std::vector<msg::chunk_key>& keys() { return keys_; }

  /// Makes room for the hidden states of pipeline stages (stage_actor), one
  /// per engine listed (the stage's own, kept alive while the workspace
  /// holds memory of it); call before any stage runs. A stage then touches
  /// only its own chunks' states, and its upstream neighbour only a chunk it
  /// hands over before the stage sees that chunk.
  void add_stages(const std::vector<std::shared_ptr<model::engine>>& engines);
  int stages() const { return static_cast<int>(stage_hidden_.size()); }
  /// Stage `s`'s hidden state of chunk c in `eng`'s memory (the stage's own
  /// engine), allocated on first use and released to `eng`.
  model::hidden_state& stage_hidden(int s, int c, model::engine& eng);
  /// Hidden-state hand-offs between stages and the time they took.
  std::atomic<std::uint64_t> handoffs{0};
  std::atomic<std::uint64_t> handoff_ns{0};

 private:
  std::uint64_t request_id_;
  std::vector<std::int32_t> tokens_;
  int chunk_tokens_;
  model::engine& engine_;
  std::vector<model::kv_block> blocks_;
  std::vector<model::hidden_state> hidden_;
  std::vector<model::kv_block> decode_blocks_;
  std::vector<std::int32_t> generated_;
  std::vector<msg::chunk_key> keys_;
  struct stage_buffers {
    std::shared_ptr<model::engine> eng;
    std::vector<model::hidden_state> hidden;  // [chunk]
  };
  std::vector<stage_buffers> stage_hidden_;  // [stage]
};

using workspace_ptr = std::shared_ptr<workspace>;

/// SHA-256 (hex) over every prompt chunk's block, in host byte order: equal
/// digests mean bitwise equal restored KV (tests, checks).
std::string digest_kv(workspace& ws);

}  // namespace kvflow

// In-process only: a handle never crosses the network.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvflow::workspace_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvflow::model::sampling)

#include "actors/workspace.hpp"

#include "messages/digest.hpp"
#include "messages/error.hpp"

namespace kvflow {

workspace::workspace(std::uint64_t request_id, std::vector<std::int32_t> tokens, int chunk_tokens, model::engine& eng)
    : request_id_(request_id), tokens_(std::move(tokens)), chunk_tokens_(chunk_tokens), engine_(eng) {
  if (chunk_tokens_ <= 0) throw error(errc::invalid_argument, "chunk_tokens must be positive");
  if (tokens_.empty()) throw error(errc::invalid_argument, "request " + std::to_string(request_id) + " has no tokens");
  int chunks = static_cast<int>((tokens_.size() + chunk_tokens_ - 1) / chunk_tokens_);
  blocks_.resize(chunks);
  hidden_.resize(chunks);
  try {
    for (int c = 0; c < chunks; ++c) {
      blocks_[c].shape = model::kv_shape_of(engine_.cfg(), chunk_count(c), engine_.kv_type());
      blocks_[c].data = engine_.allocate(blocks_[c].shape.bytes());
    }
  } catch (...) {
    // Out of device memory part way: no destructor runs for a constructor
    // that throws, so the blocks already allocated go back here.
    for (auto& b : blocks_) engine_.release(b.data);
    throw;
  }
}

workspace::~workspace() {
  for (auto& b : blocks_) engine_.release(b.data);
  for (auto& b : decode_blocks_) engine_.release(b.data);
  for (auto& h : hidden_)
    if (h.data) engine_.release(h.data);
  for (auto& s : stage_hidden_)
    for (auto& h : s.hidden)
      if (h.data) s.eng->release(h.data);
}

void workspace::add_stages(const std::vector<std::shared_ptr<model::engine>>& engines) {
  stage_hidden_.resize(engines.size());
  for (std::size_t s = 0; s < engines.size(); ++s) {
    stage_hidden_[s].eng = engines[s];
    stage_hidden_[s].hidden.resize(blocks_.size());
  }
}

model::hidden_state& workspace::stage_hidden(int s, int c, model::engine& eng) {
  if (s < 0 || s >= stages() || c < 0 || c >= num_chunks())
    throw error(errc::out_of_range, "stage " + std::to_string(s) + " chunk " + std::to_string(c) + " of request " +
                                        std::to_string(request_id_));
  auto& buf = stage_hidden_[static_cast<std::size_t>(s)];
  if (buf.eng.get() != &eng)
    throw error(errc::invalid_argument, "stage " + std::to_string(s) + " hidden states belong to another engine");
  auto& h = buf.hidden[static_cast<std::size_t>(c)];
  if (!h.data) {
    h.tokens = chunk_count(c);
    h.data = eng.allocate(static_cast<std::size_t>(h.tokens) * eng.cfg().hidden * sizeof(float));
  }
  return h;
}

int workspace::chunk_count(int c) const {
  int begin = c * chunk_tokens_;
  return std::min<int>(chunk_tokens_, static_cast<int>(tokens_.size()) - begin);
}

model::hidden_state& workspace::hidden(int c) {
  auto& h = hidden_[c];
  if (!h.data) {
    h.tokens = chunk_count(c);
    // Activations are f32 on every backend's host-facing contract size; a
    // backend with narrower activations uses less of it.
    h.data = engine_.allocate(static_cast<std::size_t>(h.tokens) * engine_.cfg().hidden * sizeof(float));
  }
  return h;
}

model::kv_block& workspace::append_decode_block() {
  model::kv_block b;
  b.shape = model::kv_shape_of(engine_.cfg(), 1, engine_.kv_type());
  b.data = engine_.allocate(b.shape.bytes());
  decode_blocks_.push_back(b);
  return decode_blocks_.back();
}

std::vector<model::kv_block> workspace::all_blocks() const {
  std::vector<model::kv_block> all = blocks_;
  all.insert(all.end(), decode_blocks_.begin(), decode_blocks_.end());
  return all;
}

std::string digest_kv(workspace& ws) {
  sha256 h;
  std::vector<std::uint8_t> host;
  for (auto& b : ws.blocks()) {
    host.resize(b.shape.bytes());
    ws.engine().to_host(host.data(), b.data, host.size());
    h.update(host.data(), host.size());
  }
  return to_hex(h.finish());
}

}  // namespace kvflow

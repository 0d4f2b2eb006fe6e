#include "devices/net/kv_transfer.hpp"

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>

#include "messages/error.hpp"

namespace kvflow::devices::net {

int request_kv::chunk_count(int c) const {
  const int rest = shape.tokens - c * chunk_tokens;
  return rest < chunk_tokens ? rest : chunk_tokens;
}

model::kv_shape request_kv::chunk_shape(int c) const {
  auto s = shape;
  s.tokens = chunk_count(c);
  return s;
}

std::size_t request_kv::chunk_offset(int c) const {
  // Every chunk before c is full.
  auto full = shape;
  full.tokens = chunk_tokens;
  return full.bytes() * static_cast<std::size_t>(c);
}

namespace {

void check(const request_kv& kv, int layer_begin, int layer_end) {
  if (kv.chunk_tokens <= 0 || kv.shape.tokens <= 0)
    throw error(errc::invalid_argument, "kv transfer: empty request or chunk size");
  if (layer_begin < 0 || layer_end > kv.shape.layers || layer_begin >= layer_end)
    throw error(errc::invalid_argument, "kv transfer: layer range [" + std::to_string(layer_begin) + ", " +
                                            std::to_string(layer_end) + ") of " + std::to_string(kv.shape.layers));
}

// Calls `fn(contiguous_offset, chunk_offset, bytes)` for each run of one
// (layer, K|V, head, chunk): tokens rows that are adjacent in both layouts.
template <class F>
void for_each_run(const request_kv& kv, int layer_begin, int layer_end, F&& fn) {
  const std::size_t row = static_cast<std::size_t>(kv.shape.head_dim) * model::dtype_size(kv.shape.type);
  for (int c = 0; c < kv.chunks(); ++c) {
    const auto cs = kv.chunk_shape(c);
    for (int l = layer_begin; l < layer_end; ++l)
      for (int h2 = 0; h2 < 2; ++h2)
        for (int h = 0; h < kv.shape.kv_heads; ++h)
          fn(kv.shape.offset(l, h2, h, c * kv.chunk_tokens, 0) * model::dtype_size(kv.shape.type),
             cs.offset(l, h2, h, 0, 0) * model::dtype_size(kv.shape.type), row * static_cast<std::size_t>(cs.tokens),
             c);
  }
}

}  // namespace

std::vector<kv_piece> contiguous_pieces(const request_kv& kv, int layer_begin, int layer_end) {
  check(kv, layer_begin, layer_end);
  return {{kv.shape.span_offset_bytes(layer_begin), kv.shape.span_bytes(layer_begin, layer_end)}};
}

std::vector<kv_piece> per_block_pieces(const request_kv& kv, int layer_begin, int layer_end) {
  check(kv, layer_begin, layer_end);
  std::vector<kv_piece> out;
  out.reserve(static_cast<std::size_t>(kv.chunks()) * static_cast<std::size_t>(layer_end - layer_begin));
  for (int c = 0; c < kv.chunks(); ++c) {
    const auto cs = kv.chunk_shape(c);
    for (int l = layer_begin; l < layer_end; ++l)
      out.push_back({kv.chunk_offset(c) + cs.span_offset_bytes(l), cs.layer_bytes()});
  }
  return out;
}

void pack_chunks(const request_kv& kv, const std::vector<const void*>& blocks, void* dst, int layer_begin,
                 int layer_end) {
  check(kv, layer_begin, layer_end);
  if (blocks.size() != static_cast<std::size_t>(kv.chunks()))
    throw error(errc::invalid_argument, "pack_chunks: " + std::to_string(blocks.size()) + " blocks for " +
                                            std::to_string(kv.chunks()) + " chunks");
  auto* out = static_cast<std::uint8_t*>(dst);
  for_each_run(kv, layer_begin, layer_end, [&](std::size_t to, std::size_t from, std::size_t n, int c) {
    std::memcpy(out + to, static_cast<const std::uint8_t*>(blocks[static_cast<std::size_t>(c)]) + from, n);
  });
}

void unpack_chunks(const request_kv& kv, const void* src, const std::vector<void*>& blocks, int layer_begin,
                   int layer_end) {
  check(kv, layer_begin, layer_end);
  if (blocks.size() != static_cast<std::size_t>(kv.chunks()))
    throw error(errc::invalid_argument, "unpack_chunks: " + std::to_string(blocks.size()) + " blocks for " +
                                            std::to_string(kv.chunks()) + " chunks");
  const auto* in = static_cast<const std::uint8_t*>(src);
  for_each_run(kv, layer_begin, layer_end, [&](std::size_t from, std::size_t to, std::size_t n, int c) {
    std::memcpy(static_cast<std::uint8_t*>(blocks[static_cast<std::size_t>(c)]) + to, in + from, n);
  });
}

namespace {

// Gathers the completions of several calls into one answer.
struct join {
  std::mutex mutex;
  std::size_t left = 0;
  moved result;
  std::function<void(moved)> done;

  void finish(bool ok, const std::string& why, std::uint64_t bytes, std::uint64_t at_ns) {
    std::function<void(moved)> fire;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!ok && result.ok) {
        result.ok = false;
        result.why = why;
      }
      result.bytes += bytes;
      if (at_ns > result.finished_ns) result.finished_ns = at_ns;
      if (--left == 0) fire = std::move(done);
    }
    if (fire) fire(result);
  }
};

// One join for `calls` calls, answering `done` once all have finished.
std::shared_ptr<join> join_of(std::size_t calls, std::function<void(moved)> done) {
  auto j = std::make_shared<join>();
  j->left = calls;
  j->result.ok = true;
  j->result.calls = static_cast<std::uint32_t>(calls);
  j->done = std::move(done);
  return j;
}

}  // namespace

void expect_pieces(transport& t, std::uint64_t id0, void* dst, const std::vector<kv_piece>& pieces,
                   std::function<void(moved)> done) {
  if (pieces.empty()) throw error(errc::invalid_argument, "expect_pieces: nothing to receive");
  auto j = join_of(pieces.size(), std::move(done));
  auto* base = static_cast<std::uint8_t*>(dst);
  for (std::size_t i = 0; i < pieces.size(); ++i)
    t.expect(id0 + i, pieces[i].bytes, base + pieces[i].offset,
             [j](landed l) { j->finish(l.ok, l.why, l.bytes, l.finished_ns); });
}

void send_pieces(transport& t, const std::vector<std::uint8_t>& peer, std::uint64_t id0, const void* src,
                 const std::vector<kv_piece>& pieces, std::function<void(moved)> done) {
  if (pieces.empty()) throw error(errc::invalid_argument, "send_pieces: nothing to send");
  auto j = join_of(pieces.size(), std::move(done));
  const auto* base = static_cast<const std::uint8_t*>(src);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const auto n = pieces[i].bytes;
    t.send(peer, id0 + i, base + pieces[i].offset, n,
           [j, n](bool ok, std::string why) { j->finish(ok, why, ok ? n : 0, 0); });
  }
}

}  // namespace kvflow::devices::net

#pragma once
// The byte layout of a remote stage's bulk (actors/interfaces.hpp,
// stage_host_actor): KV spans and hidden states one after another, packed
// and unpacked by the same code on both sides.

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "actors/bulk_type.hpp"
#include "actors/workspace.hpp"
#include "devices/net/transport.hpp"
#include "messages/codec.hpp"
#include "messages/error.hpp"
#include "messages/types.hpp"

namespace kvflow::stage_wire {

/// Bytes of chunk c's hidden state: [tokens][hidden] f32.
inline std::size_t hidden_bytes(workspace& ws, int c) {
  return static_cast<std::size_t>(ws.chunk_count(c)) * static_cast<std::size_t>(ws.engine().cfg().hidden) *
         sizeof(float);
}

/// Bytes of chunks [begin, end)'s KV spans of layers [lb, le) plus, when
/// `hidden`, their hidden states.
inline std::size_t bytes_of(workspace& ws, std::uint32_t begin, std::uint32_t end, std::uint32_t lb, std::uint32_t le,
                            bool hidden) {
  std::size_t n = 0;
  for (auto c = begin; c < end; ++c) {
    const int ci = static_cast<int>(c);
    if (le > lb) n += ws.block(ci).shape.span_bytes(static_cast<int>(lb), static_cast<int>(le));
    if (hidden) n += hidden_bytes(ws, ci);
  }
  return n;
}

/// Appends to a bulk, copying from backend memory of the engine named.
class writer {
 public:
  explicit writer(msg::bulk& out) : out_(out) {}
  void put(model::engine& eng, const void* src, std::size_t n) {
    const auto at = out_.bytes.size();
    out_.bytes.resize(at + n);
    eng.to_host(out_.bytes.data() + at, src, n);
  }
  /// Layers [lb, le) of chunk c's KV block (in the workspace's engine).
  void put_span(workspace& ws, int c, std::uint32_t lb, std::uint32_t le) {
    auto& b = ws.block(c);
    put(ws.engine(), static_cast<const std::uint8_t*>(b.data) + b.shape.span_offset_bytes(static_cast<int>(lb)),
        b.shape.span_bytes(static_cast<int>(lb), static_cast<int>(le)));
  }

 private:
  msg::bulk& out_;
};

/// Reads a bulk in order into backend memory of the engine named; reading
/// past its end throws kvflow::error(malformed_frame).
class reader {
 public:
  explicit reader(const msg::bulk& in) : in_(in) {}
  void take(model::engine& eng, void* dst, std::size_t n) {
    if (n > in_.bytes.size() - at_)
      throw error(errc::malformed_frame, "stage bulk of " + std::to_string(in_.bytes.size()) +
                                             " bytes ends before byte " + std::to_string(at_ + n));
    eng.to_backend(dst, in_.bytes.data() + at_, n);
    at_ += n;
  }
  void take_span(workspace& ws, int c, std::uint32_t lb, std::uint32_t le) {
    auto& b = ws.block(c);
    take(ws.engine(), static_cast<std::uint8_t*>(b.data) + b.shape.span_offset_bytes(static_cast<int>(lb)),
         b.shape.span_bytes(static_cast<int>(lb), static_cast<int>(le)));
  }

 private:
  const msg::bulk& in_;
  std::size_t at_ = 0;
};

/// The transfer frame that announces `b`.
inline msg::transfer announce(std::uint64_t id, const msg::bulk& b) {
  msg::transfer t;
  t.transfer_id = id;
  t.bytes = b.bytes.size();
  t.checksum = devices::net::checksum(b.bytes.data(), b.bytes.size());
  return t;
}

/// Throws kvflow::error(malformed_frame) unless `b` is what `t` announced.
inline void check(const msg::transfer& t, const msg::bulk& b, const std::string& what) {
  if (b.bytes.size() != t.bytes || devices::net::checksum(b.bytes.data(), b.bytes.size()) != t.checksum)
    throw error(errc::malformed_frame, what + ": bulk of " + std::to_string(b.bytes.size()) +
                                           " bytes does not match the announced " + std::to_string(t.bytes) +
                                           " bytes and checksum");
}

/// The message of type T in frame f, or kvflow::error(invalid_argument).
template <class T>
T decode_as(const msg::frame& f, const char* what) {
  auto decoded = msg::decode(f);
  if (!decoded) throw decoded.error();
  if (auto* m = std::get_if<T>(&*decoded)) return std::move(*m);
  throw error(errc::invalid_argument, std::string("expected ") + what + ", got " + msg::kind_name(*decoded));
}

}  // namespace kvflow::stage_wire

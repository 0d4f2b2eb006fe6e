#pragma once
// Properties every successfully decoded message must have: each value lies
// inside the limits the decoder was given. Shared by the codec and frame
// fuzz targets.

#include <cmath>
#include <type_traits>
#include <variant>

#include "messages/codec.hpp"
#include "messages/error.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace kvflow::fuzz {

inline bool valid(msg::tier t) { return t <= msg::tier::remote; }
inline bool valid(msg::action a) { return a <= msg::action::load; }

inline void check_cells(const msg::cell_range& c, const msg::limits& lim) {
  KVFLOW_FUZZ_CHECK(c.chunk_begin <= c.chunk_end && c.chunk_end <= lim.max_chunks, "cells: chunk range");
  KVFLOW_FUZZ_CHECK(c.layer_begin <= c.layer_end && c.layer_end <= lim.max_layers, "cells: layer range");
}

inline void check_tokens(const std::vector<std::int32_t>& tokens, const msg::limits& lim) {
  KVFLOW_FUZZ_CHECK(tokens.size() <= lim.max_tokens, "tokens: count over cap");
  for (auto t : tokens) KVFLOW_FUZZ_CHECK(t >= 0, "tokens: negative id");
}

inline void check_text(const std::string& s, const msg::limits& lim) {
  KVFLOW_FUZZ_CHECK(s.size() <= lim.max_text, "text: over cap");
}

/// Aborts unless every decoded value of m respects lim.
inline void check_message(const msg::message& m, const msg::limits& lim) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, msg::submit>) {
          check_text(x.tenant, lim);
          check_text(x.text, lim);
          check_text(x.policy, lim);
          check_tokens(x.tokens, lim);
          KVFLOW_FUZZ_CHECK(x.max_new_tokens <= lim.max_tokens, "submit.max_new_tokens");
          KVFLOW_FUZZ_CHECK(x.temperature >= 0 && x.temperature <= 100, "submit.temperature");
          KVFLOW_FUZZ_CHECK(x.top_p >= 0 && x.top_p <= 1, "submit.top_p");
        } else if constexpr (std::is_same_v<T, msg::register_request>) {
          KVFLOW_FUZZ_CHECK(x.num_chunks <= lim.max_chunks, "register.num_chunks");
          KVFLOW_FUZZ_CHECK(x.num_layers <= lim.max_layers, "register.num_layers");
          KVFLOW_FUZZ_CHECK(x.chunk_tiers.size() <= x.num_chunks, "register.chunk_tiers");
          for (auto t : x.chunk_tiers) KVFLOW_FUZZ_CHECK(valid(t), "register.chunk_tiers tier");
          KVFLOW_FUZZ_CHECK(x.num_chunks == 0 || (x.chunk_tokens >= 1 && x.chunk_tokens <= lim.max_tokens),
                            "register.chunk_tokens");
          KVFLOW_FUZZ_CHECK(x.chunk_bytes <= lim.max_chunk_bytes, "register.chunk_bytes");
        } else if constexpr (std::is_same_v<T, msg::grant>) {
          KVFLOW_FUZZ_CHECK(valid(x.act) && valid(x.source), "grant: enum");
          check_cells(x.cells, lim);
        } else if constexpr (std::is_same_v<T, msg::cell_done>) {
          KVFLOW_FUZZ_CHECK(valid(x.act), "cell_done.act");
          check_cells(x.cells, lim);
          KVFLOW_FUZZ_CHECK(x.started_ns <= x.finished_ns, "cell_done: times");
          KVFLOW_FUZZ_CHECK(x.device < lim.max_devices, "cell_done.device");
        } else if constexpr (std::is_same_v<T, msg::progress>) {
          KVFLOW_FUZZ_CHECK(x.compute_pointer <= lim.max_chunks && x.load_pointer <= lim.max_chunks, "progress");
        } else if constexpr (std::is_same_v<T, msg::lookup>) {
          KVFLOW_FUZZ_CHECK(x.keys.size() <= lim.max_chunks, "lookup.keys");
        } else if constexpr (std::is_same_v<T, msg::chunk_located>) {
          KVFLOW_FUZZ_CHECK(x.chunks.size() <= lim.max_chunks, "chunk_located.chunks");
          for (const auto& c : x.chunks) {
            KVFLOW_FUZZ_CHECK(c.chunk < lim.max_chunks, "chunk_located.chunk");
            KVFLOW_FUZZ_CHECK(valid(c.where), "chunk_located.tier");
          }
        } else if constexpr (std::is_same_v<T, msg::load>) {
          KVFLOW_FUZZ_CHECK(valid(x.source), "load.tier");
          KVFLOW_FUZZ_CHECK(x.layer_begin <= x.layer_end && x.layer_end <= lim.max_layers, "load.layers");
        } else if constexpr (std::is_same_v<T, msg::store>) {
          KVFLOW_FUZZ_CHECK(valid(x.target), "store.tier");
          KVFLOW_FUZZ_CHECK(x.layer_begin <= x.layer_end && x.layer_end <= lim.max_layers, "store.layers");
        } else if constexpr (std::is_same_v<T, msg::rate_sample>) {
          KVFLOW_FUZZ_CHECK(valid(x.source), "rate_sample.tier");
        } else if constexpr (std::is_same_v<T, msg::result>) {
          KVFLOW_FUZZ_CHECK(x.bytes_loaded.size() <= 16, "result.bytes_loaded");
          KVFLOW_FUZZ_CHECK(x.first_token >= -1, "result.first_token");
          for (const auto& b : x.bytes_loaded) KVFLOW_FUZZ_CHECK(valid(b.where), "result.bytes_loaded.tier");
          check_tokens(x.tokens, lim);
          check_text(x.text, lim);
        } else if constexpr (std::is_same_v<T, msg::node_inventory>) {
          check_text(x.node_id, lim);
          check_text(x.host, lim);
          KVFLOW_FUZZ_CHECK(x.gpus.size() <= lim.max_devices && x.tiers.size() <= 16, "node_inventory lists");
          for (const auto& g : x.gpus) check_text(g.name, lim);
          for (const auto& t : x.tiers) KVFLOW_FUZZ_CHECK(valid(t.where), "node_inventory.tiers.tier");
        } else if constexpr (std::is_same_v<T, msg::transfer>) {
          KVFLOW_FUZZ_CHECK(x.keys.size() <= lim.max_chunks, "transfer.keys");
          KVFLOW_FUZZ_CHECK(x.peer.size() <= lim.max_peer_bytes, "transfer.peer");
          KVFLOW_FUZZ_CHECK(x.layer_begin <= x.layer_end && x.layer_end <= lim.max_layers, "transfer.layers");
        } else if constexpr (std::is_same_v<T, msg::kv_layout>) {
          KVFLOW_FUZZ_CHECK(x.layers >= 1 && x.layers <= lim.max_layers, "kv_layout.layers");
        } else if constexpr (std::is_same_v<T, msg::error_report>) {
          check_text(x.context, lim);
          KVFLOW_FUZZ_CHECK(x.code <= static_cast<std::uint16_t>(errc::unsupported), "error.code");
        }
      },
      m);
}

/// Aborts unless m encodes, the frame decodes again (with lim's value caps;
/// its frame, traversal and nesting caps lifted, since the canonical encoding
/// may be larger and deeper: a null struct pointer in the input reads as
/// defaults but is encoded as a real struct) and the result is the same
/// message with the same bytes.
inline void check_round_trip(const msg::message& m, msg::limits lim) {
  msg::frame f;
  try {
    f = msg::encode(m);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "encode threw: %s\n", e.what());
    KVFLOW_FUZZ_CHECK(false, "encode of a decoded message threw");
  }
  lim.max_frame_bytes = std::size_t{1} << 40;
  lim.traversal_words = std::uint64_t{1} << 40;
  lim.nesting = 64;
  auto back = msg::decode(f, lim);
  KVFLOW_FUZZ_CHECK(static_cast<bool>(back), "re-encoded message does not decode");
  KVFLOW_FUZZ_CHECK(back->index() == m.index(), "round trip changed the message kind");
  KVFLOW_FUZZ_CHECK(msg::same(*back, m), "round trip changed the message");
  KVFLOW_FUZZ_CHECK(msg::encode(*back).bytes == f.bytes, "encoding is not deterministic");
}

}  // namespace kvflow::fuzz

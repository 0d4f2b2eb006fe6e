#pragma once
// Bulk bytes that travel in a CAF message beside the control frames that
// announce them (a Transfer frame: size and XXH3 checksum): the hidden
// states and KV spans a remote pipeline stage exchanges with its client
// (actors/stage_host). CAF 0.17 serializes them with its raw-bytes path.

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>

namespace kvflow::msg {

/// Raw bytes whose meaning (and size and checksum) a control frame sent
/// with them announces.
struct bulk {
  std::vector<std::uint8_t> bytes;
};

/// Largest bulk a peer may declare: a stage hand-off of a 1024-token group
/// of an 8192-wide model (32 MiB of f32 hidden states) plus its KV spans
/// fits many times over.
constexpr std::size_t max_bulk_bytes = std::size_t{1} << 30;

/// Saving: the bytes as one sequence.
template <class Inspector>
typename std::enable_if<Inspector::reads_state, typename Inspector::result_type>::type inspect(Inspector& f, bulk& x) {
  return f(caf::meta::type_name("kvflow::bulk"), x.bytes);
}

/// Loading: the declared length is checked against max_bulk_bytes before
/// anything is allocated.
template <class Inspector>
typename std::enable_if<Inspector::writes_state, typename Inspector::result_type>::type inspect(Inspector& f, bulk& x) {
  std::size_t n = 0;
  if (auto err = f.begin_sequence(n)) return err;
  if (n > max_bulk_bytes)
    return caf::make_error(caf::sec::invalid_argument, "kvflow::bulk: declared length over the bulk cap");
  x.bytes.resize(n);
  if (n > 0)
    if (auto err = f.apply_raw(n, x.bytes.data())) return err;
  return f.end_sequence();
}

}  // namespace kvflow::msg

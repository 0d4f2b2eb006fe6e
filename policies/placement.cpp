#include "policies/placement.hpp"

#include <algorithm>

#include "messages/mix.hpp"

namespace kvflow::policies {
namespace {}  // namespace

std::uint64_t rendezvous_weight(const msg::chunk_key& key, const std::string& node) {
  // FNV-1a over the node's name, then mixed with the key 8 bytes at a time.
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : node) h = (h ^ c) * 0x100000001b3ull;
  h = mix64(h);
  for (std::size_t i = 0; i < key.size(); i += 8) {
    std::uint64_t word = 0;
    for (std::size_t j = 0; j < 8; ++j) word |= static_cast<std::uint64_t>(key[i + j]) << (8 * j);
    h = mix64(h ^ word);
  }
  return h;
}

std::vector<std::size_t> owners(const msg::chunk_key& key, const std::vector<std::string>& nodes, std::size_t count,
                                const std::vector<bool>& up) {
  std::vector<std::pair<std::uint64_t, std::size_t>> scored;
  for (std::size_t i = 0; i < nodes.size(); ++i)
    if (up.empty() || (i < up.size() && up[i])) scored.emplace_back(rendezvous_weight(key, nodes[i]), i);
  count = std::min(count, scored.size());
  std::partial_sort(
      scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(count), scored.end(),
      [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < count; ++i) out.push_back(scored[i].second);
  return out;
}

std::vector<std::size_t> first_owners(const std::vector<msg::chunk_key>& keys, const std::vector<std::string>& nodes,
                                      const std::vector<bool>& up) {
  std::vector<std::size_t> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    auto o = owners(k, nodes, 1, up);
    out.push_back(o.empty() ? nodes.size() : o.front());
  }
  return out;
}

}  // namespace kvflow::policies

#pragma once
// Which nodes own a chunk key: rendezvous (highest-random-weight) hashing.
// Every process computes the same owners from the same member names, so no
// directory is needed, and a node joining or leaving moves only the keys
// it gains or held.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "messages/types.hpp"

namespace kvflow::policies {

/// The weight of `node` for `key`: a 64-bit mix of both (not a security
/// boundary: the keys are SHA-256 already, the names are the cluster's own).
std::uint64_t rendezvous_weight(const msg::chunk_key& key, const std::string& node);

/// Indices into `nodes` of the `count` highest-weight nodes for `key`, best
/// first, among those with `up[i]` true (all when `up` is empty). Fewer when
/// fewer are up. Ties (equal weights) go to the lower index.
std::vector<std::size_t> owners(const msg::chunk_key& key, const std::vector<std::string>& nodes, std::size_t count,
                                const std::vector<bool>& up = {});

/// The first owner of each key (or nodes.size() where no node is up), for
/// grouping a prompt's keys by node: one lookup round per node.
std::vector<std::size_t> first_owners(const std::vector<msg::chunk_key>& keys, const std::vector<std::string>& nodes,
                                      const std::vector<bool>& up = {});

}  // namespace kvflow::policies

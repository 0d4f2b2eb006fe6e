#pragma once
// CAF 0.17 atoms used across kvflow's actors (10 characters at most).

#include <caf/atom.hpp>

namespace kvflow {

using inventory_atom = caf::atom_constant<caf::atom("inventory")>;

}  // namespace kvflow

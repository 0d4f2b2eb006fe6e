#pragma once
// CAF 0.17 atoms used across kvflow's actors (10 characters at most).

#include <caf/atom.hpp>

namespace kvflow {

using inventory_atom = caf::atom_constant<caf::atom("inventory")>;
using first_atom = caf::atom_constant<caf::atom("first")>;
using decode_atom = caf::atom_constant<caf::atom("decode")>;
using step_atom = caf::atom_constant<caf::atom("step")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
using store_atom = caf::atom_constant<caf::atom("store")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using finished_atom = caf::atom_constant<caf::atom("finished")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using blend_atom = caf::atom_constant<caf::atom("blend")>;
using fuse_atom = caf::atom_constant<caf::atom("fuse")>;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;
using room_atom = caf::atom_constant<caf::atom("room")>;
using window_atom = caf::atom_constant<caf::atom("window")>;

}  // namespace kvflow

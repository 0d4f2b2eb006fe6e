#pragma once
// kvflow's error enum as caf::error values, for actors and caf::expected.

#include <string>

#include <caf/atom.hpp>
#include <caf/error.hpp>

#include "messages/error.hpp"

namespace kvflow {

using error_category = caf::atom_constant<caf::atom("kvflow")>;

/// A caf::error of category "kvflow" carrying code and context.
caf::error make_error(errc code, std::string context);

/// The same for an exception caught at a boundary.
caf::error make_error(const error& e);

/// Renders kvflow errors for caf::to_string; install with
/// cfg.add_error_category(error_category::value, render_error).
std::string render_error(std::uint8_t code, caf::atom_value, const caf::message& context);

}  // namespace kvflow

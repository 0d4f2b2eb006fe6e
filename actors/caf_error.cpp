#include "actors/caf_error.hpp"

#include <caf/make_message.hpp>

namespace kvflow {

caf::error make_error(errc code, std::string context) {
  return caf::error(static_cast<std::uint8_t>(code), error_category::value, caf::make_message(std::move(context)));
}

caf::error make_error(const error& e) { return make_error(e.code(), e.what()); }

std::string render_error(std::uint8_t code, caf::atom_value, const caf::message& context) {
  std::string out = "kvflow::";
  out += to_string(static_cast<errc>(code));
  if (context.match_elements<std::string>()) {
    out += ": ";
    out += context.get_as<std::string>(0);
  }
  return out;
}

}  // namespace kvflow

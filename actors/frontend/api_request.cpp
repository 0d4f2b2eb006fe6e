#include "actors/frontend/api_request.hpp"

namespace kvflow::frontend {

api_request read_api_request(endpoint kind, const std::string& authorization, const std::string& body,
                             const tenants& keys, const parse_limits& limits) {
  api_request out;
  // Before the body: an unauthenticated client learns nothing from how its
  // body was judged.
  out.tenant = keys.authenticate(authorization);
  if (!keys.open()) out.salt = keys.cache_salt(out.tenant);
  out.request = parse_request(kind, body, limits);
  return out;
}

}  // namespace kvflow::frontend

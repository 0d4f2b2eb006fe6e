#pragma once
// What `kvflow serve` takes from one HTTP request before the runtime sees
// it: the tenant, from the Authorization header alone, its cache salt, and
// the validated body. Pure (no sockets, no runtime), so the HTTP fuzz target
// (tests/fuzz/http_fuzz.cpp) runs exactly the server's checks.

#include <string>

#include "actors/frontend/openai_json.hpp"
#include "actors/frontend/tenants.hpp"

namespace kvflow::frontend {

struct api_request {
  std::string tenant;  ///< "default" on an open server
  /// submit_options::tenant_salt: keys.cache_salt(tenant); empty on an open
  /// server (the runtime's own salt).
  std::string salt;
  generation_request request;
};

/// Authenticates (api_error 401) and then parses and validates the body
/// (api_error 400, 404). No other header is read: a client names its
/// tenant only through its key.
api_request read_api_request(endpoint kind, const std::string& authorization, const std::string& body,
                             const tenants& keys, const parse_limits& limits);

}  // namespace kvflow::frontend

#include "actors/frontend/tenants.hpp"

#include "actors/frontend/openai_json.hpp"
#include "messages/error.hpp"

namespace kvflow::frontend {
namespace {

// Compares every byte whatever the first difference, so that the time taken
// does not tell how much of a guessed key was right.
bool same_key(const std::string& a, const std::string& b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b.empty() ? 0 : b[i % b.size()]);
  return diff == 0;
}

}  // namespace

tenants::tenants(std::map<std::string, std::string> keys) : keys_(std::move(keys)) {
  for (auto& [key, tenant] : keys_)
    if (key.empty() || tenant.empty()) throw error(errc::invalid_argument, "api keys: an empty key or tenant name");
}

std::string tenants::authenticate(const std::string& authorization) const {
  if (keys_.empty()) return "default";
  static const std::string bearer = "Bearer ";
  if (authorization.compare(0, bearer.size(), bearer) != 0)
    throw api_error(401, "invalid_request_error", "missing API key: send the header 'Authorization: Bearer YOUR_KEY'",
                    {}, "invalid_api_key");
  auto key = authorization.substr(bearer.size());
  const std::string* tenant = nullptr;
  for (auto& [k, t] : keys_)
    if (same_key(key, k)) tenant = &t;
  if (!tenant) throw api_error(401, "invalid_request_error", "incorrect API key", {}, "invalid_api_key");
  return *tenant;
}

}  // namespace kvflow::frontend

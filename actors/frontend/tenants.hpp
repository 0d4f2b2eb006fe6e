#pragma once
// API keys of `kvflow serve`, each mapped to a tenant. A tenant's name is
// its cache salt: requests of different tenants never share a cached chunk,
// and a client cannot choose its salt (only its key).

#include <map>
#include <string>

namespace kvflow::frontend {

class tenants {
 public:
  /// key -> tenant; no keys: the server is open and every request is tenant
  /// "default". Throws kvflow::error on an empty key or tenant name.
  explicit tenants(std::map<std::string, std::string> keys = {});

  /// The tenant of an `Authorization` header value ("Bearer KEY"); throws
  /// api_error 401 when keys are configured and it is missing or unknown.
  std::string authenticate(const std::string& authorization) const;

  bool open() const { return keys_.empty(); }
  std::size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, std::string> keys_;
};

}  // namespace kvflow::frontend

#pragma once
// API keys of `kvflow serve`, each mapped to a tenant, and each tenant's
// cache salt. The salt is HMAC-SHA-256(server secret, tenant name): chunk
// keys of different tenants never match, a client cannot choose a salt (only
// its key picks its tenant, and nothing in a request reaches the salt), and
// without the secret nobody can compute another tenant's chunk keys from a
// prompt they guess.

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvflow::frontend {

/// HMAC-SHA-256 (RFC 2104) of `message` under `key`, on kvflow's SHA-256.
std::array<std::uint8_t, 32> hmac_sha256(const std::string& key, const std::string& message);

/// The server secret that salts tenants' chunk keys, from `path`: read when
/// it exists (at least 16 bytes), else made of 32 random bytes and written
/// there (mode 0600) so the disk tier's chunks stay valid across restarts.
/// Empty path: 32 fresh random bytes (tenants' chunks live as long as the
/// process). Throws kvflow::error (io_failure, invalid_argument) naming the
/// file.
std::string load_tenant_secret(const std::string& path);

/// The bytes of a server secret (a type of its own, so a braced list of
/// keys never reads as one).
struct tenant_secret {
  std::string bytes;
};

class tenants {
 public:
  /// key -> tenant; no keys: the server is open and every request is tenant
  /// "default". `secret` salts the tenants' chunk keys (load_tenant_secret;
  /// empty: a random one). Throws kvflow::error on an empty key or tenant name.
  explicit tenants(std::map<std::string, std::string> keys = {}, tenant_secret secret = {});

  /// The tenant of an `Authorization` header value ("Bearer KEY"); throws
  /// api_error 401 when keys are configured and it is missing or unknown.
  std::string authenticate(const std::string& authorization) const;

  /// The runtime's tenant salt for `tenant` (submit_options::tenant_salt):
  /// "tenant:" and 64 hex digits of HMAC-SHA-256(secret, tenant), whatever
  /// bytes the name holds.
  std::string cache_salt(const std::string& tenant) const;

  bool open() const { return keys_.empty(); }
  std::size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, std::string> keys_;
  std::string secret_;
};

}  // namespace kvflow::frontend

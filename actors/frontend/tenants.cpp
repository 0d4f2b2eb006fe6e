#include "actors/frontend/tenants.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "actors/frontend/openai_json.hpp"
#include "messages/digest.hpp"
#include "messages/error.hpp"
#include "platform/unique_fd.hpp"

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

std::string random_secret() {
  std::random_device rd;  // the kernel's getrandom
  std::string s(32, '\0');
  for (auto& c : s) c = static_cast<char>(rd() & 0xff);
  return s;
}

}  // namespace

std::array<std::uint8_t, 32> hmac_sha256(const std::string& key, const std::string& message) {
  constexpr std::size_t block = 64;
  std::array<std::uint8_t, block> k{};
  if (key.size() > block) {
    auto d = sha256_of(key.data(), key.size());
    std::memcpy(k.data(), d.data(), d.size());
  } else {
    std::memcpy(k.data(), key.data(), key.size());
  }
  std::array<std::uint8_t, block> ipad, opad;
  for (std::size_t i = 0; i < block; ++i) {
    ipad[i] = k[i] ^ 0x36;
    opad[i] = k[i] ^ 0x5c;
  }
  sha256 inner;
  inner.update(ipad.data(), block).update(message.data(), message.size());
  auto in = inner.finish();
  sha256 outer;
  outer.update(opad.data(), block).update(in.data(), in.size());
  return outer.finish();
}

std::string load_tenant_secret(const std::string& path) {
  if (path.empty()) return random_secret();
  std::ifstream in(path, std::ios::binary);
  if (in) {
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (s.size() < 16)
      throw error(errc::invalid_argument, "tenant secret " + path + " holds " + std::to_string(s.size()) +
                                              " bytes; it needs at least 16 (delete it to have one made)");
    return s;
  }
  auto s = random_secret();
  // O_EXCL: two servers starting on one folder never overwrite each other's.
  platform::unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == EEXIST) return load_tenant_secret(path);
    throw error(errc::io_failure, "cannot create tenant secret " + path + ": " + std::strerror(errno));
  }
  bool ok = ::write(fd.get(), s.data(), s.size()) == static_cast<ssize_t>(s.size());
  ok = ::fsync(fd.get()) == 0 && ok;
  fd.reset();
  if (!ok) {
    ::unlink(path.c_str());
    throw error(errc::io_failure, "cannot write tenant secret " + path);
  }
  return s;
}

tenants::tenants(std::map<std::string, std::string> keys, tenant_secret secret)
    : keys_(std::move(keys)), secret_(secret.bytes.empty() ? random_secret() : std::move(secret.bytes)) {
  for (auto& [key, tenant] : keys_)
    if (key.empty() || tenant.empty()) throw error(errc::invalid_argument, "api keys: an empty key or tenant name");
}

std::string tenants::cache_salt(const std::string& tenant) const {
  // A domain tag keeps these MACs apart from any other use of the secret.
  return "tenant:" + to_hex(hmac_sha256(secret_, std::string("kvflow.tenant.v1", 17) + tenant));
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

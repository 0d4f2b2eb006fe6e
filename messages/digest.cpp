#include "messages/digest.hpp"

#include <openssl/evp.h>

#include "messages/error.hpp"

namespace kvflow {

sha256::sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
    throw error(errc::io_failure, "OpenSSL: cannot initialise SHA-256");
}

sha256::~sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

sha256& sha256::update(const void* data, std::size_t size) {
  if (size && EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size) != 1)
    throw error(errc::io_failure, "OpenSSL: SHA-256 update failed");
  return *this;
}

sha256_digest sha256::finish() {
  sha256_digest out{};
  unsigned len = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out.data(), &len) != 1 || len != out.size())
    throw error(errc::io_failure, "OpenSSL: SHA-256 final failed");
  return out;
}

sha256_digest sha256_of(const void* data, std::size_t size) { return sha256().update(data, size).finish(); }

std::string to_hex(const sha256_digest& d) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (auto b : d) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

}  // namespace kvflow

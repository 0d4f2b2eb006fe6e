#pragma once
// SHA-256 (cryptographic: chunk keys, model fingerprints) through OpenSSL.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace kvflow {

using sha256_digest = std::array<std::uint8_t, 32>;

/// Incremental SHA-256. Not thread-safe; one hasher per thread.
class sha256 {
 public:
  sha256();
  ~sha256();
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;

  sha256& update(const void* data, std::size_t size);
  /// Finishes the hash; the hasher must not be updated afterwards.
  sha256_digest finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

/// SHA-256 of one buffer.
sha256_digest sha256_of(const void* data, std::size_t size);

/// Lower-case hex of a digest.
std::string to_hex(const sha256_digest& d);

}  // namespace kvflow

#include "devices/keys.hpp"

#include "messages/digest.hpp"
#include "messages/error.hpp"

namespace kvflow::devices {
namespace {

// Domain tags keep a chunk key and a document key of the same bytes apart.
constexpr char chunk_tag[] = "kvflow.chunk.v1";
constexpr char document_tag[] = "kvflow.document.v1";

void hash_prefix(sha256& h, const char* tag, std::size_t tag_len, const model_fingerprint& fp,
                 const std::string& salt) {
  h.update(tag, tag_len);
  h.update(fp.data(), fp.size());
  // Length-prefixed so (salt, tokens) boundaries cannot be shifted.
  const std::uint64_t salt_len = salt.size();
  h.update(&salt_len, sizeof salt_len);
  h.update(salt.data(), salt.size());
}

std::vector<msg::chunk_key> chain(const model_fingerprint& fp, const std::string& salt, msg::chunk_key previous,
                                  const std::vector<std::int32_t>& tokens, std::size_t chunk_tokens) {
  if (chunk_tokens == 0) throw error(errc::invalid_argument, "chunk_keys: chunk_tokens is 0");
  std::vector<msg::chunk_key> keys;
  const std::size_t n = tokens.size() / chunk_tokens;
  keys.reserve(n);
  for (std::size_t c = 0; c < n; ++c) {
    previous = next_chunk_key(fp, salt, previous, tokens.data() + c * chunk_tokens, chunk_tokens);
    keys.push_back(previous);
  }
  return keys;
}

}  // namespace

msg::chunk_key next_chunk_key(const model_fingerprint& fingerprint, const std::string& salt,
                              const msg::chunk_key& previous, const std::int32_t* tokens, std::size_t count) {
  sha256 h;
  hash_prefix(h, chunk_tag, sizeof chunk_tag, fingerprint, salt);
  h.update(previous.data(), previous.size());
  const std::uint64_t n = count;
  h.update(&n, sizeof n);
  h.update(tokens, count * sizeof(std::int32_t));
  return h.finish();
}

std::vector<msg::chunk_key> chunk_keys(const model_fingerprint& fingerprint, const std::string& salt,
                                       const std::vector<std::int32_t>& tokens, std::size_t chunk_tokens) {
  return chain(fingerprint, salt, msg::chunk_key{}, tokens, chunk_tokens);
}

msg::chunk_key document_key(const model_fingerprint& fingerprint, const std::string& salt,
                            const std::vector<std::int32_t>& tokens) {
  sha256 h;
  hash_prefix(h, document_tag, sizeof document_tag, fingerprint, salt);
  const std::uint64_t n = tokens.size();
  h.update(&n, sizeof n);
  h.update(tokens.data(), tokens.size() * sizeof(std::int32_t));
  return h.finish();
}

std::vector<msg::chunk_key> document_chunk_keys(const model_fingerprint& fingerprint, const std::string& salt,
                                                const std::vector<std::int32_t>& tokens, std::size_t chunk_tokens) {
  return chain(fingerprint, salt, document_key(fingerprint, salt, tokens), tokens, chunk_tokens);
}

std::vector<msg::chunk_key> document_block_keys(const model_fingerprint& fingerprint, const std::string& salt,
                                                const std::vector<std::int32_t>& tokens, std::size_t chunk_tokens) {
  auto keys = document_chunk_keys(fingerprint, salt, tokens, chunk_tokens);
  const std::size_t full = keys.size() * chunk_tokens;
  if (full < tokens.size()) {
    const msg::chunk_key previous = keys.empty() ? document_key(fingerprint, salt, tokens) : keys.back();
    keys.push_back(next_chunk_key(fingerprint, salt, previous, tokens.data() + full, tokens.size() - full));
  }
  return keys;
}

std::string key_hex(const msg::chunk_key& key) { return to_hex(key); }

}  // namespace kvflow::devices

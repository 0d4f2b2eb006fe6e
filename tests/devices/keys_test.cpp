#define BOOST_TEST_MODULE devices.keys
#include <boost/test/unit_test.hpp>

#include <numeric>

#include "devices/keys.hpp"
#include "messages/error.hpp"

using namespace kvflow;
using namespace kvflow::devices;

namespace {
std::vector<std::int32_t> iota_tokens(std::size_t n, std::int32_t start = 0) {
  std::vector<std::int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}
model_fingerprint fp(std::uint8_t v) {
  model_fingerprint f{};
  f.fill(v);
  return f;
}
}  // namespace

BOOST_AUTO_TEST_CASE(full_chunks_only_and_chained) {
  const auto tokens = iota_tokens(1000);
  const auto keys = chunk_keys(fp(1), "tenant", tokens, 256);
  BOOST_TEST(keys.size() == 3u);  // 1000 / 256, the partial chunk gets no key
  // key(c) = H(fp, salt, key(c-1), tokens of c)
  msg::chunk_key prev{};
  for (std::size_t c = 0; c < keys.size(); ++c) {
    prev = next_chunk_key(fp(1), "tenant", prev, tokens.data() + c * 256, 256);
    BOOST_TEST(key_hex(prev) == key_hex(keys[c]));
  }
  BOOST_TEST(key_hex(keys[0]) != key_hex(keys[1]));
  BOOST_TEST(key_hex(keys[0]).size() == 64u);
}

BOOST_AUTO_TEST_CASE(prefix_property) {
  auto a = iota_tokens(768);
  auto b = a;
  b[600] = -5;  // differs in chunk 2 only
  const auto ka = chunk_keys(fp(1), "s", a, 256), kb = chunk_keys(fp(1), "s", b, 256);
  BOOST_TEST(key_hex(ka[0]) == key_hex(kb[0]));
  BOOST_TEST(key_hex(ka[1]) == key_hex(kb[1]));
  BOOST_TEST(key_hex(ka[2]) != key_hex(kb[2]));
  // A change in chunk 0 changes every later key (the chain).
  b = a;
  b[0] = 7777;
  const auto kc = chunk_keys(fp(1), "s", b, 256);
  for (std::size_t c = 0; c < 3; ++c) BOOST_TEST(key_hex(ka[c]) != key_hex(kc[c]));
}

BOOST_AUTO_TEST_CASE(salt_and_fingerprint_separate) {
  const auto t = iota_tokens(256);
  const auto base = chunk_keys(fp(1), "alice", t, 256)[0];
  BOOST_TEST(key_hex(base) != key_hex(chunk_keys(fp(1), "bob", t, 256)[0]));
  BOOST_TEST(key_hex(base) != key_hex(chunk_keys(fp(2), "alice", t, 256)[0]));
  BOOST_TEST(key_hex(base) == key_hex(chunk_keys(fp(1), "alice", t, 256)[0]));
  BOOST_CHECK_THROW(chunk_keys(fp(1), "alice", t, 0), kvflow::error);
}

BOOST_AUTO_TEST_CASE(document_keys_are_position_independent) {
  const auto doc = iota_tokens(512, 100);
  // The same document after two different prefixes keys the same.
  const auto d1 = document_chunk_keys(fp(1), "s", doc, 256);
  const auto d2 = document_chunk_keys(fp(1), "s", doc, 256);
  BOOST_TEST(d1.size() == 2u);
  BOOST_TEST(key_hex(d1[1]) == key_hex(d2[1]));
  // ... and differently from its prefix keys and from another document.
  BOOST_TEST(key_hex(d1[0]) != key_hex(chunk_keys(fp(1), "s", doc, 256)[0]));
  BOOST_TEST(key_hex(document_key(fp(1), "s", doc)) != key_hex(document_key(fp(1), "s", iota_tokens(512, 101))));
}

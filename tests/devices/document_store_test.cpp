#define BOOST_TEST_MODULE devices.document_store
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <numeric>
#include <vector>

#include "devices/document_store.hpp"
#include "messages/error.hpp"
#include "tests/devices/test_util.hpp"

using namespace kvflow;
using namespace kvflow::devices;
using namespace kvflow::devices::test;

namespace {

const model::kv_shape chunk = small_shape();  // 16-token chunks

chunk_store_options opts(const std::string& dir, std::size_t host_blocks) {
  return store_options(dir, host_blocks, chunk);
}

model::kv_shape doc_shape(int tokens) {
  auto s = chunk;
  s.tokens = tokens;
  return s;
}

std::vector<std::int32_t> doc_tokens(int n, int first) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

model_fingerprint fp() {
  model_fingerprint f{};
  f.fill(9);
  return f;
}

}  // namespace

BOOST_AUTO_TEST_CASE(keys_cover_the_tail_and_differ_from_the_prefix_chain) {
  const auto t = doc_tokens(40, 3);
  const auto keys = document_block_keys(fp(), "s", t, 16);
  BOOST_TEST(keys.size() == 3u);
  const auto chain = document_chunk_keys(fp(), "s", t, 16);
  BOOST_TEST(key_hex(keys[0]) == key_hex(chain[0]));
  BOOST_TEST(key_hex(keys[1]) == key_hex(chain[1]));
  // The same tokens at the start of a prompt key differently: a document
  // entry never answers a prefix lookup.
  const auto prefix = chunk_keys(fp(), "s", t, 16);
  BOOST_TEST(key_hex(keys[0]) != key_hex(prefix[0]));
  // The tail is part of the content: one more token, another last key.
  auto longer = t;
  longer.push_back(99);
  BOOST_TEST(key_hex(document_block_keys(fp(), "s", longer, 16)[2]) != key_hex(keys[2]));
  BOOST_TEST(document_block_keys(fp(), "s", doc_tokens(32, 3), 16).size() == 2u);
  BOOST_TEST(document_block_keys(fp(), "s", doc_tokens(5, 3), 16).size() == 1u);
  BOOST_TEST(key_hex(document_block_keys(fp(), "t", t, 16)[2]) != key_hex(keys[2]));  // tenant salt
}

BOOST_AUTO_TEST_CASE(a_document_round_trips_through_host_and_disk) {
  scratch_dir dir;
  const auto shape = doc_shape(40);
  const auto kv = block_of(shape, 7);
  const auto keys = document_block_keys(fp(), "s", doc_tokens(40, 3), 16);
  for (std::size_t host_blocks : {8, 2}) {  // all in host memory; spilling to disk
    chunk_store cs(opts(dir.path, host_blocks));
    if (host_blocks == 8) BOOST_TEST(!has_document(cs, keys));
    store_document(cs, keys, kv.data(), shape);
    cs.flush();
    BOOST_TEST(has_document(cs, keys));
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<std::uint8_t> back(shape.bytes(), 0xee);
      BOOST_TEST(load_document(cs, keys, back.data(), shape), host_blocks << " host blocks");
      BOOST_TEST(std::memcmp(back.data(), kv.data(), kv.size()) == 0, host_blocks << " host blocks");
    }
  }
}

BOOST_AUTO_TEST_CASE(a_missing_block_is_a_miss_and_bad_shapes_are_refused) {
  scratch_dir dir;
  chunk_store cs(opts(dir.path, 4));
  const auto shape = doc_shape(20);
  const auto kv = block_of(shape, 1);
  auto keys = document_block_keys(fp(), "s", doc_tokens(20, 0), 16);
  store_document(cs, keys, kv.data(), shape);
  keys[1] = key_of(12345);
  std::vector<std::uint8_t> back(shape.bytes());
  BOOST_TEST(!has_document(cs, keys));
  BOOST_TEST(!load_document(cs, keys, back.data(), shape));
  BOOST_CHECK_THROW(store_document(cs, {keys[0]}, kv.data(), shape), kvflow::error);  // 20 tokens need 2 blocks
  auto wrong = shape;
  wrong.head_dim = 16;
  BOOST_CHECK_THROW(load_document(cs, keys, back.data(), wrong), kvflow::error);
}

#define BOOST_TEST_MODULE devices.disk.chunk_file
#include <boost/test/unit_test.hpp>

#include <vector>

#include "devices/disk/chunk_file.hpp"
#include "messages/digest.hpp"
#include "messages/error.hpp"
#include "tests/devices/test_util.hpp"

using namespace kvflow;
using namespace kvflow::devices;
using namespace kvflow::devices::test;

namespace {
model_fingerprint fp() {
  model_fingerprint f{};
  f.fill(0xab);
  return f;
}
}  // namespace

BOOST_AUTO_TEST_CASE(header_round_trip) {
  const auto s = odd_shape();
  const auto block = block_of(s, 3);
  const chunk_header h = make_chunk_header(fp(), key_of(3), s, layer_range{2, 5}, block.data());
  BOOST_TEST(h.payload_bytes == s.span_bytes(2, 5));
  BOOST_TEST(h.layer_checksums.size() == 3u);
  BOOST_TEST(h.layer_checksums[0] == chunk_checksum(block.data() + s.span_offset_bytes(2), s.layer_bytes()));
  std::vector<std::uint8_t> buf(chunk_header_bytes);
  encode_chunk_header(h, buf.data());
  chunk_header d;
  std::string why;
  BOOST_TEST_REQUIRE(decode_chunk_header(buf.data(), d, why), why);
  BOOST_TEST((d.layers == h.layers));
  BOOST_TEST(same_shape(d.shape, s));
  BOOST_TEST(d.payload_bytes == h.payload_bytes);
  BOOST_TEST(d.payload_checksum == h.payload_checksum);
  BOOST_TEST(d.layer_checksums == h.layer_checksums);
  BOOST_TEST(key_hex(d.key) == key_hex(key_of(3)));
  BOOST_TEST(to_hex(d.fingerprint) == to_hex(fp()));
  BOOST_TEST(chunk_file_bytes(1) == 8192u);
  BOOST_TEST(chunk_file_bytes(4096) == 8192u);
}

BOOST_AUTO_TEST_CASE(every_flipped_header_bit_is_rejected) {
  const auto s = small_shape();
  const auto block = block_of(s, 1);
  std::vector<std::uint8_t> buf(chunk_header_bytes);
  encode_chunk_header(make_chunk_header(fp(), key_of(1), s, layer_range{0, 4}, block.data()), buf.data());
  int accepted = 0;
  for (std::size_t byte = 0; byte < chunk_header_bytes; ++byte) {
    for (int bit = 0; bit < 8; bit += 3) {
      auto bad = buf;
      bad[byte] ^= static_cast<std::uint8_t>(1u << bit);
      chunk_header d;
      std::string why;
      if (decode_chunk_header(bad.data(), d, why)) ++accepted;
    }
  }
  BOOST_TEST(accepted == 0);
}

BOOST_AUTO_TEST_CASE(bad_ranges_throw) {
  const auto s = small_shape();
  const auto block = block_of(s, 1);
  BOOST_CHECK_THROW(make_chunk_header(fp(), key_of(1), s, layer_range{2, 2}, block.data()), kvflow::error);
  BOOST_CHECK_THROW(make_chunk_header(fp(), key_of(1), s, layer_range{0, 5}, block.data()), kvflow::error);
}

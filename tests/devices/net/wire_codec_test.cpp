// The wire codec: frames decode bit-exactly to what they were made from
// (bf16-like KV, f32, bytes, edge sizes, incompressible data), and frames
// that are truncated, corrupt or of another size are refused by name.

#define BOOST_TEST_MODULE devices.net.wire_codec
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <random>

#include "devices/net/wire_codec.hpp"
#include "messages/error.hpp"

using namespace kvflow::devices::net;

namespace {

// bf16 of normally distributed values, as KV looks: few exponents.
std::vector<std::uint8_t> bf16_normal(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<std::uint8_t> out(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    float f = d(rng);
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    const auto h = static_cast<std::uint16_t>(u >> 16);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

std::vector<std::uint8_t> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(rng());
  return out;
}

std::vector<std::uint8_t> round_trip(const std::vector<std::uint8_t>& in, std::size_t elem) {
  auto frame = wire_encode(in.data(), in.size(), elem);
  // A guard past the end catches writes beyond the announced size.
  std::vector<std::uint8_t> out(in.size() + 64, 0xA5);
  wire_decode(frame.data(), frame.size(), out.data(), in.size());
  for (std::size_t i = in.size(); i < out.size(); ++i) BOOST_REQUIRE(out[i] == 0xA5);
  out.resize(in.size());
  return out;
}

bool refused(const std::vector<std::uint8_t>& frame, std::size_t bytes, const std::string& says) {
  std::vector<std::uint8_t> out(bytes + 1);
  try {
    wire_decode(frame.data(), frame.size(), out.data(), bytes);
  } catch (const kvflow::error& e) {
    BOOST_TEST_MESSAGE(e.what());
    return e.code() == kvflow::errc::malformed_frame && std::string(e.what()).find(says) != std::string::npos;
  }
  return false;
}

}  // namespace

BOOST_AUTO_TEST_CASE(bf16_kv_round_trips_and_shrinks) {
  auto kv = bf16_normal(1 << 20, 1);
  auto frame = wire_encode(kv.data(), kv.size(), 2);
  const double ratio = double(frame.size()) / kv.size();
  BOOST_TEST_MESSAGE("bf16 normal: frame/raw " << ratio);
  // The exponent plane of a normal sample holds ~3 bits of 8; the sign and
  // mantissa plane stays raw: about 0.7 in all.
  BOOST_TEST(ratio < 0.8);
  BOOST_TEST((round_trip(kv, 2) == kv));
}

BOOST_AUTO_TEST_CASE(every_element_size_and_edge_length_round_trips) {
  for (std::size_t elem : {1u, 2u, 4u, 3u}) {
    for (std::size_t n : {0u, 1u, 2u, 3u, 4u, 5u, 7u, 64u, 4097u, 65536u}) {
      auto in = n % 2 ? random_bytes(n, static_cast<unsigned>(n)) : bf16_normal(n / 2, static_cast<unsigned>(n));
      BOOST_TEST((round_trip(in, elem) == in), "elem " << elem << " bytes " << in.size());
    }
  }
  // Special values: zeros, infinities, NaNs, denormals keep every bit.
  std::vector<std::uint16_t> special = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0xffff, 0x0001, 0x8001, 0x3f80};
  std::vector<std::uint8_t> b(special.size() * 2);
  std::memcpy(b.data(), special.data(), b.size());
  BOOST_TEST((round_trip(b, 2) == b));
  BOOST_TEST((round_trip(b, 4) == b));
}

BOOST_AUTO_TEST_CASE(incompressible_data_round_trips_raw) {
  auto noise = random_bytes(1 << 20, 9);
  auto frame = wire_encode(noise.data(), noise.size(), 2);
  // Every plane raw: only the header is added, and callers send the bytes.
  BOOST_TEST(frame.size() == noise.size() + wire_frame_overhead(2));
  BOOST_TEST((round_trip(noise, 2) == noise));
  auto zeros = std::vector<std::uint8_t>(1 << 20, 0);
  BOOST_TEST(wire_encode(zeros.data(), zeros.size(), 2).size() < 1000u);
  BOOST_TEST((round_trip(zeros, 2) == zeros));
}

BOOST_AUTO_TEST_CASE(corrupt_or_oversized_frames_are_refused) {
  auto kv = bf16_normal(1 << 16, 3);
  const auto n = kv.size();
  auto frame = wire_encode(kv.data(), n, 2);
  BOOST_TEST(refused({}, n, "kvz header"));
  auto bad = frame;
  bad[0] = 'x';
  BOOST_TEST(refused(bad, n, "kvz header"));
  // A frame that claims more (or fewer) bytes than the receiver announced:
  // nothing is allocated for it.
  BOOST_TEST(refused(frame, n - 2, "were announced"));
  bad = frame;
  bad[8 + 5] = 0x40;  // raw size 2^40 and more
  BOOST_TEST(refused(bad, n, "were announced"));
  bad = frame;
  bad.resize(bad.size() - 1);
  BOOST_TEST(refused(bad, n, "runs past the frame"));
  bad = frame;
  bad.push_back(0);
  BOOST_TEST(refused(bad, n, "after the planes"));
  bad = frame;
  bad[16] = 7;  // plane 0's mode
  BOOST_TEST(refused(bad, n, "mode"));
  bad = frame;
  bad[4] = 8;
  BOOST_TEST(refused(bad, n, "element size"));
  // Garbage inside the zstd plane (the exponent plane, 1): zstd's own
  // checks or the size check catch it.
  bad = frame;
  const auto plane1 = wire_frame_overhead(2) + n / 2;
  BOOST_REQUIRE(bad.size() > plane1 + 8);
  for (std::size_t i = plane1; i < plane1 + 8; ++i) bad[i] ^= 0x5a;
  BOOST_TEST(refused(bad, n, "plane 1"));
  // A plane that decodes to more than its share.
  auto big = bf16_normal(1 << 17, 4);
  auto big_frame = wire_encode(big.data(), big.size(), 2);
  std::vector<std::uint8_t> spliced(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(plane1));
  spliced.insert(spliced.end(),
                 big_frame.begin() + static_cast<std::ptrdiff_t>(wire_frame_overhead(2) + big.size() / 2),
                 big_frame.end());
  const auto stored = spliced.size() - plane1;
  for (int k = 0; k < 4; ++k) spliced[16 + 5 + 1 + k] = static_cast<std::uint8_t>(stored >> (8 * k));
  BOOST_TEST(refused(spliced, n, "plane 1"));
}

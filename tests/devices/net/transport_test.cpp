// The UCX transport over loopback TCP: announced transfers land intact,
// anything else is dropped, and a vanished receiver fails the send.

#define BOOST_TEST_MODULE devices.net.transport
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <future>
#include <numeric>
#include <thread>

#include "devices/net/transport.hpp"
#include "devices/net/wire_codec.hpp"
#include "messages/error.hpp"

using namespace kvflow::devices::net;

namespace {

transport_options loopback_tcp() { return {"tcp", "lo"}; }

std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t seed) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i * 131 + seed);
  return v;
}

template <class T>
T wait_for(std::future<T>& f) {
  BOOST_REQUIRE(f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  return f.get();
}

}  // namespace

BOOST_AUTO_TEST_CASE(announced_transfers_land_intact) {
  transport a(loopback_tcp()), b(loopback_tcp());
  // A small (eager) and a large (rendezvous) message.
  for (std::size_t n : {std::size_t{1000}, std::size_t{8} << 20}) {
    auto src = pattern(n, static_cast<std::uint8_t>(n));
    std::vector<std::uint8_t> dst(n);
    std::promise<landed> got;
    auto got_f = got.get_future();
    b.expect(n, n, dst.data(), [&](landed l) { got.set_value(l); });
    std::promise<bool> sent;
    auto sent_f = sent.get_future();
    a.send(b.address(), n, src.data(), n, [&](bool ok, std::string) { sent.set_value(ok); });
    auto l = wait_for(got_f);
    BOOST_TEST(l.ok, l.why);
    BOOST_TEST(l.bytes == n);
    BOOST_TEST(wait_for(sent_f));
    BOOST_TEST(checksum(dst.data(), n) == checksum(src.data(), n));
    BOOST_TEST((dst == src));
  }
  BOOST_TEST(b.refused() == 0u);
}

BOOST_AUTO_TEST_CASE(unannounced_or_resized_transfers_are_dropped) {
  transport a(loopback_tcp()), b(loopback_tcp());
  auto src = pattern(64 << 10, 7);
  std::vector<std::uint8_t> dst(src.size(), 0);
  bool called = false;
  // Announced with another size: dropped, and the announcement stays.
  b.expect(5, src.size() + 1, dst.data(), [&](landed) { called = true; });
  std::promise<void> s1, s2;
  auto f1 = s1.get_future(), f2 = s2.get_future();
  a.send(b.address(), 5, src.data(), src.size(), [&](bool, std::string) { s1.set_value(); });
  a.send(b.address(), 6, src.data(), src.size(), [&](bool, std::string) { s2.set_value(); });
  wait_for(f1);
  wait_for(f2);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (b.refused() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  BOOST_TEST(b.refused() == 2u);
  BOOST_TEST(!called);
  BOOST_TEST(std::all_of(dst.begin(), dst.end(), [](std::uint8_t x) { return x == 0; }));
  BOOST_TEST(b.cancel(5));
  BOOST_TEST(!b.cancel(5));
  BOOST_CHECK_THROW((b.expect(9, 1, dst.data(), [](landed) {}), b.expect(9, 1, dst.data(), [](landed) {})),
                    kvflow::error);
}

BOOST_AUTO_TEST_CASE(a_receiver_that_stops_answers_its_announcements) {
  std::vector<std::uint8_t> dst(16);
  std::promise<landed> got;
  auto f = got.get_future();
  {
    transport b(loopback_tcp());
    b.expect(1, dst.size(), dst.data(), [&](landed l) { got.set_value(l); });
  }
  auto l = wait_for(f);
  BOOST_TEST(!l.ok);
  BOOST_TEST(l.why.find("stopped") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_vanished_peer_fails_the_send) {
  transport a(loopback_tcp());
  std::vector<std::uint8_t> gone;
  {
    transport b(loopback_tcp());
    gone = b.address();
  }
  auto src = pattern(4 << 20, 3);
  std::promise<bool> sent;
  auto f = sent.get_future();
  a.send(gone, 1, src.data(), src.size(), [&](bool ok, std::string) { sent.set_value(ok); });
  BOOST_TEST(!wait_for(f));
}

BOOST_AUTO_TEST_CASE(pieces_spread_over_lanes_land_in_order_with_one_checksum) {
  // Three lanes send to two: pieces cross lanes and land out of order.
  transport a({"tcp", "lo", 3}), b({"tcp", "lo", 2});
  BOOST_TEST(a.lanes() == 3u);
  const std::size_t span = 3 << 20, piece = piece_bytes_for(span);
  BOOST_TEST(span % piece == 0);
  // Four spans from separate buffers (as a node sends from its leases).
  std::vector<std::vector<std::uint8_t>> spans;
  std::vector<region> regions;
  std::vector<std::uint8_t> whole;
  for (int k = 0; k < 4; ++k) {
    spans.push_back(pattern(span, static_cast<std::uint8_t>(k)));
    whole.insert(whole.end(), spans.back().begin(), spans.back().end());
  }
  for (auto& s : spans) regions.push_back({s.data(), s.size()});
  std::vector<std::uint8_t> dst(whole.size());
  std::promise<landed> got;
  auto got_f = got.get_future();
  b.expect(
      42, dst.size(), dst.data(), [&](landed l) { got.set_value(l); }, piece);
  std::promise<sent> out;
  auto out_f = out.get_future();
  a.send(b.address(), 42, regions, piece, [&](sent s) { out.set_value(s); });
  auto l = wait_for(got_f);
  auto s = wait_for(out_f);
  BOOST_TEST(l.ok, l.why);
  BOOST_TEST(s.ok, s.why);
  BOOST_TEST((dst == whole));
  const auto expected = checksum(whole.data(), whole.size(), piece);
  BOOST_TEST(l.checksum == expected);
  BOOST_TEST(s.checksum == expected);
  BOOST_TEST(checksum(whole.data(), whole.size(), piece / 2) != expected);
  // A region that would split a piece, a bad address and an id beyond the
  // tag's bits fail the send without sending.
  for (auto bad : {std::make_tuple(b.address(), std::uint64_t{43}, std::uint64_t{span + 1}),
                   std::make_tuple(std::vector<std::uint8_t>{1, 2, 3}, std::uint64_t{44}, std::uint64_t{piece}),
                   std::make_tuple(b.address(), std::uint64_t{1} << transfer_id_bits, std::uint64_t{piece})}) {
    std::promise<sent> r;
    auto rf = r.get_future();
    a.send(std::get<0>(bad), std::get<1>(bad), regions, std::get<2>(bad), [&](sent x) { r.set_value(x); });
    BOOST_TEST(!wait_for(rf).ok);
  }
  BOOST_CHECK_THROW(b.expect(std::uint64_t{1} << transfer_id_bits, 1, dst.data(), [](landed) {}), kvflow::error);
  BOOST_TEST(b.refused() == 0u);
}

BOOST_AUTO_TEST_CASE(one_piece_transfers_rotate_over_the_receivers_lanes) {
  // A grant of one span is a transfer of one piece: consecutive ones must
  // land on every lane of the receiver, not all on its first (one thread
  // would receive and hash everything).
  transport a({"tcp", "lo", 4}), b({"tcp", "lo", 4});
  const std::size_t n = 256 << 10;
  const int sends = 8;
  auto src = pattern(n, 3);
  std::vector<std::vector<std::uint8_t>> dst(sends, std::vector<std::uint8_t>(n));
  std::vector<std::promise<landed>> got(sends);
  std::vector<std::promise<sent>> out(sends);
  for (int k = 0; k < sends; ++k) {
    auto id = static_cast<std::uint64_t>(100 + k);
    b.expect(id, n, dst[k].data(), [&got, k](landed l) { got[k].set_value(l); });
    a.send(b.address(), id, {region{src.data(), n}}, 0, [&out, k](sent s) { out[k].set_value(s); });
  }
  for (int k = 0; k < sends; ++k) {
    auto gf = got[k].get_future();
    auto of = out[k].get_future();
    auto l = wait_for(gf);
    BOOST_TEST(l.ok, l.why);
    BOOST_TEST(wait_for(of).ok);
    BOOST_TEST((dst[k] == src));
  }
  auto per_lane = b.landed_per_lane();
  BOOST_TEST(per_lane.size() == 4u);
  BOOST_TEST(std::accumulate(per_lane.begin(), per_lane.end(), std::uint64_t{0}) == std::uint64_t(sends));
  for (auto p : per_lane) BOOST_TEST(p == std::uint64_t(sends) / 4);
}

namespace {

// bf16 bytes of a normal sample: the exponent plane compresses.
std::vector<std::uint8_t> kv_like(std::size_t n, unsigned seed) {
  std::vector<std::uint8_t> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::size_t i = 0; i + 1 < n; i += 2) {
    x = x * 1664525u + 1013904223u;
    // Exponents 120..127 (|v| in [2^-7, 2)), random sign and mantissa.
    const auto e = 120u + ((x >> 8) % 8u) - ((x >> 12) % 2u) * ((x >> 13) % 4u);
    const auto h = static_cast<std::uint16_t>(((x >> 31) << 15) | (e << 7) | ((x >> 16) & 0x7f));
    v[i] = static_cast<std::uint8_t>(h);
    v[i + 1] = static_cast<std::uint8_t>(h >> 8);
  }
  return v;
}

struct compressed_send {
  std::vector<std::uint8_t> src;
  std::vector<std::vector<std::uint8_t>> frames;  // kept alive until sent
  std::vector<outgoing_piece> pieces;
};

// Pieces of `piece` bytes of `src`: frames where `frame_it(i)`, raw otherwise.
compressed_send make_pieces(std::vector<std::uint8_t> src, std::size_t piece, bool (*frame_it)(std::size_t)) {
  compressed_send c;
  c.src = std::move(src);
  for (std::size_t at = 0, i = 0; at < c.src.size(); at += piece, ++i) {
    const auto n = std::min(piece, c.src.size() - at);
    if (frame_it(i)) {
      c.frames.push_back(wire_encode(c.src.data() + at, n, 2));
      BOOST_REQUIRE(c.frames.back().size() < n);
    }
  }
  std::size_t f = 0;
  for (std::size_t at = 0, i = 0; at < c.src.size(); at += piece, ++i) {
    const auto n = std::min(piece, c.src.size() - at);
    if (frame_it(i)) {
      c.pieces.push_back({c.frames[f].data(), c.frames[f].size(), true, checksum(c.src.data() + at, n)});
      ++f;
    } else {
      c.pieces.push_back({c.src.data() + at, n});
    }
  }
  return c;
}

}  // namespace

BOOST_AUTO_TEST_CASE(compressed_pieces_land_bit_exact) {
  transport a({"tcp", "lo", 2}), b({"tcp", "lo", 2});
  const std::size_t piece = 256 << 10;
  // Every piece a frame; every other one; none; a short last piece.
  bool (*plans[])(std::size_t) = {[](std::size_t) { return true; }, [](std::size_t i) { return i % 2 == 0; },
                                  [](std::size_t) { return false; }};
  std::uint64_t id = 500;
  for (auto plan : plans) {
    for (std::size_t n : {piece * 6, piece * 3 + 4096}) {
      auto c = make_pieces(kv_like(n, static_cast<unsigned>(id)), piece, plan);
      std::vector<std::uint8_t> dst(n);
      std::promise<landed> got;
      auto gf = got.get_future();
      const auto before = b.totals();
      b.expect(
          id, n, dst.data(), [&](landed l) { got.set_value(l); }, piece, true);
      std::promise<sent> out;
      auto of = out.get_future();
      std::uint64_t wire = 0;
      for (auto& p : c.pieces) wire += p.bytes;
      a.send_pieces(b.address(), id, c.pieces, [&](sent s) { out.set_value(s); });
      auto l = wait_for(gf);
      auto s = wait_for(of);
      BOOST_TEST(l.ok, l.why);
      BOOST_TEST(s.ok, s.why);
      BOOST_TEST((dst == c.src));
      // Both ends agree on the raw bytes' checksum, frames or not.
      BOOST_TEST(l.checksum == checksum(c.src.data(), n, piece));
      BOOST_TEST(s.checksum == l.checksum);
      BOOST_TEST(l.bytes == n);
      BOOST_TEST(l.wire_bytes == wire);
      BOOST_TEST(b.totals().raw_bytes - before.raw_bytes == n);
      BOOST_TEST(b.totals().wire_bytes - before.wire_bytes == wire);
      ++id;
    }
  }
  BOOST_TEST(b.refused() == 0u);
}

BOOST_AUTO_TEST_CASE(corrupt_or_unwanted_frames_fail_the_transfer) {
  transport a({"tcp", "lo", 1}), b({"tcp", "lo", 1});
  const std::size_t piece = 64 << 10;
  auto c = make_pieces(kv_like(piece * 2, 7), piece, [](std::size_t) { return true; });
  // A frame whose exponent plane was altered on the way.
  auto bad = c;
  bad.frames[1][wire_frame_overhead(2) + piece / 2 + 3] ^= 0xff;
  bad.pieces[1].data = bad.frames[1].data();
  std::vector<std::uint8_t> dst(piece * 2);
  {
    std::promise<landed> got;
    auto gf = got.get_future();
    b.expect(
        1, dst.size(), dst.data(), [&](landed l) { got.set_value(l); }, piece, true);
    std::promise<sent> out;
    auto of = out.get_future();
    a.send_pieces(b.address(), 1, bad.pieces, [&](sent s) { out.set_value(s); });
    auto l = wait_for(gf);
    BOOST_TEST(!l.ok);
    BOOST_TEST(l.why.find("wire frame") != std::string::npos, l.why);
    BOOST_TEST(wait_for(of).ok);
  }
  // A frame with an intact codec but other bytes than announced: the
  // checksum (over decoded bytes) tells.
  {
    auto other = c;
    other.pieces[0].raw_checksum ^= 1;
    std::promise<landed> got;
    auto gf = got.get_future();
    b.expect(
        2, dst.size(), dst.data(), [&](landed l) { got.set_value(l); }, piece, true);
    std::promise<sent> out;
    auto of = out.get_future();
    a.send_pieces(b.address(), 2, other.pieces, [&](sent s) { out.set_value(s); });
    auto l = wait_for(gf);
    BOOST_TEST(l.ok, l.why);
    BOOST_TEST(l.checksum != wait_for(of).checksum);
  }
  // Announced without `compressed`: a short piece is refused like any piece
  // of another size, and the transfer never completes.
  {
    bool fired = false;
    b.expect(
        3, dst.size(), dst.data(), [&](landed) { fired = true; }, piece, false);
    std::promise<sent> out;
    auto of = out.get_future();
    a.send_pieces(b.address(), 3, c.pieces, [&](sent s) { out.set_value(s); });
    wait_for(of);
    for (int i = 0; i < 100 && b.refused() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    BOOST_TEST(b.refused() == 2u);
    BOOST_TEST(b.cancel(3));
    BOOST_TEST(!fired);
  }
}

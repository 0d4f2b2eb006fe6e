// A request's KV moved between two UCX workers over loopback TCP: the
// contiguous layout in one call per layer range, the paged baseline in one
// call per (chunk, layer); both land the same bytes.

#define BOOST_TEST_MODULE devices.net.kv_transfer
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstring>
#include <future>
#include <numeric>

#include "devices/net/kv_transfer.hpp"
#include "messages/error.hpp"
#include "messages/pd_codec.hpp"

using namespace kvflow;
using namespace kvflow::devices::net;

namespace {

// 3 layers, 2 heads, 70 tokens in chunks of 32 (the last one short), f32.
request_kv small_request() { return {{3, 2, 70, 4, model::dtype::f32}, 32}; }

float value_at(int l, int kv, int h, int t, int d) {
  return static_cast<float>(l * 100000 + kv * 10000 + h * 1000 + t * 10 + d);
}

// Chunk blocks whose every element names its (layer, K|V, head, token, dim).
std::vector<std::vector<float>> make_chunks(const request_kv& r) {
  std::vector<std::vector<float>> out;
  for (int c = 0; c < r.chunks(); ++c) {
    auto s = r.chunk_shape(c);
    std::vector<float> b(s.bytes() / sizeof(float));
    for (int l = 0; l < s.layers; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int h = 0; h < s.kv_heads; ++h)
          for (int t = 0; t < s.tokens; ++t)
            for (int d = 0; d < s.head_dim; ++d)
              b[s.offset(l, kv, h, t, d)] = value_at(l, kv, h, c * r.chunk_tokens + t, d);
    out.push_back(std::move(b));
  }
  return out;
}

template <class T>
T wait_for(std::future<T>& f) {
  BOOST_REQUIRE(f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  return f.get();
}

// Moves `pieces` of `src` into `dst` from one worker to another.
std::pair<moved, moved> move_pieces(const void* src, void* dst, const std::vector<kv_piece>& pieces,
                                    std::uint64_t id0) {
  transport a({"tcp", "lo"}), b({"tcp", "lo"});
  std::promise<moved> got, sent;
  auto got_f = got.get_future(), sent_f = sent.get_future();
  expect_pieces(b, id0, dst, pieces, [&](moved m) { got.set_value(m); });
  send_pieces(a, b.address(), id0, src, pieces, [&](moved m) { sent.set_value(m); });
  auto r = wait_for(got_f);
  auto s = wait_for(sent_f);
  BOOST_TEST(b.refused() == 0u);
  return {r, s};
}

}  // namespace

BOOST_AUTO_TEST_CASE(contiguous_is_one_piece_per_layer_range_and_per_block_one_per_chunk_layer) {
  auto r = small_request();
  BOOST_TEST(r.chunks() == 3);
  BOOST_TEST(r.chunk_count(2) == 6);
  auto one = contiguous_pieces(r, 0, 3);
  BOOST_REQUIRE(one.size() == 1u);
  BOOST_TEST(one[0].offset == 0u);
  BOOST_TEST(one[0].bytes == r.shape.bytes());
  auto many = per_block_pieces(r, 0, 3);
  BOOST_TEST(many.size() == 9u);
  std::size_t sum = 0;
  for (auto& p : many) sum += p.bytes;
  BOOST_TEST(sum == r.shape.bytes());
  // A layer range of the long block starts at its first layer.
  auto upper = contiguous_pieces(r, 1, 3);
  BOOST_TEST(upper[0].offset == r.shape.layer_bytes());
  BOOST_TEST(upper[0].bytes == 2 * r.shape.layer_bytes());
  BOOST_TEST(per_block_pieces(r, 1, 3).size() == 6u);
  BOOST_CHECK_THROW(contiguous_pieces(r, 2, 2), kvflow::error);
  BOOST_CHECK_THROW(per_block_pieces(r, 0, 4), kvflow::error);
}

BOOST_AUTO_TEST_CASE(pack_puts_every_element_at_its_prompt_position_and_unpack_inverts_it) {
  auto r = small_request();
  auto chunks = make_chunks(r);
  std::vector<const void*> in;
  for (auto& c : chunks) in.push_back(c.data());
  std::vector<float> whole(r.shape.bytes() / sizeof(float), -1.0f);
  pack_chunks(r, in, whole.data(), 0, 3);
  for (int l = 0; l < 3; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int h = 0; h < 2; ++h)
        for (int t = 0; t < 70; t += 7)
          for (int d = 0; d < 4; ++d) BOOST_TEST(whole[r.shape.offset(l, kv, h, t, d)] == value_at(l, kv, h, t, d));
  std::vector<std::vector<float>> back;
  std::vector<void*> out;
  for (auto& c : chunks) back.emplace_back(c.size(), 0.0f);
  for (auto& c : back) out.push_back(c.data());
  unpack_chunks(r, whole.data(), out, 0, 3);
  BOOST_TEST((back == chunks));
  // Only the layers asked for move.
  for (auto& c : back) std::fill(c.begin(), c.end(), 0.0f);
  unpack_chunks(r, whole.data(), out, 2, 3);
  BOOST_TEST(back[0][r.chunk_shape(0).offset(1, 0, 0, 0, 0)] == 0.0f);
  BOOST_TEST(back[0][r.chunk_shape(0).offset(2, 1, 1, 3, 2)] == value_at(2, 1, 1, 3, 2));
  BOOST_CHECK_THROW(pack_chunks(r, {in[0]}, whole.data(), 0, 3), kvflow::error);
}

BOOST_AUTO_TEST_CASE(host_path_moves_the_same_bytes_in_one_call_or_per_block) {
  auto r = small_request();
  auto chunks = make_chunks(r);
  std::vector<const void*> in;
  for (auto& c : chunks) in.push_back(c.data());
  std::vector<float> whole(r.shape.bytes() / sizeof(float));
  pack_chunks(r, in, whole.data(), 0, 3);

  std::vector<float> got(whole.size(), 0.0f);
  auto [recv, sent] = move_pieces(whole.data(), got.data(), contiguous_pieces(r, 0, 3), 100);
  BOOST_TEST(recv.ok, recv.why);
  BOOST_TEST(sent.ok, sent.why);
  BOOST_TEST(recv.calls == 1u);
  BOOST_TEST(recv.bytes == r.shape.bytes());
  BOOST_TEST(checksum(got.data(), r.shape.bytes()) == checksum(whole.data(), r.shape.bytes()));

  // The paged baseline: the chunk blocks back to back, one call per (chunk, layer).
  std::vector<std::uint8_t> arena(r.shape.bytes()), landed_arena(r.shape.bytes());
  for (int c = 0; c < r.chunks(); ++c)
    std::memcpy(arena.data() + r.chunk_offset(c), chunks[static_cast<std::size_t>(c)].data(), r.chunk_shape(c).bytes());
  auto [recv2, sent2] = move_pieces(arena.data(), landed_arena.data(), per_block_pieces(r, 0, 3), 200);
  BOOST_TEST(recv2.ok, recv2.why);
  BOOST_TEST(sent2.calls == 9u);
  BOOST_TEST(recv2.bytes == r.shape.bytes());
  BOOST_TEST((landed_arena == arena));
}

BOOST_AUTO_TEST_CASE(announce_round_trips_and_rejects_a_shape_that_does_not_fit) {
  msg::kv_announce a;
  a.transfer_id = 9;
  a.shape = {32, 8, 8192, 128, model::dtype::bf16};
  a.chunk_tokens = 256;
  a.layer_begin = 0;
  a.layer_end = 32;
  a.bytes = a.shape.bytes();
  a.checksum = 42;
  a.pieces = 1;
  a.ipc_handle.assign(64, 7);
  auto back = msg::decode_kv_announce(msg::encode(a));
  BOOST_REQUIRE(back.has_value());
  BOOST_TEST(back->bytes == 8192ull * 128 * 1024);
  BOOST_TEST((back->ipc_handle == a.ipc_handle));
  a.bytes += 1;
  BOOST_TEST(!msg::decode_kv_announce(msg::encode(a)).has_value());
  std::vector<char> junk(40, '\x55');
  BOOST_TEST(!msg::decode_kv_announce(junk).has_value());
  msg::pd_handoff h;
  h.prompt = {1, 2, 3};
  h.kv = a;
  h.kv.bytes = a.shape.bytes();
  auto hb = msg::decode_pd_handoff(msg::encode(h));
  BOOST_TEST(!hb.has_value());  // the KV's tokens are not the prompt's
}

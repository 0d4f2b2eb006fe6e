#define BOOST_TEST_MODULE messages.codec
#include <boost/test/unit_test.hpp>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "messages/codec.hpp"
#include "messages/kvflow.capnp.h"

using namespace kvflow;
using namespace kvflow::msg;

namespace {

chunk_key key_of(std::uint8_t seed) {
  chunk_key k{};
  for (unsigned i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed + i);
  return k;
}

std::vector<message> one_of_each() {
  return {
      submit{1, "tenant-a", {1, 2, 3, 128000}, "hello", 32, 0.7f, 0.9f, "two_pointer", 123456789},
      register_request{2, 256, 64, 32, {tier::host, tier::disk, tier::remote}, 1u << 20, {0, 0, 2}},
      grant{3, 99, action::load, {4, 8, 0, 16}, tier::disk},
      cell_done{4, 99, action::compute, {0, 1, 0, 32}, 1000, 2000, 4096, 1},
      progress{5, 3, 60, true},
      lookup{6, {key_of(1), key_of(2)}},
      chunk_located{7, {{key_of(3), 0, tier::host, 1024}, {key_of(4), 1, tier::remote, 2048, 3}}},
      load{8, key_of(5), 0, 32, tier::disk, 0xdeadbeef, 5000},
      store{key_of(6), 4, 8, tier::host, 42},
      rate_sample{tier::remote, 1u << 30, 1000000, 2},
      result{9, 42, 12345, 10, 20, {{tier::host, 100}, {tier::disk, 200}}, {42, 43}, "hi"},
      node_inventory{"n1", "10.0.0.1", 4242, {{"H100", 80ull << 30}}, {{tier::host, 1ull << 36, 1ull << 30}}},
      error_report{static_cast<std::uint16_t>(errc::peer_down), "node n2 vanished", 11},
      transfer{12, {key_of(7), key_of(8)}, 2, 4, 8192, 0x1234abcd, {1, 2, 3}},
      kv_layout{key_of(9), 32, 8, 256, 128, 2},
  };
}

errc code_of(const kvflow::error& e) { return e.code(); }

std::string context_of(const kvflow::error& e) { return e.what(); }

// Builds an envelope directly with Cap'n Proto, bypassing encode()'s checks.
template <class Fill>
frame raw_frame(Fill fill) {
  capnp::MallocMessageBuilder b;
  fill(b.initRoot<wire::Envelope>());
  auto words = capnp::messageToFlatArray(b);
  auto chars = words.asChars();
  return frame{std::vector<char>(chars.begin(), chars.end())};
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_message_kind_round_trips) {
  auto all = one_of_each();
  BOOST_REQUIRE_EQUAL(all.size(), std::variant_size_v<message>);
  for (std::size_t i = 0; i < all.size(); ++i) {
    BOOST_TEST_CONTEXT("kind " << kind_name(all[i])) {
      BOOST_CHECK_EQUAL(all[i].index(), i);
      auto f = encode(all[i]);
      BOOST_CHECK_EQUAL(f.bytes.size() % 8, 0u);
      auto back = decode(f);
      BOOST_REQUIRE(back);
      BOOST_CHECK(same(*back, all[i]));
    }
  }
}

BOOST_AUTO_TEST_CASE(transfers_from_a_socket_are_capped) {
  transfer big{1, {key_of(1)}, 0, 1, 1ull << 40, 0, std::vector<std::uint8_t>(8192, 1)};
  BOOST_CHECK_THROW(encode(big), error);
  auto f = raw_frame([](wire::Envelope::Builder env) {
    auto t = env.initTransfer();
    t.initKeys(1).set(0, capnp::Data::Reader(key_of(1).data(), 32));
    t.setLayerEnd(1);
    t.setBytes(1ull << 40);  // a peer declaring more than one chunk's KV per key
  });
  auto e = decode(f);
  BOOST_REQUIRE(!e);
  BOOST_CHECK(code_of(e.error()) == errc::out_of_range);
  auto g = raw_frame([](wire::Envelope::Builder env) {
    auto t = env.initTransfer();
    t.setLayerBegin(3);  // an empty range the wrong way round
    t.setLayerEnd(2);
  });
  BOOST_CHECK(!decode(g));
}

BOOST_AUTO_TEST_CASE(empty_and_unaligned_frames_are_refused) {
  auto e = decode(nullptr, 0);
  BOOST_REQUIRE(!e);
  BOOST_CHECK(code_of(e.error()) == errc::malformed_frame);
  auto f = encode(one_of_each()[0]);
  auto odd = decode(f.bytes.data(), f.bytes.size() - 3);
  BOOST_REQUIRE(!odd);
  BOOST_CHECK(code_of(odd.error()) == errc::malformed_frame);
  BOOST_CHECK_NE(context_of(odd.error()).find("whole number of words"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(every_truncation_is_an_error_never_a_crash) {
  for (auto& m : one_of_each()) {
    auto f = encode(m);
    for (std::size_t cut = 8; cut < f.bytes.size(); cut += 8) {
      auto r = decode(f.bytes.data(), cut);
      BOOST_TEST_CONTEXT(kind_name(m) << " cut at " << cut) {
        BOOST_REQUIRE(!r);
        BOOST_CHECK(code_of(r.error()) == errc::malformed_frame);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(trailing_bytes_are_refused) {
  auto f = encode(one_of_each()[2]);
  f.bytes.resize(f.bytes.size() + 16, 0);
  auto r = decode(f);
  BOOST_REQUIRE(!r);
  BOOST_CHECK_NE(context_of(r.error()).find("trailing"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(oversized_frames_are_refused_before_parsing) {
  limits lim;
  lim.max_frame_bytes = 64;
  msg::submit big;
  big.tokens.assign(1000, 5);
  auto r = decode(encode(big), lim);
  BOOST_REQUIRE(!r);
  BOOST_CHECK(code_of(r.error()) == errc::frame_too_large);
}

BOOST_AUTO_TEST_CASE(traversal_limit_stops_amplification) {
  limits lim;
  lim.traversal_words = 100;
  msg::submit big;
  big.tokens.assign(4000, 5);
  auto r = decode(encode(big), lim);
  BOOST_REQUIRE(!r);
  BOOST_CHECK(code_of(r.error()) == errc::malformed_frame);
}

BOOST_AUTO_TEST_CASE(deep_nesting_is_refused) {
  limits lim;
  lim.nesting = 2;  // envelope -> chunkLocated -> chunks list -> key: depth 3
  auto r = decode(encode(one_of_each()[6]), lim);
  BOOST_REQUIRE(!r);
  BOOST_CHECK(code_of(r.error()) == errc::malformed_frame);
  BOOST_CHECK_NE(context_of(r.error()).find("capnp"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(flipped_bits_never_crash) {
  // Every single-bit flip either decodes to some message or is an error value.
  for (auto& m : one_of_each()) {
    auto f = encode(m);
    for (std::size_t bit = 0; bit < f.bytes.size() * 8; bit += 3) {
      auto g = f;
      g.bytes[bit / 8] ^= static_cast<char>(1 << (bit % 8));
      auto r = decode(g);
      if (!r) BOOST_CHECK(code_of(r.error()) == errc::malformed_frame || code_of(r.error()) == errc::out_of_range);
    }
  }
}

BOOST_AUTO_TEST_CASE(out_of_range_values_name_the_field) {
  auto bad_tier = raw_frame([](wire::Envelope::Builder e) { e.initRateSample().setTier(static_cast<wire::Tier>(9)); });
  auto r1 = decode(bad_tier);
  BOOST_REQUIRE(!r1);
  BOOST_CHECK(code_of(r1.error()) == errc::out_of_range);
  BOOST_CHECK_NE(context_of(r1.error()).find("rateSample.tier"), std::string::npos);

  auto bad_key = raw_frame([](wire::Envelope::Builder e) {
    auto l = e.initLoad();
    l.setKey(kj::heapArray<capnp::byte>(5));
  });
  auto r2 = decode(bad_key);
  BOOST_REQUIRE(!r2);
  BOOST_CHECK_NE(context_of(r2.error()).find("load.key"), std::string::npos);

  auto bad_range = raw_frame([](wire::Envelope::Builder e) {
    auto c = e.initGrant().initCells();
    c.setLayerBegin(5);
    c.setLayerEnd(2);
  });
  auto r3 = decode(bad_range);
  BOOST_REQUIRE(!r3);
  BOOST_CHECK_NE(context_of(r3.error()).find("grant.cells"), std::string::npos);

  auto negative_token = raw_frame([](wire::Envelope::Builder e) {
    auto t = e.initSubmit().initTokens(2);
    t.set(0, 1);
    t.set(1, -4);
  });
  auto r4 = decode(negative_token);
  BOOST_REQUIRE(!r4);
  BOOST_CHECK_NE(context_of(r4.error()).find("submit.tokens"), std::string::npos);

  auto unknown_kind = raw_frame([](wire::Envelope::Builder e) { e.initError(); });
  // Flat layout: word 0 segment table, word 1 root pointer, word 2 the root's
  // data section whose first 16 bits hold the union discriminant.
  auto& bytes = unknown_kind.bytes;
  BOOST_REQUIRE_EQUAL(static_cast<int>(bytes[16]), 12);
  bytes[16] = 40;
  auto r5 = decode(unknown_kind);
  BOOST_REQUIRE(!r5);
  BOOST_CHECK_NE(context_of(r5.error()).find("unknown message kind"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(counts_ids_and_codes_are_range_checked) {
  auto zero_chunk_tokens = raw_frame([](wire::Envelope::Builder e) {
    auto r = e.initRegister();
    r.setNumChunks(4);
    r.setChunkTokens(0);
  });
  auto r1 = decode(zero_chunk_tokens);
  BOOST_REQUIRE(!r1);
  BOOST_CHECK_NE(context_of(r1.error()).find("register.chunkTokens"), std::string::npos);

  auto bad_device = raw_frame([](wire::Envelope::Builder e) { e.initCellDone().setDevice(1u << 20); });
  auto r2 = decode(bad_device);
  BOOST_REQUIRE(!r2);
  BOOST_CHECK_NE(context_of(r2.error()).find("cellDone.device"), std::string::npos);

  auto bad_first = raw_frame([](wire::Envelope::Builder e) { e.initResult().setFirstToken(-7); });
  auto r3 = decode(bad_first);
  BOOST_REQUIRE(!r3);
  BOOST_CHECK_NE(context_of(r3.error()).find("result.firstToken"), std::string::npos);

  auto bad_code = raw_frame([](wire::Envelope::Builder e) { e.initError().setCode(999); });
  auto r4 = decode(bad_code);
  BOOST_REQUIRE(!r4);
  BOOST_CHECK_NE(context_of(r4.error()).find("error.code"), std::string::npos);

  // Zero-size structs cost no bytes on the wire: the inventory's lists are
  // capped by count so a small frame cannot expand into a large vector.
  auto many_tiers = raw_frame([](wire::Envelope::Builder e) { e.initNodeInventory().initTiers(17); });
  auto r5 = decode(many_tiers);
  BOOST_REQUIRE(!r5);
  BOOST_CHECK_NE(context_of(r5.error()).find("nodeInventory.tiers"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(encode_refuses_what_decode_would_refuse) {
  register_request zero{2, 0, 4, 32, {}, 0};
  try {
    encode(zero);
    BOOST_FAIL("encode accepted chunkTokens 0");
  } catch (const kvflow::error& e) {
    BOOST_CHECK(e.code() == errc::out_of_range);
    BOOST_CHECK_NE(std::string(e.what()).find("register.chunkTokens"), std::string::npos);
  }
  BOOST_CHECK_THROW(encode(submit{1, "", {1, -2}, "", 0, 0.f, 1.f, "", 0}), kvflow::error);
}

BOOST_AUTO_TEST_CASE(register_needs_one_link_per_cached_chunk) {
  // encode() checks its frame with the decoder, whose limits are the ones
  // a frame from a socket meets.
  register_request r{2, 256, 64, 32, {tier::remote, tier::remote}, 1u << 20, {1}};
  BOOST_CHECK_EXCEPTION(encode(r), kvflow::error, [](const kvflow::error& e) {
    return std::string(e.what()).find("chunkLinks") != std::string::npos;
  });
}

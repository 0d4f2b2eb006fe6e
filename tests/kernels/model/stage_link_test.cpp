#define BOOST_TEST_MODULE kernels.model.stage_link
#include <boost/test/unit_test.hpp>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <numeric>
#include <string>
#include <vector>

#include "kernels/model/config.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/stage_link.hpp"
#include "kernels/model/weights.hpp"
#include "messages/error.hpp"
#include "messages/kvflow.capnp.h"

using namespace kvflow;
using namespace kvflow::model;

BOOST_AUTO_TEST_CASE(a_host_link_moves_activations_between_two_engines) {
  auto w = random_weights(preset("tiny-test"), 3);
  auto a = make_cpu_engine(w, 1);
  auto b = make_cpu_engine(w, 1);
  auto link = make_host_link(*a, *b);
  BOOST_TEST(std::string(link->kind()) == "host");
  const std::size_t n = 16 * 64;
  auto* src = static_cast<float*>(a->allocate(n * sizeof(float)));
  auto* dst = static_cast<float*>(b->allocate(n * sizeof(float)));
  std::iota(src, src + n, 0.5f);
  std::fill(dst, dst + n, -1.0f);
  link->send(src, dst, n * sizeof(float));
  BOOST_TEST(std::equal(src, src + n, dst));
  a->release(src);
  b->release(dst);
}

BOOST_AUTO_TEST_CASE(an_nccl_id_round_trips_through_its_capnp_message) {
  link_id id;
  for (std::size_t i = 0; i < id.id.size(); ++i) id.id[i] = static_cast<std::uint8_t>(i * 7 + 1);
  id.ranks = 4;
  id.rank = 3;
  auto back = decode_link_id(encode_link_id(id));
  BOOST_TEST(back.id == id.id);
  BOOST_TEST(back.ranks == 4u);
  BOOST_TEST(back.rank == 3u);
}

BOOST_AUTO_TEST_CASE(a_malformed_nccl_id_message_is_refused) {
  // The code's name, so that a failed check prints it.
  auto code_of = [](const std::vector<std::uint8_t>& bytes) -> std::string {
    try {
      decode_link_id(bytes);
    } catch (const error& e) {
      return to_string(e.code());
    }
    return "none";
  };
  BOOST_TEST(code_of({}) == to_string(errc::malformed_frame));
  BOOST_TEST(code_of({1, 2, 3}) == to_string(errc::malformed_frame));
  BOOST_TEST(code_of(std::vector<std::uint8_t>(64, 0xff)) == to_string(errc::malformed_frame));
  link_id id;
  id.ranks = 2;
  id.rank = 2;  // outside [0, ranks)
  BOOST_TEST(code_of(encode_link_id(id)) == to_string(errc::out_of_range));
  // An id of the wrong length.
  capnp::MallocMessageBuilder builder;
  auto m = builder.initRoot<wire::NcclUniqueId>();
  std::uint8_t short_id[16] = {};
  m.setId(capnp::Data::Reader(short_id, sizeof(short_id)));
  m.setRanks(2);
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  BOOST_TEST(code_of({bytes.begin(), bytes.end()}) == to_string(errc::out_of_range));
  // Truncated.
  auto good = encode_link_id(link_id{{}, 2, 1});
  good.resize(good.size() - 8);
  BOOST_TEST(code_of(good) == to_string(errc::malformed_frame));
}

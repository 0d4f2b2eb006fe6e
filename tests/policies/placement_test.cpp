#define BOOST_TEST_MODULE policies.placement
#include <boost/test/unit_test.hpp>

#include <map>

#include "policies/placement.hpp"

using namespace kvflow;
using namespace kvflow::policies;

namespace {

std::vector<msg::chunk_key> keys(std::size_t n) {
  std::vector<msg::chunk_key> out(n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < 32; ++j) out[i][j] = static_cast<std::uint8_t>((i * 2654435761u >> (j % 4 * 8)) + j);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(keys_spread_evenly_and_every_process_agrees) {
  std::vector<std::string> nodes{"a:1", "b:1", "c:1"};
  auto ks = keys(30000);
  auto first = first_owners(ks, nodes);
  std::map<std::size_t, std::size_t> count;
  for (auto o : first) ++count[o];
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    BOOST_TEST_CONTEXT("node " << nodes[i]) {
      BOOST_TEST(count[i] > 9000u);
      BOOST_TEST(count[i] < 11000u);
    }
  }
  BOOST_TEST((first_owners(ks, nodes) == first));
  // The order nodes are listed in does not matter, only their names.
  std::vector<std::string> shuffled{"c:1", "a:1", "b:1"};
  auto again = first_owners(ks, shuffled);
  for (std::size_t i = 0; i < ks.size(); ++i) BOOST_TEST_REQUIRE(shuffled[again[i]] == nodes[first[i]]);
}

BOOST_AUTO_TEST_CASE(a_node_leaving_moves_only_its_own_keys) {
  std::vector<std::string> nodes{"a:1", "b:1", "c:1", "d:1"};
  auto ks = keys(20000);
  auto before = first_owners(ks, nodes);
  std::vector<bool> up{true, false, true, true};  // b goes down
  auto after = first_owners(ks, nodes, up);
  std::size_t moved = 0;
  for (std::size_t i = 0; i < ks.size(); ++i) {
    if (before[i] != 1) {
      BOOST_TEST_REQUIRE(after[i] == before[i]);
    } else {
      BOOST_TEST_REQUIRE(after[i] != 1u);
      ++moved;
    }
  }
  BOOST_TEST(moved > 4000u);  // about a quarter
  BOOST_TEST(moved < 6000u);
  // Its keys' second owners take them over: a replica is found where it was stored.
  for (std::size_t i = 0; i < ks.size(); ++i)
    if (before[i] == 1) BOOST_TEST_REQUIRE(owners(ks[i], nodes, 2)[1] == after[i]);
}

BOOST_AUTO_TEST_CASE(a_node_joining_takes_only_its_share) {
  std::vector<std::string> three{"a:1", "b:1", "c:1"};
  auto four = three;
  four.push_back("e:1");
  auto ks = keys(20000);
  auto before = first_owners(ks, three);
  auto after = first_owners(ks, four);
  std::size_t taken = 0;
  for (std::size_t i = 0; i < ks.size(); ++i) {
    if (after[i] == 3)
      ++taken;
    else
      BOOST_TEST_REQUIRE(after[i] == before[i]);
  }
  BOOST_TEST(taken > 4000u);
  BOOST_TEST(taken < 6000u);
}

BOOST_AUTO_TEST_CASE(owners_are_distinct_and_bounded_by_the_nodes_up) {
  std::vector<std::string> nodes{"a:1", "b:1", "c:1"};
  auto k = keys(1)[0];
  auto two = owners(k, nodes, 2);
  BOOST_REQUIRE_EQUAL(two.size(), 2u);
  BOOST_TEST(two[0] != two[1]);
  BOOST_TEST(owners(k, nodes, 5).size() == 3u);
  BOOST_TEST(owners(k, nodes, 2, {false, false, false}).empty());
  BOOST_TEST(first_owners({k}, nodes, {false, false, false}).front() == 3u);
  BOOST_TEST(owners(k, {}, 1).empty());
}

#define BOOST_TEST_MODULE messages.expected
#include <boost/test/unit_test.hpp>

#include <string>
#include <variant>

#include "messages/expected.hpp"

using namespace kvflow;

BOOST_AUTO_TEST_CASE(holds_a_value) {
  expected<std::string> e(std::string("frame"));
  BOOST_REQUIRE(e);
  BOOST_TEST(e.has_value());
  BOOST_TEST(*e == "frame");
  BOOST_TEST(e->size() == 5u);
  BOOST_CHECK_THROW(e.error(), std::bad_variant_access);
}

BOOST_AUTO_TEST_CASE(holds_an_error_with_its_code_and_context) {
  expected<int> e(error(errc::malformed_frame, "frame of 3 bytes"));
  BOOST_REQUIRE(!e);
  BOOST_TEST(static_cast<int>(e.error().code()) == static_cast<int>(errc::malformed_frame));
  BOOST_TEST(std::string(e.error().what()).find("frame of 3 bytes") != std::string::npos);
  BOOST_CHECK_THROW(e.value(), std::bad_variant_access);
}

BOOST_AUTO_TEST_CASE(moves_the_value_out) {
  expected<std::string> e(std::string(100, 'x'));
  std::string s = std::move(e).value();
  BOOST_TEST(s.size() == 100u);
}

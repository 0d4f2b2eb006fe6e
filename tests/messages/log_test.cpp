#define BOOST_TEST_MODULE messages.log
#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include "messages/error.hpp"
#include "messages/log.hpp"

BOOST_AUTO_TEST_CASE(one_logger_per_subsystem) {
  auto a = kvflow::logger("tiers");
  auto b = kvflow::logger("tiers");
  auto c = kvflow::logger("kernels");
  BOOST_CHECK(a == b);
  BOOST_CHECK(a != c);
}

BOOST_AUTO_TEST_CASE(level_from_flag_and_environment) {
  ::unsetenv("KVFLOW_LOG_LEVEL");
  kvflow::init_logging("debug");
  BOOST_CHECK(kvflow::logger("tiers")->level() == spdlog::level::debug);
  ::setenv("KVFLOW_LOG_LEVEL", "error", 1);
  kvflow::init_logging("debug");
  BOOST_CHECK(kvflow::logger("tiers")->level() == spdlog::level::err);
  BOOST_CHECK(kvflow::logger("new-one")->level() == spdlog::level::err);
  ::unsetenv("KVFLOW_LOG_LEVEL");
}

BOOST_AUTO_TEST_CASE(unknown_level_is_a_clear_error) {
  ::unsetenv("KVFLOW_LOG_LEVEL");
  try {
    kvflow::init_logging("loud");
    BOOST_FAIL("no error for an unknown level");
  } catch (const kvflow::error& e) {
    BOOST_CHECK(e.code() == kvflow::errc::invalid_argument);
    BOOST_CHECK_NE(std::string(e.what()).find("loud"), std::string::npos);
  }
}

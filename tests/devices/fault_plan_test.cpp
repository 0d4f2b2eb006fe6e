#define BOOST_TEST_MODULE devices.fault_plan
#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include "devices/fault_plan.hpp"
#include "messages/error.hpp"

using namespace kvflow;
using namespace kvflow::devices;

BOOST_AUTO_TEST_CASE(parses_probabilities_and_counts_what_it_injects) {
  auto plan = fault_plan::parse("disk_read_error=1,tier_stall=0,duplicate_completion=0.5,seed=3");
  BOOST_TEST(plan->probability(fault::disk_read_error) == 1.0);
  BOOST_TEST(plan->probability(fault::disk_truncate) == 0.0);
  for (int i = 0; i < 10; ++i) BOOST_TEST(plan->roll(fault::disk_read_error));
  BOOST_TEST(!plan->roll(fault::tier_stall));
  BOOST_TEST(plan->injected(fault::disk_read_error) == 10u);
  BOOST_TEST(plan->injected(fault::tier_stall) == 0u);
  int hits = 0;
  for (int i = 0; i < 1000; ++i) hits += plan->roll(fault::duplicate_completion) ? 1 : 0;
  BOOST_TEST(hits > 400);
  BOOST_TEST(hits < 600);
  BOOST_TEST(plan->injected(fault::duplicate_completion) == static_cast<std::uint64_t>(hits));
  BOOST_TEST(plan->describe() == "disk_read_error=1,duplicate_completion=0.5");
}

BOOST_AUTO_TEST_CASE(the_same_seed_injects_the_same_faults) {
  auto a = fault_plan::parse("disk_truncate=0.3,seed=9");
  auto b = fault_plan::parse("disk_truncate=0.3,seed=9");
  for (int i = 0; i < 100; ++i) BOOST_TEST(a->roll(fault::disk_truncate) == b->roll(fault::disk_truncate));
}

BOOST_AUTO_TEST_CASE(bad_plans_are_refused_with_the_entry) {
  for (const char* bad : {"disk_read_error", "disk_read_error=2", "disk_read_error=x", "nonsense=0.1", "seed=-"}) {
    BOOST_TEST_CONTEXT(bad) {
      BOOST_CHECK_EXCEPTION(fault_plan::parse(bad), error, [](const error& e) {
        return e.code() == errc::invalid_argument && std::string(e.what()).find("fault plan") != std::string::npos;
      });
    }
  }
}

BOOST_AUTO_TEST_CASE(no_plan_without_the_environment_variable) {
  ::unsetenv("KVFLOW_FAULTS");
  BOOST_TEST(!fault_plan::from_env());
  ::setenv("KVFLOW_FAULTS", "", 1);
  BOOST_TEST(!fault_plan::from_env());
  ::setenv("KVFLOW_FAULTS", "disk_write_full=0.25", 1);
  auto plan = fault_plan::from_env();
  BOOST_REQUIRE(plan);
  BOOST_TEST(plan->probability(fault::disk_write_full) == 0.25);
  ::unsetenv("KVFLOW_FAULTS");
}

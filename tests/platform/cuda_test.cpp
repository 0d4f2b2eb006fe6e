#define BOOST_TEST_MODULE platform.cuda
#include <boost/test/unit_test.hpp>

#include "platform/cuda.hpp"

using namespace kvflow::platform;

BOOST_AUTO_TEST_CASE(the_feature_macro_and_the_build_agree) {
#ifdef KVFLOW_HAVE_CUDA
  BOOST_TEST(built_with_cuda());
#else
  BOOST_TEST(!built_with_cuda());
#endif
}

BOOST_AUTO_TEST_CASE(a_build_without_cuda_sees_no_device) {
  const int n = cuda_device_count();
  BOOST_TEST(n >= 0);
  BOOST_TEST(cuda_device_available() == (n > 0));
  if (!built_with_cuda()) BOOST_TEST(n == 0);
  // Asking again after a failed probe gives the same answer (the error is
  // cleared, not left for the next call).
  BOOST_TEST(cuda_device_count() == n);
}

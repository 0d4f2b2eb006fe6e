#define BOOST_TEST_MODULE platform.unique_fd
#include <boost/test/unit_test.hpp>

#include <cerrno>
#include <utility>

#include <fcntl.h>

#include "platform/unique_fd.hpp"

using kvflow::platform::unique_fd;

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

int open_null() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

BOOST_AUTO_TEST_CASE(closes_when_it_goes) {
  int raw = -1;
  {
    unique_fd fd(open_null());
    BOOST_REQUIRE(fd);
    raw = fd.get();
    BOOST_TEST(is_open(raw));
  }
  BOOST_TEST(!is_open(raw));
}

BOOST_AUTO_TEST_CASE(a_failed_open_holds_nothing) {
  unique_fd fd(::open("/nonexistent/kvflow", O_RDONLY));
  BOOST_TEST(!fd);
  BOOST_TEST(fd.get() == -1);
}

BOOST_AUTO_TEST_CASE(moves_hand_the_descriptor_over_once) {
  unique_fd a(open_null());
  const int raw = a.get();
  unique_fd b(std::move(a));
  BOOST_TEST(!a);  // NOLINT(bugprone-use-after-move): moved-from holds nothing
  BOOST_TEST(b.get() == raw);
  unique_fd c(open_null());
  const int other = c.get();
  c = std::move(b);  // closes c's own descriptor
  BOOST_TEST(c.get() == raw);
  BOOST_TEST(is_open(raw));
  BOOST_TEST(!is_open(other));
}

BOOST_AUTO_TEST_CASE(release_keeps_and_reset_closes) {
  unique_fd fd(open_null());
  const int raw = fd.release();
  BOOST_TEST(!fd);
  BOOST_TEST(is_open(raw));
  fd.reset(raw);
  BOOST_TEST(fd.get() == raw);
  fd.reset();
  BOOST_TEST(!is_open(raw));
}

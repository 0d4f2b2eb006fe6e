#define BOOST_TEST_MODULE messages.digest
#include <boost/test/unit_test.hpp>

#include <string>

#include "messages/digest.hpp"

BOOST_AUTO_TEST_CASE(known_vectors) {
  BOOST_CHECK_EQUAL(kvflow::to_hex(kvflow::sha256_of("", 0)),
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::string abc = "abc";
  BOOST_CHECK_EQUAL(kvflow::to_hex(kvflow::sha256_of(abc.data(), abc.size())),
                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

BOOST_AUTO_TEST_CASE(incremental_equals_one_shot) {
  std::string s(1000, 'x');
  kvflow::sha256 h;
  h.update(s.data(), 300).update(s.data() + 300, 700);
  BOOST_CHECK(h.finish() == kvflow::sha256_of(s.data(), s.size()));
}

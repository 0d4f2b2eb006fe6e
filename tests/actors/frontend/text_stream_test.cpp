#define BOOST_TEST_MODULE actors.frontend.text_stream
#include <boost/test/unit_test.hpp>

#include <map>

#include "actors/frontend/text_stream.hpp"

using namespace kvflow::frontend;

namespace {

// A toy tokenizer: each id is a fixed piece of text.
text_stream::decode_fn pieces(std::map<std::int32_t, std::string> table) {
  return [table](const std::vector<std::int32_t>& ids) {
    std::string s;
    for (auto id : ids) s += table.at(id);
    return s;
  };
}

}  // namespace

BOOST_AUTO_TEST_CASE(shows_text_as_it_comes_and_hides_end_of_turn) {
  text_stream ts(pieces({{1, "Hello"}, {2, " world"}, {9, "<eot>"}}), {}, {9});
  BOOST_TEST(ts.push(1) == "Hello");
  BOOST_TEST(ts.push(2) == " world");
  BOOST_TEST(ts.push(9) == "");
  BOOST_TEST(ts.finish() == "");
  BOOST_TEST(ts.text() == "Hello world");
  BOOST_TEST(ts.tokens() == (std::vector<std::int32_t>{1, 2}));
  BOOST_TEST(!ts.stopped());
}

BOOST_AUTO_TEST_CASE(holds_back_half_characters) {
  // "é" is C3 A9: one token per byte.
  text_stream ts(pieces({{1, "a"}, {2, "\xC3"}, {3, "\xA9"}}), {}, {});
  BOOST_TEST(ts.push(1) == "a");
  BOOST_TEST(ts.push(2) == "");
  BOOST_TEST(ts.push(3) == "\xC3\xA9");
  BOOST_TEST(incomplete_utf8_tail("x\xE2\x82") == 2u);
  BOOST_TEST(incomplete_utf8_tail("x\xE2\x82\xAC") == 0u);
  BOOST_TEST(incomplete_utf8_tail("abc") == 0u);
}

BOOST_AUTO_TEST_CASE(stop_strings_end_the_reply_and_are_not_shown) {
  text_stream ts(pieces({{1, "one"}, {2, " EN"}, {3, "D two"}, {4, " three"}}), {"END"}, {});
  BOOST_TEST(ts.push(1) == "one");
  // " EN" could be the start of END: held back.
  BOOST_TEST(ts.push(2) == " ");
  BOOST_TEST(ts.push(3) == "");
  BOOST_TEST(ts.stopped());
  BOOST_TEST(ts.push(4) == "");
  BOOST_TEST(ts.finish() == "");
  BOOST_TEST(ts.text() == "one ");
  BOOST_TEST(ts.tokens() == (std::vector<std::int32_t>{1, 2, 3}));
}

BOOST_AUTO_TEST_CASE(a_held_back_prefix_that_does_not_complete_is_shown) {
  text_stream ts(pieces({{1, "a E"}, {2, "X"}}), {"END"}, {});
  BOOST_TEST(ts.push(1) == "a ");
  BOOST_TEST(ts.push(2) == "EX");
  BOOST_TEST(ts.finish() == "");
  text_stream end(pieces({{1, "a E"}}), {"END"}, {});
  BOOST_TEST(end.push(1) == "a ");
  BOOST_TEST(end.finish() == "E");  // no token follows: the prefix is final
}

BOOST_AUTO_TEST_CASE(without_a_tokenizer_only_ids_count) {
  text_stream ts(nullptr, {}, {0});
  BOOST_TEST(ts.push(5) == "");
  BOOST_TEST(ts.push(6) == "");
  BOOST_TEST(ts.push(0) == "");
  BOOST_TEST(ts.tokens() == (std::vector<std::int32_t>{5, 6}));
}

#define BOOST_TEST_MODULE apps.load.trace
#include <boost/test/unit_test.hpp>

// The mooncake trace parser on good and bad lines, and prompts rebuilt from
// hash ids: shared ids give a shared prefix, different ids do not.

#include "apps/load/synthetic.hpp"
#include "apps/load/trace.hpp"
#include "messages/error.hpp"
#include "tests/apps/load/test_files.hpp"

using namespace kvflow::load;
using kvflow::load::testing::error_message;
using kvflow::load::testing::scratch;

BOOST_AUTO_TEST_CASE(parses_a_mooncake_line) {
  auto e = parse_trace_line(
      R"({"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 2353], "session_id": "s1"})",
      "t:1");
  BOOST_CHECK_EQUAL(e.timestamp_ms, 27482.0);
  BOOST_CHECK_EQUAL(e.input_length, 6955);
  BOOST_CHECK_EQUAL(e.output_length, 52);
  BOOST_CHECK((e.hash_ids == std::vector<std::uint64_t>{46, 47, 2353}));
  BOOST_CHECK_EQUAL(e.session_id, "s1");
  auto n = parse_trace_line(R"({"timestamp": 0, "input_length": 10, "output_length": 1, "session_id": 7})", "t:2");
  BOOST_CHECK(n.hash_ids.empty());
  BOOST_CHECK_EQUAL(n.session_id, "7");
}

BOOST_AUTO_TEST_CASE(bad_lines_name_the_place_and_the_field) {
  struct bad_case {
    const char* line;
    const char* says;
  };
  for (auto c :
       {bad_case{"{not json", "not JSON"}, bad_case{"[1, 2]", "not a JSON object"},
        bad_case{R"({"input_length": 5, "output_length": 1})", "missing \"timestamp\""},
        bad_case{R"({"timestamp": -1, "input_length": 5, "output_length": 1})", "negative"},
        bad_case{R"({"timestamp": 0, "input_length": "5", "output_length": 1})", "not a number"},
        bad_case{R"({"timestamp": 0, "input_length": 5.5, "output_length": 1})", "whole number"},
        bad_case{R"({"timestamp": 0, "input_length": 0, "output_length": 1})", "input_length\" is 0"},
        bad_case{R"({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [1, -2]})", "-2"},
        bad_case{R"({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": 3})", "not an array"},
        bad_case{R"({"timestamp": 0, "input_length": 5, "output_length": 1, "session_id": [1]})", "session_id"}}) {
    auto msg = error_message([&] { parse_trace_line(c.line, "trace.jsonl:12"); });
    BOOST_CHECK_MESSAGE(msg.find("trace.jsonl:12") != std::string::npos, msg);
    BOOST_CHECK_MESSAGE(msg.find(c.says) != std::string::npos, c.line << " -> " << msg);
  }
}

BOOST_AUTO_TEST_CASE(reads_a_file_sorted_and_reports_the_bad_line) {
  scratch s("trace-test");
  auto good = s.write("good.jsonl",
                      "{\"timestamp\": 500, \"input_length\": 10, \"output_length\": 2, \"hash_ids\": [1]}\n"
                      "\n# a comment\n"
                      "{\"timestamp\": 100, \"input_length\": 20, \"output_length\": 3, \"hash_ids\": [1]}\n");
  auto entries = read_trace(good.string());
  BOOST_REQUIRE_EQUAL(entries.size(), 2u);
  BOOST_CHECK_EQUAL(entries[0].timestamp_ms, 100.0);
  BOOST_CHECK_EQUAL(entries[0].line, 4);
  auto bad = s.write("bad.jsonl",
                     "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 2}\n"
                     "{\"timestamp\": 1, \"input_length\": 10}\n");
  auto msg = error_message([&] { read_trace(bad.string()); });
  BOOST_CHECK_MESSAGE(msg.find(bad.string() + ":2") != std::string::npos, msg);
  BOOST_CHECK_MESSAGE(msg.find("output_length") != std::string::npos, msg);
  auto empty = s.write("empty.jsonl", "\n");
  BOOST_CHECK_THROW(read_trace(empty.string()), kvflow::error);
  BOOST_CHECK_THROW(read_trace("/nonexistent/trace.jsonl"), kvflow::error);
}

BOOST_AUTO_TEST_CASE(shared_hash_ids_give_shared_prefixes) {
  trace_entry a, b, c;
  a.input_length = 20;  // blocks of 8: ids 1, 2, then 4 tokens of id 3
  a.hash_ids = {1, 2, 3};
  b.input_length = 14;
  b.hash_ids = {1, 2};
  c.input_length = 20;
  c.hash_ids = {1, 9, 3};
  auto ta = trace_prompt_tokens(a, 8, 100, 0);
  auto tb = trace_prompt_tokens(b, 8, 100, 1);
  auto tc = trace_prompt_tokens(c, 8, 100, 2);
  BOOST_CHECK_EQUAL(ta.size(), 20u);
  BOOST_CHECK_EQUAL(tb.size(), 14u);
  BOOST_CHECK(std::equal(tb.begin(), tb.end(), ta.begin()));                  // b is a prefix of a
  BOOST_CHECK(std::equal(ta.begin(), ta.begin() + 8, tc.begin()));            // block 1 shared
  BOOST_CHECK(!std::equal(ta.begin() + 8, ta.begin() + 16, tc.begin() + 8));  // 2 vs 9
  for (auto t : ta) BOOST_CHECK(t >= 1 && t < 100);
  // Blocks past the listed ids are the entry's own.
  trace_entry d = b, e = b;
  d.input_length = e.input_length = 24;
  auto td = trace_prompt_tokens(d, 8, 100, 5), te = trace_prompt_tokens(e, 8, 100, 6);
  BOOST_CHECK(std::equal(td.begin(), td.begin() + 16, te.begin()));
  BOOST_CHECK(!std::equal(td.begin() + 16, td.end(), te.begin() + 16));

  auto wa = trace_prompt_text(a, 8, 0), wb = trace_prompt_text(b, 8, 1);
  BOOST_CHECK_EQUAL(wa.rfind(wb, 0), 0u);                        // the text of b starts the text of a
  BOOST_CHECK_EQUAL(std::count(wa.begin(), wa.end(), ' '), 19);  // 20 words
  BOOST_CHECK_THROW(trace_prompt_tokens(a, 0, 100, 0), kvflow::error);
  BOOST_CHECK_THROW(block_tokens(1, 4, 1), kvflow::error);
}

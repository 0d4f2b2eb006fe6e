#define BOOST_TEST_MODULE apps.load.openai_client
#include <boost/test/unit_test.hpp>

// The SSE parser that times streamed answers (events split across reads,
// \r\n line ends, role-only chunks, token-id-only chunks, errors in the
// stream) and the base URL split.

#include "apps/load/openai_client.hpp"
#include "messages/error.hpp"

using namespace kvflow::load;

namespace {

void feed(sse_parser& p, const std::string& s, double now, api_result& r) { p.feed(s.data(), s.size(), now, r); }

}  // namespace

BOOST_AUTO_TEST_CASE(times_content_chunks_only) {
  sse_parser p(true);
  api_result r;
  feed(p, "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n", 0.01, r);  // no content
  feed(p, "data: {\"choices\":[{\"delta\":{\"content\":\"He\"}}]}\r\n\r\ndata: {\"choi", 0.10, r);
  feed(p, "ces\":[{\"delta\":{\"content\":\"llo\"}}]}\n\n", 0.15, r);
  feed(p, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n", 0.16,
       r);
  p.finish(0.2, r);
  BOOST_CHECK(r.ok);
  BOOST_CHECK_EQUAL(r.text, "Hello");
  BOOST_CHECK_CLOSE(r.ttft_s, 0.10, 1e-9);
  BOOST_REQUIRE_EQUAL(r.itl_s.size(), 1u);
  BOOST_CHECK_CLOSE(r.itl_s[0], 0.05, 1e-6);
  BOOST_CHECK_CLOSE(r.e2el_s, 0.2, 1e-9);
  BOOST_CHECK_EQUAL(r.prompt_tokens, 7);
  BOOST_CHECK_EQUAL(r.output_tokens, 2);
}

BOOST_AUTO_TEST_CASE(token_ids_count_as_content_and_chunks_as_tokens) {
  sse_parser p(false);
  api_result r;
  feed(p, "data: {\"choices\":[{\"text\":\"\",\"token_ids\":[5]}]}\n\n", 0.3, r);
  feed(p, "data: {\"choices\":[{\"text\":\"\",\"token_ids\":[9]}]}\n\n", 0.4, r);
  feed(p, "data: [DONE]", 0.4, r);  // the last event without its blank line
  p.finish(0.5, r);
  BOOST_CHECK(r.ok);
  BOOST_CHECK_CLOSE(r.ttft_s, 0.3, 1e-9);
  BOOST_CHECK((r.token_ids == std::vector<std::int32_t>{5, 9}));
  BOOST_CHECK_EQUAL(r.output_tokens, 2);  // no usage: one token per content chunk
}

BOOST_AUTO_TEST_CASE(errors_and_empty_streams_fail) {
  {
    sse_parser p(false);
    api_result r;
    feed(p, "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\n", 0.1, r);
    p.finish(0.2, r);
    BOOST_CHECK(!r.ok);
    BOOST_CHECK(r.error.find("overloaded") != std::string::npos);
  }
  {
    sse_parser p(false);
    api_result r;
    feed(p, "data: [DONE]\n\n", 0.1, r);
    p.finish(0.1, r);
    BOOST_CHECK(!r.ok);
    BOOST_CHECK(r.error.find("no TTFT") != std::string::npos);
  }
  {
    sse_parser p(false);
    api_result r;
    feed(p, "data: {not json\n\n", 0.1, r);
    p.finish(0.1, r);
    BOOST_CHECK(!r.ok);
    BOOST_CHECK(r.error.find("not JSON") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(base_urls_split) {
  auto a = parse_base_url("http://127.0.0.1:8000");
  BOOST_CHECK_EQUAL(a.scheme_host_port, "http://127.0.0.1:8000");
  BOOST_CHECK_EQUAL(a.api_prefix, "/v1");
  BOOST_CHECK_EQUAL(parse_base_url("http://h:1/v1/").api_prefix, "/v1");
  BOOST_CHECK_EQUAL(parse_base_url("https://h/proxy").api_prefix, "/proxy/v1");
  BOOST_CHECK_THROW(parse_base_url("127.0.0.1:8000"), kvflow::error);
  BOOST_CHECK_THROW(parse_base_url("ftp://h"), kvflow::error);
  BOOST_CHECK_THROW(parse_base_url("http://"), kvflow::error);
}

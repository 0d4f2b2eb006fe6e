#define BOOST_TEST_MODULE actors.frontend.api_request
#include <boost/test/unit_test.hpp>

#include "actors/frontend/api_request.hpp"

using namespace kvflow::frontend;

namespace {

parse_limits limits() {
  parse_limits l;
  l.model = "m";
  l.vocab_size = 100;
  return l;
}

int status_of(const tenants& keys, const std::string& auth, const std::string& body) {
  try {
    read_api_request(endpoint::completions, auth, body, keys, limits());
    return 200;
  } catch (const api_error& e) {
    return e.status();
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(an_open_server_has_one_tenant_and_the_runtimes_salt) {
  tenants open;
  auto r = read_api_request(endpoint::completions, "", R"({"prompt":[1,2]})", open, limits());
  BOOST_TEST(r.tenant == "default");
  BOOST_TEST(r.salt.empty());
  BOOST_TEST(r.request.prompt_ids.size() == 2u);
}

BOOST_AUTO_TEST_CASE(the_key_alone_picks_the_tenant_and_its_salt) {
  tenants keys({{"sk-a", "alice"}, {"sk-b", "bob"}}, tenant_secret{std::string(32, 'x')});
  auto r = read_api_request(endpoint::completions, "Bearer sk-b", R"({"prompt":[1],"user":"alice"})", keys, limits());
  BOOST_TEST(r.tenant == "bob");
  BOOST_TEST(r.salt == keys.cache_salt("bob"));
  // Authentication comes first: a bad key hears 401 whatever its body.
  BOOST_TEST(status_of(keys, "Bearer sk-c", "{not json") == 401);
  BOOST_TEST(status_of(keys, "", R"({"prompt":[1]})") == 401);
  BOOST_TEST(status_of(keys, "Bearer sk-a", "{not json") == 400);
  BOOST_TEST(status_of(keys, "Bearer sk-a", R"({"prompt":[1],"cache_salt":"x"})") == 400);
  BOOST_TEST(status_of(keys, "Bearer sk-a", R"({"prompt":[1],"model":"other"})") == 404);
}

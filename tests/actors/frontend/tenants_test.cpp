// Tenants of `kvflow serve`: API keys, the HMAC salts derived from a server
// secret, requests that try to choose a salt, and what two tenants sending
// the same prompt see on every tier (host, disk, document entries) of a
// runtime on the tiny random model; cache keys reach file names as hex only.
#define BOOST_TEST_MODULE actors.frontend.tenants
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "actors/frontend/openai_json.hpp"
#include "actors/frontend/tenants.hpp"
#include "actors/runtime.hpp"
#include "messages/digest.hpp"
#include "messages/error.hpp"

using namespace kvflow;
using namespace kvflow::frontend;
namespace fs = std::filesystem;

namespace {

std::string hex(const std::array<std::uint8_t, 32>& d) { return to_hex(d); }

struct temp_dir {
  fs::path path = fs::temp_directory_path() / ("kvflow-tenants-" + std::to_string(::getpid()));
  temp_dir() { fs::create_directories(path); }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::vector<std::int32_t> prompt(int n, int salt) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = (i * 37 + salt * 11 + 5) % 512;
  return t;
}

runtime_options tiny(const fs::path& disk, double host_gb) {
  runtime_options o;
  o.preset = "tiny-test";
  o.backend = "cpu";
  o.threads = 2;
  o.chunk_tokens = 16;
  o.host_tier_gb = host_gb;
  o.disk_dir = disk.string();
  return o;
}

std::uint32_t hits(const restore_report& r, const std::string& tier) {
  std::uint32_t n = 0;
  for (auto& t : r.tiers)
    if (t.tier == tier) n += t.hits;
  return n;
}

std::uint32_t all_hits(const restore_report& r) {
  std::uint32_t n = 0;
  for (auto& t : r.tiers) n += t.hits;
  return n;
}

restore_report ask(runtime& rt, const tenants& t, const std::string& tenant, const std::vector<std::int32_t>& p,
                   std::vector<document_span> docs = {}) {
  submit_options so;
  so.max_new_tokens = 2;
  so.tenant_salt = t.cache_salt(tenant);
  so.documents = std::move(docs);
  return rt.submit(p, so).get();
}

}  // namespace

BOOST_AUTO_TEST_CASE(hmac_sha256_matches_rfc_4231) {
  // Test cases 1 and 2 of RFC 4231.
  BOOST_TEST(hex(hmac_sha256(std::string(20, '\x0b'), "Hi There")) ==
             "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  BOOST_TEST(hex(hmac_sha256("Jefe", "what do ya want for nothing?")) ==
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 6: a key longer than the block is hashed first.
  BOOST_TEST(hex(hmac_sha256(std::string(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First")) ==
             "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

BOOST_AUTO_TEST_CASE(salts_come_from_the_secret_and_the_tenant_only) {
  const std::string secret(32, 's');
  tenants t({{"sk-a", "alice"}, {"sk-b", "bob"}}, {secret});
  tenants same({{"sk-other", "alice"}}, {secret});
  tenants other({{"sk-a", "alice"}}, tenant_secret{std::string(32, 'o')});
  BOOST_TEST(t.cache_salt("alice") == same.cache_salt("alice"));
  BOOST_TEST(t.cache_salt("alice") != t.cache_salt("bob"));
  BOOST_TEST(t.cache_salt("alice") != other.cache_salt("alice"));
  // Never the name itself, whatever bytes it holds: hex of a MAC.
  const std::regex form("tenant:[0-9a-f]{64}");
  std::set<std::string> salts;
  for (std::string name : {std::string("alice"), std::string("../../etc"), std::string("a/b"), std::string(".."),
                           std::string("x\0y", 3), std::string("x\0z", 3), std::string("x")}) {
    auto s = t.cache_salt(name);
    BOOST_TEST(std::regex_match(s, form), s);
    salts.insert(s);
  }
  BOOST_TEST(salts.size() == 7u);  // "x\0y", "x\0z" and "x" all differ
  BOOST_TEST(t.authenticate("Bearer sk-b") == "bob");
  BOOST_CHECK_THROW(t.authenticate("Bearer sk-c"), api_error);
  BOOST_CHECK_THROW(t.authenticate("sk-a"), api_error);
}

BOOST_AUTO_TEST_CASE(the_secret_file_is_made_once_and_kept) {
  temp_dir d;
  auto path = (d.path / "tenant.secret").string();
  auto made = load_tenant_secret(path);
  BOOST_TEST(made.size() == 32u);
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  BOOST_TEST(load_tenant_secret(path) == made);
  BOOST_TEST(load_tenant_secret("") != load_tenant_secret(""));
  std::ofstream(d.path / "short") << "too short";
  BOOST_CHECK_THROW(load_tenant_secret((d.path / "short").string()), error);
  BOOST_CHECK_THROW(load_tenant_secret((d.path / "no" / "such" / "dir").string()), error);
}

BOOST_AUTO_TEST_CASE(a_request_cannot_name_a_salt_or_tenant) {
  parse_limits l;
  l.model = "m";
  l.vocab_size = 512;
  for (auto field : {"cache_salt", "salt", "tenant", "tenant_salt"}) {
    nlohmann::json body{{"prompt", {1, 2, 3}}, {field, "alice"}};
    try {
      parse_request(endpoint::completions, body.dump(), l);
      BOOST_FAIL(std::string("a request with '") + field + "' was accepted");
    } catch (const api_error& e) {
      BOOST_TEST(e.status() == 400);
      BOOST_TEST(e.param() == field);
    }
  }
  // OpenAI's end-user tag is no salt: accepted and ignored.
  BOOST_CHECK_NO_THROW(parse_request(endpoint::completions, R"({"prompt":[1,2],"user":"alice"})", l));
}

BOOST_AUTO_TEST_CASE(two_tenants_never_hit_each_others_chunks_on_any_tier) {
  // With a host tier (hits land there), then a disk tier alone.
  for (double host_gb : {0.01, 0.0}) {
    BOOST_TEST_CONTEXT("host tier " << host_gb << " GB") {
      temp_dir d;
      runtime rt(tiny(d.path / "chunks", host_gb));
      tenants t({{"sk-a", "alice"}, {"sk-b", "bob"}}, tenant_secret{std::string(32, 'k')});
      const std::string tier = host_gb > 0 ? "host" : "disk";
      auto p = prompt(64, 1);
      auto alice1 = ask(rt, t, "alice", p);
      rt.flush();
      auto alice2 = ask(rt, t, "alice", p);
      BOOST_TEST(alice1.cached_chunks == 0u);
      BOOST_TEST(alice2.cached_chunks == 3u);
      BOOST_TEST(hits(alice2, tier) > 0u);
      auto bob1 = ask(rt, t, "bob", p);
      BOOST_TEST(bob1.cached_chunks == 0u);
      BOOST_TEST(all_hits(bob1) == 0u);
      BOOST_TEST(bob1.tokens == alice1.tokens);
      rt.flush();
      // Bob's own chunks were stored apart and serve him; alice's stay hers.
      auto bob2 = ask(rt, t, "bob", p);
      BOOST_TEST(hits(bob2, tier) > 0u);
      // A tenant whose name differs only after a NUL byte is another tenant.
      auto carol = ask(rt, t, std::string("bob\0x", 5), p);
      BOOST_TEST(all_hits(carol) == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(two_tenants_never_share_document_entries) {
  temp_dir d;
  runtime rt(tiny(d.path / "chunks", 0.01));
  tenants t({{"sk-a", "alice"}, {"sk-b", "bob"}}, tenant_secret{std::string(32, 'k')});
  std::vector<std::int32_t> doc = prompt(40, 7), head = prompt(9, 3), tail = prompt(7, 4);
  std::vector<std::int32_t> p = head;
  p.insert(p.end(), doc.begin(), doc.end());
  p.insert(p.end(), tail.begin(), tail.end());
  std::vector<document_span> spans{{static_cast<std::uint32_t>(head.size()), static_cast<std::uint32_t>(doc.size())}};
  auto alice1 = ask(rt, t, "alice", p, spans);
  BOOST_TEST(alice1.documents_computed == 1u);
  rt.flush();
  // The same document after other text: a prefix miss, a document hit.
  auto q = prompt(5, 9);
  std::vector<document_span> later{{static_cast<std::uint32_t>(q.size()), static_cast<std::uint32_t>(doc.size())}};
  q.insert(q.end(), doc.begin(), doc.end());
  q.insert(q.end(), tail.begin(), tail.end());
  auto alice2 = ask(rt, t, "alice", q, later);
  BOOST_TEST(alice2.documents_reused == 1u);
  auto bob = ask(rt, t, "bob", q, later);
  BOOST_TEST(bob.documents_reused == 0u);
  BOOST_TEST(bob.documents_computed == 1u);
  BOOST_TEST(all_hits(bob) == 0u);
}

BOOST_AUTO_TEST_CASE(cache_keys_reach_file_names_as_hex_only) {
  temp_dir d;
  auto chunks = d.path / "chunks";
  {
    runtime rt(tiny(chunks, 0));
    tenants t({{"sk-a", "alice"}}, tenant_secret{std::string(32, 'k')});
    for (std::string name : {std::string("../../escape"), std::string("a/b"), std::string(".."), std::string("x\0y", 3),
                             std::string("/abs")})
      ask(rt, t, name, prompt(48, 2));
    rt.flush();
  }
  const std::regex chunk_file("[0-9a-f]{64}\\.kvc");
  std::size_t files = 0;
  for (auto& e : fs::recursive_directory_iterator(d.path)) {
    if (e.is_directory()) {
      BOOST_TEST(e.path() == chunks, "unexpected folder " << e.path());
      continue;
    }
    BOOST_TEST(e.path().parent_path() == chunks, "file outside the chunk folder: " << e.path());
    BOOST_TEST(std::regex_match(e.path().filename().string(), chunk_file), e.path());
    ++files;
  }
  BOOST_TEST(files == 15u);  // 5 tenants x 3 full chunks, none shared
}

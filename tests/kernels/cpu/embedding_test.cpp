#define BOOST_TEST_MODULE kernels.cpu.embedding
#include <boost/test/unit_test.hpp>

#include <vector>

#include "kernels/cpu/embedding.hpp"
#include "messages/error.hpp"

using namespace kvflow::cpu;

BOOST_AUTO_TEST_CASE(copies_rows) {
  const int vocab = 5, hidden = 3;
  std::vector<float> table(vocab * hidden);
  for (int i = 0; i < vocab * hidden; ++i) table[i] = static_cast<float>(i);
  std::vector<std::int32_t> tokens{4, 0, 4, 2};
  std::vector<float> out(tokens.size() * hidden);
  embedding(table.data(), vocab, hidden, tokens.data(), 4, out.data());
  for (int i = 0; i < 4; ++i)
    for (int d = 0; d < hidden; ++d) BOOST_TEST(out[i * hidden + d] == table[tokens[i] * hidden + d]);
}

BOOST_AUTO_TEST_CASE(rejects_tokens_outside_the_vocabulary) {
  std::vector<float> table(6), out(4);
  for (std::int32_t bad : {-1, 3, 1 << 30}) {
    std::int32_t tokens[2] = {0, bad};
    try {
      embedding(table.data(), 3, 2, tokens, 2, out.data());
      BOOST_FAIL("no error for token " << bad);
    } catch (const kvflow::error& e) {
      BOOST_TEST((e.code() == kvflow::errc::invalid_argument));
      BOOST_TEST(std::string(e.what()).find(std::to_string(bad)) != std::string::npos);
    }
  }
}

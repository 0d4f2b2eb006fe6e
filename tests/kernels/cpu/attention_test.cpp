#define BOOST_TEST_MODULE kernels.cpu.attention
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/attention.hpp"
#include "messages/error.hpp"

using namespace kvflow::cpu;

namespace {

struct problem {
  int heads, kv_heads, head_dim, keys;
  std::vector<float> q;  // [keys][heads][head_dim]: one query per position
  std::vector<float> k;  // [kv_heads][keys][head_dim]
  std::vector<float> v;
  problem(int h, int kvh, int hd, int n, unsigned seed) : heads(h), kv_heads(kvh), head_dim(hd), keys(n) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, 1.0f);
    q.resize(static_cast<std::size_t>(n) * h * hd);
    k.resize(static_cast<std::size_t>(kvh) * n * hd);
    v.resize(k.size());
    for (auto& x : q) x = 1.5f * d(g);
    for (auto& x : k) x = 1.5f * d(g);
    for (auto& x : v) x = d(g);
  }
  int q_width() const { return heads * head_dim; }
  // Keys [begin, end) as a block of their own: [kv_heads][end - begin][head_dim].
  void slice(int begin, int end, std::vector<float>& ks, std::vector<float>& vs) const {
    int n = end - begin;
    ks.resize(static_cast<std::size_t>(kv_heads) * n * head_dim);
    vs.resize(ks.size());
    for (int g = 0; g < kv_heads; ++g) {
      std::memcpy(&ks[static_cast<std::size_t>(g) * n * head_dim],
                  &k[(static_cast<std::size_t>(g) * keys + begin) * head_dim], sizeof(float) * n * head_dim);
      std::memcpy(&vs[static_cast<std::size_t>(g) * n * head_dim],
                  &v[(static_cast<std::size_t>(g) * keys + begin) * head_dim], sizeof(float) * n * head_dim);
    }
  }
};

// Softmax attention in double, query at position p over keys [0, p].
std::vector<double> naive(const problem& p, int pos) {
  std::vector<double> out(p.q_width());
  int group = p.heads / p.kv_heads;
  for (int h = 0; h < p.heads; ++h) {
    int g = h / group;
    const float* q = &p.q[(static_cast<std::size_t>(pos) * p.heads + h) * p.head_dim];
    std::vector<double> s(pos + 1);
    double m = -1e300;
    for (int j = 0; j <= pos; ++j) {
      const float* k = &p.k[(static_cast<std::size_t>(g) * p.keys + j) * p.head_dim];
      double dot = 0;
      for (int d = 0; d < p.head_dim; ++d) dot += double(q[d]) * k[d];
      s[j] = dot / std::sqrt(double(p.head_dim));
      m = std::max(m, s[j]);
    }
    double sum = 0;
    for (auto& x : s) sum += (x = std::exp(x - m));
    for (int j = 0; j <= pos; ++j) {
      const float* v = &p.v[(static_cast<std::size_t>(g) * p.keys + j) * p.head_dim];
      for (int d = 0; d < p.head_dim; ++d) out[h * p.head_dim + d] += s[j] / sum * v[d];
    }
  }
  return out;
}

std::vector<float> run_whole(const problem& p, thread_pool* pool) {
  std::vector<float> out(static_cast<std::size_t>(p.keys) * p.q_width());
  kv_segment seg{p.k.data(), p.v.data(), p.keys};
  attention(pool, p.q.data(), p.keys, p.q_width(), 0, &seg, 1, p.heads, p.kv_heads, p.head_dim, out.data(),
            p.q_width());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(matches_naive_gqa_and_mha_with_causal_mask) {
  thread_pool pool(2);
  // head_dim 64 and 128 take the vector paths (pairs of a row's heads and
  // single heads); the others the generic one.
  for (auto shape : {std::vector<int>{6, 2, 16, 70}, std::vector<int>{4, 4, 8, 33}, std::vector<int>{3, 1, 24, 5},
                     std::vector<int>{6, 2, 64, 70}, std::vector<int>{4, 1, 128, 40}, std::vector<int>{2, 2, 64, 9}}) {
    problem p(shape[0], shape[1], shape[2], shape[3], 11);
    auto out = run_whole(p, &pool);
    double worst = 0;
    for (int pos = 0; pos < p.keys; ++pos) {
      auto want = naive(p, pos);
      for (int i = 0; i < p.q_width(); ++i)
        worst = std::max(worst, std::abs(out[static_cast<std::size_t>(pos) * p.q_width() + i] - want[i]));
    }
    BOOST_TEST(worst < 2e-5, "heads " << p.heads << " kv " << p.kv_heads << ": max error " << worst);
  }
}

BOOST_AUTO_TEST_CASE(first_position_returns_its_value) {
  problem p(2, 1, 8, 1, 3);
  auto out = run_whole(p, nullptr);
  for (int h = 0; h < 2; ++h)
    for (int d = 0; d < 8; ++d) BOOST_TEST(out[h * 8 + d] == p.v[d]);
}

BOOST_AUTO_TEST_CASE(bitwise_the_same_for_any_segments_chunks_and_threads) {
  for (auto shape : {std::vector<int>{6, 2, 16}, std::vector<int>{6, 2, 64}, std::vector<int>{4, 1, 128},
                     std::vector<int>{2, 2, 64}}) {
    problem p(shape[0], shape[1], shape[2], 150, 5);
    thread_pool pool(2);
    auto whole = run_whole(p, &pool);
    BOOST_TEST(std::memcmp(whole.data(), run_whole(p, nullptr).data(), whole.size() * 4) == 0);

    // Queries in uneven chunks; each chunk's keys are the earlier ones cut into
    // uneven blocks plus its own block.
    std::mt19937 g(9);
    std::vector<float> out(whole.size(), NAN);
    int pos0 = 0;
    std::vector<std::pair<int, int>> blocks;  // [begin, end) of earlier chunks
    for (int size : {1, 3, 7, 64, 2, 1, 40, 32}) {
      BOOST_REQUIRE(pos0 + size <= p.keys);
      std::vector<std::vector<float>> ks, vs;
      std::vector<kv_segment> segs;
      for (auto b : blocks) {
        ks.emplace_back();
        vs.emplace_back();
        p.slice(b.first, b.second, ks.back(), vs.back());
      }
      ks.emplace_back();
      vs.emplace_back();
      p.slice(pos0, pos0 + size, ks.back(), vs.back());
      for (std::size_t i = 0; i < ks.size(); ++i) {
        int n = i < blocks.size() ? blocks[i].second - blocks[i].first : size;
        segs.push_back({ks[i].data(), vs[i].data(), n});
      }
      attention(g() % 2 ? &pool : nullptr, p.q.data() + static_cast<std::size_t>(pos0) * p.q_width(), size, p.q_width(),
                pos0, segs.data(), static_cast<int>(segs.size()), p.heads, p.kv_heads, p.head_dim,
                out.data() + static_cast<std::size_t>(pos0) * p.q_width(), p.q_width());
      // Next time the earlier keys come as these blocks, this chunk's split in two.
      if (size > 1) {
        blocks.push_back({pos0, pos0 + size / 2});
        blocks.push_back({pos0 + size / 2, pos0 + size});
      } else {
        blocks.push_back({pos0, pos0 + 1});
      }
      pos0 += size;
    }
    BOOST_REQUIRE_EQUAL(pos0, p.keys);
    BOOST_TEST(std::memcmp(out.data(), whole.data(), whole.size() * 4) == 0, "head_dim " << p.head_dim);
  }
}

BOOST_AUTO_TEST_CASE(too_few_keys_is_an_error) {
  problem p(2, 1, 8, 4, 1);
  std::vector<float> out(8 * 2);
  kv_segment seg{p.k.data(), p.v.data(), 3};
  BOOST_CHECK_THROW(attention(nullptr, p.q.data(), 2, 16, 2, &seg, 1, 2, 1, 8, out.data(), 16), kvflow::error);
  BOOST_CHECK_THROW(attention(nullptr, p.q.data(), 1, 16, 0, &seg, 1, 3, 2, 8, out.data(), 16), kvflow::error);
}

// safetensors reader: dtypes, shapes, offsets, and hostile headers.
#define BOOST_TEST_MODULE kernels_model_safetensors
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <functional>
#include <random>

#include "kernels/model/safetensors.hpp"
#include "messages/error.hpp"
#include "tests/kernels/model/fixtures/gguf_writer.hpp"
#include "tests/kernels/model/fixtures/safetensors_writer.hpp"

using namespace kvflow;
using namespace kvflow::model;
using kvflow::test::safetensors_writer;

namespace {

struct temp_file {
  std::string dir = kvflow::test::scratch_dir("st");
  std::string path = dir + "/m.safetensors";
  ~temp_file() {
    std::remove(path.c_str());
    std::remove(dir.c_str());
  }
};

safetensors_writer sample() {
  safetensors_writer w;
  w.add_f32("a", {2, 3}, {1, 2, 3, 4, 5, 6});
  w.add("h", "F16", {2}, {0x00, 0x3C, 0x00, 0xC4});      // 1, -4
  w.add("b", "BF16", {1, 2}, {0x40, 0x40, 0x00, 0xBF});  // 3, -0.5
  w.add("i", "I32", {1}, {1, 0, 0, 0});
  w.header()["__metadata__"] = {{"format", "pt"}};
  return w;
}

std::string try_open(const temp_file& f, const std::vector<std::uint8_t>& b) {
  safetensors_writer::save(f.path, b);
  try {
    auto s = safetensors_file::open(f.path);
    for (auto& t : s.tensors())
      if (t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16") s.to_fp32(t);
    return "";
  } catch (const kvflow::error& e) {
    BOOST_TEST(e.code() == errc::bad_file);
    return e.what();
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(reads_tensors_and_dtypes) {
  temp_file f;
  safetensors_writer::save(f.path, sample().bytes());
  auto s = safetensors_file::open(f.path);
  BOOST_TEST(s.tensors().size() == 4u);
  BOOST_TEST(s.metadata().at("format") == "pt");
  auto* a = s.find("a");
  BOOST_REQUIRE(a);
  BOOST_TEST(a->shape == (std::vector<std::int64_t>{2, 3}), boost::test_tools::per_element());
  auto av = s.to_fp32(*a);
  BOOST_TEST(av == (std::vector<float>{1, 2, 3, 4, 5, 6}), boost::test_tools::per_element());
  BOOST_TEST(s.to_fp32(*s.find("h")) == (std::vector<float>{1, -4}), boost::test_tools::per_element());
  BOOST_TEST(s.to_fp32(*s.find("b")) == (std::vector<float>{3, -0.5f}), boost::test_tools::per_element());
  try {
    s.to_fp32(*s.find("i"));
    BOOST_FAIL("I32 should not load as fp32");
  } catch (const kvflow::error& e) {
    BOOST_TEST(e.code() == errc::unsupported);
  }
  BOOST_TEST(s.find("zz") == nullptr);
}

BOOST_AUTO_TEST_CASE(empty_tensors_load_as_empty) {
  temp_file f;
  safetensors_writer w;
  w.add_f32("e", {0}, {});
  w.add_f32("e2", {2, 0}, {});
  w.add("h", "F16", {0, 3}, {});
  safetensors_writer::save(f.path, w.bytes());
  auto s = safetensors_file::open(f.path);
  for (const auto& t : s.tensors()) {
    BOOST_TEST(t.elements() == 0);
    BOOST_TEST(s.to_fp32(t).empty());
  }
}

BOOST_AUTO_TEST_CASE(every_truncation_and_flip_is_a_clean_error) {
  temp_file f;
  auto good = sample().bytes();
  for (std::size_t n = 0; n < good.size(); ++n) {
    auto err = try_open(f, std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)));
    BOOST_TEST_CONTEXT("truncated at " << n) {
      BOOST_TEST(!err.empty());
      BOOST_TEST(err.find(f.path) != std::string::npos);
    }
  }
  BOOST_TEST(try_open(f, good).empty());
  for (std::size_t i = 0; i < good.size(); ++i) {
    auto bad = good;
    bad[i] ^= 0xFF;
    auto err = try_open(f, bad);
    if (!err.empty()) BOOST_TEST(err.find(f.path) != std::string::npos);
  }
  std::mt19937 rng(3);
  for (int k = 0; k < 300; ++k) {
    auto bad = good;
    for (int j = 0; j < 3; ++j) bad[rng() % bad.size()] = static_cast<std::uint8_t>(rng());
    try_open(f, bad);
  }
}

BOOST_AUTO_TEST_CASE(hostile_headers) {
  temp_file f;
  auto expect = [&](const std::vector<std::uint8_t>& b, const std::string& needle) {
    auto err = try_open(f, b);
    BOOST_TEST_CONTEXT(needle) {
      BOOST_TEST(!err.empty());
      BOOST_TEST(err.find(needle) != std::string::npos, "error text: " << err);
    }
  };
  auto w = sample();
  {
    auto b = w.bytes();
    std::uint64_t huge = 1ull << 62;
    std::memcpy(b.data(), &huge, 8);
    expect(b, "header length");
  }
  expect(w.bytes_with_header("{\"a\": [1, 2"), "not valid JSON");
  expect(w.bytes_with_header("[1, 2, 3]"), "not a JSON object");
  expect(w.bytes_with_header("{\"a\": 5}"), "'a'");
  expect(w.bytes_with_header(std::string(100000, '[')), "not valid JSON");
  auto edit = [&](const std::function<void(nlohmann::json&)>& fn, const std::string& needle) {
    auto x = sample();
    fn(x.header());
    expect(x.bytes(), needle);
  };
  edit([](nlohmann::json& h) { h["a"]["dtype"] = "Q4"; }, "unknown dtype");
  edit([](nlohmann::json& h) { h["a"]["dtype"] = 7; }, "dtype");
  edit([](nlohmann::json& h) { h["a"]["shape"] = {2, -3}; }, "shape");
  edit([](nlohmann::json& h) { h["a"]["shape"] = {1ull << 40, 1ull << 40}; }, "shape too large");
  edit([](nlohmann::json& h) { h["a"]["shape"] = {3, 3}; }, "span");
  edit([](nlohmann::json& h) { h["a"]["data_offsets"] = {0, 1ull << 50}; }, "outside the data section");
  edit([](nlohmann::json& h) { h["a"]["data_offsets"] = {8, 4}; }, "outside the data section");
  edit([](nlohmann::json& h) { h["a"]["data_offsets"] = {0}; }, "data_offsets");
  edit([](nlohmann::json& h) { h["a"].erase("shape"); }, "shape");
  edit([](nlohmann::json& h) { h["__metadata__"] = 3; }, "__metadata__");
}

// GGUF reader: metadata of every type, tensor infos and alignment,
// dequantization against hand-made blocks, and hostile files.
#define BOOST_TEST_MODULE kernels_model_gguf
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <random>

#include "kernels/model/gguf.hpp"
#include "messages/error.hpp"
#include "tests/kernels/model/fixtures/gguf_writer.hpp"

using namespace kvflow;
using namespace kvflow::model;
using kvflow::test::gguf_writer;

namespace {

std::vector<std::uint8_t> u16s(std::initializer_list<std::uint16_t> v) {
  std::vector<std::uint8_t> out;
  for (auto x : v) {
    out.push_back(static_cast<std::uint8_t>(x & 0xff));
    out.push_back(static_cast<std::uint8_t>(x >> 8));
  }
  return out;
}

gguf_writer sample_writer() {
  gguf_writer w(64);
  w.kv_str("general.architecture", "llama");
  w.kv_u32("general.alignment", 64);
  w.kv_u8("t.u8", 200);
  w.kv_i8("t.i8", -5);
  w.kv_u16("t.u16", 65000);
  w.kv_i16("t.i16", -30000);
  w.kv_i32("t.i32", -7);
  w.kv_u64("t.u64", 1ull << 40);
  w.kv_i64("t.i64", -(1ll << 40));
  w.kv_f32("t.f32", 1.5f);
  w.kv_f64("t.f64", -2.25);
  w.kv_bool("t.bool", true);
  w.kv_strs("t.strs", {"a", "", "héllo"});
  w.kv_i32s("t.i32s", {3, -1, 7});
  w.kv_f32s("t.f32s", {0.5f, -4.0f});
  w.tensor_f32("a", {3, 2}, {1, 2, 3, 4, 5, 6});
  w.tensor("b", {32}, 8, [] {
    auto b = u16s({0x3800});  // d = 0.5
    for (int j = 0; j < 32; ++j) b.push_back(static_cast<std::uint8_t>(static_cast<std::int8_t>(j - 16)));
    return b;
  }());
  return w;
}

struct temp_file {
  std::string path;
  explicit temp_file(const std::string& name) : path(kvflow::test::scratch_dir("gguf") + "/" + name) {}
  ~temp_file() {
    std::remove(path.c_str());
    std::remove(path.substr(0, path.find_last_of('/')).c_str());
  }
};

// Opens `bytes` as a file: returns "" on success, else the error text; any
// other exception fails the test.
std::string try_open(const temp_file& f, const std::vector<std::uint8_t>& bytes) {
  gguf_writer::save(f.path, bytes);
  try {
    auto g = gguf_file::open(f.path);
    for (auto& t : g.tensors()) {
      auto v = g.dequantize(t);
      BOOST_TEST(v.size() == static_cast<std::size_t>(t.elements()));
    }
    return "";
  } catch (const kvflow::error& e) {
    BOOST_TEST((e.code() == errc::bad_file || e.code() == errc::unsupported));
    return e.what();
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(half_and_bfloat_conversions) {
  BOOST_TEST(fp16_to_fp32(0x3C00) == 1.0f);
  BOOST_TEST(fp16_to_fp32(0xC000) == -2.0f);
  BOOST_TEST(fp16_to_fp32(0x3555) == 0.333251953125f);
  BOOST_TEST(fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  BOOST_TEST(fp16_to_fp32(0x03FF) == std::ldexp(1023.0f, -24));
  BOOST_TEST(fp16_to_fp32(0x7BFF) == 65504.0f);
  BOOST_TEST(std::isinf(fp16_to_fp32(0x7C00)));
  BOOST_TEST(std::isnan(fp16_to_fp32(0x7E00)));
  BOOST_TEST(std::signbit(fp16_to_fp32(0x8000)));
  BOOST_TEST(bf16_to_fp32(0x3F80) == 1.0f);
  BOOST_TEST(bf16_to_fp32(0xC0A0) == -5.0f);
}

BOOST_AUTO_TEST_CASE(dequantize_q8_0_block) {
  // block_q8_0: half d, int8 qs[32]
  auto b = u16s({0x3800});  // 0.5
  for (int j = 0; j < 32; ++j) b.push_back(static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128)));
  std::vector<float> y(32);
  dequantize_row(ggml_type::q8_0, b.data(), y.data(), 32);
  for (int j = 0; j < 32; ++j) BOOST_TEST(y[j] == 0.5f * static_cast<float>(j * 8 - 128));
}

BOOST_AUTO_TEST_CASE(dequantize_q4_0_block) {
  // block_q4_0: half d, qs[16]; element j is the low nibble of qs[j],
  // element j+16 the high nibble; value d * (q - 8).
  auto b = u16s({0x4000});  // 2.0
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<std::uint8_t>((j & 0xf) | ((15 - j) << 4)));
  std::vector<float> y(32);
  dequantize_row(ggml_type::q4_0, b.data(), y.data(), 32);
  for (int j = 0; j < 16; ++j) {
    BOOST_TEST(y[j] == 2.0f * static_cast<float>(j - 8));
    BOOST_TEST(y[j + 16] == 2.0f * static_cast<float>(15 - j - 8));
  }
}

BOOST_AUTO_TEST_CASE(dequantize_q4_1_blocks) {
  // block_q4_1: half d, half m, qs[16]; value d * q + m. Two blocks to check
  // the stride of 20 bytes.
  auto b = u16s({0x3400, 0xBC00});  // d = 0.25, m = -1
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<std::uint8_t>(j | (j << 4)));
  auto b2 = u16s({0x3C00, 0x4000});  // d = 1, m = 2
  for (int j = 0; j < 16; ++j) b2.push_back(static_cast<std::uint8_t>(0xF0 | 1));
  b.insert(b.end(), b2.begin(), b2.end());
  BOOST_TEST(b.size() == 40u);
  std::vector<float> y(64);
  dequantize_row(ggml_type::q4_1, b.data(), y.data(), 64);
  for (int j = 0; j < 16; ++j) {
    BOOST_TEST(y[j] == 0.25f * j - 1.0f);
    BOOST_TEST(y[j + 16] == 0.25f * j - 1.0f);
    BOOST_TEST(y[32 + j] == 3.0f);        // 1 * 1 + 2
    BOOST_TEST(y[32 + j + 16] == 17.0f);  // 1 * 15 + 2
  }
}

BOOST_AUTO_TEST_CASE(dequantize_plain_types_and_unsupported) {
  auto h = u16s({0x3C00, 0xC400, 0x0000});
  std::vector<float> y(3);
  dequantize_row(ggml_type::f16, h.data(), y.data(), 3);
  BOOST_TEST(y[0] == 1.0f);
  BOOST_TEST(y[1] == -4.0f);
  BOOST_TEST(y[2] == 0.0f);
  auto bf = u16s({0x4040, 0xBF00});
  dequantize_row(ggml_type::bf16, bf.data(), y.data(), 2);
  BOOST_TEST(y[0] == 3.0f);
  BOOST_TEST(y[1] == -0.5f);
  float f[2] = {7.5f, -1.0f};
  dequantize_row(ggml_type::f32, f, y.data(), 2);
  BOOST_TEST(y[0] == 7.5f);
  std::vector<std::uint8_t> q6(210);
  std::vector<float> z(256);
  try {
    dequantize_row(ggml_type::q6_k, q6.data(), z.data(), 256);
    BOOST_FAIL("q6_k should be unsupported");
  } catch (const kvflow::error& e) {
    BOOST_TEST(e.code() == errc::unsupported);
    BOOST_TEST(std::string(e.what()).find("q6_k") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(parses_every_metadata_type_and_tensor) {
  temp_file f("sample.gguf");
  sample_writer().save(f.path);
  auto g = gguf_file::open(f.path);
  BOOST_TEST(g.version() == 3u);
  BOOST_TEST(g.alignment() == 64u);
  BOOST_TEST(g.data_offset() % 64 == 0u);
  BOOST_TEST(g.get_string("general.architecture") == "llama");
  BOOST_TEST(g.get_int("t.u8") == 200);
  BOOST_TEST(g.get_int("t.i8") == -5);
  BOOST_TEST(g.get_int("t.u16") == 65000);
  BOOST_TEST(g.get_int("t.i16") == -30000);
  BOOST_TEST(g.get_int("t.i32") == -7);
  BOOST_TEST(g.get_int("t.u64") == (1ll << 40));
  BOOST_TEST(g.get_int("t.i64") == -(1ll << 40));
  BOOST_TEST(g.get_float("t.f32") == 1.5);
  BOOST_TEST(g.get_float("t.f64") == -2.25);
  BOOST_TEST(g.get_bool("t.bool", false));
  BOOST_TEST(g.get_strings("t.strs").size() == 3u);
  BOOST_TEST(g.get_strings("t.strs")[2] == "héllo");
  BOOST_TEST(g.get_ints("t.i32s")[1] == -1);
  BOOST_TEST(g.find("t.f32s")->floats[1] == -4.0);
  BOOST_TEST(g.get_int("missing", 42) == 42);
  BOOST_CHECK_THROW(g.get_int("missing"), kvflow::error);
  BOOST_CHECK_THROW(g.get_string("t.i32"), kvflow::error);
  BOOST_CHECK_THROW(g.get_ints("t.strs"), kvflow::error);

  BOOST_TEST(g.tensors().size() == 2u);
  auto* a = g.find_tensor("a");
  BOOST_REQUIRE(a);
  BOOST_TEST(a->dims.size() == 2u);
  BOOST_TEST(a->dims[0] == 3);
  BOOST_TEST(a->elements() == 6);
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(a->data) % 64 == 0u);
  auto av = g.dequantize(*a);
  BOOST_TEST(av[5] == 6.0f);
  auto* b = g.find_tensor("b");
  BOOST_REQUIRE(b);
  BOOST_TEST(b->offset % 64 == 0u);
  BOOST_TEST(b->bytes == 34u);
  auto bv = g.dequantize(*b);
  BOOST_TEST(bv[0] == -8.0f);
  BOOST_TEST(bv[31] == 7.5f);
  BOOST_TEST(g.find_tensor("nope") == nullptr);
}

BOOST_AUTO_TEST_CASE(missing_file_names_the_path) {
  try {
    gguf_file::open("/nonexistent/x.gguf");
    BOOST_FAIL("expected an error");
  } catch (const kvflow::error& e) {
    BOOST_TEST(e.code() == errc::io_failure);
    BOOST_TEST(std::string(e.what()).find("/nonexistent/x.gguf") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(every_truncation_is_a_clean_error) {
  temp_file f("trunc.gguf");
  auto good = sample_writer().bytes();
  for (std::size_t n = 0; n < good.size(); ++n) {
    std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    auto err = try_open(f, cut);
    BOOST_TEST_CONTEXT("truncated at " << n) {
      BOOST_TEST(!err.empty());
      BOOST_TEST(err.find(f.path) != std::string::npos);
    }
  }
  BOOST_TEST(try_open(f, good).empty());
}

BOOST_AUTO_TEST_CASE(flipped_and_random_bytes_never_crash) {
  temp_file f("flip.gguf");
  auto good = sample_writer().bytes();
  int errors = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (std::uint8_t mask : {0xFF, 0x80, 0x01}) {
      auto bad = good;
      bad[i] ^= mask;
      auto err = try_open(f, bad);
      if (!err.empty()) {
        ++errors;
        BOOST_TEST(err.find(f.path) != std::string::npos);
      }
    }
  }
  BOOST_TEST(errors > 100);
  std::mt19937 rng(7);
  for (int k = 0; k < 300; ++k) {
    auto bad = good;
    for (int j = 0; j < 4; ++j) bad[rng() % bad.size()] = static_cast<std::uint8_t>(rng());
    try_open(f, bad);
  }
}

BOOST_AUTO_TEST_CASE(hostile_counts_offsets_and_types) {
  temp_file f("hostile.gguf");
  auto expect = [&](const std::vector<std::uint8_t>& b, const std::string& needle) {
    auto err = try_open(f, b);
    BOOST_TEST_CONTEXT(needle) {
      BOOST_TEST(!err.empty());
      BOOST_TEST(err.find(needle) != std::string::npos, "error text: " << err);
    }
  };
  auto put64 = [](std::vector<std::uint8_t>& b, std::size_t at, std::uint64_t v) { std::memcpy(&b[at], &v, 8); };
  auto good = sample_writer().bytes();
  {
    auto b = good;
    put64(b, 8, 1ull << 60);  // tensor_count
    expect(b, "tensor_count");
  }
  {
    auto b = good;
    put64(b, 16, ~0ull);  // metadata_kv_count
    expect(b, "metadata_kv_count");
  }
  {
    auto b = good;
    b[4] = 7;  // version
    expect(b, "version");
  }
  {
    auto b = good;
    b[0] = 'X';
    expect(b, "magic");
  }
  {  // a string longer than the file
    gguf_writer w;
    w.kv_str("k", "value");
    auto b = w.bytes();
    put64(b, 24 + 8 + 1 + 4, 1ull << 40);
    expect(b, "'k'");
  }
  {  // an array claiming 2^24 strings in a tiny file
    gguf_writer w;
    w.kv_strs("arr", {"x"});
    auto b = w.bytes();
    put64(b, 24 + 8 + 3 + 4 + 4, 1u << 24);
    expect(b, "past end of file");
  }
  {  // unknown value type
    gguf_writer w;
    w.kv_u32("k", 1);
    auto b = w.bytes();
    b[24 + 8 + 1] = 99;
    expect(b, "unknown value type");
  }
  {  // tensor data past the end
    gguf_writer w;
    w.tensor_f32("t", {4}, {1, 2, 3, 4});
    auto b = w.bytes();
    b.resize(b.size() - 4);
    expect(b, "past end of data section");
  }
  {  // unknown tensor type
    gguf_writer w;
    w.tensor("t", {4}, 77, std::vector<std::uint8_t>(16));
    expect(w.bytes(), "unknown tensor type");
  }
  {  // row not a multiple of the block
    gguf_writer w;
    w.tensor("t", {16}, 8, std::vector<std::uint8_t>(34));
    expect(w.bytes(), "block");
  }
  {  // element count overflow
    gguf_writer w;
    w.tensor("t", {1ull << 40, 1ull << 40}, 0, {});
    expect(w.bytes(), "'t'");
  }
  {  // alignment not a power of two
    gguf_writer w;
    w.kv_u32("general.alignment", 48);
    expect(w.bytes(), "general.alignment");
  }
  {  // misaligned offset
    gguf_writer w;
    w.tensor_f32("t", {4}, {1, 2, 3, 4});
    auto b = w.bytes();
    // tensor info: name(8+1) n_dims(4) dim(8) type(4) offset(8)
    put64(b, 24 + 9 + 4 + 8 + 4, 3);
    expect(b, "not aligned");
  }
  {  // duplicate key
    gguf_writer w;
    w.kv_u32("k", 1);
    w.kv_u32("k", 2);
    expect(w.bytes(), "duplicate");
  }
}

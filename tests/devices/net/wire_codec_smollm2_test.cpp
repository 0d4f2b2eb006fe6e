// The wire codec on the real model's KV: SmolLM2-135M-Instruct's KV of a
// 512-token text (the llama.cpp reference's teacher-forced ids), computed
// by the CPU engine in chunks of 256 tokens, each layer of each chunk one
// frame as the nodes make them. Decodes bit-exactly, as f32 (the CPU's KV)
// and as bf16 (the CUDA engine's KV type; here the f32 KV rounded), and
// reports what the wire carries per KV byte.
#define BOOST_TEST_MODULE devices.net.wire_codec_smollm2
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "devices/net/wire_codec.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/model_file.hpp"

using namespace kvflow;

namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::string model_path() {
  auto p = model::default_model_path();
  if (!exists(p)) p = std::string(KVFLOW_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  return p;
}

// Round to nearest even, as a float -> bf16 conversion does.
std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

struct ratio {
  double raw = 0, wire = 0;
  void add(const std::uint8_t* data, std::size_t bytes, std::size_t elem) {
    auto frame = devices::net::wire_encode(data, bytes, elem);
    std::vector<std::uint8_t> back(bytes);
    devices::net::wire_decode(frame.data(), frame.size(), back.data(), bytes);
    BOOST_REQUIRE(std::memcmp(back.data(), data, bytes) == 0);
    raw += static_cast<double>(bytes);
    // A node sends the raw piece where the frame is not smaller.
    wire += static_cast<double>(std::min(frame.size(), bytes));
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(real_kv_round_trips_and_shrinks) {
  if (!exists(model_path())) {
    BOOST_WARN_MESSAGE(false, "skipped: " + model_path() + " not found (KVFLOW_MODEL)");
    return;
  }
  std::ifstream in(std::string(KVFLOW_SOURCE_DIR) + "/tests/kernels/model/fixtures/smollm2_reference.json");
  BOOST_REQUIRE(in);
  auto ids = nlohmann::json::parse(in).at("teacher_forced").at("ids").get<std::vector<std::int32_t>>();
  BOOST_REQUIRE_GE(ids.size(), 512u);
  auto lm = model::load_model_file(model_path());
  auto e = model::make_cpu_engine(std::move(lm.w));
  const auto& c = e->cfg();
  constexpr int chunk = 256;
  std::vector<std::vector<float>> blocks;
  std::vector<model::kv_block> views;
  std::vector<float> hidden(static_cast<std::size_t>(chunk) * c.hidden);
  ratio f32, bf16;
  for (int pos = 0; pos + chunk <= 512; pos += chunk) {
    auto shape = model::kv_shape_of(c, chunk, model::dtype::f32);
    blocks.emplace_back(shape.bytes() / sizeof(float));
    model::chunk_job job;
    job.tokens = ids.data() + pos;
    job.count = chunk;
    job.pos0 = pos;
    job.layer_end = c.layers;
    job.past = {views.data(), static_cast<int>(views.size())};
    job.out = {blocks.back().data(), shape};
    job.hidden = {hidden.data(), chunk};
    e->run(job);
    views.push_back(job.out);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(blocks.back().data());
    const auto layer = shape.layer_bytes();
    std::vector<std::uint16_t> half(layer / 4);
    for (int l = 0; l < c.layers; ++l) {
      const auto* cell = bytes + layer * static_cast<std::size_t>(l);
      f32.add(cell, layer, 4);
      const auto* fl = reinterpret_cast<const float*>(cell);
      for (std::size_t i = 0; i < half.size(); ++i) half[i] = to_bf16(fl[i]);
      bf16.add(reinterpret_cast<const std::uint8_t*>(half.data()), half.size() * 2, 2);
    }
  }
  BOOST_TEST_MESSAGE("SmolLM2 KV, 512 tokens, " << c.layers << " layers: wire/raw f32 " << f32.wire / f32.raw
                                                << ", bf16 " << bf16.wire / bf16.raw);
  BOOST_TEST(f32.wire < f32.raw);
  BOOST_TEST(bf16.wire < 0.9 * bf16.raw);
}

// Writes the seed corpora of the codec and frame targets: one frame of each
// message kind (plus edge values), and for frame the same behind limit
// headers, raw and as CAF serializes a msg::frame. Run from the repository
// root: build/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus

#include <caf/binary_serializer.hpp>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "actors/frame_type.hpp"
#include "messages/codec.hpp"
#include "messages/error.hpp"

using namespace kvflow::msg;

namespace {

chunk_key key_of(std::uint8_t seed) {
  chunk_key k{};
  for (unsigned i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed + i);
  return k;
}

std::vector<message> seeds() {
  return {
      submit{1, "tenant-a", {1, 2, 3, 128000}, "hello", 32, 0.7f, 0.9f, "two_pointer", 123456789},
      submit{},
      register_request{2, 256, 64, 32, {tier::host, tier::disk, tier::remote}, 1u << 20},
      grant{3, 99, action::load, {4, 8, 0, 16}, tier::disk},
      cell_done{4, 99, action::compute, {0, 1, 0, 32}, 1000, 2000, 4096, 1},
      progress{5, 3, 60, true},
      lookup{6, {key_of(1), key_of(2)}},
      chunk_located{7, {{key_of(3), 0, tier::host, 1024}, {key_of(4), 1, tier::disk, 2048}}},
      load{8, key_of(5), 0, 32, tier::disk, 0xdeadbeef, 5000},
      store{key_of(6), 4, 8, tier::host, 42},
      rate_sample{tier::remote, 1u << 30, 1000000},
      result{9, 42, 12345, 10, 20, {{tier::host, 100}, {tier::disk, 200}}, {42, 43}, "hi"},
      node_inventory{"n1", "10.0.0.1", 4242, {{"H100", 80ull << 30}}, {{tier::host, 1ull << 36, 1ull << 30}}},
      error_report{static_cast<std::uint16_t>(kvflow::errc::peer_down), "node n2 vanished", 11},
      transfer{12, {key_of(7), key_of(8)}, 2, 4, 8192, 0x1234abcd, {1, 2, 3}},
      kv_layout{key_of(9), 32, 8, 256, 128, 2},
  };
}

void write(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::fprintf(stderr, "make_seeds: cannot write %s\n", path.c_str());
}

// Limit header of the frame target: generous, or small enough to bite.
std::vector<char> header(bool caf_path, bool small) {
  std::vector<char> h(16, '\xff');
  h[0] = caf_path ? 1 : 0;
  h[5] = 19;
  if (small) {
    h[1] = 64, h[2] = 0;    // 520 bytes
    h[3] = 40, h[4] = 0;    // 41 words
    h[5] = 3;               // nesting
    h[6] = 0;               // no tokens
    h[7] = 1;               // one list entry
    h[8] = 4, h[9] = 0;     // 4 bytes of text
    h[10] = 16, h[11] = 0;  // 16 layers
    h[12] = 4, h[13] = 0;   // 4 chunks
  }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "tests/fuzz/corpus";
  auto all = seeds();
  for (std::size_t i = 0; i < all.size(); ++i) {
    auto f = encode(all[i]);
    std::string name = std::to_string(i) + "_" + kind_name(all[i]);
    write(dir + "/codec/" + name, f.bytes);
    std::vector<char> serialized;
    caf::binary_serializer sink{nullptr, serialized};
    if (auto err = sink(f)) return 1;
    for (int small = 0; small < 2; ++small) {
      auto raw = header(false, small);
      raw.insert(raw.end(), f.bytes.begin(), f.bytes.end());
      write(dir + "/frame/" + name + (small ? "_small" : "") + "_raw", raw);
      auto via_caf = header(true, small);
      via_caf.insert(via_caf.end(), serialized.begin(), serialized.end());
      write(dir + "/frame/" + name + (small ? "_small" : "") + "_caf", via_caf);
    }
  }
  return 0;
}

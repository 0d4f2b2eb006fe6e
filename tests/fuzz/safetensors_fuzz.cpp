// Fuzz target: the safetensors loader. By the low bit of byte 0 the rest of
// the input is either one .safetensors file (parsed, every tensor converted
// to fp32) or a model folder: a 2-byte length, that many bytes of
// config.json, then model.safetensors, loaded as llama weights.
// Properties: only kvflow::error escapes; every tensor's range lies inside
// the file and matches its shape and dtype.

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/model/model_file.hpp"
#include "kernels/model/safetensors.hpp"
#include "messages/error.hpp"
#include "tests/fuzz/fuzz_check.hpp"
#include "tests/fuzz/memory_file.hpp"

using namespace kvflow::model;

namespace {

template <class F>
void tolerate(F&& f) {
  try {
    f();
  } catch (const kvflow::error&) {
  }
}

void exercise(const safetensors_file& s, std::size_t file_size) {
  for (const auto& t : s.tensors()) {
    KVFLOW_FUZZ_CHECK(s.find(t.name) == &t, "tensor not found by its name");
    KVFLOW_FUZZ_CHECK(t.begin <= t.end && t.end <= file_size, "tensor range outside the file");
    if (t.elements() <= (1 << 20))
      tolerate([&] {
        auto v = s.to_fp32(t);
        KVFLOW_FUZZ_CHECK(static_cast<std::int64_t>(v.size()) == t.elements(), "converted element count");
      });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool folder = data[0] & 1;
  ++data, --size;
  if (!folder) {
    kvflow::fuzz::memory_file file(data, size);
    tolerate([&] { exercise(safetensors_file::open(file.path(), 1u << 20), size); });
    return 0;
  }
  if (size < 2) return 0;
  std::size_t json_size = data[0] | (std::size_t{data[1]} << 8);
  data += 2, size -= 2;
  if (json_size > size) json_size = size;
  kvflow::fuzz::temp_dir dir;
  dir.write("config.json", data, json_size);
  auto model = dir.write("model.safetensors", data + json_size, size - json_size);
  tolerate([&] { safetensors_weights(model); });
  return 0;
}

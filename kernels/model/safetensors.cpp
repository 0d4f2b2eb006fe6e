#include "kernels/model/safetensors.hpp"

#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "kernels/model/gguf.hpp"
#include "messages/error.hpp"
#include "platform/mapped_file.hpp"

namespace kvflow::model {
namespace {

std::uint64_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

}  // namespace

std::int64_t safetensors_tensor::elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;  // checked for overflow at parse
  return n;
}

safetensors_file::safetensors_file(safetensors_file&& o) noexcept = default;
safetensors_file& safetensors_file::operator=(safetensors_file&& o) noexcept = default;
safetensors_file::~safetensors_file() = default;

safetensors_file safetensors_file::open(const std::string& path, std::uint64_t max_header) {
  safetensors_file f;
  f.path_ = path;
  f.file_ = platform::mapped_file::open(path);
  f.map_ = f.file_.data();
  f.size_ = f.file_.size();
  if (f.size_ < 8)
    throw error(errc::bad_file, path + ": header length: file of " + std::to_string(f.size_) + " bytes is truncated");
  f.parse(max_header);
  return f;
}

void safetensors_file::parse(std::uint64_t max_header) {
  auto fail = [&](const std::string& field, const std::string& what) {
    throw error(errc::bad_file, path_ + ": " + field + ": " + what);
  };
  std::uint64_t hlen = 0;
  std::memcpy(&hlen, map_, 8);
  if (hlen > max_header) fail("header length", std::to_string(hlen) + " over limit " + std::to_string(max_header));
  if (hlen > size_ - 8) fail("header length", std::to_string(hlen) + " past end of file");
  const char* hb = reinterpret_cast<const char*>(map_ + 8);
  auto j = nlohmann::json::parse(hb, hb + hlen, nullptr, false);
  if (j.is_discarded()) fail("header", "not valid JSON");
  if (!j.is_object()) fail("header", "not a JSON object");
  std::uint64_t data_start = 8 + hlen;
  std::uint64_t data_size = size_ - data_start;

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("__metadata__", "not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        if (m.value().is_string()) meta_[m.key()] = m.value().get<std::string>();
      continue;
    }
    std::string field = "tensor '" + name + "'";
    if (!v.is_object()) fail(field, "not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) fail(field, "dtype missing or not a string");
    if (sh == v.end() || !sh->is_array()) fail(field, "shape missing or not an array");
    if (off == v.end() || !off->is_array() || off->size() != 2) fail(field, "data_offsets must be [begin, end]");
    safetensors_tensor t;
    t.name = name;
    t.dtype = dt->get<std::string>();
    auto es = dtype_size(t.dtype);
    if (es == 0) fail(field, "unknown dtype '" + t.dtype + "'");
    if (sh->size() > 8) fail(field, "shape of rank " + std::to_string(sh->size()));
    std::uint64_t elems = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) fail(field, "shape entry is not a non-negative integer");
      auto dim = d.get<std::uint64_t>();
      if (dim > (1ull << 40) || (dim != 0 && elems > (1ull << 40) / dim)) fail(field, "shape too large");
      elems *= dim;
      t.shape.push_back(static_cast<std::int64_t>(dim));
    }
    for (const auto& o : *off)
      if (!o.is_number_unsigned()) fail(field, "data_offsets entry is not a non-negative integer");
    t.begin = (*off)[0].get<std::uint64_t>();
    t.end = (*off)[1].get<std::uint64_t>();
    if (t.begin > t.end || t.end > data_size)
      fail(field, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                      ") outside the data section of " + std::to_string(data_size) + " bytes");
    if (t.end - t.begin != elems * es)
      fail(field, "data_offsets span " + std::to_string(t.end - t.begin) + " bytes, shape and dtype need " +
                      std::to_string(elems * es));
    t.data = map_ + data_start + t.begin;
    index_.emplace(name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
}

const safetensors_tensor* safetensors_file::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<float> safetensors_file::to_fp32(const safetensors_tensor& t) const {
  auto n = t.elements();
  std::vector<float> out(static_cast<std::size_t>(n));
  if (t.dtype == "F32")
    dequantize_row(ggml_type::f32, t.data, out.data(), n);
  else if (t.dtype == "F16")
    dequantize_row(ggml_type::f16, t.data, out.data(), n);
  else if (t.dtype == "BF16")
    dequantize_row(ggml_type::bf16, t.data, out.data(), n);
  else
    throw error(errc::unsupported, path_ + ": tensor '" + t.name + "': dtype " + t.dtype + " cannot be loaded as fp32");
  return out;
}

}  // namespace kvflow::model

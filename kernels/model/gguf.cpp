#include "kernels/model/gguf.hpp"

#include <cstring>
#include <limits>

#include "messages/error.hpp"
#include "platform/mapped_file.hpp"

namespace kvflow::model {
namespace {

constexpr std::uint32_t gguf_magic = 0x46554747;  // "GGUF" little-endian

// A bounds-checked little-endian cursor over the mapped header. Every read
// names the field it is reading so errors say where the file went wrong.
class cursor {
 public:
  cursor(const std::string& path, const std::uint8_t* p, std::uint64_t size) : path_(path), p_(p), size_(size) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw error(errc::bad_file, path_ + ": " + field + ": " + what);
  }

  void need(std::uint64_t n, const std::string& field) const {
    if (n > size_ - pos_)
      fail(field, "truncated at byte " + std::to_string(pos_) + " (need " + std::to_string(n) + ")");
  }

  template <class T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& field, std::uint64_t max_len) {
    auto n = read<std::uint64_t>(field);
    if (n > max_len) fail(field, "string length " + std::to_string(n) + " over limit " + std::to_string(max_len));
    need(n, field);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<std::size_t>(n));
    pos_ += n;
    return s;
  }

  std::uint64_t pos() const { return pos_; }
  std::uint64_t size() const { return size_; }

 private:
  const std::string& path_;
  const std::uint8_t* p_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
};

std::uint64_t scalar_size(gguf_type t) {
  switch (t) {
    case gguf_type::uint8:
    case gguf_type::int8:
    case gguf_type::boolean:
      return 1;
    case gguf_type::uint16:
    case gguf_type::int16:
      return 2;
    case gguf_type::uint32:
    case gguf_type::int32:
    case gguf_type::float32:
      return 4;
    case gguf_type::uint64:
    case gguf_type::int64:
    case gguf_type::float64:
      return 8;
    default:
      return 0;
  }
}

// Reads one scalar of type t; integers land in i (and u when non-negative),
// floats in f, bools in b and i.
void read_scalar(cursor& c, gguf_type t, gguf_value& v, const std::string& field) {
  switch (t) {
    case gguf_type::uint8:
      v.u = c.read<std::uint8_t>(field);
      v.i = static_cast<std::int64_t>(v.u);
      break;
    case gguf_type::int8: {
      auto raw = c.read<std::uint8_t>(field);  // two's complement by hand
      v.i = raw < 128 ? static_cast<std::int64_t>(raw) : static_cast<std::int64_t>(raw) - 256;
      break;
    }
    case gguf_type::uint16:
      v.u = c.read<std::uint16_t>(field);
      v.i = static_cast<std::int64_t>(v.u);
      break;
    case gguf_type::int16:
      v.i = c.read<std::int16_t>(field);
      break;
    case gguf_type::uint32:
      v.u = c.read<std::uint32_t>(field);
      v.i = static_cast<std::int64_t>(v.u);
      break;
    case gguf_type::int32:
      v.i = c.read<std::int32_t>(field);
      break;
    case gguf_type::uint64:
      v.u = c.read<std::uint64_t>(field);
      v.i = v.u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                ? std::numeric_limits<std::int64_t>::max()
                : static_cast<std::int64_t>(v.u);
      break;
    case gguf_type::int64:
      v.i = c.read<std::int64_t>(field);
      break;
    case gguf_type::float32:
      v.f = c.read<float>(field);
      break;
    case gguf_type::float64:
      v.f = c.read<double>(field);
      break;
    case gguf_type::boolean: {
      auto b = c.read<std::uint8_t>(field);
      if (b > 1) c.fail(field, "bool value " + std::to_string(b));
      v.b = b != 0;
      v.i = b;
      break;
    }
    default:
      c.fail(field, "unknown value type " + std::to_string(static_cast<std::uint32_t>(t)));
  }
  if (v.i >= 0 && t != gguf_type::uint64) v.u = static_cast<std::uint64_t>(v.i);
}

gguf_value read_value(cursor& c, gguf_type t, const std::string& field, const gguf_limits& lim) {
  gguf_value v;
  v.type = t;
  if (t == gguf_type::string) {
    v.s = c.read_string(field, lim.max_string);
    return v;
  }
  if (t != gguf_type::array) {
    read_scalar(c, t, v, field);
    return v;
  }
  auto et_raw = c.read<std::uint32_t>(field + " (array type)");
  auto et = static_cast<gguf_type>(et_raw);
  auto n = c.read<std::uint64_t>(field + " (array length)");
  if (n > lim.max_array)
    c.fail(field, "array length " + std::to_string(n) + " over limit " + std::to_string(lim.max_array));
  v.array_type = et;
  if (et == gguf_type::string) {
    // Each string takes at least its 8-byte length: reject impossible counts
    // before reserving.
    if (n > (c.size() - c.pos()) / 8) c.fail(field, "array of " + std::to_string(n) + " strings past end of file");
    v.strings.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t k = 0; k < n; ++k) v.strings.push_back(c.read_string(field, lim.max_string));
    return v;
  }
  if (et == gguf_type::array) c.fail(field, "nested arrays are not supported");
  auto es = scalar_size(et);
  if (es == 0) c.fail(field, "unknown array element type " + std::to_string(et_raw));
  if (n > (c.size() - c.pos()) / es) c.fail(field, "array of " + std::to_string(n) + " elements past end of file");
  bool is_float = et == gguf_type::float32 || et == gguf_type::float64;
  if (is_float)
    v.floats.reserve(static_cast<std::size_t>(n));
  else
    v.ints.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    gguf_value e;
    read_scalar(c, et, e, field);
    if (is_float)
      v.floats.push_back(e.f);
    else
      v.ints.push_back(e.i);
  }
  return v;
}

std::string type_name(gguf_type t) {
  switch (t) {
    case gguf_type::uint8:
      return "uint8";
    case gguf_type::int8:
      return "int8";
    case gguf_type::uint16:
      return "uint16";
    case gguf_type::int16:
      return "int16";
    case gguf_type::uint32:
      return "uint32";
    case gguf_type::int32:
      return "int32";
    case gguf_type::float32:
      return "float32";
    case gguf_type::boolean:
      return "bool";
    case gguf_type::string:
      return "string";
    case gguf_type::array:
      return "array";
    case gguf_type::uint64:
      return "uint64";
    case gguf_type::int64:
      return "int64";
    case gguf_type::float64:
      return "float64";
  }
  return "type" + std::to_string(static_cast<std::uint32_t>(t));
}

std::uint16_t load_u16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

std::string to_string(ggml_type t) {
  switch (t) {
    case ggml_type::f32:
      return "f32";
    case ggml_type::f16:
      return "f16";
    case ggml_type::q4_0:
      return "q4_0";
    case ggml_type::q4_1:
      return "q4_1";
    case ggml_type::q5_0:
      return "q5_0";
    case ggml_type::q5_1:
      return "q5_1";
    case ggml_type::q8_0:
      return "q8_0";
    case ggml_type::q8_1:
      return "q8_1";
    case ggml_type::q2_k:
      return "q2_k";
    case ggml_type::q3_k:
      return "q3_k";
    case ggml_type::q4_k:
      return "q4_k";
    case ggml_type::q5_k:
      return "q5_k";
    case ggml_type::q6_k:
      return "q6_k";
    case ggml_type::q8_k:
      return "q8_k";
    case ggml_type::i8:
      return "i8";
    case ggml_type::i16:
      return "i16";
    case ggml_type::i32:
      return "i32";
    case ggml_type::i64:
      return "i64";
    case ggml_type::f64:
      return "f64";
    case ggml_type::bf16:
      return "bf16";
  }
  return "type" + std::to_string(static_cast<std::uint32_t>(t));
}

bool ggml_block_info(ggml_type t, std::uint64_t& be, std::uint64_t& bb) {
  switch (t) {
    case ggml_type::f32:
      be = 1;
      bb = 4;
      return true;
    case ggml_type::f16:
    case ggml_type::bf16:
      be = 1;
      bb = 2;
      return true;
    case ggml_type::q4_0:
      be = 32;
      bb = 18;
      return true;
    case ggml_type::q4_1:
      be = 32;
      bb = 20;
      return true;
    case ggml_type::q5_0:
      be = 32;
      bb = 22;
      return true;
    case ggml_type::q5_1:
      be = 32;
      bb = 24;
      return true;
    case ggml_type::q8_0:
      be = 32;
      bb = 34;
      return true;
    case ggml_type::q8_1:
      be = 32;
      bb = 36;
      return true;
    case ggml_type::q2_k:
      be = 256;
      bb = 84;
      return true;
    case ggml_type::q3_k:
      be = 256;
      bb = 110;
      return true;
    case ggml_type::q4_k:
      be = 256;
      bb = 144;
      return true;
    case ggml_type::q5_k:
      be = 256;
      bb = 176;
      return true;
    case ggml_type::q6_k:
      be = 256;
      bb = 210;
      return true;
    case ggml_type::q8_k:
      be = 256;
      bb = 292;
      return true;
    case ggml_type::i8:
      be = 1;
      bb = 1;
      return true;
    case ggml_type::i16:
      be = 1;
      bb = 2;
      return true;
    case ggml_type::i32:
      be = 1;
      bb = 4;
      return true;
    case ggml_type::i64:
    case ggml_type::f64:
      be = 1;
      bb = 8;
      return true;
  }
  return false;
}

float fp16_to_fp32(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t man = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {
      // Subnormal: normalise the mantissa.
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      bits = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_fp32(std::uint16_t h) {
  std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void dequantize_row(ggml_type t, const void* src_v, float* y, std::int64_t n) {
  const auto* src = static_cast<const std::uint8_t*>(src_v);
  switch (t) {
    case ggml_type::f32:
      // An empty tensor's buffers may be null, which memcpy must not see.
      if (n > 0) std::memcpy(y, src, static_cast<std::size_t>(n) * 4);
      return;
    case ggml_type::f16:
      for (std::int64_t k = 0; k < n; ++k) y[k] = fp16_to_fp32(load_u16(src + 2 * k));
      return;
    case ggml_type::bf16:
      for (std::int64_t k = 0; k < n; ++k) y[k] = bf16_to_fp32(load_u16(src + 2 * k));
      return;
    case ggml_type::q8_0:
      // block_q8_0 { half d; int8 qs[32]; }: y = d * q
      for (std::int64_t b = 0; b < n / 32; ++b, src += 34, y += 32) {
        float d = fp16_to_fp32(load_u16(src));
        const auto* qs = reinterpret_cast<const std::int8_t*>(src + 2);
        for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(qs[j]);
      }
      return;
    case ggml_type::q4_0:
      // block_q4_0 { half d; uint8 qs[16]; }: low nibbles are elements 0..15,
      // high nibbles 16..31; y = d * (q - 8)
      for (std::int64_t b = 0; b < n / 32; ++b, src += 18, y += 32) {
        float d = fp16_to_fp32(load_u16(src));
        const std::uint8_t* qs = src + 2;
        for (int j = 0; j < 16; ++j) {
          y[j] = d * static_cast<float>((qs[j] & 0x0f) - 8);
          y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
        }
      }
      return;
    case ggml_type::q4_1:
      // block_q4_1 { half d; half m; uint8 qs[16]; }: y = d * q + m
      for (std::int64_t b = 0; b < n / 32; ++b, src += 20, y += 32) {
        float d = fp16_to_fp32(load_u16(src));
        float m = fp16_to_fp32(load_u16(src + 2));
        const std::uint8_t* qs = src + 4;
        for (int j = 0; j < 16; ++j) {
          y[j] = d * static_cast<float>(qs[j] & 0x0f) + m;
          y[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
        }
      }
      return;
    default:
      break;
  }
  throw error(errc::unsupported, "dequantize: tensor type " + to_string(t) + " has no dequantizer");
}

bool gguf_value::is_integer() const {
  switch (type) {
    case gguf_type::uint8:
    case gguf_type::int8:
    case gguf_type::uint16:
    case gguf_type::int16:
    case gguf_type::uint32:
    case gguf_type::int32:
    case gguf_type::uint64:
    case gguf_type::int64:
      return true;
    default:
      return false;
  }
}

bool gguf_value::is_float() const { return type == gguf_type::float32 || type == gguf_type::float64; }

std::int64_t gguf_tensor::elements() const {
  std::int64_t n = 1;
  for (auto d : dims) n *= d;  // dims were checked for overflow at parse
  return n;
}

gguf_file::gguf_file(gguf_file&& o) noexcept = default;
gguf_file& gguf_file::operator=(gguf_file&& o) noexcept = default;
gguf_file::~gguf_file() = default;

gguf_file gguf_file::open(const std::string& path, const gguf_limits& limits) {
  gguf_file g;
  g.path_ = path;
  g.file_ = platform::mapped_file::open(path);
  if (g.file_.size() == 0) throw error(errc::bad_file, path + ": header: empty file");
  g.map_ = g.file_.data();
  g.size_ = g.file_.size();
  g.parse(limits);
  return g;
}

void gguf_file::parse(const gguf_limits& lim) {
  cursor c(path_, map_, size_);
  auto magic = c.read<std::uint32_t>("magic");
  if (magic != gguf_magic) c.fail("magic", "not a GGUF file");
  version_ = c.read<std::uint32_t>("version");
  if (version_ != 2 && version_ != 3) c.fail("version", "unsupported version " + std::to_string(version_));
  auto n_tensors = c.read<std::uint64_t>("tensor_count");
  auto n_kv = c.read<std::uint64_t>("metadata_kv_count");
  if (n_tensors > lim.max_tensors) c.fail("tensor_count", std::to_string(n_tensors) + " over limit");
  if (n_kv > lim.max_kv) c.fail("metadata_kv_count", std::to_string(n_kv) + " over limit");

  for (std::uint64_t k = 0; k < n_kv; ++k) {
    std::string field = "metadata[" + std::to_string(k) + "]";
    auto key = c.read_string(field + " key", lim.max_string);
    field += " '" + key + "'";
    auto t = static_cast<gguf_type>(c.read<std::uint32_t>(field + " type"));
    auto v = read_value(c, t, field, lim);
    if (!kv_.emplace(key, std::move(v)).second) c.fail(field, "duplicate key");
  }

  if (auto* a = find("general.alignment")) {
    if (!a->is_integer() || a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > (1u << 20))
      c.fail("general.alignment", "must be a power of two up to 1 MiB, got " + std::to_string(a->i));
    alignment_ = a->u;
  }

  tensors_.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(n_tensors, (size_ - c.pos()) / 24)));
  for (std::uint64_t k = 0; k < n_tensors; ++k) {
    std::string field = "tensor[" + std::to_string(k) + "]";
    gguf_tensor t;
    t.name = c.read_string(field + " name", 1024);
    field += " '" + t.name + "'";
    auto nd = c.read<std::uint32_t>(field + " n_dims");
    if (nd == 0 || nd > lim.max_dims) c.fail(field, "n_dims " + std::to_string(nd));
    std::uint64_t elems = 1;
    for (std::uint32_t d = 0; d < nd; ++d) {
      auto dim = c.read<std::uint64_t>(field + " dims");
      if (dim == 0 || dim > (1ull << 40)) c.fail(field, "dimension " + std::to_string(dim));
      if (elems > (std::numeric_limits<std::uint64_t>::max() >> 2) / dim) c.fail(field, "element count overflows");
      elems *= dim;
      t.dims.push_back(static_cast<std::int64_t>(dim));
    }
    if (elems > (1ull << 40)) c.fail(field, "element count " + std::to_string(elems) + " too large");
    auto tt = c.read<std::uint32_t>(field + " type");
    t.type = static_cast<ggml_type>(tt);
    std::uint64_t be = 0, bb = 0;
    if (!ggml_block_info(t.type, be, bb)) c.fail(field, "unknown tensor type " + std::to_string(tt));
    if (static_cast<std::uint64_t>(t.dims[0]) % be != 0)
      c.fail(field, "row of " + std::to_string(t.dims[0]) + " not a multiple of the " + to_string(t.type) + " block (" +
                        std::to_string(be) + ")");
    t.bytes = elems / be * bb;
    t.offset = c.read<std::uint64_t>(field + " offset");
    if (t.offset % alignment_ != 0) c.fail(field, "offset " + std::to_string(t.offset) + " not aligned");
    if (tensor_index_.count(t.name)) c.fail(field, "duplicate tensor name");
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  std::uint64_t pos = c.pos();
  data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
  if (data_offset_ > size_ && !tensors_.empty()) c.fail("data section", "starts past end of file");
  std::uint64_t data_size = size_ >= data_offset_ ? size_ - data_offset_ : 0;
  for (auto& t : tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      c.fail("tensor '" + t.name + "'", "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.bytes) +
                                            ") past end of data section (" + std::to_string(data_size) + " bytes)");
    t.data = map_ + data_offset_ + t.offset;
  }
}

const gguf_value* gguf_file::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const gguf_tensor* gguf_file::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string gguf_file::get_string(const std::string& key) const {
  auto* v = find(key);
  if (!v) throw error(errc::bad_file, path_ + ": " + key + ": missing");
  if (v->type != gguf_type::string)
    throw error(errc::bad_file, path_ + ": " + key + ": expected string, got " + type_name(v->type));
  return v->s;
}

std::string gguf_file::get_string(const std::string& key, const std::string& fallback) const {
  return find(key) ? get_string(key) : fallback;
}

std::int64_t gguf_file::get_int(const std::string& key) const {
  auto* v = find(key);
  if (!v) throw error(errc::bad_file, path_ + ": " + key + ": missing");
  if (!v->is_integer())
    throw error(errc::bad_file, path_ + ": " + key + ": expected integer, got " + type_name(v->type));
  return v->i;
}

std::int64_t gguf_file::get_int(const std::string& key, std::int64_t fallback) const {
  return find(key) ? get_int(key) : fallback;
}

double gguf_file::get_float(const std::string& key) const {
  auto* v = find(key);
  if (!v) throw error(errc::bad_file, path_ + ": " + key + ": missing");
  if (v->is_float()) return v->f;
  if (v->is_integer()) return static_cast<double>(v->i);
  throw error(errc::bad_file, path_ + ": " + key + ": expected number, got " + type_name(v->type));
}

double gguf_file::get_float(const std::string& key, double fallback) const {
  return find(key) ? get_float(key) : fallback;
}

bool gguf_file::get_bool(const std::string& key, bool fallback) const {
  auto* v = find(key);
  if (!v) return fallback;
  if (v->type != gguf_type::boolean)
    throw error(errc::bad_file, path_ + ": " + key + ": expected bool, got " + type_name(v->type));
  return v->b;
}

const std::vector<std::string>& gguf_file::get_strings(const std::string& key) const {
  auto* v = find(key);
  if (!v) throw error(errc::bad_file, path_ + ": " + key + ": missing");
  if (v->type != gguf_type::array || v->array_type != gguf_type::string)
    throw error(errc::bad_file, path_ + ": " + key + ": expected array of string");
  return v->strings;
}

const std::vector<std::int64_t>& gguf_file::get_ints(const std::string& key) const {
  auto* v = find(key);
  if (!v) throw error(errc::bad_file, path_ + ": " + key + ": missing");
  if (v->type != gguf_type::array || v->array_type == gguf_type::string || v->array_type == gguf_type::float32 ||
      v->array_type == gguf_type::float64)
    throw error(errc::bad_file, path_ + ": " + key + ": expected array of integers");
  return v->ints;
}

std::vector<float> gguf_file::dequantize(const gguf_tensor& t) const {
  auto n = t.elements();
  std::vector<float> out(static_cast<std::size_t>(n));
  try {
    dequantize_row(t.type, t.data, out.data(), n);
  } catch (const error& e) {
    throw error(e.code(), path_ + ": tensor '" + t.name + "': " + e.what());
  }
  return out;
}

}  // namespace kvflow::model

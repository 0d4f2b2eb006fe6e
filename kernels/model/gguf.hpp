#pragma once
// GGUF (v2/v3) reader: metadata, tensor infos and fp32 dequantization of the
// tensor types kvflow loads (F32, F16, BF16, Q8_0, Q4_0, Q4_1). The file is
// untrusted: every count, length, shape and offset is checked against the
// file and its limits before use.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "platform/mapped_file.hpp"

namespace kvflow::model {

/// GGUF metadata value types (the numbers are the file's).
enum class gguf_type : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};

/// ggml tensor types that kvflow knows the block size of (numbers are ggml's).
enum class ggml_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  bf16 = 30,
};

/// Name of a ggml type ("q4_1"), or "type<N>" for unknown numbers.
std::string to_string(ggml_type t);

/// One metadata value. Scalars use the field that fits their type (all
/// integers in `i` as well as `u` when they fit); arrays keep their element
/// type and fill `strings`, `ints` or `floats`.
struct gguf_value {
  gguf_type type = gguf_type::uint8;
  gguf_type array_type = gguf_type::uint8;  ///< element type when type == array
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double f = 0.0;
  bool b = false;
  std::string s;
  std::vector<std::string> strings;  ///< array of string
  std::vector<std::int64_t> ints;    ///< array of integers or bools
  std::vector<double> floats;        ///< array of float32/float64

  bool is_integer() const;
  bool is_float() const;
};

/// One tensor's description; `data` points into the mapped file.
struct gguf_tensor {
  std::string name;
  std::vector<std::int64_t> dims;  ///< ggml order: dims[0] is the innermost (contiguous) axis
  ggml_type type = ggml_type::f32;
  std::uint64_t offset = 0;  ///< from the start of the data section
  std::uint64_t bytes = 0;
  const std::uint8_t* data = nullptr;

  std::int64_t elements() const;
};

/// Limits on what a file may declare, so a hostile header cannot make the
/// reader allocate without bound.
struct gguf_limits {
  std::uint64_t max_kv = 1u << 16;
  std::uint64_t max_tensors = 1u << 20;
  std::uint64_t max_string = 1u << 24;  ///< bytes in one string
  std::uint64_t max_array = 1u << 24;   ///< elements in one array
  std::uint64_t max_dims = 4;
};

/// A GGUF file mapped read-only. Move-only; tensor data pointers stay valid
/// while the object lives. Thread-safe for concurrent const use.
class gguf_file {
 public:
  /// Maps and parses `path`. Throws kvflow::error(bad_file) naming the path
  /// and the field for anything malformed, (io_failure) when it cannot be
  /// opened or mapped.
  static gguf_file open(const std::string& path, const gguf_limits& limits = {});

  gguf_file(gguf_file&&) noexcept;
  gguf_file& operator=(gguf_file&&) noexcept;
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;
  ~gguf_file();

  const std::string& path() const { return path_; }
  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  std::uint64_t data_offset() const { return data_offset_; }
  std::uint64_t file_size() const { return size_; }

  const std::map<std::string, gguf_value>& metadata() const { return kv_; }
  const std::vector<gguf_tensor>& tensors() const { return tensors_; }

  /// nullptr when absent.
  const gguf_value* find(const std::string& key) const;
  const gguf_tensor* find_tensor(const std::string& name) const;

  /// Typed accessors: throw kvflow::error(bad_file) naming the path and key
  /// when the key is missing (no fallback given) or has another type.
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::int64_t get_int(const std::string& key) const;
  std::int64_t get_int(const std::string& key, std::int64_t fallback) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;
  const std::vector<std::int64_t>& get_ints(const std::string& key) const;

  /// The tensor as fp32 in file order (dims[0] fastest). Throws
  /// kvflow::error(unsupported) for types without a dequantizer.
  std::vector<float> dequantize(const gguf_tensor& t) const;

 private:
  gguf_file() = default;
  void parse(const gguf_limits& limits);

  std::string path_;
  platform::mapped_file file_;
  const std::uint8_t* map_ = nullptr;  // file_'s bytes
  std::uint64_t size_ = 0;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::map<std::string, gguf_value> kv_;
  std::vector<gguf_tensor> tensors_;
  std::map<std::string, std::size_t> tensor_index_;
};

/// Elements per block and bytes per block of a ggml type; false when unknown.
bool ggml_block_info(ggml_type t, std::uint64_t& block_elems, std::uint64_t& block_bytes);

/// Dequantizes `n` elements (a multiple of the block size) from `src` into
/// `dst`. Throws kvflow::error(unsupported) for other types.
void dequantize_row(ggml_type t, const void* src, float* dst, std::int64_t n);

/// IEEE half and bfloat16 to float.
float fp16_to_fp32(std::uint16_t h);
float bf16_to_fp32(std::uint16_t h);

}  // namespace kvflow::model

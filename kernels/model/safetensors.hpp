#pragma once
// safetensors reader: an 8-byte header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the data. The file is untrusted:
// header size, shapes and ranges are checked before any tensor is touched.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "platform/mapped_file.hpp"

namespace kvflow::model {

struct safetensors_tensor {
  std::string name;
  std::string dtype;                ///< "F32", "F16", "BF16", ... as written
  std::vector<std::int64_t> shape;  ///< outermost first (row-major)
  std::uint64_t begin = 0;          ///< byte range within the data section
  std::uint64_t end = 0;
  const std::uint8_t* data = nullptr;

  std::int64_t elements() const;
};

/// A safetensors file mapped read-only. Move-only.
class safetensors_file {
 public:
  /// Throws kvflow::error(bad_file) naming the path and field for anything
  /// malformed; (io_failure) when it cannot be opened or mapped.
  static safetensors_file open(const std::string& path, std::uint64_t max_header = 100u << 20);

  safetensors_file(safetensors_file&&) noexcept;
  safetensors_file& operator=(safetensors_file&&) noexcept;
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file();

  const std::string& path() const { return path_; }
  const std::vector<safetensors_tensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return meta_; }
  /// nullptr when absent.
  const safetensors_tensor* find(const std::string& name) const;

  /// The tensor as fp32 (F32, F16, BF16); kvflow::error(unsupported) for
  /// other dtypes.
  std::vector<float> to_fp32(const safetensors_tensor& t) const;

 private:
  safetensors_file() = default;
  void parse(std::uint64_t max_header);

  std::string path_;
  platform::mapped_file file_;
  const std::uint8_t* map_ = nullptr;  // file_'s bytes
  std::uint64_t size_ = 0;
  std::vector<safetensors_tensor> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> meta_;
};

}  // namespace kvflow::model

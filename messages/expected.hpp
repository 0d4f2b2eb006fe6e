#pragma once
// A value or the kvflow::error that says why there is none. Library code below
// actors/ returns it where failure is an expected outcome (decoding untrusted
// bytes); actors turn the error into a caf::error with make_error
// (actors/caf_error.hpp), so messages/ needs no CAF.

#include <utility>
#include <variant>

#include "messages/error.hpp"

namespace kvflow {

/// Holds a T or an error. Reading the value of an error (or the error of a
/// value) is a contract violation checked by std::get: it throws
/// std::bad_variant_access.
template <class T>
class expected {
 public:
  expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit like caf::expected
  expected(kvflow::error e) : v_(std::in_place_index<1>, std::move(e)) {}  // NOLINT

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const kvflow::error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, kvflow::error> v_;
};

}  // namespace kvflow

#pragma once
// Backend memory owned for one scope: engine::allocate'd, engine::release'd
// on exit (the CUDA engine's release waits for its stream first).

#include <cstddef>

#include "kernels/model/engine.hpp"

namespace kvflow::model {

/// `bytes` of `e`'s memory (none for 0 bytes: get() is null). Not movable:
/// it lives in the scope that uses it.
class engine_memory {
 public:
  engine_memory(engine& e, std::size_t bytes) : e_(e), p_(bytes > 0 ? e.allocate(bytes) : nullptr) {}
  ~engine_memory() {
    if (p_) e_.release(p_);
  }
  engine_memory(const engine_memory&) = delete;
  engine_memory& operator=(const engine_memory&) = delete;

  void* get() const { return p_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  engine& e_;
  void* p_;
};

}  // namespace kvflow::model

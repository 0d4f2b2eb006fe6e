#pragma once
// Whether this build and this machine have CUDA. Names no CUDA type, so every
// build (CPU-only included) may ask.

namespace kvflow::platform {

/// True when kvflow was built with the CUDA backend (KVFLOW_HAVE_CUDA).
bool built_with_cuda() noexcept;

/// CUDA devices this process sees: 0 in a build without CUDA, or when the
/// driver or runtime is missing (the runtime's error is cleared, so later
/// calls are not blamed). The one "is there a GPU" check of kvflow.
int cuda_device_count() noexcept;

/// cuda_device_count() > 0.
inline bool cuda_device_available() noexcept { return cuda_device_count() > 0; }

}  // namespace kvflow::platform

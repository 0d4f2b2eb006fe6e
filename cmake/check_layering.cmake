# Checks that every folder includes only what its layer may see:
#   apps -> actors -> policies, devices, kernels -> messages
#                               devices, kernels -> platform -> messages
# messages/ and policies/ see no CAF, no CUDA and nothing above them
# (platform/ is the one place below kernels/ and devices/ that sees CUDA);
# policies/ also no I/O or clocks (they are pure); kernels/ and devices/ see
# no CAF and not each other. Run as a script:
#   cmake -DROOT=<tree> -P check_layering.cmake
# Every violation is listed with its file and include; the last line is always
# "layering: N violation(s)" and N > 0 fails the script (and so the build:
# kvflow_messages depends on this check).

if(NOT ROOT)
  message(FATAL_ERROR "check_layering: set -DROOT=<source tree>")
endif()

set(caf_re "^caf/")
set(cuda_re "^(cuda|cuda_[a-z0-9_]+|cublas[A-Za-z_]*|nccl|cufft|curand|nvrtc)\\.h$|^(cub|thrust|cuda)/|\\.cuh$")
set(io_re "^(chrono|thread|fstream|filesystem|iostream|cstdio|future|unistd\\.h|fcntl\\.h|sys/.*|spdlog/.*|messages/log\\.hpp)$")

# folder; what it may not include (regexes on the include's path, joined by |)
set(rules
  "messages|${caf_re}|${cuda_re}|^(platform|kernels|devices|policies|actors|apps)/"
  "platform|${caf_re}|^(kernels|devices|policies|actors|apps)/"
  "policies|${caf_re}|${cuda_re}|^(platform|kernels|devices|actors|apps)/|${io_re}"
  "kernels|${caf_re}|^(devices|policies|actors|apps)/"
  "devices|${caf_re}|^(kernels|policies|actors|apps)/"
  "actors|^apps/")

# The paths a file includes, as written between <> or "".
function(includes_of file out)
  file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
  set(paths "")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[<\"]([^>\"]+)[>\"].*" "\\1" inc "${line}")
    list(APPEND paths "${inc}")
  endforeach()
  set(${out} "${paths}" PARENT_SCOPE)
endfunction()

set(violations 0)
foreach(rule IN LISTS rules)
  string(FIND "${rule}" "|" bar)
  string(SUBSTRING "${rule}" 0 ${bar} folder)
  math(EXPR start "${bar} + 1")
  string(SUBSTRING "${rule}" ${start} -1 forbidden)
  file(GLOB_RECURSE files RELATIVE "${ROOT}"
    "${ROOT}/${folder}/*.hpp" "${ROOT}/${folder}/*.cpp" "${ROOT}/${folder}/*.h"
    "${ROOT}/${folder}/*.cu" "${ROOT}/${folder}/*.cuh")
  list(SORT files)
  foreach(f IN LISTS files)
    includes_of("${ROOT}/${f}" includes)
    foreach(inc IN LISTS includes)
      if(inc MATCHES "${forbidden}")
        message(STATUS "layering: ${f}: ${folder}/ may not include <${inc}>")
        math(EXPR violations "${violations} + 1")
      endif()
    endforeach()
  endforeach()
endforeach()

# The installed headers (cmake/install.cmake) include the standard library
# only: an embedding service sees no CAF, CUDA or Cap'n Proto type.
foreach(f actors/runtime.hpp messages/error.hpp)
  if(NOT EXISTS "${ROOT}/${f}")
    continue()
  endif()
  includes_of("${ROOT}/${f}" includes)
  foreach(inc IN LISTS includes)
    if(inc MATCHES "[/.]")
      message(STATUS "layering: ${f}: a public header may include the standard library only, not <${inc}>")
      math(EXPR violations "${violations} + 1")
    endif()
  endforeach()
endforeach()

message(STATUS "layering: ${violations} violation(s)")
if(violations GREATER 0)
  message(FATAL_ERROR "layering: ${violations} include(s) cross the layers above (see cmake/check_layering.cmake)")
endif()

# ctest install.example: installs the build tree to a temporary prefix,
# configures and builds apps/examples against it with find_package(kvflow)
# (not against the build tree), and runs the example service on the CPU
# backend: the second of two prompts sharing a prefix must restore cached
# chunks. Run as a script:
#   cmake -DBUILD_DIR=.. -DSOURCE_DIR=.. -DWORK_DIR=.. -DMODEL=.. [-DCXX=..]
#         [-DLAUNCHER=..] [-DGENERATOR=..] -P test_install.cmake

foreach(v BUILD_DIR SOURCE_DIR WORK_DIR MODEL)
  if(NOT ${v})
    message(FATAL_ERROR "test_install: set -D${v}=")
  endif()
endforeach()
if(NOT EXISTS "${MODEL}")
  message(FATAL_ERROR "test_install: no model at ${MODEL} (.ci/setup fetches it)")
endif()

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "test_install: ${what} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "test_install: ${what}: ok")
endfunction()

set(prefix ${WORK_DIR}/prefix)
set(example_build ${WORK_DIR}/example)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

run("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/include/kvflow/runtime.hpp OR NOT EXISTS ${prefix}/lib/cmake/kvflow/kvflowConfig.cmake)
  message(FATAL_ERROR "test_install: the install lacks the header or the CMake package")
endif()

set(configure ${CMAKE_COMMAND} -S ${SOURCE_DIR}/apps/examples -B ${example_build}
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
if(GENERATOR)
  list(APPEND configure -G ${GENERATOR})
endif()
if(CXX)
  list(APPEND configure -DCMAKE_CXX_COMPILER=${CXX})
endif()
if(LAUNCHER)
  list(APPEND configure -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()
run("configure the example with find_package(kvflow)" ${configure})
# The example must see the installed package, not the build tree.
file(STRINGS ${example_build}/CMakeCache.txt kvflow_dir REGEX "^kvflow_DIR:")
if(NOT kvflow_dir MATCHES "^kvflow_DIR:PATH=${prefix}/")
  message(FATAL_ERROR "test_install: the example found kvflow outside the prefix: ${kvflow_dir}")
endif()
run("build the example" ${CMAKE_COMMAND} --build ${example_build})

set(prompt "The lighthouse keeper's log, entry for the third week of November: the wind turned north-east on Monday and the swell rose to four metres by evening. Two fishing boats sheltered in the harbour overnight.")
file(WRITE ${WORK_DIR}/prompts.txt "${prompt} What rose?\n${prompt} Who sheltered?\n")
execute_process(COMMAND ${example_build}/prompt_service --model ${MODEL} --backend cpu --chunk-tokens 16
  --max-new-tokens 4
  INPUT_FILE ${WORK_DIR}/prompts.txt RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "test_install: prompt_service said:\n${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "test_install: prompt_service failed (${rc})")
endif()
string(REGEX MATCHALL "cached_chunks=[0-9]+/[0-9]+" counts "${out}")
list(LENGTH counts n)
if(NOT n EQUAL 2)
  message(FATAL_ERROR "test_install: expected two answers, got ${n}")
endif()
list(GET counts 0 first)
list(GET counts 1 second)
if(NOT first MATCHES "^cached_chunks=0/[1-9]" OR second MATCHES "^cached_chunks=0/")
  message(FATAL_ERROR "test_install: the first prompt should find nothing cached and the second its shared prefix: "
                      "${first}, ${second}")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "test_install: done")

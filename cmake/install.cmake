# cmake --install: the kvflow command, the embedding library as static
# libraries behind kvflow::runtime, its public headers (<kvflow/runtime.hpp>,
# <kvflow/error.hpp>: standard C++ only, no CAF, CUDA or Cap'n Proto type) and
# a CMake package (lib/cmake/kvflow) that finds kvflow's own dependencies.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(kvflow_libraries kvflow_messages kvflow_platform kvflow_kernels kvflow_devices kvflow_net kvflow_policies
  kvflow_actors)
if(TARGET kvflow_cuda)
  # kvflow_nccl: the interface target naming NCCL's library and headers.
  list(APPEND kvflow_libraries kvflow_cuda kvflow_nccl)
endif()
foreach(lib IN LISTS kvflow_libraries)
  string(REGEX REPLACE "^kvflow_" "" name ${lib})
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${name})
endforeach()
set_target_properties(kvflow_actors PROPERTIES EXPORT_NAME runtime)
add_library(kvflow::runtime ALIAS kvflow_actors)
target_include_directories(kvflow_actors INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

install(TARGETS ${kvflow_libraries} EXPORT kvflowTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS kvflow RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/actors/runtime.hpp ${PROJECT_SOURCE_DIR}/messages/error.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kvflow)

set(kvflow_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/kvflow)
install(EXPORT kvflowTargets NAMESPACE kvflow:: DESTINATION ${kvflow_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kvflowConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kvflowConfig.cmake INSTALL_DESTINATION ${kvflow_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kvflowConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kvflowConfig.cmake ${PROJECT_BINARY_DIR}/kvflowConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake DESTINATION ${kvflow_cmake_dir})

# Finds every external dependency once, for the whole tree.
#
# LibTorch comes from the torch==2.11.0 wheel in .venv/ (scripts/setup.sh installs it);
# everything else from Debian 12 packages.

# --- LibTorch -----------------------------------------------------------------------
if(NOT Torch_DIR AND NOT CMAKE_PREFIX_PATH MATCHES "torch")
  foreach(_py ${CMAKE_SOURCE_DIR}/.venv/bin/python3 python3)
    execute_process(COMMAND ${_py} -c "import torch; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE _torch_rc ERROR_QUIET)
    if(_torch_rc EQUAL 0 AND _torch_prefix)
      list(APPEND CMAKE_PREFIX_PATH ${_torch_prefix})
      break()
    endif()
  endforeach()
endif()
# Caffe2's config looks for the CUDA toolkit when the wheel was built with CUDA.
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
# torch's CMake otherwise derives an architecture list (from a GPU, or a generic list that
# starts at compute_50, which nvcc 13 rejects). Hopper and Ampere cover the GPU hosts we serve on.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
find_package(Torch REQUIRED)

# The wheel's include/ ships google/protobuf headers of another protobuf version. Debian's
# headers live in /usr/include, which the compiler searches after every -isystem directory, so
# putting protobuf's directory "first" cannot work here. Instead every torch target gets an
# include directory that mirrors the wheel's include/ without google/.
set(_torch_include "${TORCH_INSTALL_PREFIX}/include")
set(_mirror "${CMAKE_BINARY_DIR}/torch-include")
file(MAKE_DIRECTORY ${_mirror})
file(GLOB _entries RELATIVE ${_torch_include} ${_torch_include}/*)
foreach(_entry ${_entries})
  if(NOT _entry STREQUAL "google" AND NOT EXISTS ${_mirror}/${_entry})
    file(CREATE_LINK ${_torch_include}/${_entry} ${_mirror}/${_entry} SYMBOLIC)
  endif()
endforeach()
foreach(_target torch torch_cpu torch_cuda c10 c10_cuda)
  if(TARGET ${_target})
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs)
      list(TRANSFORM _dirs REPLACE "^${_torch_include}$" "${_mirror}")
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
    endif()
  endif()
endforeach()

set(VITSERVE_WITH_CUDA OFF)
if(TARGET torch_cuda AND CMAKE_CUDA_COMPILER)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80;90)
    endif()
    enable_language(CUDA)
    set(VITSERVE_WITH_CUDA ON)
  endif()
endif()
message(STATUS "vitserve: LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}, CUDA: ${VITSERVE_WITH_CUDA}")

# --- Debian 12 packages ----------------------------------------------------------------
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)
include(VitserveOpenCV)      # core, imgproc, imgcodecs without libopencv-dev
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(nlohmann_json 3 REQUIRED)  # REST bodies, --json output, safetensors headers
# cpp-httplib (the REST server) has only a pkg-config file in Debian.
find_package(PkgConfig REQUIRED)
pkg_check_modules(CPP_HTTPLIB REQUIRED IMPORTED_TARGET GLOBAL cpp-httplib)
if(VITSERVE_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(VITSERVE_BUILD_BENCH)
  find_package(benchmark QUIET)
endif()
find_program(VITSERVE_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
# tcmalloc (gperftools' minimal build, Debian's libtcmalloc-minimal4) replaces glibc's malloc in
# the vitserve binary: gRPC allocates and frees per request from many threads, where glibc's
# arenas contend and grow their heaps (docs/performance.md, run 29). The runtime package ships
# no unversioned .so, so the library is found by its file name, and that name comes first: with
# libgoogle-perftools-dev also installed (for profiling) the build would otherwise link the dev
# package's libtcmalloc_minimal.so, which scripts/setup.sh does not install (test_system_deps).
# Sanitizer builds leave it out: ASan replaces malloc itself.
option(VITSERVE_TCMALLOC "Link the vitserve binary with tcmalloc (libtcmalloc-minimal4)" ON)
set(VITSERVE_LINK_TCMALLOC ${VITSERVE_TCMALLOC})
if(CMAKE_CXX_FLAGS MATCHES "-fsanitize")
  set(VITSERVE_LINK_TCMALLOC OFF)
endif()
if(VITSERVE_LINK_TCMALLOC)
  find_library(VITSERVE_TCMALLOC_LIBRARY NAMES libtcmalloc_minimal.so.4 tcmalloc_minimal REQUIRED)
  message(STATUS "vitserve: tcmalloc at ${VITSERVE_TCMALLOC_LIBRARY}")
endif()

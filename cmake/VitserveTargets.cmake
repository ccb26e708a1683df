# Helpers that give every target the same warnings and the LibTorch precompiled header.

set(VITSERVE_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)

# Every C++ file is compiled with -pthread (gRPC and abseil bring it to some targets anyway): it
# defines _REENTRANT, and GCC refuses a precompiled header built with a different set of macros.
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-pthread>)

# vitserve_target_defaults(<target>): warnings and the source root on the include path, so
# headers are included as "models/vit/vit.h", "server/batching/dynamic_batcher.h", ...
function(vitserve_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${VITSERVE_WARNINGS}>)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# One precompiled LibTorch header for the whole build. Every torch-using target reuses it
# (REUSE_FROM) instead of compiling its own: each copy is ~600 MB and a minute of a 2-core
# machine, and 17 private copies filled the CI disk. GCC accepts the shared .gch as long as the
# consumers' own -D macros do not appear in the torch headers, which is true for ours
# (VITSERVE_WITH_CUDA, VITSERVE_VERSION, ...); -Winvalid-pch reports any that would not fit.
add_library(vitserve_torch_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/torch_pch.cc)
target_link_libraries(vitserve_torch_pch PRIVATE torch)
target_compile_options(vitserve_torch_pch PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${VITSERVE_WARNINGS}>)
target_precompile_headers(vitserve_torch_pch PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:${CMAKE_CURRENT_LIST_DIR}/torch_pch.h>)

# vitserve_use_torch(<target> [PUBLIC|PRIVATE]): links LibTorch and reuses the shared
# precompiled header of the few torch headers every torch-using file here needs (the tensor and
# nn::Module), not torch/torch.h.
function(vitserve_use_torch target visibility)
  target_link_libraries(${target} ${visibility} torch)
  target_precompile_headers(${target} REUSE_FROM vitserve_torch_pch)
endfunction()

# vitserve_add_test(<name> SOURCES <files...> LIBS <targets...> LABELS <labels...>)
# One GoogleTest executable registered with CTest; tests are discovered per test case.
function(vitserve_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  vitserve_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gmock GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  include(GoogleTest)
  gtest_discover_tests(${name} PROPERTIES LABELS "${ARG_LABELS}"
                       DISCOVERY_TIMEOUT 120)
endfunction()

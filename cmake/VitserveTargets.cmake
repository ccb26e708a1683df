# Helpers that give every target the same warnings and the LibTorch precompiled header.

set(VITSERVE_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)

# vitserve_target_defaults(<target>): warnings and the source root on the include path, so
# headers are included as "models/vit/vit.h", "server/batching/dynamic_batcher.h", ...
function(vitserve_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${VITSERVE_WARNINGS}>)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# vitserve_use_torch(<target> [PUBLIC|PRIVATE]): links LibTorch and precompiles the few torch
# headers that every torch-using file here needs (the tensor and nn::Module), not torch/torch.h.
function(vitserve_use_torch target visibility)
  target_link_libraries(${target} ${visibility} torch)
  target_precompile_headers(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${PROJECT_SOURCE_DIR}/cmake/torch_pch.h>)
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

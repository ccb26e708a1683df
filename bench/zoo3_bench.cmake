# zoo3 benchmarks (ViTTM, TokenLearner, Fibottention). Wired in by bench/CMakeLists.txt:
#   include(zoo3_bench.cmake)
# vitserve-bench-fibottention: the Fibottention kernel vs dense SDPA (and --check vs the dense
# masked reference). Model throughput uses the existing vitserve-bench-model (bench/zoo3_gpu.sh).
add_executable(vitserve-bench-fibottention ${CMAKE_CURRENT_LIST_DIR}/zoo3_fibottention_bench.cc)
vitserve_target_defaults(vitserve-bench-fibottention)
vitserve_use_torch(vitserve-bench-fibottention PRIVATE)
target_link_libraries(vitserve-bench-fibottention PRIVATE vitserve_bench_util vitserve_models absl::flags
                      absl::flags_parse absl::flags_usage absl::strings)
if(VITSERVE_WITH_CUDA)
  target_compile_definitions(vitserve-bench-fibottention PRIVATE VITSERVE_WITH_CUDA)
endif()

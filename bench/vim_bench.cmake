# Vision Mamba benchmarks and GPU checks. Wired in by bench/CMakeLists.txt:
#   include(vim_bench.cmake)
# vitserve-vim-gpu-check: CUDA kernels and vim_tiny on CUDA against the CPU reference.
# vitserve-bench-vim-vs-deit: images/s and peak GPU memory of vim_tiny vs deit_tiny per size.
# vitserve-bench-vim-ops: time per operator of one Vim layer (where the forward pass goes).
foreach(_vim_bench vitserve-vim-gpu-check:vim_gpu_check.cc vitserve-bench-vim-vs-deit:vim_vs_deit.cc
                   vitserve-bench-vim-ops:vim_ops_bench.cc)
  string(REPLACE ":" ";" _pair ${_vim_bench})
  list(GET _pair 0 _target)
  list(GET _pair 1 _source)
  add_executable(${_target} ${CMAKE_CURRENT_LIST_DIR}/${_source})
  vitserve_target_defaults(${_target})
  vitserve_use_torch(${_target} PRIVATE)
  target_link_libraries(${_target} PRIVATE vitserve_bench_util vitserve_models absl::flags absl::flags_parse
                        absl::flags_usage absl::strings)
  if(VITSERVE_WITH_CUDA)
    target_compile_definitions(${_target} PRIVATE VITSERVE_WITH_CUDA)
  endif()
endforeach()

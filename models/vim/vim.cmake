# Vision Mamba (models/vim/): sources for the vitserve_models library.
# models/CMakeLists.txt includes this file and adds
#   ${VITSERVE_VIM_SOURCES}                      always
#   ${VITSERVE_VIM_CUDA_SOURCES}                 when VITSERVE_WITH_CUDA is ON
# to vitserve_models. Paths are relative to models/.
set(VITSERVE_VIM_SOURCES
  vim/selective_scan.cc
  vim/vim_models.cc
  vim/vision_mamba.cc
)
set(VITSERVE_VIM_CUDA_SOURCES
  vim/selective_scan_cuda.cu
)
# selective_scan.cc dispatches CUDA tensors to the kernels only when it sees VITSERVE_WITH_CUDA;
# the definition is set on these sources alone, so no other file of the library changes.
if(VITSERVE_WITH_CUDA)
  set_source_files_properties(
    ${CMAKE_CURRENT_LIST_DIR}/selective_scan.cc
    ${CMAKE_CURRENT_LIST_DIR}/selective_scan_cuda.cu
    PROPERTIES COMPILE_DEFINITIONS VITSERVE_WITH_CUDA)
endif()

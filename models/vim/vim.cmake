# Vision Mamba (models/vim/): sources for the vitserve_models library; see the family loop in
# models/CMakeLists.txt for what each list means. Paths are relative to models/.
set(VITSERVE_VIM_SOURCES
  vim/selective_scan.cc
  vim/vim_models.cc
  vim/vision_mamba.cc
)
set(VITSERVE_VIM_CUDA_SOURCES
  vim/selective_scan_cuda.cu
)
# selective_scan.cc dispatches CUDA tensors to the kernels.
set(VITSERVE_VIM_CUDA_DISPATCH_SOURCES
  vim/selective_scan.cc
)

# Fibottention (models/fibottention/): sources for the vitserve_models library; see the family
# loop in models/CMakeLists.txt for what each list means. Paths are relative to models/.
set(VITSERVE_FIBOTTENTION_SOURCES
  fibottention/fibottention.cc
  fibottention/fibottention_models.cc
  fibottention/fibottention_vit.cc
)
set(VITSERVE_FIBOTTENTION_CUDA_SOURCES
  fibottention/fibottention_cuda.cu
  fibottention/fibottention_tiled_cuda.cu
)
# fibottention.cc dispatches CUDA tensors to the kernel.
set(VITSERVE_FIBOTTENTION_CUDA_DISPATCH_SOURCES
  fibottention/fibottention.cc
)

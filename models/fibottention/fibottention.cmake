# Fibottention (models/fibottention/): sources for the vitserve_models library.
# models/CMakeLists.txt includes this file and adds
#   ${VITSERVE_FIBOTTENTION_SOURCES}         always
#   ${VITSERVE_FIBOTTENTION_CUDA_SOURCES}    when VITSERVE_WITH_CUDA is ON
# to vitserve_models. Paths are relative to models/. Uses models/layers/vit_layers.h
# (header-only).
set(VITSERVE_FIBOTTENTION_SOURCES
  fibottention/fibottention.cc
  fibottention/fibottention_models.cc
  fibottention/fibottention_vit.cc
)
set(VITSERVE_FIBOTTENTION_CUDA_SOURCES
  fibottention/fibottention_cuda.cu
)
# fibottention.cc dispatches CUDA tensors to the kernel only when it sees VITSERVE_WITH_CUDA; the
# definition is set on these sources alone, so no other file of the library changes.
if(VITSERVE_WITH_CUDA)
  set_source_files_properties(
    ${CMAKE_CURRENT_LIST_DIR}/fibottention.cc
    ${CMAKE_CURRENT_LIST_DIR}/fibottention_cuda.cu
    PROPERTIES COMPILE_DEFINITIONS VITSERVE_WITH_CUDA)
endif()

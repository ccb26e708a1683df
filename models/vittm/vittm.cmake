# ViTTM (models/vittm/): sources for the vitserve_models library.
# models/CMakeLists.txt includes this file and adds ${VITSERVE_VITTM_SOURCES} to vitserve_models.
# Paths are relative to models/. Uses the header-only models/layers/vit_layers.h (shared with models/vit/).
set(VITSERVE_VITTM_SOURCES
  vittm/vittm.cc
  vittm/vittm_models.cc
)
set(VITSERVE_VITTM_CUDA_SOURCES)

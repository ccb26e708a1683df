# TokenLearner ViT (models/tokenlearner/): sources for the vitserve_models library.
# models/CMakeLists.txt includes this file and adds ${VITSERVE_TOKENLEARNER_SOURCES} to
# vitserve_models. Paths are relative to models/. vit_layers.h is header-only (also used by
# models/vittm/ and models/fibottention/).
set(VITSERVE_TOKENLEARNER_SOURCES
  tokenlearner/token_learner.cc
  tokenlearner/tokenlearner_models.cc
)
set(VITSERVE_TOKENLEARNER_CUDA_SOURCES)

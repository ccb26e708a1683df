# vitserve_model_manager: loads models from the repository (or quick mode) and serves them as
# refcounted ServableModel handles. Included from server/CMakeLists.txt.
add_library(vitserve_model_manager STATIC
  ${CMAKE_CURRENT_LIST_DIR}/model_manager.cc
)
vitserve_target_defaults(vitserve_model_manager)
vitserve_use_torch(vitserve_model_manager PUBLIC)
target_link_libraries(vitserve_model_manager PUBLIC
  vitserve_common
  vitserve_config
  vitserve_runtime
  vitserve_batching
  vitserve_heads
  vitserve_image
  vitserve_metrics
  vitserve_models
  vitserve_proto
  absl::status
  absl::statusor
  absl::strings
  absl::synchronization
  absl::time
  Threads::Threads
)

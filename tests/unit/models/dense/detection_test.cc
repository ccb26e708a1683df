// CenterNet-style detection models on a zoo backbone (models/dense/detection.h).
#include "models/dense/detection.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/registry.h"
#include "models/shvit/shvit.h"

namespace vitserve {
namespace {

TEST(DetectionModelTest, HeatMapsAndBoxChannelsAtStrideFour) {
  ShvitConfig config;
  config.embed_dim = {32, 48, 64};
  config.depth = {1, 1, 1};
  config.partial_dim = {8, 12, 16};
  config.classifier = false;
  DetectionOptions options;
  options.num_classes = 5;
  options.dim = 16;
  std::shared_ptr<VisionModel> model = MakeDetectionModel(MakeShvit(config), options);
  model->eval();
  c10::InferenceMode inference;
  const at::Tensor out = model->forward(at::randn({2, 3, 128, 96}));
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 9, 32, 24}));
  // Initialised near a 10% heat prior: the classifier bias, before any training.
  const double mean_heat = out.narrow(1, 0, 5).sigmoid().mean().item<double>();
  EXPECT_GT(mean_heat, 0.02);
  EXPECT_LT(mean_heat, 0.3);
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) names.push_back(item.key());
  EXPECT_THAT(names, ::testing::Contains("box_head.weight"));
  EXPECT_THAT(names, ::testing::Contains("decode_head.classifier.bias"));
  EXPECT_TRUE(std::all_of(names.begin(), names.end(), [](const std::string& n) {
    return n.rfind("backbone.", 0) == 0 || n.rfind("decode_head.", 0) == 0 ||
           n.rfind("box_head.", 0) == 0;
  }));
}

TEST(DetectionModelTest, RegistryBuildsShvitAsADetector) {
  const ModelRegistry registry = BuiltinModelRegistry();
  absl::StatusOr<ModelRegistry::TaskModel> built =
      registry.CreateForTask("shvit_s1", ModelTask::kDetection, 5);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->info.task, ModelTask::kDetection);
  built->model->eval();
  c10::InferenceMode inference;
  EXPECT_EQ(built->model->forward(at::randn({1, 3, 64, 64})).sizes(),
            (std::vector<int64_t>{1, 9, 16, 16}));
}

}  // namespace
}  // namespace vitserve

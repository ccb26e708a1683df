// Segmentation models on a zoo backbone (models/dense/segmentation.h) and the registry's
// CreateForTask, with SHViT's feature maps.
#include "models/dense/segmentation.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/registry.h"
#include "models/shvit/shvit.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

ShvitConfig SmallShvit() {
  ShvitConfig config;
  config.embed_dim = {32, 48, 64};
  config.depth = {1, 1, 1};
  config.partial_dim = {8, 12, 16};
  config.num_classes = 7;
  return config;
}

TEST(ShvitFeaturesTest, LevelsMatchTheMapsForAnyInputSize) {
  std::shared_ptr<VisionModel> model = MakeShvit(SmallShvit());
  model->eval();
  const std::vector<FeatureLevel> levels = model->FeatureLevels();
  ASSERT_EQ(levels.size(), 5u);
  const std::vector<int64_t> strides = {4, 8, 16, 32, 64};
  const std::vector<int64_t> channels = {8, 16, 32, 48, 64};
  for (size_t i = 0; i < levels.size(); ++i) {
    EXPECT_EQ(levels[i].stride, strides[i]);
    EXPECT_EQ(levels[i].channels, channels[i]);
  }
  c10::InferenceMode inference;
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{224, 224}, {120, 200}, {65, 97}}) {
    const std::vector<at::Tensor> maps = model->Features(at::randn({2, 3, h, w}));
    ASSERT_EQ(maps.size(), levels.size());
    int64_t mh = h, mw = w;
    for (size_t i = 0; i < maps.size(); ++i) {
      // Stride-2 convolutions with padding 1: ceil division at each step.
      while (mh > (h + strides[i] - 1) / strides[i] || mw > (w + strides[i] - 1) / strides[i]) {
        mh = (mh + 1) / 2;
        mw = (mw + 1) / 2;
      }
      EXPECT_EQ(maps[i].sizes(), (std::vector<int64_t>{2, channels[i], mh, mw}))
          << h << "x" << w << " level " << i;
    }
  }
}

TEST(ShvitFeaturesTest, WithoutClassifierOnlyFeatures) {
  ShvitConfig config = SmallShvit();
  config.classifier = false;
  std::shared_ptr<VisionModel> model = MakeShvit(config);
  model->eval();
  for (const auto& item : model->named_parameters()) {
    EXPECT_FALSE(item.key().rfind("head.", 0) == 0) << item.key();
  }
  EXPECT_THROW(model->forward(at::randn({1, 3, 64, 64})), c10::Error);
  EXPECT_EQ(model->Features(at::randn({1, 3, 64, 64})).size(), 5u);
}

TEST(SegmentationModelTest, LogitsAtStrideFourAndNamedForCheckpoints) {
  ShvitConfig config = SmallShvit();
  config.classifier = false;
  SegmentationOptions options;
  options.num_classes = 6;
  options.dim = 16;
  std::shared_ptr<VisionModel> model = MakeSegmentationModel(MakeShvit(config), options);
  model->eval();
  {
    c10::InferenceMode inference;
    EXPECT_EQ(model->forward(at::randn({3, 3, 224, 224})).sizes(),
              (std::vector<int64_t>{3, 6, 56, 56}));
    EXPECT_EQ(model->forward(at::randn({1, 3, 100, 150})).sizes(),
              (std::vector<int64_t>{1, 6, 25, 38}));
  }
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) names.push_back(item.key());
  EXPECT_THAT(names, ::testing::Contains("backbone.patch_embed.0.c.weight"));  // timm names
  EXPECT_THAT(names, ::testing::Contains("decode_head.lateral.0.weight"));
  EXPECT_THAT(names, ::testing::Contains("decode_head.smooth.3.1.weight"));
  EXPECT_THAT(names, ::testing::Contains("decode_head.classifier.weight"));
  EXPECT_TRUE(std::all_of(names.begin(), names.end(), [](const std::string& n) {
    return n.rfind("backbone.", 0) == 0 || n.rfind("decode_head.", 0) == 0;
  }));
  // Too many levels for the backbone.
  options.levels = 6;
  EXPECT_THROW(MakeSegmentationModel(MakeShvit(config), options), c10::Error);
}

// Gradients reach the backbone and the decoder: a few Adam steps fit a fixed pair of images.
TEST(SegmentationModelTest, LearnsAFixedBatch) {
  at::manual_seed(0);
  ShvitConfig config = SmallShvit();
  config.classifier = false;
  SegmentationOptions options;
  options.num_classes = 3;
  options.dim = 16;
  std::shared_ptr<VisionModel> model = MakeSegmentationModel(MakeShvit(config), options);
  model->train();
  const at::Tensor images = at::randn({2, 3, 64, 64});
  // Targets at the logits' resolution: left third class 1, right third class 2.
  at::Tensor target = at::zeros({2, 16, 16}, at::kLong);
  target.narrow(2, 0, 5).fill_(1);
  target.narrow(2, 11, 5).fill_(2);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(3e-3));
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    optimizer.zero_grad();
    const at::Tensor loss = torch::nn::functional::cross_entropy(model->forward(images), target);
    loss.backward();
    optimizer.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_LT(last, 0.5 * first) << first << " -> " << last;
}

TEST(RegistryCreateForTaskTest, ShvitAsASegmenter) {
  const ModelRegistry registry = BuiltinModelRegistry();
  absl::StatusOr<ModelRegistry::TaskModel> built =
      registry.CreateForTask("shvit_s1", ModelTask::kSegmentation, 6);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->info.task, ModelTask::kSegmentation);
  EXPECT_EQ(built->info.num_classes, 6);
  EXPECT_EQ(built->info.input_size, 224);
  built->model->eval();
  c10::InferenceMode inference;
  EXPECT_EQ(built->model->forward(at::randn({1, 3, 224, 224})).sizes(),
            (std::vector<int64_t>{1, 6, 56, 56}));

  // Classification through CreateForTask: the usual model with another class count.
  absl::StatusOr<ModelRegistry::TaskModel> classifier =
      registry.CreateForTask("shvit_s1", ModelTask::kClassification, 5);
  ASSERT_TRUE(classifier.ok());
  EXPECT_EQ(classifier->model->forward(at::randn({2, 3, 224, 224})).sizes(),
            (std::vector<int64_t>{2, 5}));
}

TEST(RegistryCreateForTaskTest, UnsupportedTasksAndBadCounts) {
  const ModelRegistry registry = BuiltinModelRegistry();
  // Families without a spatial feature pyramid yet.
  absl::StatusOr<ModelRegistry::TaskModel> vim =
      registry.CreateForTask("vim_tiny", ModelTask::kSegmentation, 6);
  ASSERT_EQ(vim.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vim.status().message(), HasSubstr("supports: classification"));
  absl::StatusOr<ModelRegistry::TaskModel> detector =
      registry.CreateForTask("deit_small_fibottention", ModelTask::kDetection, 6);
  ASSERT_EQ(detector.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(detector.status().message(), HasSubstr("supports: classification"));
  EXPECT_EQ(registry.CreateForTask("shvit_s1", ModelTask::kSegmentation, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.CreateForTask("nope", ModelTask::kSegmentation, 2).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vitserve

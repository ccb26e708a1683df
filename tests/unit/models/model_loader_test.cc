#include "models/model_loader.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"
#include "tests/test_util/scoped_temp_dir.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

TEST(LoadModelTest, RandomWeightsWhenNoPathGiven) {
  absl::StatusOr<LoadedModel> loaded =
      LoadModel(BuiltinModelRegistry(), "deit_tiny_patch16_224", LoadOptions{});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->random_weights);
  EXPECT_FALSE(loaded->module->is_training());
  EXPECT_EQ(loaded->info.architecture, "deit_tiny_patch16_224");
  EXPECT_EQ(loaded->parameter_count, 5717416);
}

TEST(LoadModelTest, LoadsCheckpointAndReproducesOutputs) {
  const ModelRegistry registry = BuiltinModelRegistry();
  std::shared_ptr<VisionModel> source = registry.Create("shvit_s1").value();
  source->eval();
  const ScopedTempDir temp;
  const std::string path = temp.File("shvit_s1.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, StateDictTensors(*source)).ok());

  LoadOptions options;
  options.weights_path = path;
  options.fuse_for_inference = false;
  absl::StatusOr<LoadedModel> loaded = LoadModel(registry, "shvit_s1", options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->random_weights);
  EXPECT_EQ(loaded->parameter_count, 6330808);

  c10::InferenceMode guard;
  const at::Tensor images = at::randn({2, 3, 224, 224});
  EXPECT_TRUE(at::equal(loaded->module->forward(images), source->forward(images)));
}

TEST(LoadModelTest, ParameterCountIsOfTheCheckpointLayoutEvenWhenFused) {
  LoadOptions options;
  options.fuse_for_inference = true;
  absl::StatusOr<LoadedModel> loaded = LoadModel(BuiltinModelRegistry(), "shvit_s1", options);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->parameter_count, 6330808);
}

TEST(LoadModelTest, MissingWeightsFileIsNotFound) {
  LoadOptions options;
  const ScopedTempDir temp;
  options.weights_path = temp.File("nope.safetensors");
  absl::StatusOr<LoadedModel> loaded = LoadModel(BuiltinModelRegistry(), "shvit_s1", options);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("nope.safetensors"));
}

TEST(LoadModelTest, UnknownArchitectureIsNotFound) {
  EXPECT_EQ(LoadModel(BuiltinModelRegistry(), "shvit_s9", LoadOptions{}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ForwardOrStatusTest, BadInputIsInvalidArgument) {
  absl::StatusOr<LoadedModel> loaded = LoadModel(BuiltinModelRegistry(), "shvit_s1", LoadOptions{});
  ASSERT_TRUE(loaded.ok());
  c10::InferenceMode guard;
  absl::StatusOr<at::Tensor> out = ForwardOrStatus(*loaded->module, at::zeros({2, 4, 32, 32}));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("[N,3,H,W]"));
}

}  // namespace
}  // namespace vitserve

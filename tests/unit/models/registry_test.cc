#include "models/registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/shvit/shvit_models.h"
#include "models/vit/vit_models.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;
using ::testing::IsSupersetOf;

TEST(ModelRegistryTest, BuiltinNamesAreTimmNamesSorted) {
  const std::vector<std::string> names = BuiltinModelRegistry().Names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  // Other families (vim, vittm, ...) add their own names beside these.
  EXPECT_THAT(names,
              IsSupersetOf({"deit_base_distilled_patch16_224", "deit_base_patch16_224",
                            "deit_small_distilled_patch16_224", "deit_small_patch16_224",
                            "deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224", "shvit_s1",
                            "shvit_s2", "shvit_s3", "shvit_s4", "vit_base_patch16_224",
                            "vit_small_patch16_224", "vit_tiny_patch16_224"}));
}

TEST(ModelRegistryTest, InfoMatchesTimmPretrainedConfig) {
  const ModelRegistry registry = BuiltinModelRegistry();
  const ModelInfo* shvit = registry.FindInfo("shvit_s4").value();
  EXPECT_EQ(shvit->family, "shvit");
  EXPECT_EQ(shvit->task, ModelTask::kClassification);
  EXPECT_EQ(shvit->input_size, 256);
  EXPECT_DOUBLE_EQ(shvit->crop_pct, 0.875);
  EXPECT_EQ(shvit->interpolation, "bicubic");
  EXPECT_FLOAT_EQ(shvit->mean[0], 0.485f);
  EXPECT_FLOAT_EQ(shvit->std[2], 0.225f);
  EXPECT_EQ(shvit->num_classes, 1000);

  const ModelInfo* vit = registry.FindInfo("vit_tiny_patch16_224").value();
  EXPECT_EQ(vit->family, "vit");
  EXPECT_EQ(vit->input_size, 224);
  EXPECT_DOUBLE_EQ(vit->crop_pct, 0.9);
  EXPECT_FLOAT_EQ(vit->mean[1], 0.5f);
  EXPECT_FLOAT_EQ(vit->std[1], 0.5f);

  const ModelInfo* deit = registry.FindInfo("deit_tiny_distilled_patch16_224").value();
  EXPECT_EQ(deit->family, "deit");
  EXPECT_FLOAT_EQ(deit->mean[1], 0.456f);
}

TEST(ModelRegistryTest, UnknownModelIsNotFoundAndListsKnownNames) {
  const ModelRegistry registry = BuiltinModelRegistry();
  for (const absl::Status& status :
       {registry.FindInfo("resnet50").status(), registry.Create("resnet50").status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(status.message(), HasSubstr("'resnet50'"));
    EXPECT_THAT(status.message(), HasSubstr("shvit_s1"));
  }
}

TEST(ModelRegistryTest, DuplicateRegistrationFails) {
  ModelRegistry registry;
  ASSERT_TRUE(RegisterShvitModels(registry).ok());
  EXPECT_EQ(RegisterShvitModels(registry).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(RegisterVitModels(registry).ok());
  EXPECT_EQ(registry.Names().size(), 13u);
}

TEST(ModelRegistryTest, RejectsEmptyNameAndNullFactory) {
  ModelRegistry registry;
  EXPECT_EQ(registry.Register(ModelInfo{}, [](const ModelInfo&) { return nullptr; }).code(),
            absl::StatusCode::kInvalidArgument);
  ModelInfo info;
  info.architecture = "x";
  EXPECT_EQ(registry.Register(info, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelRegistryTest, NullOrThrowingFactoryIsInternal) {
  ModelRegistry registry;
  ModelInfo info;
  info.architecture = "null";
  ASSERT_TRUE(registry.Register(info, [](const ModelInfo&) { return nullptr; }).ok());
  info.architecture = "throws";
  ASSERT_TRUE(registry
                  .Register(info,
                            [](const ModelInfo&) -> std::shared_ptr<VisionModel> {
                              TORCH_CHECK(false, "bad config");
                            })
                  .ok());
  EXPECT_EQ(registry.Create("null").status().code(), absl::StatusCode::kInternal);
  absl::Status status = registry.Create("throws").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(status.message(), HasSubstr("bad config"));
}

TEST(ModelRegistryTest, ParameterCountsEqualTimms) {
  // sum(p.numel() for p in timm.create_model(name).parameters()) with timm 1.0.
  const std::map<std::string, int64_t> timm_counts = {
      {"vit_tiny_patch16_224", 5717416},
      {"vit_small_patch16_224", 22050664},
      {"vit_base_patch16_224", 86567656},
      {"deit_tiny_patch16_224", 5717416},
      {"deit_small_patch16_224", 22050664},
      {"deit_base_patch16_224", 86567656},
      {"deit_tiny_distilled_patch16_224", 5910800},
      {"deit_small_distilled_patch16_224", 22436432},
      {"deit_base_distilled_patch16_224", 87338192},
      {"shvit_s1", 6330808},
      {"shvit_s2", 11483072},
      {"shvit_s3", 14245273},
      {"shvit_s4", 16588484},
  };
  const ModelRegistry registry = BuiltinModelRegistry();
  for (const auto& [name, expected] : timm_counts) {
    std::shared_ptr<VisionModel> model = registry.Create(name).value();
    int64_t count = 0;
    for (const at::Tensor& p : model->parameters()) count += p.numel();
    EXPECT_EQ(count, expected) << name;
  }
}

}  // namespace
}  // namespace vitserve

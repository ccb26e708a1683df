#include "models/vit/vision_transformer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "models/registry.h"
#include "models/weights/state_dict.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<VisionModel> Create(const std::string& name) {
  std::shared_ptr<VisionModel> model = BuiltinModelRegistry().Create(name).value();
  model->eval();
  return model;
}

TEST(VisionTransformerTest, StateDictNamesMatchTimm) {
  const std::map<std::string, at::Tensor> state =
      StateDictTensors(*Create("deit_tiny_distilled_patch16_224"));
  // 4 prefix/embedding tensors + 12 per block × 12 + norm (2) + head (2) + head_dist (2).
  EXPECT_EQ(state.size(), 5u + 12u * 12u + 6u);
  EXPECT_EQ(state.at("pos_embed").sizes(), (at::IntArrayRef{1, 198, 192}));
  EXPECT_EQ(state.at("dist_token").sizes(), (at::IntArrayRef{1, 1, 192}));
  EXPECT_EQ(state.at("patch_embed.proj.weight").sizes(), (at::IntArrayRef{192, 3, 16, 16}));
  EXPECT_EQ(state.at("blocks.11.attn.qkv.weight").sizes(), (at::IntArrayRef{576, 192}));
  EXPECT_EQ(state.at("blocks.0.mlp.fc1.bias").sizes(), (at::IntArrayRef{768}));
  EXPECT_EQ(state.at("head_dist.weight").sizes(), (at::IntArrayRef{1000, 192}));
  EXPECT_EQ(state.count("norm.weight"), 1u);

  const std::map<std::string, at::Tensor> plain = StateDictTensors(*Create("vit_tiny_patch16_224"));
  EXPECT_EQ(plain.at("pos_embed").sizes(), (at::IntArrayRef{1, 197, 192}));
  EXPECT_EQ(plain.count("dist_token"), 0u);
  EXPECT_EQ(plain.count("head_dist.weight"), 0u);
}

TEST(VisionTransformerTest, ForwardShapesAtBatchTwo) {
  c10::InferenceMode guard;
  for (const char* name :
       {"vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_small_patch16_224"}) {
    EXPECT_EQ(Create(name)->forward(at::randn({2, 3, 224, 224})).sizes(),
              (at::IntArrayRef{2, 1000}))
        << name;
  }
}

TEST(VisionTransformerTest, DistilledHeadsAreAveraged) {
  std::shared_ptr<VisionModel> model = Create("deit_tiny_distilled_patch16_224");
  const at::Tensor images = at::randn({1, 3, 224, 224});
  c10::InferenceMode guard;
  const at::Tensor both = model->forward(images);
  at::Tensor bias = model->named_parameters()["head_dist.bias"];
  {
    c10::NoGradGuard no_grad;
    bias.fill_(2.0);
  }
  const at::Tensor shifted = model->forward(images);
  // head_dist bias was 0 (timm init); now 2 → averaged logits move by exactly 1.
  EXPECT_TRUE(at::allclose(shifted - both, at::ones_like(both), 1e-5, 1e-5));
}

TEST(VisionTransformerTest, WrongInputSizeIsRejected) {
  std::shared_ptr<VisionModel> model = Create("vit_tiny_patch16_224");
  c10::InferenceMode guard;
  absl::StatusOr<at::Tensor> out = ForwardOrStatus(*model, at::randn({1, 3, 256, 256}));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("224"));
}

TEST(VisionTransformerTest, FuseForInferenceIsANoOp) {
  std::shared_ptr<VisionModel> model = Create("deit_tiny_patch16_224");
  const at::Tensor images = at::randn({1, 3, 224, 224});
  c10::InferenceMode guard;
  const at::Tensor before = model->forward(images);
  model->FuseForInference();
  EXPECT_TRUE(at::equal(model->forward(images), before));
}

}  // namespace
}  // namespace vitserve

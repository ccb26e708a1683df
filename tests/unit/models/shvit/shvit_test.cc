#include "models/shvit/shvit.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>

#include <string>

#include "models/registry.h"
#include "models/weights/state_dict.h"

namespace vitserve {
namespace {

// timm zero-initialises the last BN γ of each residual branch; with γ = 0 a wrong branch is
// invisible, so every BN gets random statistics and affine parameters.
void RandomiseBatchNorms(torch::nn::Module& model) {
  c10::NoGradGuard no_grad;
  for (const auto& item : model.named_buffers()) {
    if (item.key().find("running_mean") != std::string::npos) item.value().normal_(0.0, 0.2);
    if (item.key().find("running_var") != std::string::npos) item.value().uniform_(0.5, 1.5);
  }
  for (const auto& item : model.named_parameters()) {
    if (item.key().find(".bn.") != std::string::npos) {
      item.value().uniform_(-1.0, 1.0);
    }
  }
}

std::shared_ptr<VisionModel> Create(const std::string& name) {
  return BuiltinModelRegistry().Create(name).value();
}

TEST(ShvitTest, StateDictNamesMatchTimm) {
  const std::map<std::string, at::Tensor> state = StateDictTensors(*Create("shvit_s1"));
  // timm's shvit_s1 state dict has 471 entries, 74 of them num_batches_tracked.
  EXPECT_EQ(state.size(), 471u - 74u);
  for (const char* name :
       {"patch_embed.0.c.weight", "patch_embed.6.bn.running_var",
        "stages.0.blocks.1.ffn.m.pw2.bn.weight", "stages.1.downsample.2.se.fc1.bias",
        "stages.1.downsample.4.m.pw1.c.weight", "stages.2.blocks.4.mixer.m.proj.1.c.weight",
        "stages.2.blocks.0.mixer.m.pre_norm.weight", "head.bn.running_mean", "head.l.bias"}) {
    EXPECT_EQ(state.count(name), 1u) << name;
  }
  EXPECT_EQ(state.count("stages.0.downsample.0.m.c.weight"), 0u);        // Stage 1 has none.
  EXPECT_EQ(state.count("stages.0.blocks.0.mixer.m.qkv.c.weight"), 0u);  // Nor attention.
  EXPECT_EQ(state.at("stages.2.blocks.0.mixer.m.qkv.c.weight").sizes(),
            (at::IntArrayRef{16 + 16 + 68, 68, 1, 1}));
}

TEST(ShvitTest, S2LastMergeRoundsSqueezeExciteWidth) {
  // 4 · 308 / 4 = 308 rounds to 312, a multiple of 8 (models.md).
  const std::map<std::string, at::Tensor> state = StateDictTensors(*Create("shvit_s2"));
  EXPECT_EQ(state.at("stages.2.downsample.2.se.fc1.weight").sizes(),
            (at::IntArrayRef{312, 1232, 1, 1}));
}

TEST(ShvitTest, ForwardShapesAtBatchTwo) {
  c10::InferenceMode guard;
  for (const auto& [name, size] :
       std::vector<std::pair<std::string, int64_t>>{{"shvit_s1", 224}, {"shvit_s4", 256}}) {
    std::shared_ptr<VisionModel> model = Create(name);
    model->eval();
    EXPECT_EQ(model->forward(at::randn({2, 3, size, size})).sizes(), (at::IntArrayRef{2, 1000}))
        << name;
  }
  std::shared_ptr<VisionModel> model = Create("shvit_s1");
  model->eval();
  EXPECT_EQ(model->forward(at::randn({1, 3, 160, 288})).sizes(), (at::IntArrayRef{1, 1000}));
}

TEST(ShvitTest, FusedModelMatchesUnfused) {
  at::manual_seed(0);
  std::shared_ptr<VisionModel> model = Create("shvit_s1");
  RandomiseBatchNorms(*model);
  model->eval();
  const at::Tensor images = at::randn({2, 3, 224, 224});
  at::Tensor reference;
  {
    c10::InferenceMode guard;
    reference = model->forward(images);
  }
  model->FuseForInference();
  const std::map<std::string, at::Tensor> fused_state = StateDictTensors(*model);
  for (const auto& [name, tensor] : fused_state) {
    EXPECT_EQ(name.find(".bn."), std::string::npos) << "BatchNorm left after fusing: " << name;
  }
  EXPECT_EQ(fused_state.count("stages.1.blocks.0.mixer.m.pre_norm.weight"), 1u);  // GroupNorm.
  EXPECT_EQ(fused_state.count("head.l.bias"), 1u);

  c10::InferenceMode guard;
  const at::Tensor fused = model->forward(images);
  // Logits are O(1)–O(10) with randomised BNs; fp32 folding error is ~1e-6 relative.
  const double scale = reference.abs().max().item<double>();
  ASSERT_GT(scale, 1e-3);
  EXPECT_LT((fused - reference).abs().max().item<double>(), 1e-5 * std::max(1.0, scale));

  model->FuseForInference();  // Idempotent.
  EXPECT_TRUE(at::equal(model->forward(images), fused));
}

TEST(ShvitTest, FusingTimmInitialisedModelKeepsOutputs) {
  // Fusing an untouched (timm-initialised) model also keeps outputs: the identity folding of
  // residual depthwise convs must add exactly one identity.
  std::shared_ptr<VisionModel> model = Create("shvit_s1");
  model->eval();
  c10::InferenceMode guard;
  const at::Tensor images = at::randn({1, 3, 224, 224});
  const at::Tensor reference = model->forward(images);
  model->FuseForInference();
  EXPECT_LT((model->forward(images) - reference).abs().max().item<double>(), 1e-4);
}

}  // namespace
}  // namespace vitserve

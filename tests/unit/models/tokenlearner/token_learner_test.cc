#include "models/tokenlearner/token_learner.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "models/registry.h"
#include "models/tokenlearner/tokenlearner_models.h"
#include "models/weights/state_dict.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;

ModelRegistry TlRegistry() {
  ModelRegistry registry;
  EXPECT_TRUE(RegisterTokenlearnerModels(registry).ok());
  return registry;
}

TokenLearnerVitConfig TinyConfig() {  // 64 px / 16 → 16 patches, 3 blocks, TL before block 1.
  TokenLearnerVitConfig config;
  config.img_size = 64;
  config.embed_dim = 32;
  config.depth = 3;
  config.num_heads = 2;
  config.num_tokens = 4;
  config.tokenlearner_loc = 1;
  config.bottleneck = 8;
  config.num_classes = 10;
  return config;
}

// v1.1: LayerNorm → Dense(64) → GELU(tanh) → Dense(S) → softmax over positions → weights · input.
TEST(TokenLearnerTest, V11MatchesItsDefinition) {
  c10::InferenceMode guard;
  TokenLearnerV11 learner(32, 4, 8);
  const at::Tensor x = at::randn({2, 16, 32});
  std::map<std::string, at::Tensor> p;
  for (const auto& item : learner->named_parameters()) p[item.key()] = item.value();
  EXPECT_EQ(p.size(), 6u);
  const at::Tensor normed = at::layer_norm(x, {32}, p["norm.weight"], p["norm.bias"], 1e-6);
  const at::Tensor hidden =
      at::gelu(at::linear(normed, p["mlp.fc1.weight"], p["mlp.fc1.bias"]), "tanh");
  const at::Tensor logits = at::linear(hidden, p["mlp.fc2.weight"], p["mlp.fc2.bias"]);
  const at::Tensor weights = at::softmax(logits.transpose(1, 2), -1);  // [B, S, N]
  const at::Tensor out = learner->forward(x);
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{2, 4, 32}));
  EXPECT_TRUE(at::allclose(out, at::matmul(weights, x), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(learner->SelectionWeights(x).sum(-1), at::ones({2, 4})));
  // Weighted sums of the UN-normalised input: identical tokens come back unchanged.
  const at::Tensor same = at::randn({1, 1, 32}).expand({1, 16, 32});
  EXPECT_TRUE(at::allclose(learner->forward(same), same.narrow(1, 0, 4), 1e-5, 1e-5));
}

TEST(TokenLearnerTest, FuserMapsTokensBackToPositions) {
  c10::InferenceMode guard;
  TokenFuser fuser(32, 4, 8);
  EXPECT_EQ(fuser->forward(at::randn({2, 4, 32}), at::randn({2, 16, 32})).sizes(),
            (at::IntArrayRef{2, 16, 32}));
}

TEST(TokenLearnerTest, RegistersNamesAndTimmLikeStateDict) {
  const ModelRegistry registry = TlRegistry();
  EXPECT_THAT(registry.Names(), ElementsAre("vit_base_tokenlearner", "vit_small_tokenlearner"));
  EXPECT_EQ(registry.FindInfo("vit_base_tokenlearner").value()->family, "tokenlearner");
  const auto state = StateDictTensors(*registry.Create("vit_small_tokenlearner").value());
  // patch_embed (2) + pos_embed + 12 blocks × 12 + token_learner (6) + norm (2) + head (2).
  EXPECT_EQ(state.size(), 3u + 144u + 6u + 4u);
  EXPECT_EQ(state.at("pos_embed").sizes(), (at::IntArrayRef{1, 196, 384}));
  EXPECT_EQ(state.at("token_learner.mlp.fc1.weight").sizes(), (at::IntArrayRef{64, 384}));
  EXPECT_EQ(state.at("token_learner.mlp.fc2.weight").sizes(), (at::IntArrayRef{16, 64}));
  EXPECT_EQ(state.count("cls_token"), 0u);
  ModelRegistry twice = TlRegistry();
  EXPECT_EQ(RegisterTokenlearnerModels(twice).code(), absl::StatusCode::kAlreadyExists);
}

TEST(TokenLearnerTest, ForwardShapesWithAndWithoutFuser) {
  c10::InferenceMode guard;
  for (bool fuser : {false, true}) {
    TokenLearnerVitConfig config = TinyConfig();
    config.use_fuser = fuser;
    at::manual_seed(5);
    auto model = MakeTokenLearnerVit(config);
    model->eval();
    const auto state = StateDictTensors(*model);
    EXPECT_EQ(state.count(fuser ? "token_fusers.1.mix.weight" : "token_learner.norm.weight"), 1u);
    for (int64_t batch : {1, 2}) {
      const at::Tensor images = at::randn({batch, 3, 64, 64});
      const at::Tensor logits = model->forward(images);
      EXPECT_EQ(logits.sizes(), (at::IntArrayRef{batch, 10}));
      EXPECT_TRUE(at::equal(logits, model->forward(images)));
    }
  }
}

TEST(TokenLearnerTest, LocationAndTokenCountAreConfigurable) {
  c10::InferenceMode guard;
  TokenLearnerVitConfig config = TinyConfig();
  config.tokenlearner_loc = 0;
  config.num_tokens = 2;
  EXPECT_EQ(MakeTokenLearnerVit(config)->forward(at::randn({1, 3, 64, 64})).sizes(),
            (at::IntArrayRef{1, 10}));
  config.tokenlearner_loc = 3;
  EXPECT_THROW(MakeTokenLearnerVit(config), c10::Error);
}

TEST(TokenLearnerTest, RegisteredSmallForwardsAtBatchOne) {
  c10::InferenceMode guard;
  auto model = TlRegistry().Create("vit_small_tokenlearner").value();
  model->eval();
  EXPECT_EQ(model->forward(at::randn({1, 3, 224, 224})).sizes(), (at::IntArrayRef{1, 1000}));
}

}  // namespace
}  // namespace vitserve

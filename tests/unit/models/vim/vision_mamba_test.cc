#include "models/vim/vision_mamba.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "models/model_loader.h"
#include "models/registry.h"
#include "models/vim/vim_models.h"
#include "models/weights/state_dict.h"
#include "tests/test_util/scoped_temp_dir.h"

namespace vitserve {
namespace {

ModelRegistry VimRegistry() {
  ModelRegistry registry;
  EXPECT_TRUE(RegisterVimModels(registry).ok());
  return registry;
}

std::shared_ptr<VisionModel> Create(const std::string& name) {
  std::shared_ptr<VisionModel> model = VimRegistry().Create(name).value();
  model->eval();
  return model;
}

int64_t ParameterCount(const std::map<std::string, at::Tensor>& state) {
  int64_t count = 0;
  for (const auto& [name, tensor] : state) count += tensor.numel();
  return count;
}

TEST(VisionMambaTest, RegistersTinyAndSmallWithOfficialPreprocessing) {
  const ModelRegistry registry = VimRegistry();
  EXPECT_THAT(registry.Names(), ::testing::ElementsAre("vim_small", "vim_tiny"));
  const ModelInfo* info = registry.FindInfo("vim_tiny").value();
  EXPECT_EQ(info->family, "vim");
  EXPECT_EQ(info->input_size, 224);
  EXPECT_DOUBLE_EQ(info->crop_pct, 0.875);
  EXPECT_FLOAT_EQ(info->mean[0], 0.485f);
  EXPECT_FLOAT_EQ(info->std[2], 0.225f);
  EXPECT_EQ(info->interpolation, "bicubic");
  ModelRegistry twice = VimRegistry();
  EXPECT_EQ(RegisterVimModels(twice).code(), absl::StatusCode::kAlreadyExists);
}

TEST(VisionMambaTest, StateDictNamesMatchOfficial) {
  const std::map<std::string, at::Tensor> state = StateDictTensors(*Create("vim_tiny"));
  // patch_embed (2) + cls_token + pos_embed + head (2) + norm_f + 24 × (norm + 16 mixer tensors).
  EXPECT_EQ(state.size(), 7u + 24u * 17u);
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"patch_embed.proj.weight", {192, 3, 16, 16}},
      {"patch_embed.proj.bias", {192}},
      {"cls_token", {1, 1, 192}},
      {"pos_embed", {1, 197, 192}},
      {"layers.0.norm.weight", {192}},
      {"layers.23.mixer.in_proj.weight", {768, 192}},
      {"layers.0.mixer.conv1d.weight", {384, 1, 4}},
      {"layers.0.mixer.conv1d.bias", {384}},
      {"layers.0.mixer.conv1d_b.weight", {384, 1, 4}},
      {"layers.0.mixer.conv1d_b.bias", {384}},
      {"layers.0.mixer.x_proj.weight", {12 + 32, 384}},
      {"layers.0.mixer.x_proj_b.weight", {12 + 32, 384}},
      {"layers.0.mixer.dt_proj.weight", {384, 12}},
      {"layers.0.mixer.dt_proj.bias", {384}},
      {"layers.0.mixer.dt_proj_b.weight", {384, 12}},
      {"layers.0.mixer.dt_proj_b.bias", {384}},
      {"layers.0.mixer.A_log", {384, 16}},
      {"layers.0.mixer.A_b_log", {384, 16}},
      {"layers.0.mixer.D", {384}},
      {"layers.0.mixer.D_b", {384}},
      {"layers.0.mixer.out_proj.weight", {192, 384}},
      {"norm_f.weight", {192}},
      {"head.weight", {1000, 192}},
      {"head.bias", {1000}},
  };
  for (const auto& [name, shape] : expected) {
    ASSERT_EQ(state.count(name), 1u) << name;
    EXPECT_EQ(state.at(name).sizes(), at::IntArrayRef(shape)) << name;
  }
  EXPECT_EQ(state.count("layers.0.mixer.in_proj.bias"), 0u);
  EXPECT_EQ(state.count("layers.0.mixer.out_proj.bias"), 0u);
  EXPECT_EQ(state.count("norm_f.bias"), 0u);
  // Paper Table 1: Vim-Ti 7M, Vim-S 26M parameters.
  EXPECT_NEAR(ParameterCount(state) / 1e6, 7.15, 0.1);
  EXPECT_NEAR(ParameterCount(StateDictTensors(*Create("vim_small"))) / 1e6, 25.8, 0.3);
}

TEST(VisionMambaTest, OfficialInitialisation) {
  const std::map<std::string, at::Tensor> state = StateDictTensors(*Create("vim_tiny"));
  // S4D-real A = −(1..16) per channel, D = 1, Δ = softplus(dt bias) within [1e-4, 0.1].
  const at::Tensor a = -at::exp(state.at("layers.3.mixer.A_b_log"));
  EXPECT_TRUE(at::allclose(a[7], -at::arange(1, 17, at::kFloat)));
  EXPECT_TRUE(at::equal(state.at("layers.3.mixer.D"), at::ones({384})));
  const at::Tensor dt = at::softplus(state.at("layers.5.mixer.dt_proj.bias"));
  EXPECT_GE(dt.min().item<float>(), 0.99e-4f);
  EXPECT_LE(dt.max().item<float>(), 0.1001f);
}

TEST(VisionMambaTest, ForwardIsDeterministicAt224And320) {
  std::shared_ptr<VisionModel> model = Create("vim_tiny");
  c10::InferenceMode guard;
  for (const int64_t size : {224, 320}) {
    at::manual_seed(size);
    const at::Tensor images = at::randn({1, 3, size, size});
    const at::Tensor first = model->forward(images);
    EXPECT_EQ(first.sizes(), (at::IntArrayRef{1, 1000})) << size;
    EXPECT_TRUE(at::isfinite(first).all().item<bool>()) << size;
    EXPECT_TRUE(at::equal(first, model->forward(images))) << size;
  }
}

TEST(VisionMambaTest, BatchElementsAreIndependent) {
  VimConfig config;  // Two layers keep the test fast; the block code is the same.
  config.depth = 2;
  std::shared_ptr<VisionModel> model = MakeVisionMamba(config);
  model->eval();
  c10::InferenceMode guard;
  at::manual_seed(7);
  const at::Tensor images = at::randn({2, 3, 224, 224});
  const at::Tensor both = model->forward(images);
  EXPECT_TRUE(at::allclose(both[1], model->forward(images.narrow(0, 1, 1))[0], 1e-4, 1e-5));
}

TEST(VisionMambaTest, BadInputIsInvalidArgument) {
  std::shared_ptr<VisionModel> model = Create("vim_tiny");
  c10::InferenceMode guard;
  EXPECT_EQ(ForwardOrStatus(*model, at::randn({1, 1, 224, 224})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ForwardOrStatus(*model, at::randn({1, 3, 8, 8})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VisionMambaTest, CheckpointRoundTripsThroughSafetensors) {
  const ModelRegistry registry = VimRegistry();
  std::shared_ptr<VisionModel> source = Create("vim_tiny");
  const ScopedTempDir temp;
  const std::string path = temp.File("vim_tiny.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, StateDictTensors(*source)).ok());
  LoadOptions options;
  options.weights_path = path;
  absl::StatusOr<LoadedModel> loaded = LoadModel(registry, "vim_tiny", options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  c10::InferenceMode guard;
  const at::Tensor images = at::randn({1, 3, 64, 64});  // 16 patches: cheap, and resampled.
  EXPECT_TRUE(at::equal(source->forward(images), loaded->module->forward(images)));
}

}  // namespace
}  // namespace vitserve

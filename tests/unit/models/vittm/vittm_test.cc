#include "models/vittm/vittm.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "models/model_loader.h"
#include "models/registry.h"
#include "models/vittm/vittm_models.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;

ModelRegistry VittmRegistry() {
  ModelRegistry registry;
  EXPECT_TRUE(RegisterVittmModels(registry).ok());
  return registry;
}

VittmConfig TinyConfig() {  // The fixtures' configuration (make_vittm_fixtures.py).
  VittmConfig config;
  config.img_size = 64;
  config.embed_dim = 32;
  config.depth = 2;
  config.num_heads = 2;
  config.num_classes = 10;
  return config;
}

TEST(VittmTest, RegistersNamesWithOfficialPreprocessing) {
  ModelRegistry registry = VittmRegistry();
  EXPECT_THAT(registry.Names(), ElementsAre("vittm_base", "vittm_base_28", "vittm_small"));
  const ModelInfo* info = registry.FindInfo("vittm_base_28").value();
  EXPECT_EQ(info->family, "vittm");
  EXPECT_DOUBLE_EQ(info->crop_pct, 0.875);
  EXPECT_FLOAT_EQ(info->std[0], 0.229f);
  EXPECT_EQ(RegisterVittmModels(registry).code(), absl::StatusCode::kAlreadyExists);
}

// Names and shapes of the official state_dict() (timm 1.0.x VisionTransformer parent, "lin"
// heads, latent_size_scale 4): 20 top-level tensors + 12 blocks × 12 + 2 × 12 norms × 2 +
// 2 × 12 heads × 8 = 404.
TEST(VittmTest, StateDictMatchesOfficialNames) {
  const ModelRegistry registry = VittmRegistry();
  auto small = registry.Create("vittm_small").value();
  const std::map<std::string, at::Tensor> state = StateDictTensors(*small);
  EXPECT_EQ(state.size(), 404u);
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"cls_token", {1, 1, 384}},
      {"pos_embed", {1, 197, 384}},
      {"process_pos_embed", {1, 49, 384}},
      {"memory_pos_embed", {1, 196, 384}},
      {"patch_embed.proj.weight", {384, 3, 16, 16}},
      {"memory_embedder.proj.weight", {384, 3, 16, 16}},
      {"process_embedder.proj.weight", {384, 3, 32, 32}},
      {"fc_norm.weight", {384}},
      {"head.weight", {1000, 384}},
      {"process_norm.bias", {384}},
      {"process_head.weight", {1000, 384}},
      {"fc_norm_process.weight", {384}},
      {"read_norm.11.weight", {384}},
      {"write_norm.0.bias", {384}},
      {"read_head.0.q.weight", {96, 384}},
      {"read_head.0.k.bias", {96}},
      {"write_head.11.v.weight", {384, 384}},
      {"write_head.3.proj.weight", {384, 384}},
      {"blocks.11.attn.qkv.weight", {1152, 384}},
  };
  for (const auto& [name, shape] : expected) {
    ASSERT_EQ(state.count(name), 1u) << name;
    EXPECT_EQ(state.at(name).sizes(), at::IntArrayRef(shape)) << name;
  }
  EXPECT_EQ(state.count("norm.weight"), 0u);  // timm's `norm` is Identity with avg pooling.
  // memory_ps == patch_size: one embedder under two names, as in PyTorch.
  EXPECT_EQ(state.at("memory_embedder.proj.weight").data_ptr(),
            state.at("patch_embed.proj.weight").data_ptr());

  const auto b28 = StateDictTensors(*registry.Create("vittm_base_28").value());
  EXPECT_EQ(b28.size(), 404u);
  EXPECT_EQ(b28.at("memory_pos_embed").sizes(), (at::IntArrayRef{1, 64, 768}));
  EXPECT_EQ(b28.at("process_pos_embed").sizes(), (at::IntArrayRef{1, 64, 768}));
  EXPECT_EQ(b28.at("memory_embedder.proj.weight").sizes(), (at::IntArrayRef{768, 3, 28, 28}));
  EXPECT_NE(b28.at("memory_embedder.proj.weight").data_ptr(),
            b28.at("patch_embed.proj.weight").data_ptr());
}

// PyTorch's parameters() yields a shared module's tensors once; LibTorch's yields them under
// each name. The reported count must be PyTorch's (what timm and the paper quote).
TEST(VittmTest, ParameterCountCountsTheSharedEmbedderOnce) {
  const ModelRegistry registry = VittmRegistry();
  for (const char* name : {"vittm_small", "vittm_base_28"}) {
    auto model = registry.Create(name).value();
    int64_t every_name = 0;
    for (const at::Tensor& p : model->parameters()) every_name += p.numel();
    const std::map<std::string, at::Tensor> state = StateDictTensors(*model);
    const bool shared = state.at("memory_embedder.proj.weight").data_ptr() ==
                        state.at("patch_embed.proj.weight").data_ptr();
    const int64_t embedder = state.at("patch_embed.proj.weight").numel() +
                             state.at("patch_embed.proj.bias").numel();

    absl::StatusOr<LoadedModel> loaded = LoadModel(registry, name, LoadOptions{});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->parameter_count, shared ? every_name - embedder : every_name) << name;
  }
}

// Parity with the official PyTorch code on tiny random models (testdata/, written by
// make_vittm_fixtures.py): every read/write head and fusion mode, both output heads.
struct Fixture {
  const char* name;
  int64_t memory_ps, process_ps;
  VittmRwHead rw;
  VittmFusion fusion;
};

class VittmParityTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(VittmParityTest, MatchesOfficialCode) {
  const Fixture& f = GetParam();
  VittmConfig config = TinyConfig();
  config.memory_ps = f.memory_ps;
  config.process_ps = f.process_ps;
  config.rw_head = f.rw;
  config.fusion = f.fusion;
  auto model = MakeVittm(config);
  const std::string dir = VITTM_TESTDATA_DIR;
  auto weights = SafetensorsFile::Open(dir + "/" + f.name + ".safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_TRUE(LoadStateDict(*model, *weights).ok()) << LoadStateDict(*model, *weights);
  auto io = SafetensorsFile::Open(dir + "/" + f.name + "_io.safetensors");
  ASSERT_TRUE(io.ok()) << io.status();
  model->eval();
  c10::InferenceMode guard;
  const at::Tensor input = io->Tensor("input").value();
  auto [memory, process] = model->ForwardHeads(input);
  EXPECT_TRUE(at::allclose(memory, io->Tensor("memory_logits").value(), 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(process, io->Tensor("process_logits").value(), 1e-4, 1e-4));
  EXPECT_TRUE(at::equal(model->forward(input), memory));  // Default output: the memory head.
}

INSTANTIATE_TEST_SUITE_P(
    AllHeadsAndFusions, VittmParityTest,
    ::testing::Values(
        Fixture{"vittm_lin_residual", 16, 32, VittmRwHead::kLinear, VittmFusion::kAdd},
        Fixture{"vittm_tl_add_erase", 8, 16, VittmRwHead::kTokenLearner, VittmFusion::kAddErase},
        Fixture{"vittm_ca_erase", 16, 32, VittmRwHead::kCrossAttention, VittmFusion::kErase}));

TEST(VittmTest, ReadWriteHeadShapes) {
  c10::InferenceMode guard;
  const at::Tensor memory = at::randn({2, 16, 32}), process = at::randn({2, 4, 32});
  for (VittmRwHead type :
       {VittmRwHead::kLinear, VittmRwHead::kTokenLearner, VittmRwHead::kCrossAttention}) {
    auto read = MakeVittmRwHead(type, 32, 2, 8, /*target_tokens=*/4);
    auto write = MakeVittmRwHead(type, 32, 2, 8, /*target_tokens=*/16);
    EXPECT_EQ(read->forward(memory, process).sizes(), process.sizes());
    EXPECT_EQ(write->forward(process, memory).sizes(), memory.sizes());
  }
}

TEST(VittmTest, FusionModes) {
  c10::InferenceMode guard;
  const at::Tensor target = at::randn({2, 4, 32}), rw = target + 1;
  EXPECT_TRUE(at::equal(VittmFuse(VittmFusion::kAdd, rw, target, nullptr), target + rw));
  EXPECT_TRUE(at::equal(VittmFuse(VittmFusion::kErase, rw, target, nullptr), rw));
  auto gate = MakeVittmAddEraseGate(32, 4);
  const at::Tensor fused = VittmFuse(VittmFusion::kAddErase, rw, target, gate.get());
  // Each target token is a convex combination of target and rw with one gate g ∈ (0, 1).
  const at::Tensor g = fused - target;  // rw − target = 1.
  EXPECT_TRUE(at::allclose(g, g.select(2, 0).unsqueeze(-1).expand_as(g), 1e-5, 1e-5));
  EXPECT_TRUE((g > 0).all().item<bool>() && (g < 1).all().item<bool>());
  EXPECT_THROW(VittmFuse(VittmFusion::kAddErase, rw, target, nullptr), c10::Error);
}

TEST(VittmTest, OutputsAndDeterminism) {
  c10::InferenceMode guard;
  for (VittmOutput output :
       {VittmOutput::kMemoryHead, VittmOutput::kProcessHead, VittmOutput::kMeanOfHeads}) {
    VittmConfig config = TinyConfig();
    config.output = output;
    at::manual_seed(3);
    auto model = MakeVittm(config);
    model->eval();
    for (int64_t batch : {1, 2}) {
      const at::Tensor images = at::randn({batch, 3, 64, 64});
      const at::Tensor logits = model->forward(images);
      EXPECT_EQ(logits.sizes(), (at::IntArrayRef{batch, 10}));
      EXPECT_TRUE(at::equal(logits, model->forward(images)));
      auto [memory, process] = model->ForwardHeads(images);
      const at::Tensor expected = output == VittmOutput::kMemoryHead    ? memory
                                  : output == VittmOutput::kProcessHead ? process
                                                                        : (memory + process) / 2;
      EXPECT_TRUE(at::allclose(logits, expected));
      auto [memory_tokens, process_tokens] = model->ForwardFeatures(images);
      EXPECT_EQ(memory_tokens.sizes(), (at::IntArrayRef{batch, 16, 32}));
      EXPECT_EQ(process_tokens.sizes(), (at::IntArrayRef{batch, 4, 32}));
    }
  }
}

TEST(VittmTest, RegisteredSmallForwardsAtBatchOne) {
  c10::InferenceMode guard;
  auto model = VittmRegistry().Create("vittm_small").value();
  model->eval();
  EXPECT_EQ(model->forward(at::randn({1, 3, 224, 224})).sizes(), (at::IntArrayRef{1, 1000}));
  EXPECT_THROW(model->forward(at::randn({1, 3, 96, 96})), c10::Error);
}

}  // namespace
}  // namespace vitserve

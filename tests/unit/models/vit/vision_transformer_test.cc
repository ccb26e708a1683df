#include "models/vit/vision_transformer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>
#include <utility>

#include "models/layers/vit_layers.h"
#include "models/registry.h"
#include "models/vit/vit_models.h"
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

TEST(VitConfigForArchitectureTest, GivesTheRegisteredWidthsAndADifferentSizeBuilds) {
  absl::StatusOr<VitConfig> small = VitConfigForArchitecture("deit_small_patch16_224");
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->embed_dim, 384);
  EXPECT_EQ(small->num_heads, 6);
  EXPECT_FALSE(small->distilled);
  absl::StatusOr<VitConfig> base = VitConfigForArchitecture("vit_base_patch16_224");
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->embed_dim, 768);
  EXPECT_EQ(base->num_heads, 12);
  absl::StatusOr<VitConfig> distilled = VitConfigForArchitecture("deit_tiny_distilled_patch16_224");
  ASSERT_TRUE(distilled.ok()) << distilled.status();
  EXPECT_EQ(distilled->embed_dim, 192);
  EXPECT_TRUE(distilled->distilled);
  EXPECT_EQ(VitConfigForArchitecture("shvit_s1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(VitConfigForArchitecture("vit_base_distilled_patch16_224").status().code(),
            absl::StatusCode::kNotFound);

  // The registry's model and the config's agree on every parameter at 224 px.
  ModelRegistry registry;
  ASSERT_TRUE(RegisterVitModels(registry).ok());
  auto registered = registry.Create("deit_tiny_distilled_patch16_224");
  ASSERT_TRUE(registered.ok());
  auto rebuilt = MakeVisionTransformer(*distilled);
  auto registered_params = (*registered)->named_parameters();
  auto rebuilt_params = rebuilt->named_parameters();
  ASSERT_EQ(registered_params.size(), rebuilt_params.size());
  for (const auto& item : registered_params) {
    ASSERT_TRUE(rebuilt_params.contains(item.key())) << item.key();
    EXPECT_EQ(rebuilt_params[item.key()].sizes(), item.value().sizes()) << item.key();
  }

  // At 64 px: 16 patches and the class and distillation tokens.
  VitConfig small64 = *small;
  small64.img_size = 64;
  auto model = MakeVisionTransformer(small64);
  model->eval();
  c10::InferenceMode guard;
  EXPECT_EQ(model->named_parameters()["pos_embed"].sizes(), (std::vector<int64_t>{1, 17, 384}));
  EXPECT_EQ(model->forward(at::randn({2, 3, 64, 64})).sizes(), (std::vector<int64_t>{2, 1000}));
}

TEST(VisionTransformerTest, FuseForInferenceIsANoOp) {
  std::shared_ptr<VisionModel> model = Create("deit_tiny_patch16_224");
  const at::Tensor images = at::randn({1, 3, 224, 224});
  c10::InferenceMode guard;
  const at::Tensor before = model->forward(images);
  model->FuseForInference();
  EXPECT_TRUE(at::equal(model->forward(images), before));
}


// Built without a classifier, a ViT serves ViTDet's simple feature pyramid (strides 4, 8, 16,
// 32) for the dense heads.
VitConfig SmallVit(bool distilled) {
  VitConfig config;
  config.img_size = 64;
  config.embed_dim = 32;
  config.depth = 2;
  config.num_heads = 2;
  config.distilled = distilled;
  config.classifier = false;
  return config;
}

TEST(VisionTransformerFeaturesTest, FourLevelsAtTheirStridesAndChannels) {
  for (bool distilled : {false, true}) {
    SCOPED_TRACE(distilled ? "distilled" : "plain");
    std::shared_ptr<VisionModel> model = MakeVisionTransformer(SmallVit(distilled));
    model->eval();
    const std::vector<FeatureLevel> levels = model->FeatureLevels();
    ASSERT_EQ(levels.size(), 4u);
    const std::vector<int64_t> strides = {4, 8, 16, 32};
    const std::vector<int64_t> channels = {8, 16, 32, 32};
    c10::InferenceMode guard;
    const std::vector<at::Tensor> maps = model->Features(at::rand({2, 3, 64, 64}));
    ASSERT_EQ(maps.size(), 4u);
    for (size_t i = 0; i < levels.size(); ++i) {
      EXPECT_EQ(levels[i].stride, strides[i]);
      EXPECT_EQ(levels[i].channels, channels[i]);
      EXPECT_EQ(maps[i].sizes(), (at::IntArrayRef{2, channels[i], 64 / strides[i], 64 / strides[i]}));
    }
    // No classifier: forward refuses, and the state has the pyramid but no head.
    EXPECT_THROW(model->forward(at::rand({1, 3, 64, 64})), c10::Error);
    const std::map<std::string, at::Tensor> state = StateDictTensors(*model);
    EXPECT_EQ(state.count("head.weight"), 0u);
    EXPECT_EQ(state.count("head_dist.weight"), 0u);
    EXPECT_EQ(state.at("simfp_2.0.weight").sizes(), (at::IntArrayRef{32, 16, 2, 2}));
    EXPECT_EQ(state.at("simfp_2.2.weight").sizes(), (at::IntArrayRef{16, 8, 2, 2}));
    EXPECT_EQ(state.at("simfp_3.0.weight").sizes(), (at::IntArrayRef{32, 16, 2, 2}));
  }
  // A classifier ViT has no feature maps.
  EXPECT_THROW(Create("deit_tiny_patch16_224")->Features(at::rand({1, 3, 224, 224})), c10::Error);
}

// The stride-16 map puts patch (row, column) at [row, column]: with no blocks, each position is
// norm(its patch's embedding + its position embedding), computed here from the weights.
TEST(VisionTransformerFeaturesTest, StrideSixteenMapIsThePatchTokensInPlace) {
  VitConfig config = SmallVit(/*distilled=*/true);
  config.depth = 0;
  std::shared_ptr<VisionModel> model = MakeVisionTransformer(config);
  model->eval();
  const std::map<std::string, at::Tensor> state = StateDictTensors(*model);
  c10::InferenceMode guard;
  at::manual_seed(3);
  const at::Tensor images = at::rand({2, 3, 64, 64});
  const at::Tensor map = model->Features(images)[2];  // [2, 32, 4, 4]

  const at::Tensor patches = at::conv2d(images, state.at("patch_embed.proj.weight"),
                                        state.at("patch_embed.proj.bias"), {16, 16});
  // pos_embed [1, 2 + 16, 32]: the patch positions after the cls and distillation tokens.
  const at::Tensor position =
      state.at("pos_embed").narrow(1, 2, 16).transpose(1, 2).reshape({1, 32, 4, 4});
  const at::Tensor tokens = (patches + position).permute({0, 2, 3, 1});  // [2, 4, 4, 32]
  const at::Tensor expected =
      at::layer_norm(tokens, {32}, state.at("norm.weight"), state.at("norm.bias"), 1e-6)
          .permute({0, 3, 1, 2});
  EXPECT_TRUE(at::allclose(map, expected, 1e-5, 1e-5))
      << (map - expected).abs().max().item<float>();
}

TEST(VisionTransformerFeaturesTest, RegistryBuildsViTAndDeiTDetectorsAndSegmenters) {
  const ModelRegistry registry = BuiltinModelRegistry();
  c10::InferenceMode guard;
  const at::Tensor images = at::rand({1, 3, 224, 224});
  for (const char* architecture : {"deit_tiny_patch16_224", "vit_tiny_patch16_224",
                                   "deit_tiny_distilled_patch16_224"}) {
    SCOPED_TRACE(architecture);
    absl::StatusOr<ModelRegistry::TaskModel> segmenter =
        registry.CreateForTask(architecture, ModelTask::kSegmentation, 6);
    ASSERT_TRUE(segmenter.ok()) << segmenter.status();
    segmenter->model->eval();
    EXPECT_EQ(segmenter->model->forward(images).sizes(), (at::IntArrayRef{1, 6, 56, 56}));
    const std::map<std::string, at::Tensor> state = StateDictTensors(*segmenter->model);
    // timm's names under "backbone.", the pyramid beside them, the decoder under "decode_head.".
    EXPECT_EQ(state.count("backbone.blocks.11.attn.qkv.weight"), 1u);
    EXPECT_EQ(state.count("backbone.simfp_2.0.weight"), 1u);
    EXPECT_EQ(state.count("backbone.head.weight"), 0u);
    EXPECT_EQ(state.count("decode_head.classifier.weight"), 1u);

    absl::StatusOr<ModelRegistry::TaskModel> detector =
        registry.CreateForTask(architecture, ModelTask::kDetection, 5);
    ASSERT_TRUE(detector.ok()) << detector.status();
    detector->model->eval();
    // Five heat maps and the four box channels, at stride 4, as the SHViT detector gives.
    EXPECT_EQ(detector->model->forward(images).sizes(), (at::IntArrayRef{1, 9, 56, 56}));
  }
}

// On CUDA the patch embedding is one matrix product over gathered patches (vit_layers.h): it
// must equal the stride-P convolution for NCHW and channels-last input, fp32 and fp16, square and
// non-square images. The reference is the convolution in fp64 on the CPU from the same rounded
// inputs; the error is relative to the largest output (fp32 1e-5: cuBLAS without TF32; fp16
// 2e-3, about the output's own rounding). Runs only on a CUDA host.
TEST(PatchEmbedCudaTest, MatchesTheConvolutionInBothMemoryFormats) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  vit_layers::PatchEmbed embed(16, 192);
  const at::Device cuda(at::kCUDA, 0);
  for (at::ScalarType dtype : {at::kFloat, at::kHalf}) {
    embed->to(cuda, dtype);
    const std::map<std::string, at::Tensor> state = StateDictTensors(*embed);
    const auto f64 = [](const at::Tensor& t) { return t.to(at::kCPU).to(at::kDouble); };
    for (const auto& [height, width] : {std::pair<int64_t, int64_t>{224, 224}, {64, 48}}) {
      for (const bool channels_last : {false, true}) {
        at::manual_seed(height + channels_last);
        at::Tensor images = at::randn({3, 3, height, width}).to(cuda, dtype);
        if (channels_last) images = images.contiguous(at::MemoryFormat::ChannelsLast);
        c10::InferenceMode guard;
        const at::Tensor tokens = embed->forward(images);
        ASSERT_EQ(tokens.sizes(), (at::IntArrayRef{3, (height / 16) * (width / 16), 192}));
        const at::Tensor reference =
            at::conv2d(f64(images), f64(state.at("proj.weight")), f64(state.at("proj.bias")),
                       /*stride=*/16)
                .flatten(2)
                .transpose(1, 2);
        const double error =
            ((f64(tokens) - reference).abs().max() / reference.abs().max()).item<double>();
        EXPECT_LE(error, dtype == at::kFloat ? 1e-5 : 2e-3)
            << c10::toString(dtype) << " " << height << "x" << width
            << (channels_last ? " channels-last" : " NCHW");
      }
    }
  }
}

}  // namespace
}  // namespace vitserve

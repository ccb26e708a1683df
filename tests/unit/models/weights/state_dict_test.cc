#include "models/weights/state_dict.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "models/model_loader.h"
#include "models/registry.h"
#include "models/weights/safetensors.h"
#include "tests/test_util/scoped_temp_dir.h"

namespace vitserve {
namespace {

namespace nn = torch::nn;
using ::testing::HasSubstr;
using ::testing::Not;

// fc (Linear 4→3) and bn (BatchNorm1d 3): parameters and buffers, like a tiny model.
class TinyNet : public nn::Module {
 public:
  TinyNet() {
    fc = register_module("fc", nn::Linear(4, 3));
    bn = register_module("bn", nn::BatchNorm1d(3));
  }
  nn::Linear fc{nullptr};
  nn::BatchNorm1d bn{nullptr};
};

std::map<std::string, at::Tensor> RandomTinyNetState() {
  return {{"fc.weight", at::randn({3, 4})},    {"fc.bias", at::randn({3})},
          {"bn.weight", at::randn({3})},       {"bn.bias", at::randn({3})},
          {"bn.running_mean", at::randn({3})}, {"bn.running_var", at::rand({3}) + 0.5}};
}

absl::Status LoadFrom(nn::Module& module, const std::map<std::string, at::Tensor>& state,
                      const std::string& name) {
  const ScopedTempDir temp;
  const std::string path = temp.File(name);
  absl::Status status = WriteSafetensors(path, state);
  if (!status.ok()) return status;
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  return LoadStateDict(module, *file);
}

TEST(StateDictTest, LoadsEveryTensorAndIgnoresBatchCounter) {
  TinyNet net;
  std::map<std::string, at::Tensor> state = RandomTinyNetState();
  state["bn.num_batches_tracked"] = at::zeros({1});  // timm saves it; it is ignored.
  ASSERT_TRUE(LoadFrom(net, state, "ok.safetensors").ok());
  EXPECT_TRUE(at::equal(net.fc->weight, state["fc.weight"]));
  EXPECT_TRUE(at::equal(net.bn->running_var, state["bn.running_var"]));
}

TEST(StateDictTest, ConvertsHalfPrecisionToParameterDtype) {
  TinyNet net;
  std::map<std::string, at::Tensor> state = RandomTinyNetState();
  for (auto& [name, tensor] : state) tensor = tensor.to(at::kHalf);
  ASSERT_TRUE(LoadFrom(net, state, "half.safetensors").ok());
  EXPECT_EQ(net.fc->weight.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(net.fc->weight, state["fc.weight"].to(at::kFloat)));
}

TEST(StateDictTest, MissingTensorIsNamedAndNothingIsCopied) {
  TinyNet net;
  const at::Tensor before = net.fc->weight.clone();
  std::map<std::string, at::Tensor> state = RandomTinyNetState();
  state.erase("bn.running_mean");
  absl::Status status = LoadFrom(net, state, "missing.safetensors");
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("missing: bn.running_mean [3]"));
  EXPECT_THAT(status.message(), Not(HasSubstr("another architecture")));
  EXPECT_TRUE(at::equal(net.fc->weight, before));
}

TEST(StateDictTest, UnexpectedTensorIsNamed) {
  TinyNet net;
  std::map<std::string, at::Tensor> state = RandomTinyNetState();
  state["head_dist.weight"] = at::zeros({2, 2});
  absl::Status status = LoadFrom(net, state, "unexpected.safetensors");
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("unexpected: head_dist.weight [2,2]"));
}

TEST(StateDictTest, WrongShapeIsNamedWithBothShapes) {
  TinyNet net;
  std::map<std::string, at::Tensor> state = RandomTinyNetState();
  state["fc.weight"] = at::zeros({3, 5});
  absl::Status status = LoadFrom(net, state, "shape.safetensors");
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("fc.weight: checkpoint [3,5] vs model [3,4]"));
}

TEST(StateDictTest, IntegerTensorForAParameterIsRejectedBeforeCopying) {
  TinyNet net;
  const at::Tensor before = net.fc->weight.clone();
  const ScopedTempDir temp;
  const std::string path = temp.File("int_param.safetensors");
  // Write a valid file, then rewrite fc.bias's dtype: F32 [3] is 12 bytes, I32 [3] also 12.
  ASSERT_TRUE(WriteSafetensors(path, RandomTinyNetState()).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::string from = R"("fc.bias":{"dtype":"F32")";
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, from.size(), R"("fc.bias":{"dtype":"I32")");
  std::ofstream(path, std::ios::binary) << bytes;

  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::Status status = LoadStateDict(net, *file);
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("fc.bias: checkpoint dtype I32"));
  EXPECT_TRUE(at::equal(net.fc->weight, before));
}

TEST(StateDictTest, ReportsAllProblemsAtOnce) {
  TinyNet net;
  std::map<std::string, at::Tensor> state = RandomTinyNetState();
  state.erase("fc.bias");
  state["extra"] = at::zeros({1});
  state["bn.weight"] = at::zeros({4});
  absl::Status status = LoadFrom(net, state, "all.safetensors");
  EXPECT_THAT(status.message(),
              HasSubstr("1 missing, 1 unexpected, 1 with the wrong shape or dtype"));
}

TEST(StateDictTest, WrongArchitectureGetsAHint) {
  const ModelRegistry registry = BuiltinModelRegistry();
  std::shared_ptr<VisionModel> shvit = registry.Create("shvit_s1").value();
  const ScopedTempDir temp;
  const std::string path = temp.File("shvit_s1.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, StateDictTensors(*shvit)).ok());

  LoadOptions options;
  options.weights_path = path;
  absl::StatusOr<LoadedModel> loaded = LoadModel(registry, "vit_tiny_patch16_224", options);
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("vit_tiny_patch16_224"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("another architecture"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("missing: blocks.0.attn.proj.bias [192]"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("unexpected: head.bn.bias [320]"));
}

}  // namespace
}  // namespace vitserve

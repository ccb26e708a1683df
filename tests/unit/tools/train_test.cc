// vitserve-train's loop (tools/train/trainer.h) on tiny runs: what it writes, that a resumed
// run ends where an uninterrupted one does, and its option checks.
#include "tools/train/trainer.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/registry.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"
#include "tests/test_util/scoped_temp_dir.h"

namespace vitserve::train {
namespace {

using ::testing::HasSubstr;

TrainOptions Tiny(const std::string& out) {
  TrainOptions options;
  options.out = out;
  options.input_size = 32;
  options.batch_size = 2;
  options.steps = 6;
  options.checkpoint_every = 3;
  options.eval_scenes = 3;
  return options;
}

std::string Read(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(TrainTest, WritesAServableFolderAndReports) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  std::vector<TrainProgress> reports;
  absl::StatusOr<TrainResult> result =
      Train(registry, Tiny(dir.File("seg")), [&](const TrainProgress& p) { reports.push_back(p); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps_run, 6);
  EXPECT_GT(result->final_loss, 0);
  EXPECT_GE(result->heldout_miou, 0);
  EXPECT_LE(result->heldout_miou, 1);
  EXPECT_GT(result->heldout_pixel_accuracy, 0);
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back().step, 6);
  EXPECT_EQ(reports.back().steps, 6);

  const std::string config = Read(dir.File("seg/config.pbtxt"));
  EXPECT_THAT(config, HasSubstr("architecture: \"shvit_s1\""));
  EXPECT_THAT(config, HasSubstr("task: SEGMENTATION"));
  EXPECT_THAT(config, HasSubstr("num_classes: 6"));
  EXPECT_THAT(config, HasSubstr("input { size: 32 }"));
  EXPECT_EQ(Read(dir.File("seg/labels.txt")), "background\ncircle\nsquare\ntriangle\nstar\nhexagon\n");
  // fp16 weights that load strictly into the architecture built for the task.
  absl::StatusOr<SafetensorsFile> weights = SafetensorsFile::Open(dir.File("seg/model.safetensors"));
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->tensors().at("decode_head.classifier.weight").dtype, at::kHalf);
  absl::StatusOr<ModelRegistry::TaskModel> fresh =
      registry.CreateForTask("shvit_s1", ModelTask::kSegmentation, 6);
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(LoadStateDict(*fresh->model, *weights).ok());
}

// Stopped after 3 steps and resumed, the run ends with the weights of one that ran 6 steps
// straight: same scenes, same optimiser state, same BatchNorm statistics.
TEST(TrainTest, ResumingContinuesWhereTheCheckpointStopped) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  ASSERT_TRUE(Train(registry, Tiny(dir.File("straight")), {}).ok());

  TrainOptions first = Tiny(dir.File("resumed"));
  first.stop_after = 3;
  absl::StatusOr<TrainResult> stopped = Train(registry, first, {});
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->steps_run, 3);
  EXPECT_FALSE(stopped->finished);
  EXPECT_FALSE(std::filesystem::exists(dir.File("resumed/model.safetensors")));
  TrainOptions rest = Tiny(dir.File("resumed"));
  rest.resume = true;
  absl::StatusOr<TrainResult> resumed = Train(registry, rest, {});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->steps_run, 3);
  EXPECT_TRUE(resumed->finished);
  EXPECT_TRUE(std::filesystem::exists(dir.File("resumed/model.safetensors")));

  absl::StatusOr<SafetensorsFile> a =
      SafetensorsFile::Open(dir.File("straight/train_state/model.safetensors"));
  absl::StatusOr<SafetensorsFile> b =
      SafetensorsFile::Open(dir.File("resumed/train_state/model.safetensors"));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->Names(), b->Names());
  double largest = 0;
  for (const std::string& name : a->Names()) {
    largest = std::max(largest, (*a->Tensor(name) - *b->Tensor(name)).abs().max().item<double>());
  }
  EXPECT_LT(largest, 1e-4);
  // A third call with --resume past the last step trains nothing and rewrites the folder.
  absl::StatusOr<TrainResult> again = Train(registry, rest, {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->steps_run, 0);
}

TEST(TrainTest, RejectsBadOptions) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  TrainOptions options = Tiny(dir.File("x"));
  options.task = ModelTask::kDetection;
  EXPECT_EQ(Train(registry, options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options = Tiny(dir.File("x"));
  options.steps = 0;
  EXPECT_EQ(Train(registry, options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options = Tiny(dir.File("x"));
  options.architecture = "vit_tiny_patch16_224";  // No feature maps.
  absl::StatusOr<TrainResult> vit = Train(registry, options, {});
  EXPECT_EQ(vit.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vit.status().message(), HasSubstr("supports: classification"));
  options = Tiny("");
  EXPECT_EQ(Train(registry, options, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve::train

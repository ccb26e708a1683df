// vitserve-train's loop (tools/train/trainer.h) on tiny runs: what it writes, that a resumed
// run ends where an uninterrupted one does, and its option checks.
#include "tools/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <torch/optim/adam.h>

#include <cmath>
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
#include "models/dense/detection.h"
#include "models/heads/center_decode.h"
#include "models/shvit/shvit.h"
#include "tests/test_util/scoped_temp_dir.h"
#include "tools/shapes/scene.h"
#include "tools/train/internal/targets.h"

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

// bf16 autocast runs (here on the CPU; on CUDA it is vitserve-train's default), changes the
// arithmetic, and is switched off again when training returns.
TEST(TrainTest, MixedPrecisionTrainsInBf16AndRestoresFp32) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  TrainOptions fp32 = Tiny(dir.File("fp32"));
  fp32.steps = 3;
  TrainOptions mixed = Tiny(dir.File("mixed"));
  mixed.steps = 3;
  mixed.mixed_precision = true;
  absl::StatusOr<TrainResult> fp32_result = Train(registry, fp32, nullptr);
  absl::StatusOr<TrainResult> mixed_result = Train(registry, mixed, nullptr);
  ASSERT_TRUE(fp32_result.ok()) << fp32_result.status();
  ASSERT_TRUE(mixed_result.ok()) << mixed_result.status();
  EXPECT_FALSE(at::autocast::is_autocast_enabled(c10::DeviceType::CPU));
  ASSERT_TRUE(std::isfinite(mixed_result->final_loss));
  // Same seed, same scenes, same initial weights: only the precision differs.
  EXPECT_NE(mixed_result->final_loss, fp32_result->final_loss);
  EXPECT_NEAR(mixed_result->final_loss, fp32_result->final_loss,
              0.1 * fp32_result->final_loss);
  EXPECT_TRUE(std::filesystem::exists(dir.File("mixed/model.safetensors")));
}

// Rows are generated on several threads: a batch equals its rows made one at a time, targets
// and boxes included.
TEST(TrainTargetsTest, ABatchEqualsItsRowsMadeOneByOne) {
  PreprocessSpec spec;
  spec.input_size = 64;
  for (ModelTask task :
       {ModelTask::kSegmentation, ModelTask::kDetection, ModelTask::kClassification}) {
    SCOPED_TRACE(std::string(ModelTaskName(task)));
    absl::StatusOr<internal::Batch> batch =
        internal::MakeBatch(task, /*seed=*/9, 20, 6, spec, /*threads=*/4);
    ASSERT_TRUE(batch.ok()) << batch.status();
    for (int64_t i = 0; i < 6; ++i) {
      absl::StatusOr<internal::Batch> row = internal::MakeBatch(task, 9, 20 + i, 1, spec);
      ASSERT_TRUE(row.ok()) << row.status();
      EXPECT_TRUE(batch->input[i].equal(row->input[0])) << "row " << i;
      if (task == ModelTask::kDetection) {
        EXPECT_TRUE(batch->heat[i].equal(row->heat[0])) << "row " << i;
        EXPECT_TRUE(batch->log_size[i].equal(row->log_size[0])) << "row " << i;
        EXPECT_TRUE(batch->offset[i].equal(row->offset[0])) << "row " << i;
        EXPECT_TRUE(batch->centres[i].equal(row->centres[0])) << "row " << i;
        EXPECT_EQ(batch->boxes[static_cast<size_t>(i)], row->boxes[0]) << "row " << i;
      } else {
        EXPECT_TRUE(batch->target[i].equal(row->target[0])) << "row " << i;
      }
    }
    // Rows are different scenes.
    EXPECT_FALSE(batch->input[0].equal(batch->input[1]));
  }
}

TEST(TrainTest, DetectorFolderHasObjectClassesOnly) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  TrainOptions options = Tiny(dir.File("det"));
  options.task = ModelTask::kDetection;
  absl::StatusOr<TrainResult> result = Train(registry, options, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->finished);
  EXPECT_GT(result->final_loss, 0);
  EXPECT_GE(result->heldout_recall, 0);
  EXPECT_LE(result->heldout_recall, 1);
  const std::string config = Read(dir.File("det/config.pbtxt"));
  EXPECT_THAT(config, HasSubstr("task: DETECTION"));
  EXPECT_THAT(config, HasSubstr("num_classes: 5"));
  EXPECT_EQ(Read(dir.File("det/labels.txt")), "circle\nsquare\ntriangle\nstar\nhexagon\n");
  absl::StatusOr<SafetensorsFile> weights = SafetensorsFile::Open(dir.File("det/model.safetensors"));
  ASSERT_TRUE(weights.ok());
  absl::StatusOr<ModelRegistry::TaskModel> fresh =
      registry.CreateForTask("shvit_s1", ModelTask::kDetection, 5);
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

// The largest difference between the learned weights (not BatchNorm's running statistics,
// which every training step moves) of two result folders.
double LargestWeightDifference(const std::string& folder_a, const std::string& folder_b) {
  absl::StatusOr<SafetensorsFile> a = SafetensorsFile::Open(folder_a + "/model.safetensors");
  absl::StatusOr<SafetensorsFile> b = SafetensorsFile::Open(folder_b + "/model.safetensors");
  EXPECT_TRUE(a.ok() && b.ok());
  if (!a.ok() || !b.ok()) return INFINITY;
  EXPECT_EQ(a->Names(), b->Names());
  double largest = 0;
  for (const std::string& name : a->Names()) {
    if (name.find("running_") != std::string::npos || name.find("num_batches") != std::string::npos) {
      continue;
    }
    const at::Tensor difference = a->Tensor(name)->to(at::kFloat) - b->Tensor(name)->to(at::kFloat);
    largest = std::max(largest, difference.abs().max().item<double>());
  }
  return largest;
}

// --init-from starts from an earlier result's weights: with a learning rate too small to move
// them, the fine-tuned folder holds the earlier weights, not the new seed's random ones.
TEST(TrainTest, FineTuningStartsFromTheGivenWeights) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  ASSERT_TRUE(Train(registry, Tiny(dir.File("base")), {}).ok());

  TrainOptions tuned = Tiny(dir.File("tuned"));
  tuned.seed = 2;  // Other random initial weights, which the loaded ones must replace.
  tuned.steps = 1;
  tuned.learning_rate = 1e-12;
  tuned.init_from = dir.File("base");  // A folder: its model.safetensors.
  ASSERT_TRUE(Train(registry, tuned, {}).ok());
  TrainOptions fresh = tuned;
  fresh.out = dir.File("fresh");
  fresh.init_from.clear();
  ASSERT_TRUE(Train(registry, fresh, {}).ok());

  EXPECT_LT(LargestWeightDifference(dir.File("base"), dir.File("tuned")), 1e-3);
  EXPECT_GT(LargestWeightDifference(dir.File("base"), dir.File("fresh")), 1e-2);
}

TEST(TrainTest, FineTuningRejectsWeightsOfAnotherModel) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  TrainOptions detector = Tiny(dir.File("det"));
  detector.task = ModelTask::kDetection;
  detector.steps = 1;
  ASSERT_TRUE(Train(registry, detector, {}).ok());

  TrainOptions segmenter = Tiny(dir.File("seg"));
  segmenter.init_from = dir.File("det/model.safetensors");
  absl::StatusOr<TrainResult> mismatched = Train(registry, segmenter, {});
  ASSERT_FALSE(mismatched.ok());
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatched.status().message(),
              HasSubstr("--init-from needs the weights of a shvit_s1 segmentation model with 6"));
  segmenter.init_from = dir.File("nowhere");
  absl::StatusOr<TrainResult> missing = Train(registry, segmenter, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("--init-from"));
  EXPECT_THAT(missing.status().message(), HasSubstr("nowhere"));
}

TEST(TrainTest, ClassifierFolderServesTheShapeClasses) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  TrainOptions options = Tiny(dir.File("cls"));
  options.task = ModelTask::kClassification;
  options.eval_scenes = 5;
  absl::StatusOr<TrainResult> result = Train(registry, options, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->finished);
  EXPECT_GT(result->final_loss, 0);
  // A multiple of 1/5 in [0, 1]: five crops scored.
  EXPECT_GE(result->heldout_accuracy, 0);
  EXPECT_LE(result->heldout_accuracy, 1);
  EXPECT_NEAR(result->heldout_accuracy * 5, std::round(result->heldout_accuracy * 5), 1e-9);
  const std::string config = Read(dir.File("cls/config.pbtxt"));
  EXPECT_THAT(config, HasSubstr("task: CLASSIFICATION"));
  EXPECT_THAT(config, HasSubstr("num_classes: 5"));
  EXPECT_EQ(Read(dir.File("cls/labels.txt")), "circle\nsquare\ntriangle\nstar\nhexagon\n");
  absl::StatusOr<SafetensorsFile> weights =
      SafetensorsFile::Open(dir.File("cls/model.safetensors"));
  ASSERT_TRUE(weights.ok());
  absl::StatusOr<ModelRegistry::TaskModel> fresh =
      registry.CreateForTask("shvit_s1", ModelTask::kClassification, 5);
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(LoadStateDict(*fresh->model, *weights).ok());
}

TEST(ClassificationTargetsTest, EachCropHoldsItsShapeWhole) {
  // A box inside the image: grown by half its longer side in all, squared, centred on it.
  const cv::Rect inside = internal::ClassificationCrop(cv::Rect2f(100, 50, 40, 20), 640, 480);
  EXPECT_EQ(inside, cv::Rect(90, 30, 60, 60));
  // Near a corner: clipped to the image, still holding the box.
  const cv::Rect2f corner(2, 3, 30, 40);
  const cv::Rect clipped = internal::ClassificationCrop(corner, 100, 100);
  EXPECT_EQ(clipped.x, 0);
  EXPECT_EQ(clipped.y, 0);
  EXPECT_GE(clipped.br().x, 32);
  EXPECT_GE(clipped.br().y, 43);

  PreprocessSpec spec;
  spec.input_size = 32;
  absl::StatusOr<internal::Batch> batch =
      internal::MakeBatch(ModelTask::kClassification, 7, 0, 6, spec);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_THAT(batch->input.sizes(), ::testing::ElementsAre(6, 3, 32, 32));
  ASSERT_EQ(batch->target.numel(), 6);
  EXPECT_TRUE(batch->target.ge(0).all().item<bool>());
  EXPECT_TRUE(batch->target.lt(5).all().item<bool>());
  // The labels are the scenes' shapes: scene i's shape (i mod its shape count).
  for (int64_t i = 0; i < 6; ++i) {
    absl::StatusOr<shapes::Scene> scene = shapes::GenerateScene(shapes::SceneOptions{}, 7, i);
    ASSERT_TRUE(scene.ok());
    const auto& shape = scene->shapes[static_cast<size_t>(i) % scene->shapes.size()];
    EXPECT_EQ(batch->target[i].item<int64_t>(), static_cast<int64_t>(shape.shape_class) - 1);
  }
}

TEST(TrainTest, RejectsBadOptions) {
  ScopedTempDir dir;
  const ModelRegistry registry = BuiltinModelRegistry();
  TrainOptions options = Tiny(dir.File("x"));
  options.task = ModelTask::kDetection;
  options.input_size = 34;  // Not a multiple of the detector's stride.
  EXPECT_EQ(Train(registry, options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options = Tiny(dir.File("x"));
  options.steps = 0;
  EXPECT_EQ(Train(registry, options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options = Tiny(dir.File("x"));
  options.architecture = "vim_tiny";  // No feature maps.
  absl::StatusOr<TrainResult> vit = Train(registry, options, {});
  EXPECT_EQ(vit.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vit.status().message(), HasSubstr("supports: classification"));
  options = Tiny("");
  EXPECT_EQ(Train(registry, options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  // A ViT takes only the input size of its position embedding.
  options = Tiny(dir.File("vit"));
  options.architecture = "deit_tiny_patch16_224";
  absl::StatusOr<TrainResult> wrong_size = Train(registry, options, {});
  EXPECT_EQ(wrong_size.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_size.status().message(),
              HasSubstr("deit_tiny_patch16_224 cannot take 32 x 32 input (--input-size)"));
}

}  // namespace
}  // namespace vitserve::train

namespace vitserve::train {
namespace {

// The detection targets, loss and decoding agree: a small detector trained on one fixed batch
// finds that batch's objects again (box and class, IoU >= 0.5) through DecodeCenters.
TEST(DetectionTargetsTest, AModelFitsAFixedBatchAndDecodesItsObjects) {
  at::manual_seed(0);
  PreprocessSpec spec;
  spec.input_size = 64;
  absl::StatusOr<internal::Batch> batch =
      internal::MakeBatch(ModelTask::kDetection, /*seed=*/3, 0, 4, spec);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->heat.sizes(), (std::vector<int64_t>{4, 5, 16, 16}));
  int64_t objects = 0;
  for (const auto& scene : batch->boxes) objects += static_cast<int64_t>(scene.size());
  EXPECT_EQ(batch->centres.sum().item<int64_t>(), objects);  // (no two centres share a cell here)
  EXPECT_EQ(batch->heat.eq(1.0).sum().item<int64_t>(), objects);

  ShvitConfig config;
  config.embed_dim = {32, 48, 64};
  config.depth = {1, 1, 1};
  config.partial_dim = {8, 12, 16};
  config.classifier = false;
  DetectionOptions options;
  options.num_classes = 5;
  options.dim = 32;
  std::shared_ptr<VisionModel> model = MakeDetectionModel(MakeShvit(config), options);
  model->train();
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(3e-3));
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < 150; ++step) {
    optimizer.zero_grad();
    const at::Tensor loss =
        internal::DetectionLoss(model->forward(batch->input), *batch, c10::kCPU);
    loss.backward();
    optimizer.step();
    if (step == 0) first_loss = loss.item<double>();
    last_loss = loss.item<double>();
  }
  EXPECT_LT(last_loss, 0.3 * first_loss) << first_loss << " -> " << last_loss;
  model->eval();
  c10::NoGradGuard no_grad;
  const at::Tensor output = model->forward(batch->input);
  int64_t found = 0;
  for (int64_t i = 0; i < 4; ++i) {
    absl::StatusOr<std::vector<CenterDetection>> detections =
        DecodeCenters(output[i], 5, 64, 0.3, 20);
    ASSERT_TRUE(detections.ok());
    for (const auto& [box, cls] : batch->boxes[static_cast<size_t>(i)]) {
      for (const CenterDetection& d : *detections) {
        const float w = std::max(0.0f, std::min(box[2], d.x2) - std::max(box[0], d.x1));
        const float h = std::max(0.0f, std::min(box[3], d.y2) - std::max(box[1], d.y1));
        const float inter = w * h;
        const float iou = inter / ((box[2] - box[0]) * (box[3] - box[1]) +
                                   (d.x2 - d.x1) * (d.y2 - d.y1) - inter);
        if (d.class_index == cls && iou >= 0.5f) {
          ++found;
          break;
        }
      }
    }
  }
  EXPECT_GE(found, objects * 3 / 4) << found << " of " << objects;
}

}  // namespace
}  // namespace vitserve::train

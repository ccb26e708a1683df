#include "tools/train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"
#include "server/image/dense_output.h"
#include "tools/shapes/scene.h"

namespace vitserve::train {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kWarmupSteps = 50;

struct Batch {
  at::Tensor input;   // [B,3,S,S] float32, normalised.
  at::Tensor target;  // [B,S,S] int64 class indices.
};

// Scenes first_index .. first_index + count - 1 of `seed`, as Segment feeds them to the model,
// with their label maps stretched alike (nearest: labels are not averaged).
absl::StatusOr<Batch> SegmentationBatch(uint64_t seed, int64_t first_index, int64_t count,
                                        const PreprocessSpec& spec) {
  const int64_t s = spec.input_size;
  Batch batch{at::empty({count, 3, s, s}), at::empty({count, s, s}, at::kLong)};
  for (int64_t i = 0; i < count; ++i) {
    VITSERVE_ASSIGN_OR_RETURN(shapes::Scene scene,
                              shapes::GenerateScene(shapes::SceneOptions{}, seed, first_index + i));
    VITSERVE_ASSIGN_OR_RETURN(
        at::Tensor row, PreprocessWhole(RgbImage{scene.image}, kDenseResizeMode, spec));
    batch.input[i].copy_(row);
    cv::Mat labels;
    cv::resize(scene.class_map, labels, cv::Size(static_cast<int>(s), static_cast<int>(s)), 0, 0,
               cv::INTER_NEAREST);
    batch.target[i].copy_(
        at::from_blob(labels.data, {s, s}, at::kByte).to(at::kLong));
  }
  return batch;
}

// Logits at the input's size (the decoder's are at a quarter of it).
at::Tensor FullSizeLogits(const at::Tensor& logits, int64_t size) {
  return at::upsample_bilinear2d(logits, {size, size}, /*align_corners=*/false);
}

struct Scores {
  double miou = 0;
  double pixel_accuracy = 0;
};

absl::StatusOr<Scores> Evaluate(VisionModel& model, const TrainOptions& options,
                                const PreprocessSpec& spec, int64_t classes) {
  model.eval();
  c10::NoGradGuard no_grad;
  at::Tensor confusion = at::zeros({classes, classes}, at::kLong);
  for (int64_t first = 0; first < options.eval_scenes; first += options.batch_size) {
    const int64_t count = std::min(options.batch_size, options.eval_scenes - first);
    VITSERVE_ASSIGN_OR_RETURN(Batch batch,
                              SegmentationBatch(HeldOutSeed(options.seed), first, count, spec));
    const at::Tensor predicted =
        FullSizeLogits(model.forward(batch.input.to(options.device)), spec.input_size)
            .argmax(1)
            .cpu();
    confusion += at::bincount((batch.target * classes + predicted).flatten(), {}, classes * classes)
                     .view({classes, classes});
  }
  model.train();
  const at::Tensor hits = confusion.diagonal().to(at::kDouble);
  const at::Tensor unions =
      (confusion.sum(0) + confusion.sum(1)).to(at::kDouble) - hits;
  const at::Tensor present = unions > 0;
  Scores scores;
  scores.miou = (hits.masked_select(present) / unions.masked_select(present)).mean().item<double>();
  scores.pixel_accuracy = hits.sum().item<double>() / confusion.sum().item<double>();
  return scores;
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << text;
  file.close();
  if (!file) return absl::InternalError(absl::StrCat("could not write ", path.string()));
  return absl::OkStatus();
}

// The serving folder: fp16 weights (half the bytes; vitserve casts to its precision),
// config.pbtxt and labels.txt.
absl::Status WriteModelFolder(VisionModel& model, const TrainOptions& options,
                              const ModelInfo& info) {
  const fs::path out(options.out);
  std::map<std::string, at::Tensor> tensors;
  for (auto& [name, tensor] : StateDictTensors(model)) {
    tensors[name] = tensor.detach().to(at::kCPU, at::kHalf);
  }
  VITSERVE_RETURN_IF_ERROR(WriteSafetensors(
      (out / "model.safetensors").string(), tensors,
      {{"architecture", options.architecture},
       {"task", std::string(ModelTaskName(options.task))},
       {"trained_by", "vitserve-train"}}));
  VITSERVE_RETURN_IF_ERROR(WriteText(
      out / "config.pbtxt",
      absl::StrCat("# Written by vitserve-train.\narchitecture: \"", options.architecture,
                   "\"\ntask: SEGMENTATION\nnum_classes: ", info.num_classes,
                   "\ninput { size: ", options.input_size, " }\n")));
  std::string labels;
  for (std::string_view name : shapes::kClassNames) labels.append(name).append("\n");
  return WriteText(out / "labels.txt", labels);
}

}  // namespace

uint64_t HeldOutSeed(uint64_t training_seed) {
  // Any fixed change of the seed: GenerateScene mixes (seed, index) through SplitMix64, so the
  // held-out scenes share nothing with the training ones.
  return training_seed ^ 0x5eed0f4e1d0a11ULL;
}

absl::StatusOr<TrainResult> Train(const ModelRegistry& registry, const TrainOptions& options,
                                  const std::function<void(const TrainProgress&)>& report) {
  if (options.task != ModelTask::kSegmentation) {
    return absl::InvalidArgumentError("vitserve-train trains segmentation models only (for now)");
  }
  if (options.out.empty()) return absl::InvalidArgumentError("the output folder is required");
  if (options.input_size < 32 || options.input_size > 1024 || options.batch_size < 1 ||
      options.steps < 1 || !(options.learning_rate > 0) || options.checkpoint_every < 1 ||
      options.eval_scenes < 1 || options.stop_after < 0) {
    return absl::InvalidArgumentError(
        "input size must be 32..1024; batch size, steps, checkpoint interval and held-out "
        "scenes positive; the learning rate above 0");
  }
  const fs::path out(options.out);
  const fs::path state = out / "train_state";
  std::error_code error;
  fs::create_directories(state, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("could not create ", state.string(), ": ", error.message()));
  }
  const int64_t classes = shapes::kNumShapeClasses + 1;
  at::manual_seed(static_cast<uint64_t>(options.seed));  // Before the random initial weights.
  VITSERVE_ASSIGN_OR_RETURN(ModelRegistry::TaskModel built,
                            registry.CreateForTask(options.architecture, options.task, classes));
  std::shared_ptr<VisionModel> model = built.model;
  PreprocessSpec spec;
  spec.input_size = options.input_size;
  spec.mean = built.info.mean;
  spec.std = built.info.std;
  spec.interpolation = built.info.interpolation == "bilinear" ? Interpolation::kBilinear
                                                              : Interpolation::kBicubic;

  int64_t first_step = 0;
  const fs::path weights_state = state / "model.safetensors";
  const fs::path optimizer_state = state / "optimizer.pt";
  const fs::path step_state = state / "step.txt";
  model->to(options.device);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(options.learning_rate));
  if (options.resume && fs::exists(step_state)) {
    std::ifstream(step_state) >> first_step;
    VITSERVE_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(weights_state.string()));
    VITSERVE_RETURN_IF_ERROR(LoadStateDict(*model, file));
    try {
      torch::load(optimizer, optimizer_state.string());
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot resume from ", optimizer_state.string(), ": ", e.what()));
    }
  }
  model->train();

  auto checkpoint = [&](int64_t step) -> absl::Status {
    std::map<std::string, at::Tensor> tensors;
    for (auto& [name, tensor] : StateDictTensors(*model)) {
      tensors[name] = tensor.detach().to(at::kCPU, at::kFloat);
    }
    VITSERVE_RETURN_IF_ERROR(WriteSafetensors(weights_state.string(), tensors));
    try {
      torch::save(optimizer, optimizer_state.string());
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("saving the optimizer state: ", e.what()));
    }
    return WriteText(step_state, absl::StrCat(step, "\n"));
  };

  using Clock = std::chrono::steady_clock;
  TrainResult result;
  const Clock::time_point start = Clock::now();
  Clock::time_point last_report = start;
  double loss_sum = 0;
  int64_t loss_count = 0;
  int64_t images_since_report = 0;
  for (int64_t step = first_step; step < options.steps; ++step) {
    // Linear warm-up, then a cosine decay to zero.
    const double progress = static_cast<double>(step) / static_cast<double>(options.steps);
    const double rate =
        options.learning_rate * std::min(1.0, static_cast<double>(step + 1) / kWarmupSteps) *
        0.5 * (1.0 + std::cos(M_PI * progress));
    for (torch::optim::OptimizerParamGroup& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(rate);
    }
    VITSERVE_ASSIGN_OR_RETURN(
        Batch batch, SegmentationBatch(options.seed, step * options.batch_size, options.batch_size,
                                       spec));
    optimizer.zero_grad();
    const at::Tensor logits =
        FullSizeLogits(model->forward(batch.input.to(options.device)), options.input_size);
    const at::Tensor loss =
        torch::nn::functional::cross_entropy(logits, batch.target.to(options.device));
    loss.backward();
    optimizer.step();
    loss_sum += loss.item<double>();
    ++loss_count;
    images_since_report += options.batch_size;
    ++result.steps_run;
    result.final_loss = loss.item<double>();

    const bool last = step + 1 == options.steps ||
                      (options.stop_after > 0 && result.steps_run == options.stop_after);
    if ((step + 1) % options.checkpoint_every == 0 || last) {
      VITSERVE_RETURN_IF_ERROR(checkpoint(step + 1));
    }
    const Clock::time_point now = Clock::now();
    if (report && (now - last_report > std::chrono::seconds(5) || last)) {
      const double seconds = std::chrono::duration<double>(now - last_report).count();
      const double overall = std::chrono::duration<double>(now - start).count();
      TrainProgress progress_line;
      progress_line.step = step + 1;
      progress_line.steps = options.steps;
      progress_line.loss = loss_sum / static_cast<double>(loss_count);
      progress_line.images_per_second = images_since_report / std::max(seconds, 1e-9);
      progress_line.eta_seconds =
          overall / static_cast<double>(result.steps_run) * static_cast<double>(options.steps - step - 1);
      report(progress_line);
      last_report = now;
      loss_sum = 0;
      loss_count = 0;
      images_since_report = 0;
    }
    if (last) break;
  }
  if (first_step + result.steps_run < options.steps) return result;  // Stopped early.
  result.finished = true;
  VITSERVE_ASSIGN_OR_RETURN(Scores scores, Evaluate(*model, options, spec, classes));
  result.heldout_miou = scores.miou;
  result.heldout_pixel_accuracy = scores.pixel_accuracy;
  model->eval();
  VITSERVE_RETURN_IF_ERROR(WriteModelFolder(*model, options, built.info));
  return result;
}

}  // namespace vitserve::train

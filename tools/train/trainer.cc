#include "tools/train/trainer.h"

#include "tools/train/internal/targets.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/serialize.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/heads/center_decode.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"
#include "server/image/dense_output.h"
#include "tools/shapes/scene.h"

namespace vitserve::train {
namespace internal {

namespace {

// Row i of a batch: scene first_index + i with its targets written into row i of the batch's
// tensors (rows are disjoint, so rows can be filled on different threads).
absl::Status FillRow(ModelTask task, uint64_t seed, int64_t first_index, int64_t i,
                     const PreprocessSpec& spec, Batch& batch) {
  const int64_t s = spec.input_size;
  const int64_t cells = s / kDetectionStride;
  VITSERVE_ASSIGN_OR_RETURN(shapes::Scene scene,
                            shapes::GenerateScene(shapes::SceneOptions{}, seed, first_index + i));
  if (task == ModelTask::kClassification) {
    if (scene.shapes.empty()) return absl::InternalError("a generated scene has no shape");
    const shapes::ShapeInstance& shape =
        scene.shapes[static_cast<size_t>(first_index + i) % scene.shapes.size()];
    const cv::Mat crop =
        scene.image(ClassificationCrop(shape.box, scene.image.cols, scene.image.rows)).clone();
    VITSERVE_ASSIGN_OR_RETURN(PreprocessedImage row, Preprocess(RgbImage{crop}, spec));
    batch.input[i].copy_(row.tensor);
    batch.target[i] = static_cast<int64_t>(shape.shape_class) - 1;
    return absl::OkStatus();
  }
  VITSERVE_ASSIGN_OR_RETURN(at::Tensor row,
                            PreprocessWhole(RgbImage{scene.image}, kDenseResizeMode, spec));
  batch.input[i].copy_(row);
  if (task == ModelTask::kSegmentation) {
    cv::Mat labels;
    cv::resize(scene.class_map, labels, cv::Size(static_cast<int>(s), static_cast<int>(s)), 0, 0,
               cv::INTER_NEAREST);
    batch.target[i].copy_(at::from_blob(labels.data, {s, s}, at::kByte).to(at::kLong));
    return absl::OkStatus();
  }
  const float scale_x = static_cast<float>(s) / scene.image.cols;
  const float scale_y = static_cast<float>(s) / scene.image.rows;
  auto& boxes = batch.boxes[static_cast<size_t>(i)];
  auto heat = batch.heat.accessor<float, 4>();
  auto log_size = batch.log_size.accessor<float, 4>();
  auto offset = batch.offset.accessor<float, 4>();
  auto centres = batch.centres.accessor<float, 3>();
  for (const shapes::ShapeInstance& shape : scene.shapes) {
    const float x1 = shape.box.x * scale_x, y1 = shape.box.y * scale_y;
    const float w = shape.box.width * scale_x, h = shape.box.height * scale_y;
    const int64_t c = static_cast<int64_t>(shape.shape_class) - 1;
    boxes.push_back({{x1, y1, x1 + w, y1 + h}, c});
    const float cx = (x1 + w / 2) / kDetectionStride, cy = (y1 + h / 2) / kDetectionStride;
    const int64_t gx = std::clamp<int64_t>(static_cast<int64_t>(cx), 0, cells - 1);
    const int64_t gy = std::clamp<int64_t>(static_cast<int64_t>(cy), 0, cells - 1);
    // The Gaussian's width follows the object's size in cells (CenterNet uses a radius
    // within which a shifted box keeps IoU 0.7; a third of the smaller side is close).
    const float sigma = std::max(0.7f, std::min(w, h) / kDetectionStride / 6.0f);
    for (int64_t y = 0; y < cells; ++y) {
      for (int64_t x = 0; x < cells; ++x) {
        const float d2 = static_cast<float>((x - gx) * (x - gx) + (y - gy) * (y - gy));
        heat[i][c][y][x] = std::max(heat[i][c][y][x], std::exp(-d2 / (2 * sigma * sigma)));
      }
    }
    log_size[i][0][gy][gx] = std::log(std::max(w, 1.0f));
    log_size[i][1][gy][gx] = std::log(std::max(h, 1.0f));
    offset[i][0][gy][gx] = cx - static_cast<float>(gx);
    offset[i][1][gy][gx] = cy - static_cast<float>(gy);
    centres[i][gy][gx] = 1.0f;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Batch> MakeBatch(ModelTask task, uint64_t seed, int64_t first_index, int64_t count,
                                const PreprocessSpec& spec, int threads) {
  const int64_t s = spec.input_size;
  const int64_t cells = s / kDetectionStride;
  const int64_t classes = shapes::kNumShapeClasses;
  Batch batch;
  batch.input = at::empty({count, 3, s, s});
  if (task == ModelTask::kClassification) {
    batch.target = at::empty({count}, at::kLong);
  } else if (task == ModelTask::kSegmentation) {
    batch.target = at::empty({count, s, s}, at::kLong);
  } else {
    batch.heat = at::zeros({count, classes, cells, cells});
    batch.log_size = at::zeros({count, 2, cells, cells});
    batch.offset = at::zeros({count, 2, cells, cells});
    batch.centres = at::zeros({count, cells, cells});
    batch.boxes.resize(static_cast<size_t>(count));
  }
  // Generating a scene costs about 10 ms of CPU, far more than a GPU step takes per image: the
  // rows are shared out to `threads` threads of this call. (Not at::parallel_for: its OpenMP
  // body is compiled only into code built with -fopenmp, so here it would run serially.) Each
  // row depends only on (seed, index), so the batch is the same whatever the thread count.
  std::vector<absl::Status> row_status(static_cast<size_t>(count));
  std::atomic<int64_t> next_row{0};
  auto fill_rows = [&] {
    for (int64_t i = next_row++; i < count; i = next_row++) {
      row_status[static_cast<size_t>(i)] = FillRow(task, seed, first_index, i, spec, batch);
    }
  };
  std::vector<std::thread> workers;
  for (int t = 1; t < std::min<int64_t>(std::max(threads, 1), count); ++t) {
    workers.emplace_back(fill_rows);
  }
  fill_rows();
  for (std::thread& worker : workers) worker.join();
  for (absl::Status& status : row_status) VITSERVE_RETURN_IF_ERROR(status);
  return batch;
}

cv::Rect ClassificationCrop(const cv::Rect2f& box, int width, int height) {
  const float side = std::max(box.width, box.height) * 1.5f;
  const float cx = box.x + box.width / 2, cy = box.y + box.height / 2;
  const int x1 = std::max(0, static_cast<int>(std::floor(cx - side / 2)));
  const int y1 = std::max(0, static_cast<int>(std::floor(cy - side / 2)));
  const int x2 = std::min(width, static_cast<int>(std::ceil(cx + side / 2)));
  const int y2 = std::min(height, static_cast<int>(std::ceil(cy + side / 2)));
  return cv::Rect(x1, y1, std::max(1, x2 - x1), std::max(1, y2 - y1));
}

at::Tensor DetectionLoss(const at::Tensor& output, const Batch& batch, const c10::Device& device) {
  const int64_t classes = shapes::kNumShapeClasses;
  const at::Tensor heat_target = batch.heat.to(device);
  const at::Tensor centres = batch.centres.to(device).unsqueeze(1);  // [B,1,h,w]
  const at::Tensor p = output.narrow(1, 0, classes).sigmoid().clamp(1e-4, 1 - 1e-4);
  const at::Tensor positive = heat_target.eq(1.0).to(at::kFloat);
  const at::Tensor focal =
      -(positive * (1 - p).pow(2) * p.log() +
        (1 - positive) * (1 - heat_target).pow(4) * p.pow(2) * (1 - p).log())
           .sum();
  const at::Tensor objects = centres.sum().clamp_min(1);
  const at::Tensor size_loss =
      ((output.narrow(1, classes, 2) - batch.log_size.to(device)).abs() * centres).sum() / objects;
  const at::Tensor offset_loss =
      ((output.narrow(1, classes + 2, 2).sigmoid() - batch.offset.to(device)).abs() * centres)
          .sum() /
      objects;
  return focal / objects + size_loss + offset_loss;
}

}  // namespace internal

namespace {

using internal::Batch;
using internal::DetectionLoss;
using internal::kDetectionStride;
using internal::MakeBatch;

namespace fs = std::filesystem;
constexpr int64_t kWarmupSteps = 50;

// bf16 autocast of the ops run in its scope on `device` (matrix products and convolutions in
// bf16, reductions and the rest in fp32), when `enabled`; bf16 keeps fp32's range, so no loss
// scaling is needed.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, bool enabled) : device_(device), enabled_(enabled) {
    if (!enabled_) return;
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::set_autocast_enabled(device_, true);
  }
  ~AutocastScope() {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, false);
    at::autocast::clear_cache();  // The bf16 copies of the weights, made for this step.
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool enabled_;
};

// Logits at the input's size (the decoder's are at a quarter of it).
at::Tensor FullSizeLogits(const at::Tensor& logits, int64_t size) {
  return at::upsample_bilinear2d(logits, {size, size}, /*align_corners=*/false);
}

struct Scores {
  double miou = 0;             // Segmentation.
  double pixel_accuracy = 0;
  double precision = 0;        // Detection: at IoU 0.5, score 0.3, classes matched.
  double recall = 0;
  double accuracy = 0;         // Classification.
};

double Iou(const std::array<float, 4>& a, const CenterDetection& b) {
  const float w = std::max(0.0f, std::min(a[2], b.x2) - std::max(a[0], b.x1));
  const float h = std::max(0.0f, std::min(a[3], b.y2) - std::max(a[1], b.y1));
  const float inter = w * h;
  const float area = (a[2] - a[0]) * (a[3] - a[1]) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
  return area > 0 ? inter / area : 0.0;
}

absl::StatusOr<Scores> Evaluate(VisionModel& model, const TrainOptions& options,
                                const PreprocessSpec& spec, int64_t classes) {
  model.eval();
  c10::NoGradGuard no_grad;
  at::Tensor confusion = at::zeros({classes, classes}, at::kLong);
  int64_t true_positives = 0, detections = 0, objects = 0, correct = 0;
  for (int64_t first = 0; first < options.eval_scenes; first += options.batch_size) {
    const int64_t count = std::min(options.batch_size, options.eval_scenes - first);
    VITSERVE_ASSIGN_OR_RETURN(
        Batch batch, MakeBatch(options.task, HeldOutSeed(options.seed), first, count, spec,
                               options.data_threads));
    const at::Tensor output = model.forward(batch.input.to(options.device)).cpu();
    if (options.task == ModelTask::kClassification) {
      correct += output.argmax(1).eq(batch.target).sum().item<int64_t>();
      continue;
    }
    if (options.task == ModelTask::kSegmentation) {
      const at::Tensor predicted = FullSizeLogits(output, spec.input_size).argmax(1);
      confusion += at::bincount((batch.target * classes + predicted).flatten(), {}, classes * classes)
                       .view({classes, classes});
      continue;
    }
    for (int64_t i = 0; i < count; ++i) {
      VITSERVE_ASSIGN_OR_RETURN(std::vector<CenterDetection> found,
                                DecodeCenters(output[i], classes, spec.input_size, 0.3, 100));
      const auto& truth = batch.boxes[static_cast<size_t>(i)];
      std::vector<bool> matched(truth.size(), false);
      for (const CenterDetection& d : found) {  // Best first: greedy matching.
        for (size_t t = 0; t < truth.size(); ++t) {
          if (!matched[t] && truth[t].second == d.class_index && Iou(truth[t].first, d) >= 0.5) {
            matched[t] = true;
            ++true_positives;
            break;
          }
        }
      }
      detections += static_cast<int64_t>(found.size());
      objects += static_cast<int64_t>(truth.size());
    }
  }
  model.train();
  Scores scores;
  if (options.task == ModelTask::kClassification) {
    scores.accuracy = static_cast<double>(correct) / static_cast<double>(options.eval_scenes);
    return scores;
  }
  if (options.task == ModelTask::kDetection) {
    scores.precision = detections > 0 ? static_cast<double>(true_positives) / detections : 0.0;
    scores.recall = objects > 0 ? static_cast<double>(true_positives) / objects : 0.0;
    return scores;
  }
  const at::Tensor hits = confusion.diagonal().to(at::kDouble);
  const at::Tensor unions = (confusion.sum(0) + confusion.sum(1)).to(at::kDouble) - hits;
  const at::Tensor present = unions > 0;
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
  const char* task = options.task == ModelTask::kDetection        ? "DETECTION"
                     : options.task == ModelTask::kClassification ? "CLASSIFICATION"
                                                                  : "SEGMENTATION";
  VITSERVE_RETURN_IF_ERROR(WriteText(
      out / "config.pbtxt",
      absl::StrCat("# Written by vitserve-train.\narchitecture: \"", options.architecture,
                   "\"\ntask: ", task, "\nnum_classes: ", info.num_classes,
                   "\ninput { size: ", options.input_size, " }\n")));
  // Segmentation's class 0 is the background; detection and classification have the shapes only.
  std::string labels;
  for (size_t c = options.task == ModelTask::kSegmentation ? 0 : 1;
       c < shapes::kClassNames.size(); ++c) {
    labels.append(shapes::kClassNames[c]).append("\n");
  }
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
  if (options.task != ModelTask::kSegmentation && options.task != ModelTask::kDetection &&
      options.task != ModelTask::kClassification) {
    return absl::InvalidArgumentError(
        "vitserve-train trains classification, segmentation and detection models");
  }
  if (options.task == ModelTask::kDetection && options.input_size % kDetectionStride != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a detector's input size must be a multiple of ", kDetectionStride));
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
  // Segmentation also labels the background (class 0).
  const int64_t classes = shapes::kNumShapeClasses + (options.task == ModelTask::kSegmentation);
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
  spec.crop_pct = built.info.crop_pct;  // Classification's centre crop, as Classify serves it.

  int64_t first_step = 0;
  const fs::path weights_state = state / "model.safetensors";
  const fs::path optimizer_state = state / "optimizer.pt";
  const fs::path step_state = state / "step.txt";
  const bool resuming = options.resume && fs::exists(step_state);
  if (!options.init_from.empty() && !resuming) {
    fs::path initial = options.init_from;
    if (fs::is_directory(initial)) initial /= "model.safetensors";
    absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(initial.string());
    if (!file.ok()) {
      return absl::Status(file.status().code(), absl::StrCat("--init-from: ", file.status().message()));
    }
    absl::Status loaded = LoadStateDict(*model, *file);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--init-from needs the weights of a ", options.architecture, " ",
          std::string(ModelTaskName(options.task)), " model with ", classes, " classes: ", loaded.message()));
    }
  }
  model->to(options.device);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(options.learning_rate));
  if (resuming) {
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
  // One image through the model first: an input size the architecture cannot take (a ViT's is
  // fixed by its position embedding) is a clear error here, not an exception mid-run.
  try {
    c10::NoGradGuard no_grad;
    model->eval();
    (void)model->forward(at::zeros({1, 3, options.input_size, options.input_size},
                                   at::TensorOptions().device(options.device)));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return absl::InvalidArgumentError(absl::StrCat(
        options.architecture, " cannot take ", options.input_size, " x ", options.input_size,
        " input (--input-size): ", what.substr(0, what.find('\n'))));
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
  // Where this call stops: the end of the run, or --stop-after steps in.
  const int64_t end_step = options.stop_after > 0
                               ? std::min(options.steps, first_step + options.stop_after)
                               : options.steps;
  // The next batch is generated on the CPU while the device runs this step.
  auto make_batch = [&options, &spec](int64_t step) {
    return MakeBatch(options.task, options.seed, step * options.batch_size, options.batch_size,
                     spec, options.data_threads);
  };
  std::future<absl::StatusOr<Batch>> next_batch;
  if (first_step < end_step) next_batch = std::async(std::launch::async, make_batch, first_step);
  for (int64_t step = first_step; step < end_step; ++step) {
    // Linear warm-up, then a cosine decay to zero.
    const double progress = static_cast<double>(step) / static_cast<double>(options.steps);
    const double rate =
        options.learning_rate * std::min(1.0, static_cast<double>(step + 1) / kWarmupSteps) *
        0.5 * (1.0 + std::cos(M_PI * progress));
    for (torch::optim::OptimizerParamGroup& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(rate);
    }
    VITSERVE_ASSIGN_OR_RETURN(Batch batch, next_batch.get());
    if (step + 1 < end_step) {
      next_batch = std::async(std::launch::async, make_batch, step + 1);
    }
    optimizer.zero_grad();
    at::Tensor output;
    {
      AutocastScope autocast(options.device.type(), options.mixed_precision);
      output = model->forward(batch.input.to(options.device));
    }
    output = output.to(at::kFloat);  // The loss in fp32, whatever the forward pass ran in.
    const at::Tensor loss =
        options.task == ModelTask::kDetection
            ? DetectionLoss(output, batch, options.device)
        : options.task == ModelTask::kClassification
            ? torch::nn::functional::cross_entropy(output, batch.target.to(options.device))
            : torch::nn::functional::cross_entropy(FullSizeLogits(output, options.input_size),
                                                   batch.target.to(options.device));
    loss.backward();
    optimizer.step();
    loss_sum += loss.item<double>();
    ++loss_count;
    images_since_report += options.batch_size;
    ++result.steps_run;
    result.final_loss = loss.item<double>();

    const bool last = step + 1 == end_step;
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
  }
  if (end_step < options.steps) return result;  // Stopped early.
  result.finished = true;
  VITSERVE_ASSIGN_OR_RETURN(Scores scores, Evaluate(*model, options, spec, classes));
  result.heldout_miou = scores.miou;
  result.heldout_pixel_accuracy = scores.pixel_accuracy;
  result.heldout_precision = scores.precision;
  result.heldout_recall = scores.recall;
  result.heldout_accuracy = scores.accuracy;
  model->eval();
  VITSERVE_RETURN_IF_ERROR(WriteModelFolder(*model, options, built.info));
  return result;
}

}  // namespace vitserve::train

// vitserve-train's training loop: a zoo architecture built for a task (ModelRegistry::
// CreateForTask) trained on vitserve-shapes scenes generated on the fly (a new scene for every
// sample: no data set on disk, no epoch to overfit), with Adam and a cosine learning rate,
// checkpoints to resume from, and a model-repository folder as its result (fp16 safetensors,
// config.pbtxt, labels.txt) that vitserve serves as it is.
//
// Segmentation (the scene's label map; cross-entropy) and detection (the shapes' boxes; CenterNet
// targets and loss): the model sees each scene as Segment and Detect serve it (stretched to the
// square input, kDenseResizeMode). Classification: one shape cut out of each scene (a square
// around it, internal::ClassificationCrop), preprocessed as Classify serves it (resize and
// centre crop), cross-entropy over the shape classes.
//
// Thread-safety: one Train call at a time per options.out folder. Errors: INVALID_ARGUMENT for
// bad options, FAILED_PRECONDITION for a folder it cannot write, what the registry, the
// checkpoint reader or torch report otherwise.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "models/model_info.h"
#include "models/registry.h"

namespace vitserve::train {

struct TrainOptions {
  std::string architecture = "shvit_s1";
  ModelTask task = ModelTask::kSegmentation;
  std::string out;  // The model-repository folder written (created).
  int64_t input_size = 128;
  int64_t batch_size = 16;
  int64_t steps = 1000;
  double learning_rate = 2e-3;
  uint64_t seed = 1;  // Training scenes: (seed, i); the held-out scenes use another seed.
  c10::Device device = c10::kCPU;
  int64_t checkpoint_every = 200;  // Steps between checkpoints.
  int64_t eval_scenes = 64;        // Held-out scenes scored at the end.
  bool resume = false;             // Continue from out/train_state when it exists.
  // Fine-tuning: start from these weights (a safetensors file, or a folder holding
  // model.safetensors, such as an earlier result) instead of random ones. Same architecture,
  // task and class count; the schedule starts afresh. A checkpoint being resumed wins.
  std::string init_from;
  // Stop (with a checkpoint) after this many steps in this call, 0: run to `steps`. The
  // schedule still spans `steps`: a later --resume call continues the same run.
  int64_t stop_after = 0;
  // bf16 mixed precision: the forward pass under autocast, the loss, gradients and Adam's
  // state in fp32 (the weights stay fp32).
  bool mixed_precision = false;
  // Threads generating the scenes of a batch (about 10 ms of CPU each), while the device runs
  // the previous step.
  int data_threads = 1;
};

struct TrainProgress {
  int64_t step = 0;
  int64_t steps = 0;
  double loss = 0;             // Mean over the steps since the last report.
  double images_per_second = 0;
  double eta_seconds = 0;
};

struct TrainResult {
  int64_t steps_run = 0;       // This call (after a resume, fewer than options.steps).
  bool finished = false;       // The run reached options.steps (the folder is written).
  double final_loss = 0;
  double heldout_miou = 0;     // Segmentation: mean IoU over the classes, at the input size.
  double heldout_pixel_accuracy = 0;
  // Detection: boxes at score >= 0.3 matching an object of their class at IoU >= 0.5, over all
  // boxes (precision) and over all objects (recall).
  double heldout_precision = 0;
  double heldout_recall = 0;
  // Classification: the share of held-out single-shape crops classified right.
  double heldout_accuracy = 0;
};

// `report` (may be empty) is called every few seconds and at the end. The serving folder and
// the held-out score are written only when the run reaches options.steps.
absl::StatusOr<TrainResult> Train(const ModelRegistry& registry, const TrainOptions& options,
                                  const std::function<void(const TrainProgress&)>& report);

// The held-out seed for a training seed: scenes a model never trained on.
uint64_t HeldOutSeed(uint64_t training_seed);

}  // namespace vitserve::train

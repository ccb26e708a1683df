// vitserve-train: trains a model on vitserve-shapes scenes and writes a model-repository folder
// that vitserve serves (tools/train/trainer.h). Flags are parsed here and nowhere else.
#include <c10/core/Device.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/flag_names.h"
#include "models/registry.h"
#include "nlohmann/json.hpp"
#include "tools/train/trainer.h"

ABSL_FLAG(std::string, out, "", "Model-repository folder to write (created).");
ABSL_FLAG(std::string, architecture, "shvit_s1",
          "Zoo architecture (segmentation and detection need feature maps: shvit_s1..s4, and "
          "vit_/deit_*_patch16_224 at --input-size 224; classification takes any).");
ABSL_FLAG(std::string, task, "segmentation",
          "What to train: segmentation, detection or classification.");
ABSL_FLAG(int64_t, input_size, 128, "Square model input in pixels (32..1024).");
ABSL_FLAG(int64_t, batch_size, 16, "Scenes per step.");
ABSL_FLAG(int64_t, steps, 1000, "Optimiser steps (each on new scenes).");
ABSL_FLAG(double, lr, 2e-3, "Peak learning rate (Adam; 50 warm-up steps, then cosine to 0).");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the training scenes and of the initial weights.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(int64_t, checkpoint_every, 200, "Steps between checkpoints in OUT/train_state.");
ABSL_FLAG(int64_t, eval_scenes, 64,
          "Held-out scenes scored at the end (mIoU; detection: precision and recall; "
          "classification: accuracy, one crop per scene).");
ABSL_FLAG(bool, resume, false, "Continue from OUT/train_state when it exists.");
ABSL_FLAG(std::string, init_from, "",
          "Fine-tune: start from these weights (a model.safetensors, or a folder holding one, such "
          "as an earlier vitserve-train result) instead of random ones. Same architecture, task "
          "and classes; the schedule starts afresh (give a lower --lr). --resume wins over it.");
ABSL_FLAG(std::string, precision, "auto",
          "auto (bf16 mixed precision on CUDA, fp32 on the CPU), fp32, or bf16-mixed (the "
          "forward pass in bf16 under autocast; weights, gradients and optimiser in fp32).");
ABSL_FLAG(int32_t, data_threads, 0,
          "Threads generating the training scenes (about 10 ms of CPU each), while the device "
          "runs the previous step. 0: one per core.");
ABSL_FLAG(int64_t, stop_after, 0,
          "Stop after this many steps of this call (checkpointed; --resume goes on). 0: all.");

int main(int argc, char** argv) {
  constexpr char kUsage[] =
      "Trains a zoo model on synthetic vitserve-shapes scenes and writes a folder vitserve serves.\n\n"
      "  vitserve-train --out DIR [--architecture shvit_s1] [--steps N] [--batch-size B]\n"
      "                 [--input-size S] [--device cpu|cuda] [--precision P] [--resume]\n"
      "                 [--init-from EARLIER_DIR]\n\n"
      "Every step draws new scenes (vitserve-shapes' generator, in process), so there is no data\n"
      "set on disk and nothing to overfit. Segmentation: the shapes' label maps (0 background,\n"
      "1 circle .. 5 hexagon) or, with --task detection, the shapes' boxes (CenterNet), the scene\n"
      "stretched to the input as vitserve's Segment and Detect do; with --task classification,\n"
      "one shape cut out of each scene, resized and centre-cropped as Classify does. A\n"
      "progress line every few seconds (step, loss, images/s, ETA); a checkpoint every\n"
      "--checkpoint-every steps in DIR/train_state (--resume continues from it); at the end the\n"
      "held-out score (mean IoU; detection: precision and recall at IoU 0.5; classification:\n"
      "accuracy) and\n"
      "DIR/model.safetensors (fp16), DIR/config.pbtxt, DIR/labels.txt.\n"
      "Serve it with: vitserve --model-repository PARENT_OF_DIR. Exit status 1 on any error.";
  absl::SetProgramUsageMessage(kUsage);
  if (vitserve::WantsHelp(argc, argv)) {
    std::printf("%s\n\nFlags (names take '-' or '_'):\n%s", kUsage,
                vitserve::DashedFlagHelp({"out", "architecture", "task", "input_size", "batch_size",
                                          "steps", "lr", "seed", "device", "checkpoint_every",
                                          "eval_scenes", "resume", "init_from", "stop_after", "precision",
                                          "data_threads"})
                    .c_str());
    return 0;
  }
  std::vector<std::string> normalized = vitserve::NormalizeFlagNames(argc, argv);
  std::vector<char*> args = vitserve::ArgvPointers(normalized);
  const std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "vitserve-train: %s\n", message.c_str());
    return 1;
  };
  if (positional.size() > 1) return fail(absl::StrCat("unexpected argument '", positional[1], "'"));

  vitserve::train::TrainOptions options;
  options.out = absl::GetFlag(FLAGS_out);
  if (options.out.empty()) return fail("--out is required");
  options.architecture = absl::GetFlag(FLAGS_architecture);
  const std::string task = absl::GetFlag(FLAGS_task);
  if (task == "segmentation") {
    options.task = vitserve::ModelTask::kSegmentation;
  } else if (task == "detection") {
    options.task = vitserve::ModelTask::kDetection;
  } else if (task == "classification") {
    options.task = vitserve::ModelTask::kClassification;
  } else {
    return fail(absl::StrCat("--task must be segmentation, detection or classification, got '",
                             task, "'"));
  }
  options.input_size = absl::GetFlag(FLAGS_input_size);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.steps = absl::GetFlag(FLAGS_steps);
  options.learning_rate = absl::GetFlag(FLAGS_lr);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  options.eval_scenes = absl::GetFlag(FLAGS_eval_scenes);
  options.resume = absl::GetFlag(FLAGS_resume);
  options.stop_after = absl::GetFlag(FLAGS_stop_after);
  options.init_from = absl::GetFlag(FLAGS_init_from);
  try {
    options.device = c10::Device(absl::GetFlag(FLAGS_device));
  } catch (const std::exception&) {
    return fail(absl::StrCat("--device must be cpu, cuda or cuda:N, got '",
                             absl::GetFlag(FLAGS_device), "'"));
  }

  const int32_t data_threads = absl::GetFlag(FLAGS_data_threads);
  if (data_threads < 0 || data_threads > 1024) return fail("--data-threads must be 0..1024");
  options.data_threads = data_threads > 0
                             ? data_threads
                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (precision == "auto") {
    options.mixed_precision = options.device.is_cuda();
  } else if (precision == "fp32" || precision == "bf16-mixed") {
    options.mixed_precision = precision == "bf16-mixed";
  } else {
    return fail(absl::StrCat("--precision must be auto, fp32 or bf16-mixed, got '", precision,
                             "'"));
  }

  const vitserve::ModelRegistry registry = vitserve::BuiltinModelRegistry();
  absl::StatusOr<vitserve::train::TrainResult> result = vitserve::train::Train(
      registry, options, [](const vitserve::train::TrainProgress& p) {
        std::fprintf(stderr, "[train] step %lld/%lld  loss %.4f  %.1f img/s  ETA %.0f s\n",
                     static_cast<long long>(p.step), static_cast<long long>(p.steps), p.loss,
                     p.images_per_second, p.eta_seconds);
      });
  if (!result.ok()) return fail(std::string(result.status().message()));
  if (!result->finished) {
    std::fprintf(stderr, "[train] stopped after %lld steps; continue with --resume\n",
                 static_cast<long long>(result->steps_run));
    std::printf("%s\n", nlohmann::ordered_json{{"steps_run", result->steps_run},
                                               {"finished", false}}
                           .dump()
                           .c_str());
    return 0;
  }
  const bool detection = options.task == vitserve::ModelTask::kDetection;
  if (options.task == vitserve::ModelTask::kClassification) {
    std::fprintf(stderr,
                 "[train] %lld steps run; held-out accuracy %.4f (%lld single-shape crops); wrote "
                 "%s/{model.safetensors,config.pbtxt,labels.txt}\n",
                 static_cast<long long>(result->steps_run), result->heldout_accuracy,
                 static_cast<long long>(options.eval_scenes), options.out.c_str());
  } else if (detection) {
    std::fprintf(stderr,
                 "[train] %lld steps run; held-out precision %.4f, recall %.4f at IoU 0.5 (%lld "
                 "scenes); wrote %s/{model.safetensors,config.pbtxt,labels.txt}\n",
                 static_cast<long long>(result->steps_run), result->heldout_precision,
                 result->heldout_recall, static_cast<long long>(options.eval_scenes),
                 options.out.c_str());
  } else {
    std::fprintf(stderr,
                 "[train] %lld steps run; held-out mIoU %.4f, pixel accuracy %.4f (%lld scenes); "
                 "wrote %s/{model.safetensors,config.pbtxt,labels.txt}\n",
                 static_cast<long long>(result->steps_run), result->heldout_miou,
                 result->heldout_pixel_accuracy, static_cast<long long>(options.eval_scenes),
                 options.out.c_str());
  }
  // One JSON line for scripts (a NaN loss is written as null).
  const nlohmann::ordered_json summary = {
      {"steps_run", result->steps_run},
      {"finished", true},
      {"final_loss", result->final_loss},
      {"heldout_miou", result->heldout_miou},
      {"heldout_pixel_accuracy", result->heldout_pixel_accuracy},
      {"heldout_precision", result->heldout_precision},
      {"heldout_recall", result->heldout_recall},
      {"heldout_accuracy", result->heldout_accuracy}};
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

// vitserve-run-model: runs one zoo model on a batch stored in a .safetensors file and writes the
// logits to another, for parity checks against timm (tests/e2e/test_model_parity.py) and for
// trying a checkpoint by hand. Flags are parsed here and nowhere else.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "common/status_macros.h"
#include "models/model_loader.h"
#include "models/registry.h"
#include "models/weights/safetensors.h"

ABSL_FLAG(std::string, model, "", "Architecture name, e.g. shvit_s1 (see --list).");
ABSL_FLAG(std::string, weights, "",
          "Checkpoint (.safetensors, timm state-dict names). Empty: random initialisation.");
ABSL_FLAG(std::string, input, "", "Input .safetensors holding tensor \"input\" [N,3,H,W] (F32).");
ABSL_FLAG(std::string, output, "",
          "Output .safetensors; receives tensor \"logits\" [N,classes] F32.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, precision, "fp32", "fp32, fp16 or bf16 (model and input are cast).");
ABSL_FLAG(bool, fuse, true, "Fold BatchNorm before running; --no-fuse (or --nofuse) keeps it.");
ABSL_FLAG(bool, approximate_gelu, true,
          "ViT-family MLPs on CUDA in fp16/bf16: GELU in its tanh form inside the first matrix "
          "product, as vitserve serves them by default (--approximate-gelu); false: exact GELU.");
ABSL_FLAG(bool, list, false, "Print the registered models with their parameter counts and exit.");

namespace vitserve {
namespace {

struct RunOptions {
  std::string model;
  std::string weights;
  std::string input;
  std::string output;
  std::string device;
  std::string precision;
  bool fuse = true;
  bool approximate_gelu = true;
};

absl::StatusOr<at::ScalarType> ParsePrecision(const std::string& precision) {
  if (precision == "fp32") return at::kFloat;
  if (precision == "fp16") return at::kHalf;
  if (precision == "bf16") return at::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("--precision must be fp32, fp16 or bf16, got '", precision, "'"));
}

absl::StatusOr<c10::Device> ParseDevice(const std::string& text) {
  std::optional<c10::Device> device;
  try {
    device.emplace(text);
  } catch (const c10::Error&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda())) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or cuda:N, got '", text, "'"));
  }
  if (device->is_cuda()) {
    const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    if (count == 0) return absl::FailedPreconditionError("--device cuda: no CUDA device available");
    if (device->has_index() && device->index() >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device ", text, ": only ", count, " CUDA device(s)"));
    }
  }
  return *device;
}

absl::Status ListModels(const ModelRegistry& registry) {
  std::printf("%-34s %-12s %-15s %5s %12s\n", "model", "family", "task", "input", "params");
  for (const std::string& name : registry.Names()) {
    LoadOptions options;
    options.fuse_for_inference = false;
    VITSERVE_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(registry, name, options));
    std::printf("%-34s %-12s %-15s %5lld %12lld\n", name.c_str(), loaded.info.family.c_str(),
                std::string(ModelTaskName(loaded.info.task)).c_str(),
                static_cast<long long>(loaded.info.input_size),
                static_cast<long long>(loaded.parameter_count));
  }
  return absl::OkStatus();
}

absl::Status Run(const ModelRegistry& registry, const RunOptions& options) {
  for (const auto& [flag, value] :
       {std::pair<const char*, const std::string*>{"--model", &options.model},
        {"--input", &options.input},
        {"--output", &options.output}}) {
    if (value->empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is required"));
  }
  VITSERVE_ASSIGN_OR_RETURN(const at::ScalarType dtype, ParsePrecision(options.precision));
  VITSERVE_ASSIGN_OR_RETURN(const c10::Device device, ParseDevice(options.device));
  if (device.is_cuda()) {
    // A reference run: fp32 means fp32, so TF32 tensor-core math (LibTorch's default for cuDNN
    // convolutions) is off for matmuls and convolutions alike.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }

  VITSERVE_ASSIGN_OR_RETURN(SafetensorsFile input_file, SafetensorsFile::Open(options.input));
  VITSERVE_ASSIGN_OR_RETURN(at::Tensor input, input_file.Tensor("input"));
  if (input.dim() != 4 || input.size(1) != 3) {
    return absl::InvalidArgumentError(absl::StrCat("tensor 'input' in '", options.input,
                                                   "' must be [N,3,H,W], got ",
                                                   c10::str(input.sizes())));
  }

  LoadOptions load;
  load.weights_path = options.weights;
  load.fuse_for_inference = options.fuse;
  load.approximate_gelu = options.approximate_gelu;
  VITSERVE_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(registry, options.model, load));
  if (loaded.random_weights) {
    std::fprintf(stderr, "warning: no --weights given; %s runs with random weights\n",
                 options.model.c_str());
  }

  at::Tensor logits;
  try {
    c10::InferenceMode inference_mode;
    loaded.module->to(device, dtype);
    VITSERVE_ASSIGN_OR_RETURN(logits, ForwardOrStatus(*loaded.module, input.to(device, dtype)));
    logits = logits.to(at::kCPU, at::kFloat);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("running ", options.model, " on ", options.device,
                                            " failed: ", e.what_without_backtrace()));
  }
  return WriteSafetensors(
      options.output, {{"logits", logits}},
      {{"model", options.model}, {"precision", options.precision}, {"device", options.device}});
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs one vitserve zoo model on a tensor file.\n\n"
      "  vitserve-run-model --model NAME [--weights FILE.safetensors] --input in.safetensors\n"
      "      --output out.safetensors [--device cpu|cuda[:N]] [--precision fp32|fp16|bf16]\n"
      "      [--no-fuse]\n"
      "  vitserve-run-model --list\n\n"
      "Reads tensor \"input\" [N,3,H,W] (already normalised), runs under c10::InferenceMode in\n"
      "eval mode and writes tensor \"logits\" [N,num_classes] as F32. Checkpoints use timm's\n"
      "state-dict names (tools/convert_checkpoint.py converts .pth files). Exit status 1 on any\n"
      "error, with the reason on stderr.");
  // abseil's --help lists only flags of a file named after the binary; ours is main.cc.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "run_model/main.cc");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  // abseil spells negated booleans --nofuse; accept the more common --no-fuse as well.
  std::vector<char*> args(argv, argv + argc);
  static char kNoFuse[] = "--nofuse";
  for (char*& arg : args) {
    if (std::strcmp(arg, "--no-fuse") == 0) arg = kNoFuse;
  }
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());

  const vitserve::ModelRegistry registry = vitserve::BuiltinModelRegistry();
  absl::Status status;
  if (absl::GetFlag(FLAGS_list)) {
    status = vitserve::ListModels(registry);
  } else {
    vitserve::RunOptions options;
    options.model = absl::GetFlag(FLAGS_model);
    options.weights = absl::GetFlag(FLAGS_weights);
    options.input = absl::GetFlag(FLAGS_input);
    options.output = absl::GetFlag(FLAGS_output);
    options.device = absl::GetFlag(FLAGS_device);
    options.precision = absl::GetFlag(FLAGS_precision);
    options.fuse = absl::GetFlag(FLAGS_fuse);
    options.approximate_gelu = absl::GetFlag(FLAGS_approximate_gelu);
    status = vitserve::Run(registry, options);
  }
  if (!status.ok()) {
    std::fprintf(stderr, "vitserve-run-model: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

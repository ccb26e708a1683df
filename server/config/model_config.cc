#include "server/config/model_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "models/model_info.h"
#include "server/config/file_util.h"

namespace vitserve {
namespace {

// Collects the text-format parser's messages with 1-based positions. Protobuf words an unknown
// field as `Message type "X" has no field named "f".`; we lead with `unknown field "f"` so the
// message says what is wrong before it says where.
class ConfigErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit ConfigErrorCollector(std::string path) : path_(std::move(path)) {}

  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    errors_.push_back(absl::StrCat(path_, ":", line + 1, ":", column + 1, ": ",
                                   Reword(message)));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column,
                  const std::string& message) override {}

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  static std::string Reword(const std::string& message) {
    constexpr std::string_view kNoField = "has no field named \"";
    const size_t at = message.find(kNoField);
    if (at == std::string::npos) return message;
    const size_t start = at + kNoField.size();
    const size_t end = message.find('"', start);
    if (end == std::string::npos) return message;
    std::string type;
    constexpr std::string_view kType = "Message type \"";
    if (size_t t = message.find(kType); t != std::string::npos) {
      const size_t type_start = t + kType.size();
      const size_t type_end = message.find('"', type_start);
      if (type_end != std::string::npos) type = message.substr(type_start, type_end - type_start);
    }
    std::string result =
        absl::StrCat("unknown field \"", message.substr(start, end - start), "\"");
    if (!type.empty()) absl::StrAppend(&result, " in ", type);
    return result;
  }

  std::string path_;
  std::vector<std::string> errors_;
};

absl::Status FieldError(const std::string& config_path, absl::string_view field,
                        absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(config_path, ": field '", field, "' ", problem));
}

}  // namespace

v1::Task ToProtoTask(ModelTask task) {
  switch (task) {
    case ModelTask::kClassification:
      return v1::CLASSIFICATION;
    case ModelTask::kDetection:
      return v1::DETECTION;
    case ModelTask::kSegmentation:
      return v1::SEGMENTATION;
  }
  return v1::TASK_UNSPECIFIED;
}

ModelTask FromProtoTask(v1::Task task) {
  switch (task) {
    case v1::DETECTION:
      return ModelTask::kDetection;
    case v1::SEGMENTATION:
      return ModelTask::kSegmentation;
    default:
      return ModelTask::kClassification;
  }
}

absl::StatusOr<v1::ModelConfig> ParseModelConfigText(const std::string& text,
                                                     const std::string& path) {
  v1::ModelConfig config;
  ConfigErrorCollector collector(path);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  if (!parser.ParseFromString(text, &config)) {
    if (collector.errors().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid ModelConfig"));
    }
    return absl::InvalidArgumentError(absl::StrJoin(collector.errors(), "\n"));
  }
  return config;
}

absl::StatusOr<v1::ModelConfig> ParseModelConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat("model config '", path, "' does not exist"));
    }
    return absl::PermissionDeniedError(absl::StrCat("cannot read model config '", path, "'"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return ParseModelConfigText(text.str(), path);
}

absl::Status NormalizeModelConfig(const ModelRegistry& registry, const ServerDefaults& defaults,
                                  const std::string& model_dir, const std::string& config_path,
                                  v1::ModelConfig* config) {
  if (config->architecture().empty()) {
    return FieldError(config_path, "architecture",
                      absl::StrCat("is required; known architectures: ",
                                   absl::StrJoin(registry.Names(), ", ")));
  }
  absl::StatusOr<const ModelInfo*> found = registry.FindInfo(config->architecture());
  if (!found.ok()) {
    return FieldError(config_path, "architecture",
                      absl::StrCat("names unknown architecture '", config->architecture(),
                                   "'; known architectures: ",
                                   absl::StrJoin(registry.Names(), ", ")));
  }
  const ModelInfo& info = **found;

  // Name: the directory's (Triton's rule: a config may repeat it but not contradict it).
  const std::string expected_name =
      model_dir.empty() ? config->architecture() : Basename(model_dir);
  if (config->name().empty()) {
    config->set_name(expected_name);
  } else if (config->name() != expected_name) {
    return FieldError(config_path, "name",
                      absl::StrCat("is '", config->name(), "' but the model directory is '",
                                   expected_name, "'; they must match (or leave name unset)"));
  }

  const v1::Task arch_task = ToProtoTask(info.task);
  if (config->task() == v1::TASK_UNSPECIFIED) {
    config->set_task(arch_task);
  } else if (config->task() != arch_task) {
    std::vector<std::string> supported;
    bool supports = false;
    for (ModelTask task : info.tasks) {
      supported.emplace_back(v1::Task_Name(ToProtoTask(task)));
      supports = supports || ToProtoTask(task) == config->task();
    }
    if (!supports) {
      return FieldError(config_path, "task",
                        absl::StrCat("is ", v1::Task_Name(config->task()), " but architecture '",
                                     info.architecture, "' can only be built for ",
                                     absl::StrJoin(supported, ", ")));
    }
    if (config->num_classes() == 0) {
      return FieldError(config_path, "num_classes",
                        absl::StrCat("must be set: architecture '", info.architecture,
                                     "' has no class count of its own for ",
                                     v1::Task_Name(config->task())));
    }
  }
  if (config->num_classes() == 0) config->set_num_classes(static_cast<uint32_t>(info.num_classes));

  if (!model_dir.empty()) {
    if (config->weights().empty()) config->set_weights(kDefaultWeightsFile);
    if (config->labels().empty()) {
      if (IsRegularFile(JoinPath(model_dir, kDefaultLabelsFile))) {
        config->set_labels(kDefaultLabelsFile);
      }
    }
  }

  v1::InputConfig* input = config->mutable_input();
  if (input->size() == 0) input->set_size(static_cast<uint32_t>(info.input_size));
  if (info.input_size_fixed && input->size() != static_cast<uint32_t>(info.input_size)) {
    // Said here rather than at load, where only the warm-up's forward pass would find it.
    return FieldError(config_path, "input.size",
                      absl::StrCat("is ", input->size(), " but architecture '", info.architecture,
                                   "' takes only ", info.input_size, " px images (its position ",
                                   "embedding is laid out for that size); remove input.size or ",
                                   "set it to ", info.input_size));
  }
  if (input->mean_size() == 0) {
    for (float v : info.mean) input->add_mean(v);
  }
  if (input->std_size() == 0) {
    for (float v : info.std) input->add_std(v);
  }
  if (input->crop_pct() == 0.0f) input->set_crop_pct(static_cast<float>(info.crop_pct));
  if (input->interpolation().empty()) input->set_interpolation(info.interpolation);

  if (config->device().empty()) config->set_device(defaults.device);
  if (config->precision() == v1::PRECISION_UNSPECIFIED) {
    config->set_precision(defaults.precision);
  }
  const bool on_cuda = absl::StartsWith(config->device(), "cuda");
  if (config->instance_count() == 0) {
    const uint32_t automatic = on_cuda ? kAutoInstanceCountOnCuda : kAutoInstanceCountOnCpu;
    config->set_instance_count(defaults.instance_count > 0 ? defaults.instance_count : automatic);
  }
  if (config->warmup_iterations() == 0) config->set_warmup_iterations(1);
  if (!config->has_cuda_graphs()) config->set_cuda_graphs(defaults.cuda_graphs);
  if (!config->has_channels_last()) config->set_channels_last(defaults.channels_last && on_cuda);
  if (!config->has_approximate_gelu()) config->set_approximate_gelu(defaults.approximate_gelu);
  if (config->kserve_input_datatype().empty()) {
    config->set_kserve_input_datatype(defaults.kserve_input_datatype);
  }
  if (absl::Status s = ValidateKserveInputDatatype(config->kserve_input_datatype()); !s.ok()) {
    return FieldError(config_path, "kserve_input_datatype", s.message());
  }
  // Device preprocessing is classification's (a resize and centre crop on the device);
  // detection and segmentation keep the whole image and map their outputs back to it.
  const bool classifies = config->task() == v1::CLASSIFICATION;
  if (!config->has_device_preprocessing()) {
    config->set_device_preprocessing(defaults.device_preprocessing && on_cuda && classifies);
  } else if (config->device_preprocessing() && !classifies) {
    return FieldError(config_path, "device_preprocessing",
                      "applies to classification models only");
  }
  // GPU JPEG decoding feeds device preprocessing, on a GPU.
  if (!config->has_gpu_jpeg_decoding()) {
    config->set_gpu_jpeg_decoding(defaults.gpu_jpeg_decoding && on_cuda &&
                                  config->device_preprocessing());
  } else if (config->gpu_jpeg_decoding() && !on_cuda) {
    return FieldError(config_path, "gpu_jpeg_decoding", "needs a CUDA device");
  } else if (config->gpu_jpeg_decoding() && !config->device_preprocessing()) {
    return FieldError(config_path, "gpu_jpeg_decoding",
                      "needs device_preprocessing: true (the decoded pixels are preprocessed on "
                      "the GPU)");
  }

  if (config->task() == v1::DETECTION) {
    v1::DetectionConfig* detection = config->mutable_detection();
    if (detection->score_threshold() == 0.0f) detection->set_score_threshold(kDefaultScoreThreshold);
    if (detection->max_detections() == 0) detection->set_max_detections(kDefaultMaxDetections);
  }

  v1::BatchingPolicy* batching = config->mutable_batching();
  if (batching->max_batch_size() == 0) batching->set_max_batch_size(defaults.max_batch_size);
  // The flag's sizes are a server-wide default: those above this model's max batch are left
  // out, where a config's own list must fit it (ValidateModelConfig).
  if (config->cuda_graph_batch_sizes_size() == 0) {
    for (uint32_t size : defaults.cuda_graph_batch_sizes) {
      if (size <= batching->max_batch_size()) config->add_cuda_graph_batch_sizes(size);
    }
  }
  // max_queue_delay_us == 0 is a meaningful "do not wait" and cannot be told apart from unset
  // in proto3; an explicit 0 therefore also takes the default. Use 1 for "almost no wait".
  if (batching->max_queue_delay_us() == 0) {
    batching->set_max_queue_delay_us(defaults.max_queue_delay_us);
  }
  if (batching->max_queue_size() == 0) batching->set_max_queue_size(defaults.max_queue_size);
  if (batching->default_timeout_ms() == 0) {
    batching->set_default_timeout_ms(defaults.default_timeout_ms);
  }
  return absl::OkStatus();
}

int DefaultIntraOpThreads(std::string_view device, int cores, int instance_count_flag) {
  if (device.substr(0, 4) == "cuda") return 1;
  const int instances =
      instance_count_flag > 0 ? instance_count_flag : static_cast<int>(kAutoInstanceCountOnCpu);
  return std::max(1, cores / instances);
}

absl::Status ValidateKserveInputDatatype(const std::string& datatype) {
  if (datatype == "FP32" || datatype == "UINT8") return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("is '", datatype, "'; use FP32 or UINT8"));
}

absl::Status ValidateDeviceString(const std::string& device) {
  if (device == "cpu" || device == "cuda") return absl::OkStatus();
  constexpr absl::string_view kCuda = "cuda:";
  absl::string_view view(device);
  if (absl::StartsWith(view, kCuda)) {
    absl::string_view index = view.substr(kCuda.size());
    int value = 0;
    if (!index.empty() && index.find_first_not_of("0123456789") == absl::string_view::npos &&
        absl::SimpleAtoi(index, &value)) {
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device '", device, "' is not one of \"cpu\", \"cuda\", \"cuda:N\""));
}

absl::Status ValidateModelConfig(const v1::ModelConfig& config, const std::string& config_path) {
  if (config.name().empty()) return FieldError(config_path, "name", "must not be empty");
  if (config.name().find('/') != std::string::npos || config.name() == "." ||
      config.name() == "..") {
    return FieldError(config_path, "name",
                      absl::StrCat("'", config.name(), "' is not a valid model name"));
  }
  if (config.architecture().empty()) {
    return FieldError(config_path, "architecture", "is required");
  }
  if (config.task() == v1::TASK_UNSPECIFIED) {
    return FieldError(config_path, "task", "must be set (normalisation fills it)");
  }
  if (config.has_detection()) {
    if (config.task() != v1::DETECTION) {
      return FieldError(config_path, "detection", "applies to detection models only");
    }
    if (!(config.detection().score_threshold() > 0.0f && config.detection().score_threshold() <= 1.0f)) {
      return FieldError(config_path, "detection.score_threshold",
                        absl::StrCat("is ", config.detection().score_threshold(),
                                     "; allowed: (0, 1]"));
    }
    if (config.detection().max_detections() > kMaxDetections) {
      return FieldError(config_path, "detection.max_detections",
                        absl::StrCat("is ", config.detection().max_detections(),
                                     "; allowed: 1..", kMaxDetections));
    }
  }
  if (config.weights().empty() && !config.allow_random_weights()) {
    return FieldError(config_path, "weights",
                      "is empty; name a .safetensors file or set allow_random_weights: true");
  }

  const v1::InputConfig& input = config.input();
  if (input.size() < 1 || input.size() > kMaxInputSize) {
    return FieldError(config_path, "input.size",
                      absl::StrCat("is ", input.size(), "; allowed: 1..", kMaxInputSize));
  }
  if (input.mean_size() != 3) {
    return FieldError(config_path, "input.mean",
                      absl::StrCat("has ", input.mean_size(), " values; need 3 (R, G, B)"));
  }
  if (input.std_size() != 3) {
    return FieldError(config_path, "input.std",
                      absl::StrCat("has ", input.std_size(), " values; need 3 (R, G, B)"));
  }
  for (int i = 0; i < 3; ++i) {
    if (!(input.std(i) > 0.0f)) {
      return FieldError(config_path, "input.std",
                        absl::StrCat("value ", i, " is ", input.std(i), "; must be > 0"));
    }
  }
  if (!(input.crop_pct() > 0.0f && input.crop_pct() <= 1.0f)) {
    return FieldError(config_path, "input.crop_pct",
                      absl::StrCat("is ", input.crop_pct(), "; allowed: (0, 1]"));
  }
  if (input.interpolation() != "bicubic" && input.interpolation() != "bilinear") {
    return FieldError(config_path, "input.interpolation",
                      absl::StrCat("is '", input.interpolation(),
                                   "'; allowed: \"bicubic\", \"bilinear\""));
  }

  if (absl::Status s = ValidateDeviceString(config.device()); !s.ok()) {
    return FieldError(config_path, "device", s.message());
  }
  if (config.precision() == v1::PRECISION_UNSPECIFIED) {
    return FieldError(config_path, "precision", "must be FP32, FP16 or BF16");
  }
  if (config.instance_count() < 1 || config.instance_count() > kMaxInstanceCount) {
    return FieldError(config_path, "instance_count",
                      absl::StrCat("is ", config.instance_count(), "; allowed: 1..",
                                   kMaxInstanceCount));
  }

  const v1::BatchingPolicy& batching = config.batching();
  if (batching.max_batch_size() < 1 || batching.max_batch_size() > kMaxBatchSizeLimit) {
    return FieldError(config_path, "batching.max_batch_size",
                      absl::StrCat("is ", batching.max_batch_size(), "; allowed: 1..",
                                   kMaxBatchSizeLimit));
  }
  // Lists of batch sizes: each must be a batch the batcher can form.
  const auto check_batch_sizes =
      [&](absl::string_view field,
          const google::protobuf::RepeatedField<uint32_t>& sizes) -> absl::Status {
    for (uint32_t size : sizes) {
      if (size < 1 || size > batching.max_batch_size()) {
        return FieldError(config_path, field,
                          absl::StrCat("holds ", size, "; each must be in 1..max_batch_size (",
                                       batching.max_batch_size(), ")"));
      }
    }
    return absl::OkStatus();
  };
  VITSERVE_RETURN_IF_ERROR(
      check_batch_sizes("batching.preferred_batch_sizes", batching.preferred_batch_sizes()));
  VITSERVE_RETURN_IF_ERROR(
      check_batch_sizes("cuda_graph_batch_sizes", config.cuda_graph_batch_sizes()));
  // One hour: far beyond any useful batching delay, and keeps absl::Microseconds exact.
  constexpr uint64_t kMaxQueueDelayUs = 3'600'000'000ull;
  if (batching.max_queue_delay_us() > kMaxQueueDelayUs) {
    return FieldError(config_path, "batching.max_queue_delay_us",
                      absl::StrCat("is ", batching.max_queue_delay_us(), "; allowed: 0..",
                                   kMaxQueueDelayUs));
  }
  if (batching.max_queue_size() < 1) {
    return FieldError(config_path, "batching.max_queue_size", "must be >= 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ModelConfig> QuickModeConfig(const ModelRegistry& registry,
                                                const ServerDefaults& defaults,
                                                const std::string& architecture,
                                                const std::string& weights_path) {
  v1::ModelConfig config;
  config.set_architecture(architecture);
  config.set_weights(weights_path);
  config.set_allow_random_weights(weights_path.empty());
  const std::string where = absl::StrCat("--model ", architecture);
  VITSERVE_RETURN_IF_ERROR(NormalizeModelConfig(registry, defaults, "", where, &config));
  VITSERVE_RETURN_IF_ERROR(ValidateModelConfig(config, where));
  return config;
}

absl::StatusOr<std::vector<std::string>> ReadLabels(const std::string& path,
                                                    int64_t expected_count) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("labels file '", path, "' cannot be read"));
  std::vector<std::string> labels;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(std::move(line));
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();
  if (static_cast<int64_t>(labels.size()) != expected_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels file '", path, "' has ", labels.size(),
                     " lines but the model has ", expected_count, " classes"));
  }
  return labels;
}

}  // namespace vitserve

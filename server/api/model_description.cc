#include "server/api/model_description.h"

#include "absl/strings/str_cat.h"
#include "server/config/model_config.h"

namespace vitserve {
namespace {

std::array<float, 3> ThreeOr(const google::protobuf::RepeatedField<float>& values,
                             const std::array<float, 3>& fallback) {
  if (values.size() != 3) return fallback;
  return {values[0], values[1], values[2]};
}

}  // namespace

int64_t ModelInputSize(const ServableModel& model) {
  const uint32_t size = model.config().input().size();
  return size > 0 ? size : model.info().input_size;
}

std::array<float, 3> ModelMean(const ServableModel& model) {
  return ThreeOr(model.config().input().mean(), model.info().mean);
}

std::array<float, 3> ModelStd(const ServableModel& model) {
  return ThreeOr(model.config().input().std(), model.info().std);
}

std::string PrecisionName(v1::Precision precision) {
  switch (precision) {
    case v1::FP16:
      return "fp16";
    case v1::BF16:
      return "bf16";
    default:
      return "fp32";
  }
}

std::string StateName(const ModelStatus& status) {
  switch (status.state) {
    case ModelState::kReady:
      return "READY";
    case ModelState::kLoading:
      return "LOADING";
    case ModelState::kUnavailable:
      return "UNAVAILABLE";
    case ModelState::kFailed:
      return absl::StrCat("FAILED: ", status.reason);
  }
  return "UNAVAILABLE";
}

v1::ModelDescription DescribeModel(const ServableModel& model, const ModelStatus& status,
                                   bool with_labels) {
  const v1::ModelConfig& config = model.config();
  const ModelInfo& info = model.info();
  v1::ModelDescription d = DescribeUnloadedModel(status);
  d.set_name(model.name());
  d.set_architecture(config.architecture().empty() ? info.architecture : config.architecture());
  d.set_task(config.task() != v1::TASK_UNSPECIFIED ? config.task() : ToProtoTask(info.task));
  d.set_input_size(static_cast<uint32_t>(ModelInputSize(model)));
  for (float v : ModelMean(model)) d.add_mean(v);
  for (float v : ModelStd(model)) d.add_std(v);
  d.set_num_classes(static_cast<uint32_t>(info.num_classes));
  if (with_labels) {
    for (const std::string& label : model.labels()) d.add_labels(label);
  }
  d.set_parameter_count(model.parameter_count());
  d.set_precision(PrecisionName(config.precision()));
  d.set_device(config.device());
  *d.mutable_batching() = config.batching();
  d.set_random_weights(model.random_weights());
  d.set_instance_count(config.instance_count() > 0 ? config.instance_count() : 1);
  d.set_device_preprocessing(config.device_preprocessing());
  d.set_channels_last(config.channels_last());
  d.set_approximate_gelu(config.approximate_gelu());
  d.set_gpu_jpeg_decoding(config.gpu_jpeg_decoding());
  return d;
}

v1::ModelDescription DescribeUnloadedModel(const ModelStatus& status) {
  v1::ModelDescription d;
  d.set_name(status.name);
  d.set_ready(status.state == ModelState::kReady);
  d.set_state(StateName(status));
  return d;
}

}  // namespace vitserve

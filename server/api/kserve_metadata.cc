#include "server/api/kserve_metadata.h"

#include <cstdint>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "server/api/call_util.h"
#include "server/api/kserve_tensor.h"
#include "server/api/model_description.h"
#include "server/api/model_statistics.h"
#include "server/api/task_calls.h"

namespace vitserve {
namespace {

// Triton's repository states: READY, LOADING, UNAVAILABLE (with the reason).
const char* RepositoryState(ModelState state) {
  switch (state) {
    case ModelState::kReady:
      return "READY";
    case ModelState::kLoading:
      return "LOADING";
    default:
      return "UNAVAILABLE";
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ServableModel>> GetVersionedModel(const ModelManager& manager,
                                                                       const std::string& name,
                                                                       const std::string& version) {
  if (name.empty()) return absl::InvalidArgumentError("no model name given");
  if (!version.empty() && version != kModelVersion) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '", version,
                                            "'; its only version is '", kModelVersion, "'"));
  }
  return manager.Get(name);
}

bool IsModelReady(const ModelManager& manager, const std::string& name,
                  const std::string& version) {
  if (!version.empty() && version != kModelVersion) return false;
  for (const ModelStatus& status : manager.List()) {
    if (status.name == name) return status.state == ModelState::kReady;
  }
  return false;
}

void FillServerMetadata(const std::string& server_version,
                        inference::ServerMetadataResponse* response) {
  response->set_name("vitserve");
  response->set_version(server_version);
  for (const char* extension : kKServeExtensions) response->add_extensions(extension);
}

void FillModelMetadata(const ServableModel& model, inference::ModelMetadataResponse* response) {
  response->set_name(model.name());
  response->add_versions(kModelVersion);
  const int64_t size = ModelInputSize(model);
  response->set_platform(kKServePlatform);
  auto* input = response->add_inputs();
  input->set_name(kKServeInputName);
  input->set_datatype(model.config().kserve_input_datatype());
  for (int64_t d : {int64_t{-1}, int64_t{3}, size, size}) input->add_shape(d);
  for (const KServeOutput& spec :
       KServeOutputsFor(model.info().task, model.info().num_classes, size)) {
    auto* output = response->add_outputs();
    output->set_name(spec.name);
    output->set_datatype(spec.datatype);
    output->add_shape(-1);
    for (int64_t d : spec.dims) output->add_shape(d);
  }
}

void FillModelConfig(const ServableModel& m, inference::ModelConfigResponse* response) {
  const v1::ModelConfig& config = m.config();
  const int64_t size = ModelInputSize(m);

  inference::ModelConfig* out = response->mutable_config();
  out->set_name(m.name());
  out->set_platform(kKServePlatform);
  out->set_backend(kKServeBackend);
  out->set_max_batch_size(static_cast<int32_t>(MaxRowsPerTask(m)));
  auto* input = out->add_input();
  input->set_name(kKServeInputName);
  input->set_data_type(config.kserve_input_datatype() == "UINT8" ? inference::TYPE_UINT8
                                                                  : inference::TYPE_FP32);
  input->set_format(inference::ModelInput::FORMAT_NCHW);
  for (int64_t d : {int64_t{3}, size, size}) input->add_dims(d);
  for (const KServeOutput& spec : KServeOutputsFor(m.info().task, m.info().num_classes, size)) {
    auto* output = out->add_output();
    output->set_name(spec.name);
    output->set_data_type(spec.datatype == "INT32" ? inference::TYPE_INT32 : inference::TYPE_FP32);
    for (int64_t d : spec.dims) output->add_dims(d);
  }

  auto* group = out->add_instance_group();
  group->set_name(absl::StrCat(m.name(), "_0"));
  group->set_count(config.instance_count() > 0 ? static_cast<int32_t>(config.instance_count()) : 1);
  const std::string& device = config.device();
  if (device.rfind("cuda", 0) == 0) {
    group->set_kind(inference::ModelInstanceGroup::KIND_GPU);
    const size_t colon = device.find(':');
    group->add_gpus(colon == std::string::npos ? 0 : std::atoi(device.c_str() + colon + 1));
  } else {
    group->set_kind(inference::ModelInstanceGroup::KIND_CPU);
  }

  auto* batching = out->mutable_dynamic_batching();
  for (uint32_t size : config.batching().preferred_batch_sizes()) {
    batching->add_preferred_batch_size(static_cast<int32_t>(size));
  }
  batching->set_max_queue_delay_microseconds(config.batching().max_queue_delay_us());

  auto& parameters = *out->mutable_parameters();
  parameters["architecture"].set_string_value(config.architecture());
  parameters["precision"].set_string_value(PrecisionName(config.precision()));
  parameters["device"].set_string_value(device);
  parameters["uint8_input"].set_string_value(
      "UINT8 inputs are raw RGB pixels; the server divides by 255 and normalises them");
  if (m.random_weights()) {
    parameters["warning"].set_string_value(
        "serving RANDOM (untrained) weights: predictions are meaningless");
  }
}

absl::Status FillStatisticsResponse(const ModelManager& manager, const std::string& name,
                                    const std::string& version,
                                    inference::ModelStatisticsResponse* response) {
  if (!name.empty()) {
    auto model = GetVersionedModel(manager, name, version);
    if (!model.ok()) return model.status();
    FillModelStatistics(**model, kModelVersion, response->add_model_stats());
    return absl::OkStatus();
  }
  for (const ModelStatus& status : manager.List()) {
    if (status.state != ModelState::kReady) continue;
    auto model = manager.Get(status.name);
    if (model.ok()) FillModelStatistics(**model, kModelVersion, response->add_model_stats());
  }
  return absl::OkStatus();
}

void FillRepositoryIndex(const ModelManager& manager, bool ready_only,
                         inference::RepositoryIndexResponse* response) {
  for (const ModelStatus& status : manager.List()) {
    if (ready_only && status.state != ModelState::kReady) continue;
    auto* index = response->add_models();
    index->set_name(status.name);
    index->set_version(kModelVersion);
    index->set_state(RepositoryState(status.state));
    index->set_reason(status.reason);
  }
}

}  // namespace vitserve

#include "server/api/kserve_tensor.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/kserve_datatype.h"
#include "common/status_macros.h"
#include "models/heads/center_decode.h"
#include "server/api/image_input.h"
#include "server/config/model_config.h"
#include "server/image/dense_output.h"

namespace vitserve {
namespace {

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// Bytes per element of the datatypes a model input accepts, 0 for any other.
int64_t AcceptedElementBytes(const std::string& datatype) {
  const bool accepted = datatype == "FP32" || datatype == "FP16" || datatype == "UINT8";
  return accepted ? KServeDatatypeBytes(datatype) : 0;
}

}  // namespace

void NormalisePlanarPixels(const uint8_t* pixels, int64_t images, int64_t plane,
                           const std::array<float, 3>& mean, const std::array<float, 3>& std,
                           float* out) {
  // One multiply-add per pixel, which the compiler vectorises: (v / 255 - m) / s rewritten as
  // v · (1 / (255 s)) − m / s, within 2 float roundings of the formula (about 5e-7 here).
  for (int64_t image = 0; image < images; ++image) {
    for (size_t c = 0; c < 3; ++c) {
      const float scale = 1.0f / (255.0f * std[c]);
      const float shift = -mean[c] / std[c];
      for (int64_t i = 0; i < plane; ++i) out[i] = static_cast<float>(pixels[i]) * scale + shift;
      pixels += plane;
      out += plane;
    }
  }
}

ExternalRawInputs RawInputsOfViews(std::vector<std::string_view> views) {
  ExternalRawInputs raw_inputs;
  for (std::string_view view : views) raw_inputs.sizes.push_back(view.size());
  raw_inputs.copy = [views = std::move(views)](size_t index, uint8_t* out) {
    if (index >= views.size()) {
      return absl::InternalError(absl::StrCat("no raw input ", index, " of ", views.size()));
    }
    std::memcpy(out, views[index].data(), views[index].size());
    return absl::OkStatus();
  };
  return raw_inputs;
}

absl::StatusOr<InferInput> ParseInferInput(const inference::ModelInferRequest& request,
                                           const InferInputSpec& spec,
                                           const ExternalRawInputs* external) {
  const int64_t s = spec.input_size;
  const std::string expected = absl::StrCat(
      "[N,3,", s, ",", s, "] with 1 <= N <= ", spec.max_batch_size, ", or [3,", s, ",", s, "]");
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected exactly 1 input tensor ('", kKServeInputName, "'), got ", request.inputs_size()));
  }
  const auto& input = request.inputs(0);
  if (input.name() != kKServeInputName) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown input '", input.name(), "'; the model's only input is '", kKServeInputName, "'"));
  }
  const int64_t element_bytes = AcceptedElementBytes(input.datatype());
  if (element_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", kKServeInputName, "' has datatype '", input.datatype(),
        "'; allowed: FP32 or FP16 (normalised model input) and UINT8 (RGB pixels, normalised "
        "by the server)"));
  }
  const auto& shape = input.shape();
  const bool batched = shape.size() == 4;
  const int offset = batched ? 1 : 0;
  if ((shape.size() != 3 && shape.size() != 4) || shape[offset] != 3 || shape[offset + 1] != s ||
      shape[offset + 2] != s) {
    return absl::InvalidArgumentError(absl::StrCat("input '", kKServeInputName, "' has shape ",
                                                   ShapeString(shape), "; expected ", expected));
  }
  const int64_t n = batched ? shape[0] : 1;
  if (n < 1 || n > spec.max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", kKServeInputName, "' has shape ", ShapeString(shape), ": batch size ", n,
        " is outside 1..", spec.max_batch_size, " (the model's max_batch_size)"));
  }
  const int64_t elements = n * 3 * s * s;
  const int64_t bytes = elements * element_bytes;

  const at::ScalarType dtype = input.datatype() == "FP32"   ? at::kFloat
                               : input.datatype() == "FP16" ? at::kHalf
                                                            : at::kByte;
  if (external != nullptr && request.raw_input_contents_size() > 0) {
    return absl::InternalError("raw_input_contents both in the message and left outside it");
  }
  const size_t raw_count = external != nullptr
                               ? external->sizes.size()
                               : static_cast<size_t>(request.raw_input_contents_size());
  const std::vector<int64_t> sizes = {n, 3, s, s};
  // The model's input, written once: FP32 bytes land here directly; FP16 and UINT8 go through a
  // scratch tensor of their own type and are converted into it.
  VITSERVE_ASSIGN_OR_RETURN(at::Tensor result_tensor,
                            AllocateInput(sizes, at::kFloat, spec.pin_memory));
  at::Tensor received = dtype == at::kFloat ? result_tensor : at::empty(sizes, dtype);
  if (raw_count > 0) {
    if (raw_count != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "raw_input_contents has ", raw_count, " entries; expected one per input (1)"));
    }
    const size_t raw_size =
        external != nullptr ? external->sizes[0] : request.raw_input_contents(0).size();
    if (static_cast<int64_t>(raw_size) != bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", kKServeInputName, "' has ", raw_size, " bytes in raw_input_contents; ",
          input.datatype(), " ", ShapeString(shape), " needs ", bytes, " bytes"));
    }
    auto* out = static_cast<uint8_t*>(received.data_ptr());
    if (external != nullptr) {
      VITSERVE_RETURN_IF_ERROR(external->copy(0, out));
    } else {
      std::memcpy(out, request.raw_input_contents(0).data(), raw_size);
    }
  } else if (input.datatype() == "FP32") {
    const auto& values = input.contents().fp32_contents();
    if (values.size() != elements) {
      return absl::InvalidArgumentError(absl::StrCat("input '", kKServeInputName, "' has ",
                                                     values.size(), " values in fp32_contents; ",
                                                     ShapeString(shape), " needs ", elements));
    }
    std::memcpy(received.data_ptr(), values.data(), bytes);
  } else if (input.datatype() == "UINT8") {
    const auto& values = input.contents().uint_contents();
    if (values.size() != elements) {
      return absl::InvalidArgumentError(absl::StrCat("input '", kKServeInputName, "' has ",
                                                     values.size(), " values in uint_contents; ",
                                                     ShapeString(shape), " needs ", elements));
    }
    uint8_t* out = received.data_ptr<uint8_t>();
    for (int64_t i = 0; i < elements; ++i) {
      if (values[i] > 255) {
        return absl::InvalidArgumentError(absl::StrCat("input '", kKServeInputName,
                                                       "': UINT8 value ", values[i], " at ", i,
                                                       " is outside 0..255"));
      }
      out[i] = static_cast<uint8_t>(values[i]);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", kKServeInputName, "' (", input.datatype(),
                     ") carries no data; send its bytes in raw_input_contents"));
  }

  InferInput result;
  result.batched = batched;
  if (dtype == at::kByte) {
    NormalisePlanarPixels(received.data_ptr<uint8_t>(), n, s * s, spec.mean, spec.std,
                          result_tensor.data_ptr<float>());
  } else if (dtype == at::kHalf) {
    result_tensor.copy_(received);
  }
  result.tensor = std::move(result_tensor);
  return result;
}

std::vector<KServeOutput> KServeOutputsFor(ModelTask task, int64_t num_classes,
                                           int64_t input_size) {
  switch (task) {
    case ModelTask::kDetection:
      return {{kKServeBoxesName, "FP32", {-1, 4}},
              {kKServeScoresName, "FP32", {-1}},
              {kKServeClassesName, "INT32", {-1}},
              {kKServeNumDetectionsName, "INT32", {}}};
    case ModelTask::kSegmentation:
      return {{kKServeLabelMapName, "INT32", {input_size, input_size}}};
    default:
      return {{kKServeOutputName, "FP32", {num_classes}}};
  }
}

absl::Status ValidateRequestedOutputs(const inference::ModelInferRequest& request,
                                      ModelTask task) {
  const std::vector<KServeOutput> outputs = KServeOutputsFor(task, 0, 0);
  std::vector<std::string> names;
  for (const KServeOutput& output : outputs) names.push_back(output.name);
  absl::flat_hash_set<std::string> seen;
  for (const auto& output : request.outputs()) {
    if (std::find(names.begin(), names.end(), output.name()) == names.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown output '", output.name(), "'; a ", std::string(ModelTaskName(task)),
          " model's outputs are '", absl::StrJoin(names, "', '"), "'"));
    }
    if (!seen.insert(output.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", output.name(), "' is asked for twice"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DetectSettings> DetectSettingsFromParameters(
    const inference::ModelInferRequest& request, const v1::DetectionConfig& defaults) {
  double score_threshold = 0;
  int64_t max_detections = 0;
  const auto& parameters = request.parameters();
  if (auto it = parameters.find("score_threshold"); it != parameters.end()) {
    const inference::InferParameter& p = it->second;
    if (p.parameter_choice_case() == inference::InferParameter::kDoubleParam) {
      score_threshold = p.double_param();
    } else if (p.parameter_choice_case() == inference::InferParameter::kInt64Param) {
      score_threshold = static_cast<double>(p.int64_param());
    } else {
      return absl::InvalidArgumentError("parameter 'score_threshold' must be a number in 0..1");
    }
  }
  if (auto it = parameters.find("max_detections"); it != parameters.end()) {
    const inference::InferParameter& p = it->second;
    if (p.parameter_choice_case() == inference::InferParameter::kInt64Param) {
      max_detections = p.int64_param();
    } else if (p.parameter_choice_case() == inference::InferParameter::kUint64Param) {
      max_detections = p.uint64_param() > static_cast<uint64_t>(kMaxDetections)
                           ? int64_t{kMaxDetections} + 1
                           : static_cast<int64_t>(p.uint64_param());
    } else {
      return absl::InvalidArgumentError("parameter 'max_detections' must be an integer");
    }
  }
  return ResolveDetectSettings(score_threshold, max_detections, defaults);
}

namespace {

// Appends output `name` with `tensor`'s bytes (CPU, contiguous, of `datatype`); without
// `batched`, the tensor's first dimension (1) is left out of the shape.
void AddOutput(const char* name, const char* datatype, const at::Tensor& tensor, bool batched,
               inference::ModelInferResponse* response) {
  auto* output = response->add_outputs();
  output->set_name(name);
  output->set_datatype(datatype);
  for (int64_t d = batched ? 0 : 1; d < tensor.dim(); ++d) output->add_shape(tensor.size(d));
  response->add_raw_output_contents(static_cast<const char*>(tensor.data_ptr()),
                                    tensor.numel() * tensor.element_size());
}

}  // namespace

absl::Status FillDetectionOutputs(const at::Tensor& outputs, int64_t num_classes,
                                  int64_t input_size, const DetectSettings& settings,
                                  bool batched, inference::ModelInferResponse* response) {
  if (!outputs.defined() || outputs.dim() != 4) {
    return absl::InternalError(absl::StrCat(
        "detection output must be [N,C+4,h,w], got ",
        outputs.defined() ? c10::str(outputs.sizes()) : std::string("nothing")));
  }
  const int64_t n = outputs.size(0), k = settings.max_detections;
  at::Tensor boxes = at::zeros({n, k, 4}, at::kFloat);
  at::Tensor scores = at::zeros({n, k}, at::kFloat);
  at::Tensor classes = at::full({n, k}, -1, at::kInt);
  at::Tensor counts = at::zeros({n}, at::kInt);
  auto box = boxes.accessor<float, 3>();
  auto score = scores.accessor<float, 2>();
  auto cls = classes.accessor<int32_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    VITSERVE_ASSIGN_OR_RETURN(std::vector<CenterDetection> found,
                              DecodeCenters(outputs[i], num_classes, input_size,
                                            settings.score_threshold, k));
    for (size_t j = 0; j < found.size(); ++j) {
      const CenterDetection& d = found[j];
      const int64_t slot = static_cast<int64_t>(j);
      box[i][slot][0] = d.x1;
      box[i][slot][1] = d.y1;
      box[i][slot][2] = d.x2;
      box[i][slot][3] = d.y2;
      score[i][slot] = d.score;
      cls[i][slot] = static_cast<int32_t>(d.class_index);
    }
    counts[i] = static_cast<int32_t>(found.size());
  }
  AddOutput(kKServeBoxesName, "FP32", boxes, batched, response);
  AddOutput(kKServeScoresName, "FP32", scores, batched, response);
  AddOutput(kKServeClassesName, "INT32", classes, batched, response);
  AddOutput(kKServeNumDetectionsName, "INT32", counts, batched, response);
  return absl::OkStatus();
}

absl::Status FillSegmentationOutputs(const at::Tensor& scores, int64_t input_size, bool batched,
                                     inference::ModelInferResponse* response) {
  if (!scores.defined() || scores.dim() != 4) {
    return absl::InternalError(absl::StrCat(
        "segmentation output must be [N,C,h,w], got ",
        scores.defined() ? c10::str(scores.sizes()) : std::string("nothing")));
  }
  // The input is the image: a stretch of an S x S image to S x S maps every pixel to itself.
  PreprocessSpec spec;
  spec.input_size = input_size;
  const int side = static_cast<int>(input_size);
  VITSERVE_ASSIGN_OR_RETURN(InputGeometry identity,
                            GeometryFor(ResizeMode::kStretch, side, side, spec));
  const int64_t n = scores.size(0);
  at::Tensor label_map = at::empty({n, input_size, input_size}, at::kInt);
  for (int64_t i = 0; i < n; ++i) {
    VITSERVE_ASSIGN_OR_RETURN(cv::Mat labels, LabelMapToOriginal(scores[i], identity));
    cv::Mat as_int(side, side, CV_32SC1, label_map[i].data_ptr<int32_t>());
    labels.convertTo(as_int, CV_32S);  // Writes into label_map's row (same size and type).
  }
  AddOutput(kKServeLabelMapName, "INT32", label_map, batched, response);
  return absl::OkStatus();
}

void KeepRequestedOutputs(const inference::ModelInferRequest& request,
                          inference::ModelInferResponse* response) {
  if (request.outputs().empty()) return;
  inference::ModelInferResponse kept;
  for (const auto& wanted : request.outputs()) {
    for (int i = 0; i < response->outputs_size(); ++i) {
      if (response->outputs(i).name() != wanted.name()) continue;
      *kept.add_outputs() = std::move(*response->mutable_outputs(i));
      kept.add_raw_output_contents(std::move(*response->mutable_raw_output_contents(i)));
    }
  }
  response->mutable_outputs()->Swap(kept.mutable_outputs());
  response->mutable_raw_output_contents()->Swap(kept.mutable_raw_output_contents());
}

void FillInferOutput(const at::Tensor& logits, bool batched,
                     inference::ModelInferResponse* response) {
  const at::Tensor out = logits.to(at::kCPU, at::kFloat).contiguous();
  auto* tensor = response->add_outputs();
  tensor->set_name(kKServeOutputName);
  tensor->set_datatype("FP32");
  if (batched) tensor->add_shape(out.size(0));
  tensor->add_shape(out.size(1));
  response->add_raw_output_contents(static_cast<const char*>(out.data_ptr()),
                                    out.numel() * sizeof(float));
}

}  // namespace vitserve

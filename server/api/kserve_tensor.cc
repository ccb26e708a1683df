#include "server/api/kserve_tensor.h"

#include <ATen/ATen.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitserve {
namespace {

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// Bytes per element of the accepted datatypes, 0 for any other.
int64_t ElementBytes(const std::string& datatype) {
  if (datatype == "FP32") return 4;
  if (datatype == "FP16") return 2;
  if (datatype == "UINT8") return 1;
  return 0;
}

}  // namespace

absl::StatusOr<InferInput> ParseInferInput(const inference::ModelInferRequest& request,
                                           const InferInputSpec& spec) {
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
  const int64_t element_bytes = ElementBytes(input.datatype());
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
  at::Tensor tensor = at::empty({n, 3, s, s}, at::TensorOptions().dtype(dtype));
  if (request.raw_input_contents_size() > 0) {
    if (request.raw_input_contents_size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat("raw_input_contents has ",
                                                     request.raw_input_contents_size(),
                                                     " entries; expected one per input (1)"));
    }
    const std::string& raw = request.raw_input_contents(0);
    if (static_cast<int64_t>(raw.size()) != bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", kKServeInputName, "' has ", raw.size(), " bytes in raw_input_contents; ",
          input.datatype(), " ", ShapeString(shape), " needs ", bytes, " bytes"));
    }
    std::memcpy(tensor.data_ptr(), raw.data(), raw.size());
  } else if (input.datatype() == "FP32") {
    const auto& values = input.contents().fp32_contents();
    if (values.size() != elements) {
      return absl::InvalidArgumentError(absl::StrCat("input '", kKServeInputName, "' has ",
                                                     values.size(), " values in fp32_contents; ",
                                                     ShapeString(shape), " needs ", elements));
    }
    std::memcpy(tensor.data_ptr(), values.data(), bytes);
  } else if (input.datatype() == "UINT8") {
    const auto& values = input.contents().uint_contents();
    if (values.size() != elements) {
      return absl::InvalidArgumentError(absl::StrCat("input '", kKServeInputName, "' has ",
                                                     values.size(), " values in uint_contents; ",
                                                     ShapeString(shape), " needs ", elements));
    }
    uint8_t* out = tensor.data_ptr<uint8_t>();
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
    const at::Tensor mean =
        at::tensor(std::vector<float>(spec.mean.begin(), spec.mean.end())).view({1, 3, 1, 1});
    const at::Tensor std =
        at::tensor(std::vector<float>(spec.std.begin(), spec.std.end())).view({1, 3, 1, 1});
    result.tensor = tensor.to(at::kFloat).div_(255.0f).sub_(mean).div_(std);
  } else {
    result.tensor = tensor.to(at::kFloat);
  }
  return result;
}

absl::Status ValidateRequestedOutputs(const inference::ModelInferRequest& request) {
  for (const auto& output : request.outputs()) {
    if (output.name() != kKServeOutputName) {
      return absl::InvalidArgumentError(absl::StrCat("unknown output '", output.name(),
                                                     "'; the model's only output is '",
                                                     kKServeOutputName, "'"));
    }
  }
  return absl::OkStatus();
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

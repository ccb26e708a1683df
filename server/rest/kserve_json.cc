#include "server/rest/kserve_json.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/result_json.h"
#include "common/status_macros.h"

namespace vitserve {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using nlohmann::json;

// One value of field `f` (element `index` of a repeated field, or the singular value when -1).
json FieldValue(const Message& message, const FieldDescriptor* f, int index) {
  const Reflection* r = message.GetReflection();
  const bool repeated = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return repeated ? r->GetRepeatedInt32(message, f, index) : r->GetInt32(message, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return repeated ? r->GetRepeatedInt64(message, f, index) : r->GetInt64(message, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return repeated ? r->GetRepeatedUInt32(message, f, index) : r->GetUInt32(message, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return repeated ? r->GetRepeatedUInt64(message, f, index) : r->GetUInt64(message, f);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return repeated ? r->GetRepeatedDouble(message, f, index) : r->GetDouble(message, f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return repeated ? r->GetRepeatedFloat(message, f, index) : r->GetFloat(message, f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return repeated ? r->GetRepeatedBool(message, f, index) : r->GetBool(message, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return (repeated ? r->GetRepeatedEnum(message, f, index) : r->GetEnum(message, f))->name();
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string value =
          repeated ? r->GetRepeatedString(message, f, index) : r->GetString(message, f);
      // Bytes as base64, as protobuf's JSON mapping has them.
      return f->type() == FieldDescriptor::TYPE_BYTES ? absl::Base64Escape(value) : value;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJson(repeated ? r->GetRepeatedMessage(message, f, index)
                                  : r->GetMessage(message, f));
  }
  return nullptr;
}

// A map entry's key as a JSON object key.
std::string MapKey(const Message& entry) {
  const FieldDescriptor* key = entry.GetDescriptor()->map_key();
  json value = FieldValue(entry, key, -1);
  return value.is_string() ? value.get<std::string>() : value.dump();
}

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// Appends the values of a JSON "data" array (flat or nested) to `out` as little-endian elements
// of `datatype`. Counts them in `*count`.
absl::Status AppendJsonData(const json& data, const std::string& datatype, const std::string& input,
                            std::string* out, int64_t* count) {
  if (data.is_array()) {
    for (const json& element : data) {
      if (absl::Status s = AppendJsonData(element, datatype, input, out, count); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (!data.is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("input '", input, "': 'data' holds ",
                                                   data.type_name(), ", not only numbers"));
  }
  if (datatype == "FP32") {
    const double wide = data.get<double>();
    if (std::fabs(wide) > std::numeric_limits<float>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("input '", input, "': ", data.dump(),
                                                     " is beyond the range of FP32"));
    }
    const float value = static_cast<float>(wide);
    out->append(reinterpret_cast<const char*>(&value), sizeof(value));
  } else if (datatype == "UINT8") {
    if (!data.is_number_integer() || data.get<int64_t>() < 0 || data.get<int64_t>() > 255) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", input, "': UINT8 data must be integers in [0, 255], got ", data.dump()));
    }
    out->push_back(static_cast<char>(data.get<int64_t>()));
  } else if (datatype == "FP16") {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", input, "': FP16 tensors must be sent as binary data (JSON has no "
        "half-precision numbers); use FP32 for JSON data"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", input, "': datatype '", datatype,
        "' is not accepted; vitserve's inputs are FP32, FP16 (binary data) or UINT8"));
  }
  ++*count;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ElementCount(const google::protobuf::RepeatedField<int64_t>& shape,
                                     const std::string& input) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat("input '", input, "': shape ",
                                                     ShapeText(shape), " has a negative size"));
    }
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input, "': shape ", ShapeText(shape), " is too large"));
    }
    count *= d;
  }
  return count;
}

// Reads the "parameters" object of an input or output: binary_data_size or binary_data.
absl::StatusOr<const json*> Parameters(const json& object, const std::string& what) {
  auto it = object.find("parameters");
  if (it == object.end()) return nullptr;
  if (!it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": 'parameters' must be an object"));
  }
  // Said plainly rather than ignored: the tensor would otherwise seem to carry no data.
  if (it->contains("shared_memory_region")) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": shared memory is offered over gRPC only (with --allow-client-shm); send the "
        "tensor in the body"));
  }
  return &*it;
}

}  // namespace

json ProtoToJson(const Message& message) {
  json out = json::object();
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const Reflection* r = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* f = descriptor->field(i);
    if (f->is_map()) {
      json map = json::object();
      for (int j = 0; j < r->FieldSize(message, f); ++j) {
        const Message& entry = r->GetRepeatedMessage(message, f, j);
        map[MapKey(entry)] = FieldValue(entry, entry.GetDescriptor()->map_value(), -1);
      }
      out[f->name()] = std::move(map);
    } else if (f->is_repeated()) {
      json list = json::array();
      for (int j = 0; j < r->FieldSize(message, f); ++j) list.push_back(FieldValue(message, f, j));
      out[f->name()] = std::move(list);
    } else if (f->has_presence()) {
      // Messages, oneof members and `optional` scalars: only when set.
      if (r->HasField(message, f)) out[f->name()] = FieldValue(message, f, -1);
    } else {
      // Plain proto3 scalars always, defaults included (as Triton prints its config).
      out[f->name()] = FieldValue(message, f, -1);
    }
  }
  return out;
}

absl::StatusOr<ParsedInferRequest> ParseInferRequest(std::string_view body,
                                                     std::optional<size_t> header_length,
                                                     const std::string& model_name,
                                                     const std::string& model_version) {
  const size_t json_length = header_length.value_or(body.size());
  if (json_length > body.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Inference-Header-Content-Length is ", json_length,
                     " but the body has only ", body.size(), " bytes"));
  }
  json header;
  try {
    header = json::parse(body.substr(0, json_length));
  } catch (const json::exception& e) {
    // e.g. "parse error at line 1, column 6458: syntax error while parsing value - invalid
    // literal; last read: '...,N'": strict JSON has no NaN or Infinity (send those as binary).
    std::string what = e.what();
    const size_t tag_end = what.find("] ");
    return absl::InvalidArgumentError(absl::StrCat(
        "the request body is not valid JSON (", what.substr(tag_end == std::string::npos ? 0
                                                                               : tag_end + 2),
        "); NaN and Infinity are not JSON numbers: send such tensors as binary data"));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        "the request body is not a JSON object (KServe v2 infer request: "
        "{\"inputs\": [{\"name\", \"shape\", \"datatype\", \"data\"}]})");
  }
  ParsedInferRequest parsed;
  inference::ModelInferRequest& request = parsed.request;
  request.set_model_name(model_name);
  request.set_model_version(model_version);
  if (auto id = header.find("id"); id != header.end()) {
    if (!id->is_string()) return absl::InvalidArgumentError("'id' must be a string");
    request.set_id(id->get<std::string>());
  }
  VITSERVE_ASSIGN_OR_RETURN(const json* parameters, Parameters(header, "the request"));
  if (parameters != nullptr) {
    if (auto it = parameters->find("binary_data_output"); it != parameters->end()) {
      if (!it->is_boolean()) {
        return absl::InvalidArgumentError("parameter 'binary_data_output' must be true or false");
      }
      parsed.binary.all = it->get<bool>();
    }
    if (auto it = parameters->find("timeout"); it != parameters->end()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 0) {
        return absl::InvalidArgumentError(
            "parameter 'timeout' must be a whole number of microseconds >= 0");
      }
      parsed.timeout = absl::Microseconds(it->get<int64_t>());
    }
  }

  auto inputs = header.find("inputs");
  if (inputs == header.end() || !inputs->is_array() || inputs->empty()) {
    return absl::InvalidArgumentError("the request has no 'inputs' array");
  }
  size_t binary_offset = json_length;
  // Inputs sent as binary data: their index and bytes (views of the body). Copied into the
  // message only when some other input came as JSON.
  std::vector<std::pair<int, std::string_view>> binary_views;
  for (const json& input : *inputs) {
    if (!input.is_object()) return absl::InvalidArgumentError("each input must be an object");
    auto name = input.find("name");
    auto datatype = input.find("datatype");
    auto shape = input.find("shape");
    if (name == input.end() || !name->is_string() || datatype == input.end() ||
        !datatype->is_string() || shape == input.end() || !shape->is_array()) {
      return absl::InvalidArgumentError(
          "each input needs 'name' and 'datatype' (strings) and 'shape' (an array)");
    }
    const std::string input_name = name->get<std::string>();
    inference::ModelInferRequest::InferInputTensor* tensor = request.add_inputs();
    tensor->set_name(input_name);
    tensor->set_datatype(datatype->get<std::string>());
    for (const json& d : *shape) {
      if (!d.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", input_name, "': 'shape' must hold integers"));
      }
      tensor->add_shape(d.get<int64_t>());
    }
    VITSERVE_ASSIGN_OR_RETURN(const int64_t elements, ElementCount(tensor->shape(), input_name));
    VITSERVE_ASSIGN_OR_RETURN(const json* input_parameters,
                              Parameters(input, absl::StrCat("input '", input_name, "'")));
    std::string* raw = request.add_raw_input_contents();
    const json* binary_size = nullptr;
    if (input_parameters != nullptr) {
      if (auto it = input_parameters->find("binary_data_size"); it != input_parameters->end()) {
        binary_size = &*it;
      }
    }
    if (binary_size != nullptr) {
      if (!binary_size->is_number_unsigned()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", input_name, "': 'binary_data_size' must be a whole number >= 0"));
      }
      const uint64_t size = binary_size->get<uint64_t>();
      if (size > body.size() - binary_offset) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", input_name, "': binary_data_size is ", size, " but only ",
            body.size() - binary_offset, " bytes of binary data are left in the body"));
      }
      binary_views.emplace_back(request.raw_input_contents_size() - 1,
                                body.substr(binary_offset, size));
      binary_offset += size;
      continue;
    }
    auto data = input.find("data");
    if (data == input.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", input_name, "' has neither 'data' nor a 'binary_data_size' parameter"));
    }
    int64_t count = 0;
    if (absl::Status s = AppendJsonData(*data, tensor->datatype(), input_name, raw, &count);
        !s.ok()) {
      return s;
    }
    if (count != elements) {
      return absl::InvalidArgumentError(absl::StrCat("input '", input_name, "' has ", count,
                                                     " values in 'data'; its shape ",
                                                     ShapeText(tensor->shape()), " needs ",
                                                     elements));
    }
  }
  if (binary_offset != body.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        body.size() - binary_offset, " bytes of binary data follow the JSON header that no "
        "input's binary_data_size accounts for"));
  }
  const bool all_binary =
      !binary_views.empty() && binary_views.size() == static_cast<size_t>(request.inputs_size());
  if (all_binary) {
    request.clear_raw_input_contents();
    for (const auto& [index, view] : binary_views) parsed.binary_inputs.push_back(view);
  } else {
    for (const auto& [index, view] : binary_views) {
      request.mutable_raw_input_contents(index)->assign(view.data(), view.size());
    }
  }

  if (auto outputs = header.find("outputs"); outputs != header.end()) {
    if (!outputs->is_array()) return absl::InvalidArgumentError("'outputs' must be an array");
    for (const json& output : *outputs) {
      auto name = output.is_object() ? output.find("name") : output.end();
      if (!output.is_object() || name == output.end() || !name->is_string()) {
        return absl::InvalidArgumentError("each output must be an object with a 'name'");
      }
      const std::string output_name = name->get<std::string>();
      request.add_outputs()->set_name(output_name);
      VITSERVE_ASSIGN_OR_RETURN(const json* output_parameters,
                                Parameters(output, absl::StrCat("output '", output_name, "'")));
      if (output_parameters == nullptr) continue;
      if (auto it = output_parameters->find("binary_data"); it != output_parameters->end()) {
        if (!it->is_boolean()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "output '", output_name, "': 'binary_data' must be true or false"));
        }
        if (it->get<bool>()) parsed.binary.outputs.insert(output_name);
      }
    }
  }
  return parsed;
}

absl::StatusOr<InferReply> WriteInferResponse(const inference::ModelInferResponse& response,
                                              const BinaryOutputChoice& binary) {
  if (response.raw_output_contents_size() != response.outputs_size()) {
    return absl::InternalError(absl::StrCat("the response has ", response.outputs_size(),
                                            " outputs but ", response.raw_output_contents_size(),
                                            " raw output contents"));
  }
  json header = {{"model_name", response.model_name()},
                 {"model_version", response.model_version()}};
  if (!response.id().empty()) header["id"] = response.id();
  json& outputs = header["outputs"] = json::array();
  std::string binary_data;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& output = response.outputs(i);
    const std::string& raw = response.raw_output_contents(i);
    json entry = {{"name", output.name()},
                  {"datatype", output.datatype()},
                  {"shape", std::vector<int64_t>(output.shape().begin(), output.shape().end())}};
    if (binary.IsBinary(output.name())) {
      entry["parameters"] = {{"binary_data_size", raw.size()}};
      binary_data += raw;
    } else if (output.datatype() == "FP32") {
      std::vector<float> values(raw.size() / sizeof(float));
      std::memcpy(values.data(), raw.data(), values.size() * sizeof(float));
      json& data = entry["data"] = json::array();
      for (float v : values) data.push_back(std::isfinite(v) ? json(v) : json(nullptr));
    } else if (output.datatype() == "INT32") {
      std::vector<int32_t> values(raw.size() / sizeof(int32_t));
      std::memcpy(values.data(), raw.data(), values.size() * sizeof(int32_t));
      entry["data"] = values;
    } else if (output.datatype() == "UINT8") {
      entry["data"] = std::vector<uint8_t>(raw.begin(), raw.end());
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", output.name(), "' (", output.datatype(),
          ") can only be returned as binary data: ask for it with \"binary_data\": true"));
    }
    outputs.push_back(std::move(entry));
  }
  InferReply reply;
  reply.body = DumpJson(header);
  if (!binary_data.empty() || binary.all || !binary.outputs.empty()) {
    reply.header_length = reply.body.size();
    reply.body += binary_data;
  }
  return reply;
}

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(absl::string_view message) {
  return DumpJson(json{{"error", std::string(message)}});
}

}  // namespace vitserve

#include "server/rest/kserve_json.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using nlohmann::json;

std::string Floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

TEST(ParseInferRequestTest, JsonDataBecomesRawLittleEndianBytesInShapeOrder) {
  const std::string body = R"({"id": "r1", "inputs": [{"name": "input", "shape": [1, 2, 2],
      "datatype": "FP32", "data": [[[1.5, -2], [3, 4.25]]]}],
      "outputs": [{"name": "logits", "parameters": {"binary_data": true}}]})";
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(body, std::nullopt, "m", "1");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const inference::ModelInferRequest& request = parsed->request;
  EXPECT_EQ(request.model_name(), "m");
  EXPECT_EQ(request.model_version(), "1");
  EXPECT_EQ(request.id(), "r1");
  ASSERT_EQ(request.inputs_size(), 1);
  EXPECT_EQ(request.inputs(0).datatype(), "FP32");
  EXPECT_THAT(request.inputs(0).shape(), ElementsAre(1, 2, 2));
  ASSERT_EQ(request.raw_input_contents_size(), 1);
  EXPECT_EQ(request.raw_input_contents(0), Floats({1.5f, -2.f, 3.f, 4.25f}));
  ASSERT_EQ(request.outputs_size(), 1);
  EXPECT_TRUE(parsed->binary.IsBinary("logits"));
  EXPECT_FALSE(parsed->binary.all);
  EXPECT_FALSE(parsed->timeout.has_value());
}

TEST(ParseInferRequestTest, BinaryDataAfterTheHeaderGoesToItsInput) {
  const std::string header =
      R"({"inputs": [{"name": "input", "shape": [2], "datatype": "FP32",
          "parameters": {"binary_data_size": 8}}],
          "parameters": {"binary_data_output": true, "timeout": 2500}})";
  const std::string body = header + Floats({7.f, 8.f});
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(body, header.size(), "m", "");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  // Every input is binary, so its bytes stay in the body, as a view, and the message holds none.
  EXPECT_EQ(parsed->request.raw_input_contents_size(), 0);
  ASSERT_EQ(parsed->binary_inputs.size(), 1u);
  EXPECT_EQ(parsed->binary_inputs[0], Floats({7.f, 8.f}));
  EXPECT_EQ(parsed->binary_inputs[0].data(), body.data() + header.size());
  EXPECT_TRUE(parsed->binary.all);
  EXPECT_EQ(parsed->timeout, absl::Microseconds(2500));
}

TEST(ParseInferRequestTest, BinaryDataBesideJsonDataIsCopiedIntoTheMessage) {
  const std::string header =
      R"({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.5]},
                     {"name": "b", "shape": [2], "datatype": "FP32",
                      "parameters": {"binary_data_size": 8}}]})";
  const std::string body = header + Floats({7.f, 8.f});
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(body, header.size(), "m", "");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->binary_inputs.empty());
  ASSERT_EQ(parsed->request.raw_input_contents_size(), 2);
  EXPECT_EQ(parsed->request.raw_input_contents(0), Floats({1.5f}));
  EXPECT_EQ(parsed->request.raw_input_contents(1), Floats({7.f, 8.f}));
}

TEST(ParseInferRequestTest, Uint8DataIsCheckedToBeBytes) {
  absl::StatusOr<ParsedInferRequest> ok = ParseInferRequest(
      R"({"inputs": [{"name": "input", "shape": [3], "datatype": "UINT8", "data": [0, 7, 255]}]})",
      std::nullopt, "m", "");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->request.raw_input_contents(0), std::string("\x00\x07\xff", 3));
  absl::StatusOr<ParsedInferRequest> bad = ParseInferRequest(
      R"({"inputs": [{"name": "input", "shape": [1], "datatype": "UINT8", "data": [256]}]})",
      std::nullopt, "m", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("[0, 255]"));
}

TEST(ParseInferRequestTest, MalformedRequestsAreRefusedWithTheReason) {
  struct Case {
    std::string body;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"{not json", "not valid JSON"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [NaN]}]})",
       "NaN and Infinity are not JSON numbers"},
      {"[1, 2]", "not a JSON object"},
      {R"({"inputs": []})", "no 'inputs'"},
      {R"({"inputs": [{"name": "input", "datatype": "FP32"}]})", "'shape'"},
      {R"({"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1]}]})",
       "needs 2"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": ["x"]}]})",
       "not only numbers"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [1e300]}]})",
       "beyond the range of FP32"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP16", "data": [1]}]})",
       "binary data"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "INT64", "data": [1]}]})",
       "'INT64' is not accepted"},
      {R"({"inputs": [{"name": "input", "shape": [-1], "datatype": "FP32", "data": []}]})",
       "negative"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32"}]})",
       "neither 'data' nor"},
      {R"({"inputs": [{"name": "input", "shape": [2], "datatype": "FP32",
           "parameters": {"binary_data_size": 8}}]})",
       "bytes of binary data are left"},
      {R"({"parameters": {"timeout": -1}, "inputs": [{"name": "input", "shape": [1],
           "datatype": "FP32", "data": [1]}]})",
       "'timeout'"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [1]}],
           "outputs": [{"parameters": {}}]})",
       "'name'"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32",
           "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4}}]})",
       "shared memory is offered over gRPC only"},
      {R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [1]}],
           "outputs": [{"name": "logits", "parameters": {"shared_memory_region": "r"}}]})",
       "output 'logits': shared memory is offered over gRPC only"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(c.body, std::nullopt, "m", "");
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.says)) << c.body;
  }
  // Binary bytes that no input claims, and a header length past the body.
  const std::string header =
      R"({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [1]}]})";
  EXPECT_THAT(ParseInferRequest(header + "xyz", header.size(), "m", "").status().message(),
              HasSubstr("3 bytes of binary data"));
  EXPECT_THAT(ParseInferRequest(header, header.size() + 1, "m", "").status().message(),
              HasSubstr("Inference-Header-Content-Length"));
}

inference::ModelInferResponse Logits(const std::vector<float>& values) {
  inference::ModelInferResponse response;
  response.set_model_name("m");
  response.set_model_version("1");
  response.set_id("abc");
  auto* output = response.add_outputs();
  output->set_name("logits");
  output->set_datatype("FP32");
  output->add_shape(1);
  output->add_shape(static_cast<int64_t>(values.size()));
  response.add_raw_output_contents(Floats(values));
  return response;
}

TEST(WriteInferResponseTest, JsonDataByDefault) {
  absl::StatusOr<InferReply> reply = WriteInferResponse(Logits({0.5f, -1.f}), {});
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_FALSE(reply->header_length.has_value());
  const json body = json::parse(reply->body);
  EXPECT_EQ(body["model_name"], "m");
  EXPECT_EQ(body["model_version"], "1");
  EXPECT_EQ(body["id"], "abc");
  EXPECT_EQ(body["outputs"][0]["shape"], json({1, 2}));
  EXPECT_EQ(body["outputs"][0]["data"], json({0.5, -1.0}));
}

TEST(WriteInferResponseTest, BinaryDataFollowsTheHeader) {
  BinaryOutputChoice binary;
  binary.outputs.insert("logits");
  absl::StatusOr<InferReply> reply = WriteInferResponse(Logits({0.5f, -1.f}), binary);
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_TRUE(reply->header_length.has_value());
  const json header = json::parse(reply->body.substr(0, *reply->header_length));
  EXPECT_EQ(header["outputs"][0]["parameters"]["binary_data_size"], 8);
  EXPECT_FALSE(header["outputs"][0].contains("data"));
  EXPECT_EQ(reply->body.substr(*reply->header_length), Floats({0.5f, -1.f}));
}

TEST(ProtoToJsonTest, WritesSixtyFourBitIntegersAsNumbersAndMapsAsObjects) {
  inference::ModelConfig config;
  config.set_name("m");
  config.set_max_batch_size(8);
  auto* input = config.add_input();
  input->set_name("input");
  input->set_data_type(inference::TYPE_FP32);
  input->add_dims(3);
  input->add_dims(224);
  (*config.mutable_parameters())["architecture"].set_string_value("deit");
  const json out = ProtoToJson(config);
  EXPECT_EQ(out["name"], "m");
  EXPECT_EQ(out["max_batch_size"], 8);
  EXPECT_EQ(out["input"][0]["dims"], json({3, 224}));  // int64: numbers, not "3"
  EXPECT_EQ(out["input"][0]["data_type"], "TYPE_FP32");
  EXPECT_EQ(out["parameters"]["architecture"]["string_value"], "deit");
  EXPECT_FALSE(out.contains("dynamic_batching"));  // an unset message stays out
}

TEST(HttpStatusForTest, EachCodeHasItsStatus) {
  EXPECT_EQ(HttpStatusFor(absl::OkStatus()), 200);
  EXPECT_EQ(HttpStatusFor(absl::InvalidArgumentError("")), 400);
  EXPECT_EQ(HttpStatusFor(absl::UnauthenticatedError("")), 401);
  EXPECT_EQ(HttpStatusFor(absl::NotFoundError("")), 404);
  EXPECT_EQ(HttpStatusFor(absl::ResourceExhaustedError("")), 429);
  EXPECT_EQ(HttpStatusFor(absl::UnavailableError("")), 503);
  EXPECT_EQ(HttpStatusFor(absl::DeadlineExceededError("")), 504);
  EXPECT_EQ(HttpStatusFor(absl::InternalError("")), 500);
  EXPECT_EQ(json::parse(ErrorJson("bad \"x\""))["error"], "bad \"x\"");
}

}  // namespace
}  // namespace vitserve

#include "server/api/kserve_tensor.h"

#include <ATen/ATen.h>

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

InferInputSpec Spec() {
  InferInputSpec spec;
  spec.input_size = 2;
  spec.mean = {0.5f, 0.5f, 0.5f};
  spec.std = {0.25f, 0.5f, 1.0f};
  spec.max_batch_size = 2;
  return spec;
}

inference::ModelInferRequest Request(const std::string& datatype, std::vector<int64_t> shape,
                                     std::string raw) {
  inference::ModelInferRequest request;
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype(datatype);
  for (int64_t d : shape) input->add_shape(d);
  request.add_raw_input_contents(std::move(raw));
  return request;
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
}

TEST(KServeTensorTest, Fp32IsTakenAsNormalised) {
  std::vector<float> values(12);
  for (int i = 0; i < 12; ++i) values[i] = static_cast<float>(i);
  auto input = ParseInferInput(Request("FP32", {1, 3, 2, 2}, FloatBytes(values)), Spec());
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_TRUE(input->batched);
  EXPECT_EQ(input->tensor.sizes(), (std::vector<int64_t>{1, 3, 2, 2}));
  EXPECT_FLOAT_EQ(input->tensor[0][2][1][1].item<float>(), 11.0f);
}

TEST(KServeTensorTest, Uint8IsNormalisedByTheServer) {
  auto input = ParseInferInput(Request("UINT8", {3, 2, 2}, std::string(12, '\xff')), Spec());
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_FALSE(input->batched);
  // (1 - 0.5) / std per channel.
  EXPECT_FLOAT_EQ(input->tensor[0][0][0][0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(input->tensor[0][1][0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(input->tensor[0][2][0][0].item<float>(), 0.5f);
}

TEST(KServeTensorTest, Fp16AndTypedContents) {
  const at::Tensor half = at::full({1, 3, 2, 2}, 1.5, at::kHalf);
  auto input = ParseInferInput(
      Request("FP16", {1, 3, 2, 2}, std::string(static_cast<const char*>(half.data_ptr()), 12 * 2)),
      Spec());
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_FLOAT_EQ(input->tensor[0][1][1][0].item<float>(), 1.5f);

  inference::ModelInferRequest typed = Request("FP32", {1, 3, 2, 2}, "");
  typed.clear_raw_input_contents();
  for (int i = 0; i < 12; ++i) typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(i);
  ASSERT_TRUE(ParseInferInput(typed, Spec()).ok());
}

TEST(KServeTensorTest, RejectsWhatIsNotAllowedAndSaysWhatIs) {
  const std::string bytes = FloatBytes(std::vector<float>(12));
  struct Case {
    inference::ModelInferRequest request;
    std::string message;
  };
  std::vector<Case> cases = {
      {Request("FP32", {1, 3, 4, 4}, bytes), "expected [N,3,2,2]"},
      {Request("FP32", {1, 1, 2, 2}, bytes), "expected"},
      {Request("INT32", {1, 3, 2, 2}, bytes), "allowed: FP32"},
      {Request("FP32", {1, 3, 2, 2}, bytes.substr(1)), "needs 48 bytes"},
      {Request("FP32", {3, 3, 2, 2}, bytes + bytes + bytes), "outside 1..2"},
      {Request("FP32", {0, 3, 2, 2}, ""), "outside 1..2"},
  };
  Case wrong_name{Request("FP32", {1, 3, 2, 2}, bytes), "only input is 'input'"};
  wrong_name.request.mutable_inputs(0)->set_name("images");
  cases.push_back(wrong_name);
  Case two{Request("FP32", {1, 3, 2, 2}, bytes), "exactly 1 input"};
  *two.request.add_inputs() = two.request.inputs(0);
  cases.push_back(two);
  for (const Case& c : cases) {
    auto input = ParseInferInput(c.request, Spec());
    EXPECT_EQ(input.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(input.status().message(), HasSubstr(c.message));
  }
}

TEST(KServeTensorTest, OutputsAreLogitsOnly) {
  inference::ModelInferRequest request;
  EXPECT_TRUE(ValidateRequestedOutputs(request).ok());
  request.add_outputs()->set_name("logits");
  EXPECT_TRUE(ValidateRequestedOutputs(request).ok());
  request.add_outputs()->set_name("boxes");
  EXPECT_THAT(ValidateRequestedOutputs(request).message(), HasSubstr("only output is 'logits'"));
}

TEST(KServeTensorTest, FillsLogitsAsFp32) {
  inference::ModelInferResponse response;
  FillInferOutput(at::arange(6, at::kFloat).view({2, 3}), /*batched=*/true, &response);
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(2, 3));
  ASSERT_EQ(response.raw_output_contents(0).size(), 24u);
  float last;
  std::memcpy(&last, response.raw_output_contents(0).data() + 20, 4);
  EXPECT_FLOAT_EQ(last, 5.0f);
}

}  // namespace
}  // namespace vitserve

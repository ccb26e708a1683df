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
  std::string pixels(12, '\0');
  for (int i = 0; i < 12; ++i) pixels[i] = static_cast<char>(i * 20);  // [C,H,W]
  auto input = ParseInferInput(Request("UINT8", {3, 2, 2}, pixels), Spec());
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_FALSE(input->batched);
  ASSERT_EQ(input->tensor.sizes(), (std::vector<int64_t>{1, 3, 2, 2}));
  // (p / 255 - 0.5) / std, per element and per channel.
  const float stds[3] = {0.25f, 0.5f, 1.0f};
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 2; ++x) {
        const float p = static_cast<float>((c * 4 + y * 2 + x) * 20);
        EXPECT_NEAR(input->tensor[0][c][y][x].item<float>(), (p / 255 - 0.5f) / stds[c], 1e-6)
            << c << "," << y << "," << x;
      }
    }
  }
}

TEST(KServeTensorTest, Fp16IsConvertedElementByElement) {
  // Distinct values, exactly representable in half precision, in NCHW order: any reordering,
  // truncation or misread of the half bits shows.
  const at::Tensor expected = (at::arange(24, at::kFloat) * 0.25f - 3.0f).view({2, 3, 2, 2});
  const at::Tensor half = expected.to(at::kHalf).contiguous();
  auto input = ParseInferInput(
      Request("FP16", {2, 3, 2, 2},
              std::string(static_cast<const char*>(half.data_ptr()), half.numel() * 2)),
      Spec());
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_TRUE(input->batched);
  EXPECT_EQ(input->tensor.sizes(), expected.sizes());
  // The server computes in the model's dtype; the conversion itself must be exact here.
  EXPECT_TRUE(at::equal(input->tensor.to(at::kFloat), expected))
      << input->tensor.to(at::kFloat) << " vs " << expected;
}

TEST(KServeTensorTest, TypedFp32ContentsEqualRawBytes) {
  std::vector<float> values(12);
  for (int i = 0; i < 12; ++i) values[i] = 0.5f * i - 1.0f;
  inference::ModelInferRequest typed = Request("FP32", {1, 3, 2, 2}, "");
  typed.clear_raw_input_contents();
  for (float v : values) typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(v);
  auto from_typed = ParseInferInput(typed, Spec());
  auto from_raw = ParseInferInput(Request("FP32", {1, 3, 2, 2}, FloatBytes(values)), Spec());
  ASSERT_TRUE(from_typed.ok()) << from_typed.status();
  ASSERT_TRUE(from_raw.ok()) << from_raw.status();
  EXPECT_TRUE(at::equal(from_typed->tensor, from_raw->tensor));
  EXPECT_FLOAT_EQ(from_typed->tensor[0][2][1][1].item<float>(), values[11]);
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

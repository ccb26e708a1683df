#include "server/api/kserve_tensor.h"

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

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

// ExternalRawInputs holding `entries` (copied from these strings).
ExternalRawInputs External(const std::vector<std::string>& entries) {
  ExternalRawInputs external;
  for (const std::string& entry : entries) external.sizes.push_back(entry.size());
  external.copy = [entries](size_t index, uint8_t* out) {
    std::memcpy(out, entries.at(index).data(), entries.at(index).size());
    return absl::OkStatus();
  };
  return external;
}

// The same request with its raw contents left outside the message.
inference::ModelInferRequest WithoutRaw(inference::ModelInferRequest request) {
  request.clear_raw_input_contents();
  return request;
}

TEST(KServeTensorTest, RawContentsOutsideTheMessageAreReadAsTheMessagesAre) {
  std::vector<float> values(24);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.37f * static_cast<float>(i) - 3.0f;
  std::vector<uint16_t> halves(24);
  for (size_t i = 0; i < halves.size(); ++i) {
    halves[i] = c10::Half(values[i]).x;
  }
  std::string pixels(24, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>(i * 11);
  const std::vector<inference::ModelInferRequest> requests = {
      Request("FP32", {2, 3, 2, 2}, FloatBytes(values)),
      Request("FP16", {2, 3, 2, 2}, std::string(reinterpret_cast<const char*>(halves.data()), 48)),
      Request("UINT8", {2, 3, 2, 2}, pixels),
  };
  for (const inference::ModelInferRequest& request : requests) {
    const std::string& datatype = request.inputs(0).datatype();
    auto in_message = ParseInferInput(request, Spec());
    ASSERT_TRUE(in_message.ok()) << in_message.status();
    const ExternalRawInputs external = External({request.raw_input_contents(0)});
    auto outside = ParseInferInput(WithoutRaw(request), Spec(), &external);
    ASSERT_TRUE(outside.ok()) << outside.status();
    EXPECT_EQ(outside->tensor.scalar_type(), at::kFloat) << datatype;
    EXPECT_TRUE(at::equal(outside->tensor, in_message->tensor)) << datatype;
    // ... and the bytes were really read: other bytes give another tensor.
    std::string other = request.raw_input_contents(0);
    other[5] ^= 0x40;
    const ExternalRawInputs changed = External({other});
    auto read_other = ParseInferInput(WithoutRaw(request), Spec(), &changed);
    ASSERT_TRUE(read_other.ok()) << read_other.status();
    EXPECT_FALSE(at::equal(read_other->tensor, in_message->tensor)) << datatype;
  }

  // The checks and errors are the message's, with the sizes of the entries outside it.
  const std::string bytes = FloatBytes(std::vector<float>(12));
  const inference::ModelInferRequest fields = WithoutRaw(Request("FP32", {1, 3, 2, 2}, bytes));
  const ExternalRawInputs two = External({bytes, bytes});
  EXPECT_THAT(ParseInferInput(fields, Spec(), &two).status().message(),
              HasSubstr("raw_input_contents has 2 entries"));
  const ExternalRawInputs short_entry = External({bytes.substr(4)});
  EXPECT_THAT(ParseInferInput(fields, Spec(), &short_entry).status().message(),
              HasSubstr("has 44 bytes in raw_input_contents; FP32 [1,3,2,2] needs 48 bytes"));
  ExternalRawInputs failing = External({bytes});
  failing.copy = [](size_t, uint8_t*) { return absl::InternalError("buffer gone"); };
  EXPECT_EQ(ParseInferInput(fields, Spec(), &failing).status(),
            absl::InternalError("buffer gone"));
  const ExternalRawInputs once = External({bytes});
  EXPECT_EQ(ParseInferInput(Request("FP32", {1, 3, 2, 2}, bytes), Spec(), &once).status().code(),
            absl::StatusCode::kInternal);  // Raw contents in both places.
}

TEST(KServeTensorTest, NormalisedPixelsFollowTheFormulaForEveryValue) {
  const int64_t plane = 256;
  std::vector<uint8_t> pixels(2 * 3 * plane);
  for (size_t i = 0; i < pixels.size(); ++i) {
    pixels[i] = static_cast<uint8_t>(i % 256 ^ (i / 256) * 37);
  }
  const std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  const std::array<float, 3> stds = {0.229f, 0.224f, 0.225f};
  std::vector<float> out(pixels.size(), -1000.0f);
  NormalisePlanarPixels(pixels.data(), 2, plane, mean, stds, out.data());
  for (size_t i = 0; i < pixels.size(); ++i) {
    const size_t c = i / plane % 3;
    const double expected = (pixels[i] / 255.0 - mean[c]) / stds[c];
    EXPECT_NEAR(out[i], expected, 2e-6) << i;
  }
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

TEST(KServeTensorTest, RequestedOutputsMustBeTheTasks) {
  inference::ModelInferRequest request;
  EXPECT_TRUE(ValidateRequestedOutputs(request, ModelTask::kClassification).ok());
  request.add_outputs()->set_name("logits");
  EXPECT_TRUE(ValidateRequestedOutputs(request, ModelTask::kClassification).ok());
  EXPECT_THAT(ValidateRequestedOutputs(request, ModelTask::kDetection).message(),
              HasSubstr("outputs are 'boxes', 'scores', 'classes', 'num_detections'"));
  request.add_outputs()->set_name("boxes");
  EXPECT_THAT(ValidateRequestedOutputs(request, ModelTask::kClassification).message(),
              HasSubstr("unknown output 'boxes'; a classification model's outputs are 'logits'"));

  inference::ModelInferRequest dense;
  dense.add_outputs()->set_name("label_map");
  EXPECT_TRUE(ValidateRequestedOutputs(dense, ModelTask::kSegmentation).ok());
  dense.add_outputs()->set_name("label_map");
  EXPECT_THAT(ValidateRequestedOutputs(dense, ModelTask::kSegmentation).message(),
              HasSubstr("asked for twice"));
}

TEST(KServeTensorTest, DetectionSettingsComeFromParametersOrTheDefaults) {
  v1::DetectionConfig defaults;
  defaults.set_score_threshold(0.3f);
  defaults.set_max_detections(100);
  inference::ModelInferRequest request;
  absl::StatusOr<DetectSettings> settings = DetectSettingsFromParameters(request, defaults);
  ASSERT_TRUE(settings.ok());
  EXPECT_NEAR(settings->score_threshold, 0.3, 1e-6);
  EXPECT_EQ(settings->max_detections, 100);

  (*request.mutable_parameters())["score_threshold"].set_double_param(0.6);
  (*request.mutable_parameters())["max_detections"].set_int64_param(7);
  settings = DetectSettingsFromParameters(request, defaults);
  ASSERT_TRUE(settings.ok());
  EXPECT_DOUBLE_EQ(settings->score_threshold, 0.6);
  EXPECT_EQ(settings->max_detections, 7);

  (*request.mutable_parameters())["score_threshold"].set_double_param(1.5);
  EXPECT_THAT(DetectSettingsFromParameters(request, defaults).status().message(),
              HasSubstr("score_threshold 1.5 is out of range"));
  (*request.mutable_parameters())["score_threshold"].set_string_param("high");
  EXPECT_THAT(DetectSettingsFromParameters(request, defaults).status().message(),
              HasSubstr("must be a number"));
  request.mutable_parameters()->erase("score_threshold");
  (*request.mutable_parameters())["max_detections"].set_uint64_param(1u << 31);
  EXPECT_THAT(DetectSettingsFromParameters(request, defaults).status().message(),
              HasSubstr("max_detections 10001 is out of range"));
}

// A [2, C + 4, 8, 8] CenterNet output over a 32-pixel input (C = 2): image 0 has one class-1
// object centred at (21, 15), 12 x 6; image 1 has none.
at::Tensor CenterNetRows() {
  at::Tensor out = at::zeros({2, 6, 8, 8});
  out.narrow(1, 0, 2).fill_(-12.0);
  out.narrow(1, 2, 2).fill_(std::log(8.0));
  at::Tensor first = out[0];
  first[1][3][5] = std::log(0.9 / 0.1);
  first[2][3][5] = std::log(12.0);
  first[3][3][5] = std::log(6.0);
  first[4][3][5] = std::log(0.25 / 0.75);
  first[5][3][5] = std::log(0.75 / 0.25);
  return out;
}

template <typename T>
std::vector<T> Values(const std::string& raw) {
  std::vector<T> values(raw.size() / sizeof(T));
  std::memcpy(values.data(), raw.data(), values.size() * sizeof(T));
  return values;
}

TEST(KServeTensorTest, DetectionOutputsArePaddedToMaxDetections) {
  DetectSettings settings;
  settings.score_threshold = 0.3;
  settings.max_detections = 3;
  inference::ModelInferResponse response;
  ASSERT_TRUE(FillDetectionOutputs(CenterNetRows(), 2, 32, settings, /*batched=*/true, &response)
                  .ok());
  ASSERT_EQ(response.outputs_size(), 4);
  EXPECT_EQ(response.outputs(0).name(), "boxes");
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(2, 3, 4));
  EXPECT_THAT(response.outputs(1).shape(), ::testing::ElementsAre(2, 3));
  EXPECT_EQ(response.outputs(2).datatype(), "INT32");
  EXPECT_THAT(response.outputs(3).shape(), ::testing::ElementsAre(2));
  const std::vector<float> boxes = Values<float>(response.raw_output_contents(0));
  EXPECT_NEAR(boxes[0], 15, 1e-4);
  EXPECT_NEAR(boxes[1], 12, 1e-4);
  EXPECT_NEAR(boxes[2], 27, 1e-4);
  EXPECT_NEAR(boxes[3], 18, 1e-4);
  EXPECT_THAT(std::vector<float>(boxes.begin() + 4, boxes.end()), ::testing::Each(0.0f));
  const std::vector<float> scores = Values<float>(response.raw_output_contents(1));
  EXPECT_NEAR(scores[0], 0.9, 1e-5);
  EXPECT_THAT(Values<int32_t>(response.raw_output_contents(2)),
              ::testing::ElementsAre(1, -1, -1, -1, -1, -1));
  EXPECT_THAT(Values<int32_t>(response.raw_output_contents(3)), ::testing::ElementsAre(1, 0));

  // Unbatched: one image, no batch dimension; only the outputs asked for, in the asked order.
  inference::ModelInferResponse one;
  ASSERT_TRUE(FillDetectionOutputs(CenterNetRows().narrow(0, 0, 1), 2, 32, settings,
                                   /*batched=*/false, &one)
                  .ok());
  EXPECT_THAT(one.outputs(0).shape(), ::testing::ElementsAre(3, 4));
  EXPECT_EQ(one.outputs(3).shape_size(), 0);
  inference::ModelInferRequest request;
  request.add_outputs()->set_name("num_detections");
  request.add_outputs()->set_name("boxes");
  KeepRequestedOutputs(request, &one);
  ASSERT_EQ(one.outputs_size(), 2);
  EXPECT_EQ(one.outputs(0).name(), "num_detections");
  EXPECT_THAT(Values<int32_t>(one.raw_output_contents(0)), ::testing::ElementsAre(1));
  EXPECT_EQ(one.outputs(1).name(), "boxes");
  EXPECT_EQ(one.raw_output_contents(1).size(), 3u * 4u * sizeof(float));
}

TEST(KServeTensorTest, LabelMapCoversTheInputPixels) {
  // Two classes over a 1 x 2 score map of a 4-pixel input: class 0 wins on the left, 1 on the
  // right; image 1 has them the other way round.
  at::Tensor scores = at::zeros({2, 2, 1, 2});
  scores[0][0][0][0] = 1.0;
  scores[0][1][0][1] = 1.0;
  scores[1][1][0][0] = 1.0;
  scores[1][0][0][1] = 1.0;
  inference::ModelInferResponse response;
  ASSERT_TRUE(FillSegmentationOutputs(scores, 4, /*batched=*/true, &response).ok());
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "label_map");
  EXPECT_EQ(response.outputs(0).datatype(), "INT32");
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(2, 4, 4));
  const std::vector<int32_t> map = Values<int32_t>(response.raw_output_contents(0));
  const std::vector<int32_t> row0 = {0, 0, 1, 1}, row1 = {1, 1, 0, 0};
  for (int y = 0; y < 4; ++y) {
    EXPECT_EQ(std::vector<int32_t>(map.begin() + y * 4, map.begin() + y * 4 + 4), row0) << y;
    EXPECT_EQ(std::vector<int32_t>(map.begin() + 16 + y * 4, map.begin() + 16 + y * 4 + 4), row1);
  }
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

#include "server/api/classify.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include <ATen/ATen.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/image/decode.h"
#include "server/image/jpeg_part.h"
#include "server/image/preprocess.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

v1::ClassifyRequest RequestWith(int images, uint32_t top_k) {
  v1::ClassifyRequest request;
  for (int i = 0; i < images; ++i) {
    auto* raw = request.add_images()->mutable_raw();
    raw->set_width(4);
    raw->set_height(2);
    raw->set_rgb8(std::string(4 * 2 * 3, '\x80'));
  }
  request.set_top_k(top_k);
  return request;
}

TEST(ClassifyTest, TopKDefaultsToFiveCappedByClasses) {
  EXPECT_EQ(*ValidateClassifyRequest(RequestWith(1, 0), "m", ModelTask::kClassification, 1000, 5),
            5);
  EXPECT_EQ(*ValidateClassifyRequest(RequestWith(1, 0), "m", ModelTask::kClassification, 3, 5), 3);
  EXPECT_EQ(*ValidateClassifyRequest(RequestWith(1, 7), "m", ModelTask::kClassification, 10, 5), 7);
}

TEST(ClassifyTest, RejectsWhatCannotBeAnswered) {
  auto too_big =
      ValidateClassifyRequest(RequestWith(1, 11), "m", ModelTask::kClassification, 10, 5);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.status().message(), HasSubstr("1..10"));
  EXPECT_EQ(ValidateClassifyRequest(RequestWith(0, 0), "m", ModelTask::kClassification, 10, 5)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto detection = ValidateClassifyRequest(RequestWith(1, 0), "m", ModelTask::kDetection, 10, 5);
  EXPECT_EQ(detection.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(detection.status().message(), HasSubstr("detection"));
}

TEST(ClassifyTest, PreprocessesEveryImageAndNamesTheBadOne) {
  PreprocessSpec spec;
  spec.input_size = 8;
  v1::ClassifyRequest request = RequestWith(2, 0);
  std::string gradient(4 * 2 * 3, '\0');
  for (size_t i = 0; i < gradient.size(); ++i) gradient[i] = static_cast<char>(i * 10);
  request.mutable_images(1)->mutable_raw()->set_rgb8(gradient);
  auto batch = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->sizes(), (std::vector<int64_t>{2, 3, 8, 8}));
  // Each row is exactly that image's own preprocessing, in request order.
  for (int i = 0; i < 2; ++i) {
    const v1::RawImage& raw = request.images(i).raw();
    auto rgb = RgbImageFromRaw(raw.rgb8(), static_cast<int>(raw.width()),
                               static_cast<int>(raw.height()), ImageLimits{});
    ASSERT_TRUE(rgb.ok()) << rgb.status();
    auto alone = Preprocess(*rgb, spec);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_TRUE(at::equal((*batch)[i], alone->tensor)) << "row " << i;
  }
  EXPECT_FALSE(at::equal((*batch)[0], (*batch)[1])) << "the test images must differ";

  request.add_images()->set_encoded("not an image");
  auto bad = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("image 2: "));

  request.mutable_images(0)->mutable_raw()->set_rgb8("short");
  EXPECT_THAT(DecodeAndPreprocess(request.images(), ImageLimits{}, spec).status().message(),
              HasSubstr("image 0: "));
  request.mutable_images(0)->Clear();
  EXPECT_THAT(DecodeAndPreprocess(request.images(), ImageLimits{}, spec).status().message(),
              HasSubstr("image 0: empty"));
}

// With device preprocessing, same-size images travel as they are, one uint8 [N,H,W,3] tensor in
// request order (raw and decoded alike); mixed sizes, or images over twice what the model
// resizes to, are preprocessed here as before.
TEST(ClassifyTest, DevicePreprocessingSendsSameSizeImagesAsPixels) {
  PreprocessSpec spec;
  spec.input_size = 8;  // Resized to 9 on the shorter side.
  spec.on_device = true;
  v1::ClassifyRequest request = RequestWith(2, 0);
  std::string gradient(4 * 2 * 3, '\0');
  for (size_t i = 0; i < gradient.size(); ++i) gradient[i] = static_cast<char>(i * 10);
  request.mutable_images(1)->mutable_raw()->set_rgb8(gradient);
  auto pixels = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  EXPECT_EQ(pixels->scalar_type(), at::kByte);
  EXPECT_EQ(pixels->sizes(), (std::vector<int64_t>{2, 2, 4, 3}));
  for (int i = 0; i < 2; ++i) {
    const std::string& bytes = request.images(i).raw().rgb8();
    EXPECT_EQ(std::memcmp((*pixels)[i].data_ptr(), bytes.data(), bytes.size()), 0) << i;
  }

  // A third image of another size: the whole request is preprocessed on the CPU.
  auto* other = request.add_images()->mutable_raw();
  other->set_width(3);
  other->set_height(3);
  other->set_rgb8(std::string(27, '\x10'));
  auto rows = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->scalar_type(), at::kFloat);
  EXPECT_EQ(rows->sizes(), (std::vector<int64_t>{3, 3, 8, 8}));
  spec.on_device = false;
  auto cpu = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(at::equal(*rows, *cpu));

  // 18 pixels on the shorter side is exactly twice 9: still the device's; 19 is not.
  spec.on_device = true;
  for (const auto& [side, on_device] : std::vector<std::pair<int, bool>>{{18, true}, {19, false}}) {
    v1::ClassifyRequest large;
    auto* raw = large.add_images()->mutable_raw();
    raw->set_width(static_cast<uint32_t>(side));
    raw->set_height(static_cast<uint32_t>(side));
    raw->set_rgb8(std::string(static_cast<size_t>(side * side * 3), '\x20'));
    auto out = DecodeAndPreprocess(large.images(), ImageLimits{}, spec);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->scalar_type() == at::kByte, on_device) << side;
  }

  // Errors keep naming the image.
  request.mutable_images(1)->mutable_raw()->set_rgb8("short");
  EXPECT_THAT(DecodeAndPreprocess(request.images(), ImageLimits{}, spec).status().message(),
              HasSubstr("image 1: "));
}

// PreprocessingIsACopy: true exactly when DecodeAndPreprocess only checks raw pixels and copies
// them out as they are (at most kMaxInlineCopyBytes), which lets the service skip the pool.
TEST(ClassifyTest, PreprocessingIsACopyOnlyForSmallRawPixelsTheDevicePreprocesses) {
  PreprocessSpec spec;
  spec.input_size = 8;  // Resized to 9 on the shorter side.
  spec.on_device = true;
  const v1::ClassifyRequest two_raw = RequestWith(2, 0);
  EXPECT_TRUE(PreprocessingIsACopy(two_raw.images(), spec));
  auto pixels = DecodeAndPreprocess(two_raw.images(), ImageLimits{}, spec);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  EXPECT_EQ(pixels->scalar_type(), at::kByte);  // What the copy means.

  spec.on_device = false;  // Resized and normalised on the CPU.
  EXPECT_FALSE(PreprocessingIsACopy(two_raw.images(), spec));
  spec.on_device = true;

  v1::ClassifyRequest mixed = two_raw;  // Another size: the CPU path.
  mixed.mutable_images(1)->mutable_raw()->set_width(2);
  mixed.mutable_images(1)->mutable_raw()->set_rgb8(std::string(2 * 2 * 3, '\x80'));
  EXPECT_FALSE(PreprocessingIsACopy(mixed.images(), spec));

  v1::ClassifyRequest encoded = two_raw;  // A file to decode.
  encoded.mutable_images(1)->set_encoded("\xff\xd8\xff");
  EXPECT_FALSE(PreprocessingIsACopy(encoded.images(), spec));

  EXPECT_FALSE(PreprocessingIsACopy(v1::ClassifyRequest().images(), spec));  // No images.
  v1::ClassifyRequest empty_size = two_raw;
  empty_size.mutable_images(0)->mutable_raw()->set_width(0);
  EXPECT_FALSE(PreprocessingIsACopy(empty_size.images(), spec));

  // More than twice the resized side: resized on the CPU (DecodeAndPreprocess's floats).
  v1::ClassifyRequest large;
  auto* raw = large.add_images()->mutable_raw();
  raw->set_width(19);
  raw->set_height(19);
  raw->set_rgb8(std::string(19 * 19 * 3, '\x20'));
  EXPECT_FALSE(PreprocessingIsACopy(large.images(), spec));
  raw->set_width(18);
  raw->set_height(18);
  raw->set_rgb8(std::string(18 * 18 * 3, '\x20'));
  EXPECT_TRUE(PreprocessingIsACopy(large.images(), spec));

  // A copy of more than kMaxInlineCopyBytes belongs on the pool: 5 images of 256x256 are
  // 983,040 bytes, 6 are 1,179,648.
  spec.input_size = 224;  // Resized to 256: no image is too large for the device.
  v1::ClassifyRequest many;
  for (int i = 0; i < 6; ++i) {
    auto* image = many.add_images()->mutable_raw();
    image->set_width(256);
    image->set_height(256);
    image->set_rgb8(std::string(256 * 256 * 3, '\x40'));
    EXPECT_EQ(PreprocessingIsACopy(many.images(), spec),
              (i + 1) * 256 * 256 * 3 <= kMaxInlineCopyBytes)
        << i + 1 << " images";
  }
}

// A request may not carry more images than --max-images-per-request: each becomes a model
// input row whatever its encoded size, so tiny images would otherwise multiply memory.
TEST(ClassifyTest, RefusesMoreImagesThanTheLimit) {
  PreprocessSpec spec;
  spec.input_size = 8;
  ImageLimits limits;
  limits.max_images_per_request = 3;
  EXPECT_TRUE(DecodeAndPreprocess(RequestWith(3, 0).images(), limits, spec).ok());
  auto refused = DecodeAndPreprocess(RequestWith(4, 0).images(), limits, spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("--max-images-per-request"));
}

// A JPEG whose EXIF orientation turns it (stored 320x240, shown 240x320) decodes to another
// size than its header says: with device preprocessing the request falls back to the CPU path
// instead of mixing sizes, and gives exactly what that path gives.
TEST(ClassifyTest, DevicePreprocessingFallsBackForARotatedJpeg) {
  std::ifstream file(std::string(VITSERVE_SAMPLE_DIR) + "/sunset_exif_rotated_240x320.jpg",
                     std::ios::binary);
  ASSERT_TRUE(file.good());
  const std::string jpeg((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  v1::ClassifyRequest request;
  request.add_images()->set_encoded(jpeg);
  PreprocessSpec spec;
  spec.input_size = 224;
  spec.crop_pct = 1.0;  // Resized to 224 on the shorter side: within twice, so device-eligible.
  spec.on_device = true;
  auto device = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(device->scalar_type(), at::kFloat);
  spec.on_device = false;
  auto cpu = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(at::equal(*device, *cpu));
}

// With GPU JPEG decoding too, a request whose images are all whole baseline JPEGs the GPU
// decodes as the CPU would travels still encoded, one JPEG part (jpeg_part.h) holding each
// file and its size in request order. Any other request takes the pixel or row path as before:
// a progressive file, an EXIF rotation, a truncated or malformed file, a raw image among them.
TEST(ClassifyTest, GpuJpegDecodingSendsBaselineJpegsStillEncoded) {
  auto encode = [](int width, int height, std::vector<int> params) {
    cv::Mat bgr(height, width, CV_8UC3);
    cv::randu(bgr, cv::Scalar::all(0), cv::Scalar::all(255));
    std::vector<uint8_t> bytes;
    EXPECT_TRUE(cv::imencode(".jpg", bgr, bytes, params));
    return std::string(bytes.begin(), bytes.end());
  };
  const std::string first = encode(12, 10, {cv::IMWRITE_JPEG_QUALITY, 90});
  const std::string second = encode(12, 10, {cv::IMWRITE_JPEG_QUALITY, 60});
  PreprocessSpec spec;
  spec.input_size = 8;  // Resized to 9 on the shorter side: 10 is within twice.
  spec.on_device = true;
  spec.gpu_jpeg_decode = true;
  v1::ClassifyRequest request;
  request.add_images()->set_encoded(first);
  request.add_images()->set_encoded(second);
  auto part = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(part.ok()) << part.status();
  ASSERT_TRUE(IsJpegPart(*part)) << part->sizes();
  ASSERT_EQ(part->size(0), 2);
  for (int i = 0; i < 2; ++i) {
    const EncodedJpeg jpeg = JpegInPart(*part, i);
    EXPECT_EQ(jpeg.bytes, request.images(i).encoded()) << i;
    EXPECT_EQ(jpeg.width, 12);
    EXPECT_EQ(jpeg.height, 10);
  }

  // What must not go to the GPU decoder: each makes the request send pixels instead.
  const std::string exif_rotated =
      first.substr(0, 2) +
      std::string("\xFF\xE1\x00\x22" "Exif\0\0" "MM\x00\x2A\x00\x00\x00\x08" "\x00\x01"
                  "\x01\x12\x00\x03\x00\x00\x00\x01" "\x00\x03\x00\x00" "\x00\x00\x00\x00",
                  36) +
      first.substr(2);
  const size_t sos = first.find("\xFF\xDA");
  ASSERT_NE(sos, std::string::npos);
  const std::vector<std::pair<std::string, std::string>> others = {
      {"progressive", encode(12, 10, {cv::IMWRITE_JPEG_PROGRESSIVE, 1})},
      {"EXIF orientation 3", exif_rotated},
      {"truncated", first.substr(0, first.size() - 20)},
      {"malformed: no scan", first.substr(0, sos) + "\xFF\xD9"},  // CheckJpegStructure.
  };
  for (const auto& [what, bytes] : others) {
    SCOPED_TRACE(what);
    request.mutable_images(1)->set_encoded(bytes);
    auto pixels = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
    if (!pixels.ok()) {  // The CPU decoder refused a damaged file: its answer, as before.
      EXPECT_NE(what, "progressive");
      EXPECT_NE(what, "EXIF orientation 3");
      EXPECT_EQ(pixels.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(pixels.status().message(), HasSubstr("image 1: "));
      continue;
    }
    EXPECT_FALSE(IsJpegPart(*pixels));
    EXPECT_EQ(pixels->sizes(), (std::vector<int64_t>{2, 10, 12, 3}));
  }
  request.mutable_images(1)->Clear();
  auto* raw = request.mutable_images(1)->mutable_raw();
  raw->set_width(12);
  raw->set_height(10);
  raw->set_rgb8(std::string(12 * 10 * 3, '\x40'));
  auto mixed = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->sizes(), (std::vector<int64_t>{2, 10, 12, 3}));

  // Off: the same JPEGs as pixels.
  request.mutable_images(1)->set_encoded(second);
  spec.gpu_jpeg_decode = false;
  auto off = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->sizes(), (std::vector<int64_t>{2, 10, 12, 3}));
}

TEST(ClassifyTest, RanksClassesWithLabels) {
  const at::Tensor logits = at::tensor({0.0f, 2.0f, 1.0f, 0.0f, 0.0f, 3.0f}).view({2, 3});
  v1::ClassifyResponse response;
  ASSERT_TRUE(FillClassifications(logits, 2, ClassifierOutputLayout{3, 0}, {"cat", "dog"},
                                  &response)
                  .ok());
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.results(0).classes(0).index(), 1);
  EXPECT_EQ(response.results(0).classes(0).label(), "dog");
  EXPECT_EQ(response.results(0).classes(1).label(), "2");  // No label: the index.
  EXPECT_EQ(response.results(1).classes(0).index(), 2);
  EXPECT_GT(response.results(0).classes(0).score(), response.results(0).classes(1).score());
}

TEST(ClassifyTest, ReadsTheDevicesTopKColumnsWhenTheyHoldEnoughPlaces) {
  // Three logits, then the device's two best places: probabilities, then class indices. The
  // columns are deliberately not the logits' softmax, to tell which the reply came from.
  const at::Tensor rows = at::tensor({0.0f, 2.0f, 1.0f, 0.75f, 0.25f, 0.0f, 1.0f}).view({1, 7});
  const ClassifierOutputLayout layout{3, 2};
  v1::ClassifyResponse from_columns;
  ASSERT_TRUE(FillClassifications(rows, 2, layout, {"a", "b", "c"}, &from_columns).ok());
  ASSERT_EQ(from_columns.results(0).classes_size(), 2);
  EXPECT_EQ(from_columns.results(0).classes(0).label(), "a");
  EXPECT_FLOAT_EQ(from_columns.results(0).classes(0).score(), 0.75f);
  EXPECT_EQ(from_columns.results(0).classes(1).index(), 1);
  EXPECT_FLOAT_EQ(from_columns.results(0).classes(1).score(), 0.25f);

  // Three places: more than the device computed, so the softmax of the logits.
  v1::ClassifyResponse from_logits;
  ASSERT_TRUE(FillClassifications(rows, 3, layout, {"a", "b", "c"}, &from_logits).ok());
  ASSERT_EQ(from_logits.results(0).classes_size(), 3);
  EXPECT_EQ(from_logits.results(0).classes(0).label(), "b");
  EXPECT_NEAR(from_logits.results(0).classes(0).score(), 0.665241f, 1e-5);
}

}  // namespace
}  // namespace vitserve

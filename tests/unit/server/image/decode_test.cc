#include "server/image/decode.h"

#include <cmath>

#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/image/image_header.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

// An RGB test card: left half red, right half blue.
cv::Mat RedBlueRgb(int width, int height) {
  cv::Mat rgb(height, width, CV_8UC3, cv::Scalar(0, 0, 255));
  rgb(cv::Rect(0, 0, width / 2, height)).setTo(cv::Scalar(255, 0, 0));
  return rgb;
}

std::string Encode(const cv::Mat& rgb, const std::string& ext, std::vector<int> params = {}) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> bytes;
  EXPECT_TRUE(cv::imencode(ext, bgr, bytes, params));
  return std::string(bytes.begin(), bytes.end());
}

// A JPEG APP1 segment holding a big-endian TIFF IFD with one entry: Orientation (0x0112).
std::string ExifOrientationSegment(int orientation) {
  // clang-format off
  const char segment[] = {
      '\xFF', '\xE1', 0, 34,                       // APP1, length 34 (counts itself)
      'E', 'x', 'i', 'f', 0, 0,                    // Exif identifier
      'M', 'M', 0, 42, 0, 0, 0, 8,                 // TIFF header, big endian, IFD at 8
      0, 1,                                        // one entry
      1, 0x12, 0, 3, 0, 0, 0, 1,                   // tag 0x0112, SHORT, count 1
      0, static_cast<char>(orientation), 0, 0,     // value
      0, 0, 0, 0};                                 // no next IFD
  // clang-format on
  return std::string(segment, sizeof(segment));
}

void ExpectColor(const RgbImage& image, int x, int y, cv::Vec3b rgb, int tolerance) {
  const cv::Vec3b got = image.pixels.at<cv::Vec3b>(y, x);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(got[c], rgb[c], tolerance) << "at (" << x << "," << y << ") channel " << c;
  }
}

TEST(DecodeImageTest, DecodesPngExactlyInRgbOrder) {
  const cv::Mat rgb = RedBlueRgb(40, 20);
  absl::StatusOr<RgbImage> image = DecodeImage(Encode(rgb, ".png"), ImageLimits());
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width(), 40);
  EXPECT_EQ(image->height(), 20);
  EXPECT_EQ(image->pixels.type(), CV_8UC3);
  EXPECT_EQ(cv::norm(image->pixels, rgb, cv::NORM_INF), 0);
  ExpectColor(*image, 0, 0, {255, 0, 0}, 0);  // Red is channel 0.
}

TEST(DecodeImageTest, DecodesEveryFormat) {
  const cv::Mat rgb = RedBlueRgb(64, 48);
  struct Case {
    std::string ext;
    std::vector<int> params;
    int tolerance;
  };
  const std::vector<Case> cases = {
      {".jpg", {cv::IMWRITE_JPEG_QUALITY, 95}, 40},  {".png", {}, 0}, {".bmp", {}, 0},
      {".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, 0},  // > 100: lossless.
      {".webp", {cv::IMWRITE_WEBP_QUALITY, 90}, 40},  // Lossy (VP8).
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.ext);
    absl::StatusOr<RgbImage> image = DecodeImage(Encode(rgb, c.ext, c.params), ImageLimits());
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width(), 64);
    EXPECT_EQ(image->height(), 48);
    ExpectColor(*image, 8, 24, {255, 0, 0}, c.tolerance);
    ExpectColor(*image, 56, 24, {0, 0, 255}, c.tolerance);
  }
}

TEST(DecodeImageTest, GreyscaleBecomesRgb) {
  cv::Mat grey(10, 12, CV_8UC1, cv::Scalar(77));
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(cv::imencode(".png", grey, bytes));
  absl::StatusOr<RgbImage> image =
      DecodeImage(std::string(bytes.begin(), bytes.end()), ImageLimits());
  ASSERT_TRUE(image.ok()) << image.status();
  ExpectColor(*image, 3, 3, {77, 77, 77}, 0);
}

TEST(DecodeImageTest, AppliesExifOrientation) {
  // Stored landscape 40x20 (red left, blue right); orientation 6 means "rotate 90 degrees
  // clockwise to display", so the upright image is 20x40 with red on top.
  const std::string jpeg = Encode(RedBlueRgb(40, 20), ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  const std::string with_exif = jpeg.substr(0, 2) + ExifOrientationSegment(6) + jpeg.substr(2);
  absl::StatusOr<RgbImage> image = DecodeImage(with_exif, ImageLimits());
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width(), 20);
  EXPECT_EQ(image->height(), 40);
  ExpectColor(*image, 10, 5, {255, 0, 0}, 40);
  ExpectColor(*image, 10, 35, {0, 0, 255}, 40);

  // Orientation 3: rotate 180 degrees, so blue is on the left.
  const std::string rotated = jpeg.substr(0, 2) + ExifOrientationSegment(3) + jpeg.substr(2);
  image = DecodeImage(rotated, ImageLimits());
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width(), 40);
  ExpectColor(*image, 5, 10, {0, 0, 255}, 40);
}

// Large JPEGs decode reduced in the DCT domain: by the largest of 2, 4 and 8 that keeps the
// shorter side at least the target (sizes rounded up, as libjpeg does), with EXIF orientation
// still applied; the pixels are within about a grey level of a full decode shrunk the same way.
// Small JPEGs and other formats decode at full size.
TEST(DecodeImageTest, ReducesLargeJpegsInTheDctDomain) {
  cv::Mat rgb(770, 1030, CV_8UC3);  // Odd sizes: 1030 / 2 = 515, 770 / 2 = 385.
  for (int y = 0; y < rgb.rows; ++y) {
    for (int x = 0; x < rgb.cols; ++x) {
      rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(128 + 100 * std::sin(x * 0.01)),
                                          static_cast<uint8_t>(128 + 100 * std::cos(y * 0.013)),
                                          static_cast<uint8_t>((x + y) / 8 % 256));
    }
  }
  cv::GaussianBlur(rgb, rgb, cv::Size(5, 5), 1.5);
  const std::string jpeg = Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 92});
  struct Case {
    int target;
    int width, height;
  };
  for (const Case& c : {Case{0, 1030, 770}, Case{400, 1030, 770}, Case{385, 515, 385},
                        Case{256, 515, 385}, Case{193, 258, 193}, Case{96, 129, 97},
                        Case{50, 129, 97}}) {
    SCOPED_TRACE(c.target);
    absl::StatusOr<RgbImage> image = DecodeImage(jpeg, ImageLimits(), c.target);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width(), c.width);
    EXPECT_EQ(image->height(), c.height);
    if (c.width == 1030) continue;
    absl::StatusOr<RgbImage> full = DecodeImage(jpeg, ImageLimits());
    ASSERT_TRUE(full.ok());
    cv::Mat shrunk;
    cv::resize(full->pixels, shrunk, cv::Size(c.width, c.height), 0, 0, cv::INTER_AREA);
    cv::Mat difference;
    cv::absdiff(shrunk, image->pixels, difference);
    EXPECT_LT(cv::mean(difference.reshape(1))[0], 1.5);
  }
  // EXIF orientation 6 still turns the reduced image upright.
  const std::string rotated = jpeg.substr(0, 2) + ExifOrientationSegment(6) + jpeg.substr(2);
  absl::StatusOr<RgbImage> upright = DecodeImage(rotated, ImageLimits(), 256);
  ASSERT_TRUE(upright.ok()) << upright.status();
  EXPECT_EQ(upright->width(), 385);
  EXPECT_EQ(upright->height(), 515);
  // PNG: no DCT, full size.
  absl::StatusOr<RgbImage> png = DecodeImage(Encode(rgb, ".png"), ImageLimits(), 256);
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png->width(), 1030);
}

// width x height RGB with four coloured quadrants: red, green (top), blue, white (bottom).
cv::Mat QuadrantsRgb(int width, int height) {
  cv::Mat rgb(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const bool right = x >= width / 2, bottom = y >= height / 2;
      rgb.at<cv::Vec3b>(y, x) = bottom ? (right ? cv::Vec3b(255, 255, 255) : cv::Vec3b(0, 0, 255))
                                       : (right ? cv::Vec3b(0, 255, 0) : cv::Vec3b(255, 0, 0));
    }
  }
  return rgb;
}

// All eight EXIF orientations, the mirrored ones (2, 4, 5, 7) included: four distinct
// quadrants tell every rotation and reflection apart.
TEST(DecodeImageTest, AppliesEveryExifOrientationIncludingMirrors) {
  const cv::Mat stored = QuadrantsRgb(40, 20);
  const std::string jpeg = Encode(stored, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  for (int orientation = 1; orientation <= 8; ++orientation) {
    SCOPED_TRACE(orientation);
    // What the EXIF specification says a viewer shows.
    cv::Mat upright, transposed;
    switch (orientation) {
      case 1: upright = stored.clone(); break;
      case 2: cv::flip(stored, upright, 1); break;                       // mirror left-right
      case 3: cv::rotate(stored, upright, cv::ROTATE_180); break;
      case 4: cv::flip(stored, upright, 0); break;                       // mirror top-bottom
      case 5: cv::transpose(stored, upright); break;                     // main diagonal
      case 6: cv::rotate(stored, upright, cv::ROTATE_90_CLOCKWISE); break;
      case 7:                                                            // anti-diagonal
        cv::transpose(stored, transposed);
        cv::flip(transposed, upright, -1);
        break;
      case 8: cv::rotate(stored, upright, cv::ROTATE_90_COUNTERCLOCKWISE); break;
    }
    const std::string with_exif =
        jpeg.substr(0, 2) + ExifOrientationSegment(orientation) + jpeg.substr(2);
    absl::StatusOr<RgbImage> image = DecodeImage(with_exif, ImageLimits());
    ASSERT_TRUE(image.ok()) << image.status();
    ASSERT_EQ(image->width(), upright.cols);
    ASSERT_EQ(image->height(), upright.rows);
    for (int qy : {1, 3}) {
      for (int qx : {1, 3}) {
        const int x = upright.cols * qx / 4, y = upright.rows * qy / 4;
        ExpectColor(*image, x, y, upright.at<cv::Vec3b>(y, x), 40);
      }
    }
  }
}

TEST(DecodeImageTest, RejectsTooManyEncodedBytes) {
  ImageLimits limits;
  limits.max_encoded_bytes = 100;
  absl::StatusOr<RgbImage> image =
      DecodeImage(Encode(RedBlueRgb(64, 64), ".bmp"), limits);  // ~12 KB.
  EXPECT_EQ(image.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(image.status().message(), HasSubstr("100 bytes"));
  EXPECT_THAT(image.status().message(), HasSubstr("--max-image-bytes"));
}

// A PNG that claims to be 100000 x 100000 (40 GB of RGB) in 33 bytes.
std::string PngBomb() {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  // clang-format off
  const unsigned char ihdr[] = {0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                0, 1, 0x86, 0xA0,  // width 100000
                                0, 1, 0x86, 0xA0,  // height 100000
                                8, 2, 0, 0, 0,     // 8-bit RGB
                                0, 0, 0, 0};       // CRC (not checked before the limit)
  // clang-format on
  png.append(reinterpret_cast<const char*>(ihdr), sizeof(ihdr));
  return png;
}

TEST(DecodeImageTest, RejectsDecompressionBombFromHeader) {
  ImageLimits limits;
  limits.max_side = 1 << 20;  // Let the pixel limit be the one that trips.
  absl::StatusOr<RgbImage> image = DecodeImage(PngBomb(), limits);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(image.status().message(), HasSubstr("100000x100000"));
  EXPECT_THAT(image.status().message(), HasSubstr("40000000"));
  EXPECT_THAT(image.status().message(), HasSubstr("--max-image-pixels"));
  // With default limits the side limit trips first.
  EXPECT_EQ(DecodeImage(PngBomb(), ImageLimits()).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(DecodeImageTest, RejectsImageOverPixelLimitForEveryFormat) {
  ImageLimits limits;
  limits.max_pixels = 64 * 48 - 1;
  for (const char* ext : {".jpg", ".png", ".bmp", ".webp"}) {
    SCOPED_TRACE(ext);
    EXPECT_EQ(DecodeImage(Encode(RedBlueRgb(64, 48), ext), limits).status().code(),
              absl::StatusCode::kResourceExhausted);
  }
}

TEST(DecodeImageTest, RejectsGarbageEmptyAndTruncated) {
  absl::StatusOr<RgbImage> garbage = DecodeImage("this is not an image", ImageLimits());
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbage.status().message(), HasSubstr("JPEG, PNG, BMP, WebP"));

  EXPECT_EQ(DecodeImage("", ImageLimits()).status().code(), absl::StatusCode::kInvalidArgument);

  const std::string png = Encode(RedBlueRgb(64, 48), ".png");
  absl::StatusOr<RgbImage> truncated = DecodeImage(png.substr(0, 60), ImageLimits());
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);

  const std::string jpeg = Encode(RedBlueRgb(64, 48), ".jpg");
  EXPECT_EQ(DecodeImage(jpeg.substr(0, 20), ImageLimits()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DecodeImageTest, RejectsOtherFormatsOpenCvCouldRead) {
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(cv::imencode(".ppm", cv::Mat(4, 4, CV_8UC3, cv::Scalar(1, 2, 3)), bytes));
  absl::StatusOr<RgbImage> image =
      DecodeImage(std::string(bytes.begin(), bytes.end()), ImageLimits());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("supported encodings are"));
}

TEST(ReadImageHeaderTest, ReadsDimensionsOfEveryFormat) {
  const cv::Mat rgb = RedBlueRgb(37, 23);
  const std::vector<std::pair<std::string, ImageFormat>> cases = {{".jpg", ImageFormat::kJpeg},
                                                                  {".png", ImageFormat::kPng},
                                                                  {".bmp", ImageFormat::kBmp},
                                                                  {".webp", ImageFormat::kWebp}};
  for (const auto& [ext, format] : cases) {
    SCOPED_TRACE(ext);
    absl::StatusOr<ImageHeader> header = ReadImageHeader(Encode(rgb, ext));
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->format, format);
    EXPECT_EQ(header->width, 37);
    EXPECT_EQ(header->height, 23);
  }
  absl::StatusOr<ImageHeader> lossless =
      ReadImageHeader(Encode(rgb, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}));
  ASSERT_TRUE(lossless.ok()) << lossless.status();
  EXPECT_EQ(lossless->width, 37);
  EXPECT_EQ(lossless->height, 23);
}

TEST(ReadImageHeaderTest, ReadsExtendedWebpCanvas) {
  std::string webp = "RIFF";
  webp.append(4, '\0');
  webp += "WEBPVP8X";
  const unsigned char chunk[] = {10,   0,    0,    0,  // chunk size
                                 0,    0,    0,    0,  // flags
                                 0x3F, 0x42, 0x0F,     // width - 1 = 999999
                                 0x01, 0x00, 0x00};    // height - 1 = 1
  webp.append(reinterpret_cast<const char*>(chunk), sizeof(chunk));
  absl::StatusOr<ImageHeader> header = ReadImageHeader(webp);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 1000000);
  EXPECT_EQ(header->height, 2);
  EXPECT_EQ(DecodeImage(webp, ImageLimits()).status().code(), absl::StatusCode::kResourceExhausted);
}

// What decides whether a JPEG may go to a GPU decoder: its components, whether the frame is
// baseline, and its EXIF orientation (little- and big-endian TIFF; XMP and absent EXIF leave 1).
TEST(ReadImageHeaderTest, ReadsJpegFrameAndExifOrientation) {
  const cv::Mat rgb = RedBlueRgb(40, 24);
  const std::string baseline = Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90});
  absl::StatusOr<ImageHeader> header = ReadImageHeader(baseline);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->jpeg_components, 3);
  EXPECT_TRUE(header->jpeg_baseline);
  EXPECT_EQ(header->exif_orientation, 1);

  header = ReadImageHeader(Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_FALSE(header->jpeg_baseline);
  EXPECT_EQ(header->jpeg_components, 3);

  cv::Mat grey(24, 40, CV_8UC1, cv::Scalar(90));
  std::vector<uint8_t> grey_bytes;
  ASSERT_TRUE(cv::imencode(".jpg", grey, grey_bytes));
  header = ReadImageHeader(std::string(grey_bytes.begin(), grey_bytes.end()));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->jpeg_components, 1);
  EXPECT_TRUE(header->jpeg_baseline);

  for (int orientation : {1, 3, 6, 8}) {
    SCOPED_TRACE(orientation);
    header = ReadImageHeader(baseline.substr(0, 2) + ExifOrientationSegment(orientation) +
                             baseline.substr(2));
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->exif_orientation, orientation);
    EXPECT_EQ(header->width, 40);  // As stored: the orientation does not swap the header's sizes.
  }
  // The same entry in a little-endian TIFF.
  // clang-format off
  const char little_endian[] = {
      '\xFF', '\xE1', 0, 34, 'E', 'x', 'i', 'f', 0, 0,
      'I', 'I', 42, 0, 8, 0, 0, 0,
      1, 0,
      0x12, 1, 3, 0, 1, 0, 0, 0,
      6, 0, 0, 0,
      0, 0, 0, 0};
  // clang-format on
  header = ReadImageHeader(baseline.substr(0, 2) +
                           std::string(little_endian, sizeof(little_endian)) + baseline.substr(2));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->exif_orientation, 6);
  // An APP1 that is not EXIF, and an EXIF IFD whose offset points past its segment.
  std::string xmp = "\xFF\xE1";
  xmp += std::string("\0\x0E", 2) + "http://ns.ad";  // Length 14: 12 bytes of payload.
  std::string broken = ExifOrientationSegment(6);
  broken[17] = 100;  // IFD offset 100 in a 26-byte TIFF.
  for (const std::string& segment : {xmp, broken}) {
    header = ReadImageHeader(baseline.substr(0, 2) + segment + baseline.substr(2));
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->exif_orientation, 1);
  }
  // Other formats keep the defaults.
  header = ReadImageHeader(Encode(rgb, ".png"));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->jpeg_components, 0);
  EXPECT_FALSE(header->jpeg_baseline);
}

// What goes to the GPU decoder must be well formed up to its scan (nvJPEG does not check):
// OpenCV's baseline, progressive, grey and EXIF-carrying files pass; each damage below is
// named, and such a file takes the CPU decoder instead, which answers it as before (most it
// refuses; one without Huffman tables it decodes with the standard ones, as motion JPEG).
TEST(CheckJpegStructureTest, AcceptsWellFormedFilesAndNamesWhatIsWrong) {
  const cv::Mat rgb = RedBlueRgb(40, 24);
  const std::string jpeg = Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90});
  cv::Mat grey(24, 40, CV_8UC1, cv::Scalar(90));
  std::vector<uint8_t> grey_bytes;
  ASSERT_TRUE(cv::imencode(".jpg", grey, grey_bytes));
  for (const std::string& good :
       {jpeg, Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}),
        std::string(grey_bytes.begin(), grey_bytes.end()),
        jpeg.substr(0, 2) + ExifOrientationSegment(6) + jpeg.substr(2)}) {
    EXPECT_TRUE(CheckJpegStructure(good).ok()) << CheckJpegStructure(good);
  }
  const size_t sos = jpeg.find("\xFF\xDA");
  const size_t dqt = jpeg.find("\xFF\xDB");
  const size_t dht = jpeg.find("\xFF\xC4");
  ASSERT_NE(sos, std::string::npos);
  ASSERT_NE(dqt, std::string::npos);
  ASSERT_NE(dht, std::string::npos);
  auto segment_end = [&](size_t at) {
    return at + 2 + (static_cast<uint8_t>(jpeg[at + 2]) << 8 | static_cast<uint8_t>(jpeg[at + 3]));
  };
  std::string wrong_component = jpeg;
  wrong_component[sos + 5] = '\x77';
  std::string bad_quantisation_id = jpeg;
  bad_quantisation_id[dqt + 4] = '\x02';  // Table 2 defined, table 0 used.
  const struct {
    const char* what;
    std::string bytes;
    const char* message;
  } cases[] = {
      {"no scan", jpeg.substr(0, sos) + "\xFF\xD9", "no scan"},
      {"a scan naming another component", wrong_component, "component 119"},
      {"truncated", jpeg.substr(0, jpeg.size() - 10), "end-of-image"},
      {"no quantisation table", jpeg.substr(0, dqt) + jpeg.substr(segment_end(dqt)),
       "quantisation table"},
      {"quantisation table of another id", bad_quantisation_id, "quantisation table 0"},
      {"no Huffman tables", jpeg.substr(0, dht) + jpeg.substr(sos), "Huffman"},
      {"a segment past the end", jpeg.substr(0, dqt + 3) + "\xFF\xD9", "past the file"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const absl::Status status = CheckJpegStructure(c.bytes);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
  EXPECT_FALSE(CheckJpegStructure(Encode(rgb, ".png")).ok());
}

TEST(RgbImageFromRawTest, CopiesPixels) {
  std::string raw = {'\x01', '\x02', '\x03', '\x04', '\x05', '\x06'};
  absl::StatusOr<RgbImage> image = RgbImageFromRaw(raw, 2, 1, ImageLimits());
  ASSERT_TRUE(image.ok()) << image.status();
  raw[0] = 99;  // The image owns a copy.
  ExpectColor(*image, 0, 0, {1, 2, 3}, 0);
  ExpectColor(*image, 1, 0, {4, 5, 6}, 0);
}

TEST(RgbImageFromRawTest, RejectsBadSizesAndLimits) {
  const std::string raw(12, '\0');
  absl::StatusOr<RgbImage> wrong = RgbImageFromRaw(raw, 3, 2, ImageLimits());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("18 bytes"));
  EXPECT_EQ(RgbImageFromRaw(raw, 0, 4, ImageLimits()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RgbImageFromRaw(raw, -2, -2, ImageLimits()).status().code(),
            absl::StatusCode::kInvalidArgument);
  ImageLimits limits;
  limits.max_pixels = 3;
  absl::StatusOr<RgbImage> big = RgbImageFromRaw(raw, 2, 2, limits);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.status().message(), HasSubstr("--max-image-pixels"));
}

TEST(DecodeImageTest, DecodesBundledSampleImages) {
  struct Sample {
    const char* name;
    int width, height;
  };
  const Sample samples[] = {{"sunset_320x240.jpg", 320, 240},
                            {"shapes_200x300.png", 200, 300},
                            {"radial_gradient_256x192.webp", 256, 192},
                            {"sunset_exif_rotated_240x320.jpg", 240, 320}};
  for (const Sample& sample : samples) {
    SCOPED_TRACE(sample.name);
    std::ifstream file(std::string(VITSERVE_SAMPLE_DIR) + "/" + sample.name, std::ios::binary);
    ASSERT_TRUE(file.good());
    std::ostringstream bytes;
    bytes << file.rdbuf();
    absl::StatusOr<RgbImage> image = DecodeImage(bytes.str(), ImageLimits());
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width(), sample.width);
    EXPECT_EQ(image->height(), sample.height);
  }
}

}  // namespace
}  // namespace vitserve

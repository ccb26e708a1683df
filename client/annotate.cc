#include "client/annotate.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vitserve::client {
namespace {

// A distinct, stable colour per class (BGR): hues spread by the golden angle.
cv::Scalar ClassColour(int index) {
  const int hue = (index * 137) % 180;  // OpenCV hue range
  cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(hue, 200, 255));
  cv::Mat bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  const cv::Vec3b c = bgr.at<cv::Vec3b>(0, 0);
  return cv::Scalar(c[0], c[1], c[2]);
}

absl::StatusOr<cv::Mat> ReadImage(const std::string& path) {
  cv::Mat image = cv::imread(path, cv::IMREAD_COLOR);
  if (image.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot decode '", path, "' to annotate it"));
  }
  return image;
}

absl::Status Write(const std::string& path, const cv::Mat& image) {
  try {
    if (cv::imwrite(path, image)) return absl::OkStatus();
  } catch (const cv::Exception&) {
  }
  return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
}

}  // namespace

std::string AnnotatedPath(const std::string& dir, const std::string& image_path) {
  namespace fs = std::filesystem;
  return (fs::path(dir) / (fs::path(image_path).stem().string() + ".annotated.png")).string();
}

absl::Status AnnotateDetections(const std::string& image_path, const v1::Detections& result,
                                const std::string& out_path) {
  absl::StatusOr<cv::Mat> decoded = ReadImage(image_path);
  if (!decoded.ok()) return decoded.status();
  cv::Mat image = *std::move(decoded);
  const int thickness = std::max(1, std::min(image.cols, image.rows) / 250);
  const double font_scale = std::max(0.4, std::min(image.cols, image.rows) / 600.0);
  for (const v1::Box& box : result.boxes()) {
    const cv::Scalar colour = ClassColour(box.index());
    const cv::Point top_left(static_cast<int>(box.x1()), static_cast<int>(box.y1()));
    cv::rectangle(image, top_left,
                  cv::Point(static_cast<int>(box.x2()), static_cast<int>(box.y2())), colour,
                  thickness);
    const std::string text = absl::StrFormat("%s %.2f", box.label(), box.score());
    int baseline = 0;
    const cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, font_scale, 1, &baseline);
    const cv::Point origin(top_left.x, std::max(size.height + 2, top_left.y - 2));
    cv::rectangle(image, origin + cv::Point(0, baseline),
                  origin + cv::Point(size.width, -size.height - 2), colour, cv::FILLED);
    cv::putText(image, text, origin, cv::FONT_HERSHEY_SIMPLEX, font_scale, cv::Scalar(0, 0, 0), 1,
                cv::LINE_AA);
  }
  return Write(out_path, image);
}

absl::Status AnnotateSegmentation(const std::string& image_path,
                                  const v1::SegmentationMap& result, const std::string& out_path) {
  absl::StatusOr<cv::Mat> decoded = ReadImage(image_path);
  if (!decoded.ok()) return decoded.status();
  cv::Mat image = *std::move(decoded);
  const std::vector<uchar> bytes(result.mask().begin(), result.mask().end());
  cv::Mat labels = cv::imdecode(bytes, cv::IMREAD_UNCHANGED);
  if (labels.empty() || labels.channels() != 1) {
    return absl::InvalidArgumentError("the label map is not a single-channel PNG");
  }
  if (labels.cols != image.cols || labels.rows != image.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the label map is ", labels.cols, "x", labels.rows, " but '", image_path, "' is ",
        image.cols, "x", image.rows));
  }
  labels.convertTo(labels, CV_32S);
  cv::Mat overlay = image.clone();
  for (int y = 0; y < labels.rows; ++y) {
    const int* row = labels.ptr<int>(y);
    cv::Vec3b* out = overlay.ptr<cv::Vec3b>(y);
    for (int x = 0; x < labels.cols; ++x) {
      if (row[x] == 0) continue;  // Class 0, the background, stays as it is.
      const cv::Scalar c = ClassColour(row[x]);
      out[x] = cv::Vec3b(static_cast<uchar>(c[0]), static_cast<uchar>(c[1]), static_cast<uchar>(c[2]));
    }
  }
  cv::addWeighted(image, 0.5, overlay, 0.5, 0.0, image);
  return Write(out_path, image);
}

}  // namespace vitserve::client

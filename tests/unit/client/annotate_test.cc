// --annotate's drawings (client/annotate.h): they change the image where the results are and
// nowhere else, at the image's size.
#include "client/annotate.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_util/scoped_temp_dir.h"

namespace vitserve::client {
namespace {

std::string WriteGrey(const ScopedTempDir& dir, int width, int height) {
  const std::string path = dir.File("scene.png");
  EXPECT_TRUE(cv::imwrite(path, cv::Mat(height, width, CV_8UC3, cv::Scalar(128, 128, 128))));
  return path;
}

bool Changed(const cv::Mat& image, int x, int y) {
  return image.at<cv::Vec3b>(y, x) != cv::Vec3b(128, 128, 128);
}

TEST(AnnotateTest, BoxesAreDrawnWhereTheyAre) {
  ScopedTempDir dir;
  const std::string image = WriteGrey(dir, 200, 100);
  v1::Detections result;
  v1::Box* box = result.add_boxes();
  box->set_x1(50);
  box->set_y1(40);
  box->set_x2(150);
  box->set_y2(90);
  box->set_score(0.9f);
  box->set_index(2);
  box->set_label("square");
  EXPECT_EQ(AnnotatedPath(dir.path(), image), dir.File("scene.annotated.png"));
  ASSERT_TRUE(AnnotateDetections(image, result, AnnotatedPath(dir.path(), image)).ok());
  const cv::Mat drawn = cv::imread(dir.File("scene.annotated.png"));
  ASSERT_EQ(drawn.size(), cv::Size(200, 100));
  EXPECT_TRUE(Changed(drawn, 100, 90));   // Bottom edge.
  EXPECT_TRUE(Changed(drawn, 150, 65));   // Right edge.
  EXPECT_FALSE(Changed(drawn, 100, 65));  // Inside the box.
  EXPECT_FALSE(Changed(drawn, 10, 10));   // Far away.
}

TEST(AnnotateTest, LabelMapsAreBlendedOverTheImageButTheBackground) {
  ScopedTempDir dir;
  const std::string image = WriteGrey(dir, 60, 40);
  cv::Mat labels = cv::Mat::zeros(40, 60, CV_8UC1);
  labels(cv::Rect(30, 0, 30, 40)).setTo(3);
  std::vector<uchar> png;
  ASSERT_TRUE(cv::imencode(".png", labels, png));
  v1::SegmentationMap result;
  result.set_width(60);
  result.set_height(40);
  result.set_mask(std::string(png.begin(), png.end()));
  ASSERT_TRUE(AnnotateSegmentation(image, result, dir.File("out.png")).ok());
  const cv::Mat drawn = cv::imread(dir.File("out.png"));
  ASSERT_EQ(drawn.size(), cv::Size(60, 40));
  EXPECT_FALSE(Changed(drawn, 10, 20));  // Background.
  EXPECT_TRUE(Changed(drawn, 45, 20));   // Class 3.

  cv::Mat small = cv::Mat::zeros(20, 30, CV_8UC1);
  ASSERT_TRUE(cv::imencode(".png", small, png));
  result.set_mask(std::string(png.begin(), png.end()));
  EXPECT_EQ(AnnotateSegmentation(image, result, dir.File("bad.png")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AnnotateDetections(dir.File("missing.png"), v1::Detections(), dir.File("x.png")).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve::client

#include "models/heads/center_decode.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

constexpr double kLow = -12.0;  // sigmoid ~ 6e-6

// [C + 4, 8, 8] over a 32-pixel input: no object anywhere, boxes 8x8, centres mid-cell.
at::Tensor Empty(int64_t classes) {
  at::Tensor out = at::zeros({classes + 4, 8, 8});
  out.narrow(0, 0, classes).fill_(kLow);
  out[classes].fill_(std::log(8.0));
  out[classes + 1].fill_(std::log(8.0));
  return out;
}

double Logit(double p) { return std::log(p / (1 - p)); }

TEST(DecodeCentersTest, APeakBecomesItsBox) {
  at::Tensor out = Empty(2);
  out[1][3][5] = Logit(0.9);               // Class 1 centred in cell (x 5, y 3).
  out[2][3][5] = std::log(12.0);            // 12 wide
  out[3][3][5] = std::log(6.0);             // 6 high
  out[4][3][5] = Logit(0.25);               // a quarter into the cell across
  out[5][3][5] = Logit(0.75);               // three quarters down
  absl::StatusOr<std::vector<CenterDetection>> found = DecodeCenters(out, 2, 32, 0.3, 10);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 1u);
  const CenterDetection& d = (*found)[0];
  EXPECT_EQ(d.class_index, 1);
  EXPECT_NEAR(d.score, 0.9, 1e-5);
  // Centre (5.25 * 4, 3.75 * 4) = (21, 15).
  EXPECT_NEAR(d.x1, 15, 1e-4);
  EXPECT_NEAR(d.x2, 27, 1e-4);
  EXPECT_NEAR(d.y1, 12, 1e-4);
  EXPECT_NEAR(d.y2, 18, 1e-4);
}

TEST(DecodeCentersTest, OnlyLocalMaximaAboveTheThresholdBestFirst) {
  at::Tensor out = Empty(1);
  out[0][2][2] = Logit(0.8);
  out[0][2][3] = Logit(0.6);  // A neighbour of the 0.8 peak: not a peak.
  out[0][6][6] = Logit(0.5);  // Another peak.
  out[0][0][7] = Logit(0.2);  // A peak under the threshold.
  absl::StatusOr<std::vector<CenterDetection>> found = DecodeCenters(out, 1, 32, 0.3, 10);
  ASSERT_TRUE(found.ok());
  ASSERT_EQ(found->size(), 2u);
  EXPECT_NEAR((*found)[0].score, 0.8, 1e-5);
  EXPECT_NEAR((*found)[1].score, 0.5, 1e-5);
  EXPECT_EQ(DecodeCenters(out, 1, 32, 0.3, 1)->size(), 1u);  // max_detections
  EXPECT_TRUE(DecodeCenters(out, 1, 32, 0.9, 10)->empty());
  EXPECT_EQ(DecodeCenters(out, 1, 32, 0.1, 10)->size(), 3u);
}

TEST(DecodeCentersTest, OverlappingBoxesOfOneClassAreMergedNotOfTwo) {
  at::Tensor out = Empty(2);
  // Two peaks two cells (8 pixels) apart with 40-pixel boxes (IoU 32 * 40 / (2 * 1600 - 1280)
  // = 0.67, above the 0.6 NMS threshold): one survives per class.
  for (int64_t x : {2, 4}) {
    out[0][4][x] = Logit(x == 2 ? 0.9 : 0.7);
    out[2][4][x] = std::log(40.0);
    out[3][4][x] = std::log(40.0);
  }
  absl::StatusOr<std::vector<CenterDetection>> same = DecodeCenters(out, 2, 32, 0.3, 10);
  ASSERT_TRUE(same.ok());
  ASSERT_EQ(same->size(), 1u);
  EXPECT_NEAR((*same)[0].score, 0.9, 1e-5);
  out[0][4][4] = kLow;
  out[1][4][4] = Logit(0.7);  // The second box is now another class.
  EXPECT_EQ(DecodeCenters(out, 2, 32, 0.3, 10)->size(), 2u);
}

TEST(DecodeCentersTest, HalfPrecisionAndBadInputs) {
  at::Tensor out = Empty(1);
  out[0][1][1] = Logit(0.7);
  absl::StatusOr<std::vector<CenterDetection>> half = DecodeCenters(out.to(at::kHalf), 1, 32, 0.3, 5);
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->size(), 1u);
  EXPECT_FALSE(DecodeCenters(out, 2, 32, 0.3, 5).ok());  // Wrong channel count.
  EXPECT_FALSE(DecodeCenters(out.unsqueeze(0), 1, 32, 0.3, 5).ok());
  EXPECT_FALSE(DecodeCenters(out, 1, 32, 1.5, 5).ok());
  EXPECT_FALSE(DecodeCenters(out, 1, 32, 0.3, -1).ok());
  EXPECT_TRUE(DecodeCenters(out, 1, 32, 0.3, 0)->empty());
}

}  // namespace
}  // namespace vitserve

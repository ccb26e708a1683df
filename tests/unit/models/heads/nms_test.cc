#include "models/heads/nms.h"

#include <ATen/ATen.h>

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

at::Tensor Boxes(std::vector<std::vector<float>> rows) {
  at::Tensor boxes = at::empty({static_cast<int64_t>(rows.size()), 4});
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int c = 0; c < 4; ++c) boxes[static_cast<int64_t>(i)][c] = rows[i][c];
  }
  return boxes;
}

std::vector<int64_t> Nms(const at::Tensor& boxes, std::vector<float> scores,
                         std::vector<int64_t> classes, double iou = 0.5, int64_t max = 100) {
  absl::StatusOr<std::vector<int64_t>> kept =
      BatchedNms(boxes, at::tensor(scores), at::tensor(classes), iou, max);
  EXPECT_TRUE(kept.ok()) << kept.status();
  return kept.ok() ? *kept : std::vector<int64_t>{};
}

TEST(BatchedNmsTest, KeepsTheBestOfOverlappingBoxesOfOneClass) {
  // 0 and 1 overlap with IoU 81/119 = 0.68; 2 is far away.
  const at::Tensor boxes = Boxes({{0, 0, 10, 10}, {1, 1, 11, 11}, {50, 50, 60, 60}});
  EXPECT_THAT(Nms(boxes, {0.8f, 0.9f, 0.5f}, {1, 1, 1}), ElementsAre(1, 2));
  // Above the threshold nothing is suppressed.
  EXPECT_THAT(Nms(boxes, {0.8f, 0.9f, 0.5f}, {1, 1, 1}, 0.7), ElementsAre(1, 0, 2));
}

TEST(BatchedNmsTest, ClassesDoNotSuppressEachOther) {
  const at::Tensor boxes = Boxes({{0, 0, 10, 10}, {0, 0, 10, 10}, {0, 0, 10, 10}});
  EXPECT_THAT(Nms(boxes, {0.5f, 0.9f, 0.7f}, {3, 2, 3}), ElementsAre(1, 2));
}

TEST(BatchedNmsTest, SuppressionIsGreedyNotTransitive) {
  // 1 suppresses 0 and 2 (IoU 0.6 each), but 0 and 2 overlap little: once 0 is gone, it does
  // not suppress anything.
  const at::Tensor boxes = Boxes({{0, 0, 10, 10}, {2.5f, 0, 12.5f, 10}, {5, 0, 15, 10}});
  EXPECT_THAT(Nms(boxes, {0.8f, 0.9f, 0.7f}, {0, 0, 0}), ElementsAre(1));
  // With 1 the weakest, 0 and 2 (IoU 1/3) both stay and 1 goes.
  EXPECT_THAT(Nms(boxes, {0.8f, 0.1f, 0.7f}, {0, 0, 0}), ElementsAre(0, 2));
}

TEST(BatchedNmsTest, TiesKeepTheLowerIndexFirstAndMaxDetectionsCuts) {
  const at::Tensor boxes = Boxes({{0, 0, 1, 1}, {5, 5, 6, 6}, {9, 9, 10, 10}, {20, 20, 21, 21}});
  EXPECT_THAT(Nms(boxes, {0.5f, 0.5f, 0.9f, 0.5f}, {0, 0, 0, 0}), ElementsAre(2, 0, 1, 3));
  EXPECT_THAT(Nms(boxes, {0.5f, 0.5f, 0.9f, 0.5f}, {0, 0, 0, 0}, 0.5, 2), ElementsAre(2, 0));
  EXPECT_THAT(Nms(boxes, {0.5f, 0.5f, 0.9f, 0.5f}, {0, 0, 0, 0}, 0.5, 0), IsEmpty());
}

TEST(BatchedNmsTest, EmptyAndDegenerateBoxes) {
  EXPECT_THAT(Nms(at::empty({0, 4}), {}, {}), IsEmpty());
  // A box without area overlaps nothing, not even an identical one.
  const at::Tensor boxes = Boxes({{3, 3, 3, 8}, {3, 3, 3, 8}});
  EXPECT_THAT(Nms(boxes, {0.9f, 0.8f}, {0, 0}), ElementsAre(0, 1));
}

TEST(BatchedNmsTest, RejectsMalformedInputs) {
  const at::Tensor boxes = Boxes({{0, 0, 1, 1}});
  const at::Tensor scores = at::tensor(std::vector<float>{0.5f});
  const at::Tensor classes = at::tensor(std::vector<int64_t>{0});
  EXPECT_FALSE(BatchedNms(at::zeros({1, 5}), scores, classes, 0.5, 10).ok());
  EXPECT_FALSE(BatchedNms(boxes, at::zeros({2}), classes, 0.5, 10).ok());
  EXPECT_FALSE(BatchedNms(boxes, scores, at::zeros({1}), 0.5, 10).ok());  // Float classes.
  EXPECT_FALSE(BatchedNms(boxes, scores, classes, 1.5, 10).ok());
  EXPECT_FALSE(BatchedNms(boxes, scores, classes, 0.5, -1).ok());
  EXPECT_EQ(BatchedNms(boxes, scores, classes, -0.1, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Random crowded scenes: half precision boxes give the float result, and no two kept boxes of
// a class overlap beyond the threshold.
TEST(BatchedNmsTest, RandomScenesKeepNoOverlapsAndAgreeAcrossDtypes) {
  at::manual_seed(5);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t k = 200;
    const at::Tensor corner = at::randint(0, 200, {k, 2}).to(at::kFloat);
    const at::Tensor size = at::randint(4, 60, {k, 2}).to(at::kFloat);
    const at::Tensor boxes = at::cat({corner, corner + size}, 1);
    const at::Tensor scores = at::rand({k});
    const at::Tensor classes = at::randint(0, 3, {k}, at::kLong);
    absl::StatusOr<std::vector<int64_t>> cpu = BatchedNms(boxes, scores, classes, 0.5, 1000);
    ASSERT_TRUE(cpu.ok());
    ASSERT_GT(cpu->size(), 10u);
    ASSERT_LT(cpu->size(), static_cast<size_t>(k));
    // Integer coordinates are exact in float16.
    absl::StatusOr<std::vector<int64_t>> half =
        BatchedNms(boxes.to(at::kHalf), scores, classes, 0.5, 1000);
    ASSERT_TRUE(half.ok());
    EXPECT_EQ(*half, *cpu);
    // No two kept boxes of one class overlap beyond the threshold.
    for (size_t a = 0; a < cpu->size(); ++a) {
      for (size_t b = a + 1; b < cpu->size(); ++b) {
        const int64_t i = (*cpu)[a], j = (*cpu)[b];
        if (classes[i].item<int64_t>() != classes[j].item<int64_t>()) continue;
        const at::Tensor lo = at::maximum(boxes[i], boxes[j]), hi = at::minimum(boxes[i], boxes[j]);
        const double w = std::max(0.0, hi[2].item<double>() - lo[0].item<double>());
        const double h = std::max(0.0, hi[3].item<double>() - lo[1].item<double>());
        const double inter = w * h;
        const double area_i = ((boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])).item<double>();
        const double area_j = ((boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])).item<double>();
        EXPECT_LE(inter / (area_i + area_j - inter), 0.5 + 1e-6);
      }
    }
  }
}

TEST(BatchedNmsCudaTest, KeepsWhatTheCpuKeeps) {
  if (!at::globalContext().hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(6);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t k = 500;
    const at::Tensor corner = at::rand({k, 2}) * 300;
    const at::Tensor boxes = at::cat({corner, corner + 4 + at::rand({k, 2}) * 60}, 1);
    const at::Tensor scores = at::rand({k});
    const at::Tensor classes = at::randint(0, 4, {k}, at::kLong);
    absl::StatusOr<std::vector<int64_t>> cpu = BatchedNms(boxes, scores, classes, 0.45, 300);
    absl::StatusOr<std::vector<int64_t>> cuda = BatchedNms(
        boxes.to(at::kCUDA), scores.to(at::kCUDA), classes.to(at::kCUDA), 0.45, 300);
    ASSERT_TRUE(cpu.ok() && cuda.ok());
    EXPECT_EQ(*cuda, *cpu);
  }
}

}  // namespace
}  // namespace vitserve

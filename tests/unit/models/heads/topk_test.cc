#include "models/heads/topk.h"

#include <ATen/ATen.h>

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

TEST(TopKSoftmaxTest, ReturnsBestClassesInOrderWithProbabilities) {
  const at::Tensor logits =
      at::tensor({1.0f, 3.0f, 2.0f, 0.0f, 0.0f, 0.0f, 5.0f, 0.0f}, at::kFloat).view({2, 4});
  absl::StatusOr<std::vector<std::vector<ClassScore>>> top = TopKSoftmax(logits, 2);
  ASSERT_TRUE(top.ok()) << top.status();
  ASSERT_EQ(top->size(), 2u);
  ASSERT_EQ((*top)[0].size(), 2u);
  EXPECT_EQ((*top)[0][0].index, 1);
  EXPECT_EQ((*top)[0][1].index, 2);
  const double denom = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + 1.0;
  EXPECT_NEAR((*top)[0][0].score, std::exp(3.0) / denom, 1e-6);
  EXPECT_NEAR((*top)[0][1].score, std::exp(2.0) / denom, 1e-6);
  EXPECT_EQ((*top)[1][0].index, 2);
  // Ties keep ascending class order.
  EXPECT_EQ((*top)[1][1].index, 0);
}

// Against torch: softmax, then a stable descending sort (equal probabilities in ascending class
// order), on ImageNet-sized rows with many exactly equal logits, for k = 1, 5 and every class.
TEST(TopKSoftmaxTest, MatchesTorchSoftmaxAndStableSortOnLargeRowsWithTies) {
  at::manual_seed(7);
  // Logits on a coarse grid (multiples of 1/4 in [-8, 8)): about 15 classes share each value.
  const at::Tensor logits = at::randint(-32, 32, {3, 1000}).to(at::kFloat) / 4;
  const at::Tensor probs = logits.softmax(1);
  const auto [sorted, indices] = probs.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
  for (int64_t k : {1, 5, 1000}) {
    absl::StatusOr<std::vector<std::vector<ClassScore>>> top = TopKSoftmax(logits, k);
    ASSERT_TRUE(top.ok()) << top.status();
    ASSERT_EQ(top->size(), 3u);
    for (int64_t r = 0; r < 3; ++r) {
      ASSERT_EQ((*top)[r].size(), static_cast<size_t>(k));
      for (int64_t j = 0; j < k; ++j) {
        ASSERT_EQ((*top)[r][j].index, indices[r][j].item<int64_t>()) << "row " << r << " rank " << j;
        ASSERT_NEAR((*top)[r][j].score, sorted[r][j].item<float>(), 1e-6);
      }
    }
  }
}

TEST(TopKSoftmaxTest, AcceptsReducedPrecisionLogits) {
  const at::Tensor logits = at::tensor({0.5f, -1.0f, 4.0f}, at::kFloat).view({1, 3});
  auto top = TopKSoftmax(logits.to(at::kBFloat16), 3);
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ((*top)[0][0].index, 2);
  float sum = 0;
  for (const ClassScore& s : (*top)[0]) sum += s.score;
  EXPECT_NEAR(sum, 1.0f, 1e-2);
}

TEST(TopKSoftmaxTest, RejectsKOutsideOneToClasses) {
  const at::Tensor logits = at::zeros({1, 5});
  EXPECT_THAT(TopKSoftmax(logits, 0).status().message(), HasSubstr("allowed: 1..5"));
  EXPECT_EQ(TopKSoftmax(logits, 6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(TopKSoftmax(logits, 5).ok());
}

TEST(TopKSoftmaxTest, RejectsNonMatrixLogits) {
  EXPECT_EQ(TopKSoftmax(at::zeros({5}), 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TopKSoftmax(at::Tensor(), 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TopKSoftmax(at::zeros({2, 3}, at::kLong), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Rows of ClassifierOutputLayout{2, 1}: two logits, the device's best probability and its class.
TEST(TopKOfOutputTest, ReadsTheDevicesPlacesAndFallsBackToTheLogitsForMore) {
  const at::Tensor rows = at::tensor({3.0f, 1.0f, 0.5f, 1.0f,  //
                                      0.0f, 2.0f, 0.25f, 0.0f})
                              .view({2, 4});
  const ClassifierOutputLayout layout{2, 1};
  EXPECT_EQ(layout.columns(), 4);
  absl::StatusOr<std::vector<std::vector<ClassScore>>> read = TopKOfOutput(rows, layout, 1);
  ASSERT_TRUE(read.ok()) << read.status();
  // The columns as written (not the logits' softmax): the device's answer is what is read.
  EXPECT_EQ((*read)[0][0].index, 1);
  EXPECT_EQ((*read)[0][0].score, 0.5f);
  EXPECT_EQ((*read)[1][0].index, 0);
  EXPECT_EQ((*read)[1][0].score, 0.25f);

  absl::StatusOr<std::vector<std::vector<ClassScore>>> computed = TopKOfOutput(rows, layout, 2);
  absl::StatusOr<std::vector<std::vector<ClassScore>>> expected =
      TopKSoftmax(rows.narrow(1, 0, 2), 2);
  ASSERT_TRUE(computed.ok()) << computed.status();
  ASSERT_TRUE(expected.ok());
  for (size_t r = 0; r < 2; ++r) {
    for (size_t j = 0; j < 2; ++j) {
      EXPECT_EQ((*computed)[r][j].index, (*expected)[r][j].index);
      EXPECT_EQ((*computed)[r][j].score, (*expected)[r][j].score);
    }
  }
  // Without device columns, TopKSoftmax itself.
  absl::StatusOr<std::vector<std::vector<ClassScore>>> plain =
      TopKOfOutput(rows.narrow(1, 0, 2), ClassifierOutputLayout{2, 0}, 1);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*plain)[0][0].index, 0);
}

TEST(TopKOfOutputTest, RejectsRowsOfAnotherLayoutAndPlacesThatNameNoClass) {
  const ClassifierOutputLayout layout{2, 1};
  EXPECT_THAT(TopKOfOutput(at::zeros({1, 2}), layout, 1).status().message(),
              HasSubstr("must have 4 columns"));
  EXPECT_EQ(TopKOfOutput(at::zeros({1, 4}, at::kDouble), layout, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TopKOfOutput(at::zeros({1, 4}), layout, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  // What the kernel writes for a row of NaN logits: index -1.
  const at::Tensor nan_row = at::tensor({NAN, NAN, NAN, -1.0f}).view({1, 4});
  absl::StatusOr<std::vector<std::vector<ClassScore>>> read = TopKOfOutput(nan_row, layout, 1);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(read.status().message(), HasSubstr("names class -1 of 2"));
}

}  // namespace
}  // namespace vitserve

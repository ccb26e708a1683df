#include "server/image/tensor_preprocess.h"

#include <ATen/ATen.h>

#include <vector>

namespace vitserve {
namespace {

// The [length_out, length_in] weights as a float32 tensor transposed to [length_in, length_out],
// on `like`'s device.
at::Tensor TransposedWeights(std::vector<float> weights, int64_t output_length,
                             int64_t source_length, const at::Tensor& like) {
  at::Tensor host = at::from_blob(weights.data(), {output_length, source_length}, at::kFloat);
  return host.t().contiguous().to(like.device());
}

}  // namespace

TensorPreprocessor::TensorPreprocessor(const PreprocessSpec& spec) : spec_(spec) {}

const TensorPreprocessor::Weights& TensorPreprocessor::WeightsFor(int64_t height, int64_t width,
                                                                  const at::Tensor& like) {
  const std::pair<int64_t, int64_t> key(height, width);
  auto it = weights_.find(key);
  if (it != weights_.end() && it->second.rows.device() == like.device()) return it->second;
  if (weights_.size() >= kMaxCachedSizes) weights_.clear();
  const CropGeometry g =
      ComputeCropGeometry(static_cast<int>(width), static_cast<int>(height), spec_);
  const ResizeFilter filter = ResizeFilterFor(g, spec_);
  const int64_t s = spec_.input_size;
  Weights weights;
  weights.columns = TransposedWeights(
      ResizeCropMatrix(width, g.resized_width, g.crop_x, s, filter), s, width, like);
  weights.rows = TransposedWeights(
      ResizeCropMatrix(height, g.resized_height, g.crop_y, s, filter), s, height, like);
  if (!scale_.defined() || scale_.device() != like.device()) {
    std::vector<float> scale(3), offset(3);
    for (int c = 0; c < 3; ++c) {
      scale[c] = 1.0f / (255.0f * spec_.std[c]);
      offset[c] = -spec_.mean[c] / spec_.std[c];
    }
    scale_ = at::tensor(scale).view({1, 3, 1, 1}).to(like.device());
    offset_ = at::tensor(offset).view({1, 3, 1, 1}).to(like.device());
  }
  return weights_.insert_or_assign(key, std::move(weights)).first->second;
}

void TensorPreprocessor::Run(const at::Tensor& images, at::Tensor out) {
  TORCH_CHECK(images.dim() == 4 && images.size(3) == 3 && images.scalar_type() == at::kByte,
              "TensorPreprocessor: images must be uint8 [n, h, w, 3], got ",
              images.scalar_type(), " ", images.sizes());
  const int64_t n = images.size(0);
  const int64_t s = spec_.input_size;
  TORCH_CHECK(out.dim() == 4 && out.size(0) == n && out.size(1) == 3 && out.size(2) == s &&
                  out.size(3) == s && out.device() == images.device(),
              "TensorPreprocessor: out must be [", n, ", 3, ", s, ", ", s, "] on ",
              images.device(), ", got ", out.sizes(), " on ", out.device());
  const Weights& weights = WeightsFor(images.size(1), images.size(2), images);
  // [n, 3, h, w] float: one widening copy out of the interleaved pixels.
  const at::Tensor planes = images.permute({0, 3, 1, 2}).to(at::kFloat);
  // Columns first: [n, 3, h, w] x [w, S] folds into one matrix product.
  const at::Tensor columns = at::matmul(planes, weights.columns);  // [n, 3, h, S]
  // Then rows, on the transpose: [n, 3, S(x), h] x [h, S(y)] -> [n, 3, S(x), S(y)].
  at::Tensor resized = at::matmul(columns.transpose(2, 3), weights.rows);
  // The CPU path (and timm's, through PIL) resizes into 8-bit pixels: saturated at the ends of
  // the range and rounded, halves up as OpenCV's fixed-point and block-average paths do. So is
  // this: only a rare pixel that OpenCV's arithmetic rounds the other way ends up one grey
  // level apart.
  resized.clamp_(0.0, 255.0).add_(0.5).floor_().mul_(scale_).add_(offset_);
  out.copy_(resized.transpose(2, 3));
}

}  // namespace vitserve

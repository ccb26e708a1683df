#include "server/image/tensor_preprocess.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#ifdef VITSERVE_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "server/image/internal/preprocess_kernel.h"
#endif

namespace vitserve {
namespace {

// The [length_out, length_in] weights as a float32 tensor transposed to [length_in, length_out],
// on `like`'s device.
at::Tensor TransposedWeights(const std::vector<float>& weights, int64_t output_length,
                             int64_t source_length, const at::Tensor& like) {
  at::Tensor host = at::from_blob(const_cast<float*>(weights.data()), {output_length, source_length},
                                  at::kFloat);
  return host.t().contiguous().to(like.device());
}

// The [output_length, source_length] matrix as taps: per output index the first source index
// and `*taps` consecutive weights, `*taps` the widest span of non-zero weights of any output
// (starts moved left where needed, so no tap reads past the source). Tensors on `like`'s device.
void ToTaps(const std::vector<float>& matrix, int64_t output_length, int64_t source_length,
            const at::Tensor& like, at::Tensor* start, at::Tensor* weights, int64_t* taps) {
  std::vector<int32_t> first(output_length, 0);
  std::vector<int32_t> last(output_length, 0);
  int64_t width = 1;
  for (int64_t o = 0; o < output_length; ++o) {
    const float* row = matrix.data() + o * source_length;
    int64_t lo = 0;
    while (lo < source_length - 1 && row[lo] == 0.f) ++lo;
    int64_t hi = source_length - 1;
    while (hi > lo && row[hi] == 0.f) --hi;
    first[o] = static_cast<int32_t>(lo);
    last[o] = static_cast<int32_t>(hi);
    width = std::max(width, hi - lo + 1);
  }
  std::vector<float> packed(output_length * width, 0.f);
  for (int64_t o = 0; o < output_length; ++o) {
    first[o] = static_cast<int32_t>(std::min<int64_t>(first[o], source_length - width));
    for (int64_t k = 0; k < width; ++k) {
      packed[o * width + k] = matrix[o * source_length + first[o] + k];
    }
  }
  *start = at::tensor(first, at::kInt).to(like.device());
  *weights = at::from_blob(packed.data(), {output_length, width}, at::kFloat).to(like.device());
  *taps = width;
}

}  // namespace

TensorPreprocessor::TensorPreprocessor(const PreprocessSpec& spec) : spec_(spec) {
  for (int c = 0; c < 3; ++c) {
    scale_values_[c] = 1.0f / (255.0f * spec_.std[c]);
    offset_values_[c] = -spec_.mean[c] / spec_.std[c];
  }
}

const TensorPreprocessor::Weights& TensorPreprocessor::WeightsFor(int64_t height, int64_t width,
                                                                  const at::Tensor& like) {
  const std::pair<int64_t, int64_t> key(height, width);
  auto it = weights_.find(key);
  if (it != weights_.end() && it->second.device == like.device()) return it->second;
  if (weights_.size() >= kMaxCachedSizes) weights_.clear();
  const CropGeometry g =
      ComputeCropGeometry(static_cast<int>(width), static_cast<int>(height), spec_);
  const ResizeFilter filter = ResizeFilterFor(g, spec_);
  const int64_t s = spec_.input_size;
  const std::vector<float> column_matrix =
      ResizeCropMatrix(width, g.resized_width, g.crop_x, s, filter);
  const std::vector<float> row_matrix =
      ResizeCropMatrix(height, g.resized_height, g.crop_y, s, filter);
  Weights weights;
  weights.device = like.device();
  if (like.is_cuda()) {
    ToTaps(column_matrix, s, width, like, &weights.column_start, &weights.column_weights,
           &weights.column_taps);
    ToTaps(row_matrix, s, height, like, &weights.row_start, &weights.row_weights,
           &weights.row_taps);
  } else {
    weights.columns = TransposedWeights(column_matrix, s, width, like);
    weights.rows = TransposedWeights(row_matrix, s, height, like);
  }
  // The fused kernel takes the values themselves; the tensor ops need them as tensors.
  if (!like.is_cuda() && (!scale_.defined() || scale_.device() != like.device())) {
    scale_ = at::tensor(std::vector<float>(scale_values_.begin(), scale_values_.end()))
                 .view({1, 3, 1, 1})
                 .to(like.device());
    offset_ = at::tensor(std::vector<float>(offset_values_.begin(), offset_values_.end()))
                  .view({1, 3, 1, 1})
                  .to(like.device());
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
  if (images.is_cuda()) return RunFused(images, weights, out);
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

void TensorPreprocessor::RunFused(const at::Tensor& images, const Weights& weights,
                                  at::Tensor out) {
#ifdef VITSERVE_WITH_CUDA
  using image_internal::PreprocessDtype;
  TORCH_CHECK(out.scalar_type() == at::kFloat || out.scalar_type() == at::kHalf ||
                  out.scalar_type() == at::kBFloat16,
              "TensorPreprocessor: out must be float32, float16 or bfloat16, got ",
              out.scalar_type());
  const c10::cuda::CUDAGuard guard(images.device());
  image_internal::PreprocessParams params;
  params.batch = static_cast<int>(images.size(0));
  params.height = static_cast<int>(images.size(1));
  params.width = static_cast<int>(images.size(2));
  params.size = static_cast<int>(spec_.input_size);
  params.images = images.data_ptr<uint8_t>();
  params.rows = {weights.row_start.data_ptr<int32_t>(), weights.row_weights.data_ptr<float>(),
                 static_cast<int>(weights.row_taps)};
  params.columns = {weights.column_start.data_ptr<int32_t>(),
                    weights.column_weights.data_ptr<float>(),
                    static_cast<int>(weights.column_taps)};
  for (int i = 0; i < 4; ++i) {
    params.image_strides[i] = images.stride(i);
    params.out_strides[i] = out.stride(i);
  }
  for (int c = 0; c < 3; ++c) {
    params.scale[c] = scale_values_[c];
    params.offset[c] = offset_values_[c];
  }
  params.dtype = out.scalar_type() == at::kFloat  ? PreprocessDtype::kFloat32
                 : out.scalar_type() == at::kHalf ? PreprocessDtype::kFloat16
                                                  : PreprocessDtype::kBFloat16;
  params.out = out.data_ptr();
  C10_CUDA_CHECK(image_internal::LaunchPreprocess(
      params, c10::cuda::getCurrentCUDAStream(images.device().index()).stream()));
#else
  TORCH_CHECK(false, "TensorPreprocessor: CUDA images, but this build has no CUDA support");
#endif
}

}  // namespace vitserve

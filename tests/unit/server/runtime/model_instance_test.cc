#include "server/runtime/model_instance.h"

#include <atomic>
#include <iostream>
#include <string>
#include <string_view>
#include <chrono>
#include <thread>
#include <cstring>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/cuda.h>
#include <torch/nn/modules/linear.h>
#ifdef VITSERVE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/heads/topk.h"
#include "server/image/decode.h"
#include "server/image/gpu_jpeg_decoder.h"
#include "server/image/image.h"
#include "server/image/jpeg_part.h"
#include "server/image/preprocess.h"
#include "server/runtime/device.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

// Linear classifier over position-weighted pooled pixels: [N,3,S,S] -> [N,4]. Each pixel is
// weighted by its row-major position, so the output depends on where every value sits: rows
// of the batch swapped, H and W transposed or channels reordered by a layout bug all change it
// (plain mean pooling would hide the last two). Counts forward calls.
class TinyModel : public VisionModel {
 public:
  TinyModel() {
    linear_ = register_module("head", torch::nn::Linear(3, 4));
  }
  torch::Tensor forward(torch::Tensor images) override {
    ++calls;
    last_dtype = images.scalar_type();
    const int64_t h = images.size(2), w = images.size(3);
    const at::Tensor position =
        at::arange(h * w, images.options()).view({1, 1, h, w}) * (4.0 / (h * w));
    return linear_->forward((images * position).mean({2, 3}));
  }
  std::atomic<int> calls{0};
  at::ScalarType last_dtype = at::kFloat;

 private:
  torch::nn::Linear linear_{nullptr};
};

class ThrowingModel : public VisionModel {
 public:
  torch::Tensor forward(torch::Tensor images) override {
    TORCH_CHECK(false, "kaboom in forward");
    return images;
  }
};

// A TinyModel on a device that holds at most `max_rows` rows: a larger forward pass throws
// c10::OutOfMemoryError, as the CUDA caching allocator does. Records every pass's rows.
class MemoryBudgetModel : public TinyModel {
 public:
  explicit MemoryBudgetModel(int64_t max_rows) : max_rows_(max_rows) {}
  torch::Tensor forward(torch::Tensor images) override {
    attempted_rows.push_back(images.size(0));
    TORCH_CHECK_WITH(OutOfMemoryError, images.size(0) <= max_rows_,
                     "tried to allocate rows for ", images.size(0), " images");
    return TinyModel::forward(images);
  }
  std::vector<int64_t> attempted_rows;

 private:
  const int64_t max_rows_;
};

at::Tensor Batch(int64_t n, int64_t size) {
  at::manual_seed(0);
  return at::rand({n, 3, size, size}, at::kFloat);
}

// A TinyModel with `source`'s weights (the instance under test moves its own to the device).
std::shared_ptr<TinyModel> CopyOf(TinyModel& source) {
  auto copy = std::make_shared<TinyModel>();
  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < copy->parameters().size(); ++i) {
    copy->parameters()[i].copy_(source.parameters()[i]);
  }
  return copy;
}

at::Tensor Reference(TinyModel& model, const at::Tensor& batch) {
  c10::InferenceMode guard;
  return model.forward(batch);
}


// uint8 [n, height, width, 3] images with smooth, distinct content per image (seeded).
at::Tensor Images(int64_t n, int64_t height, int64_t width, int seed) {
  const at::Tensor y = at::arange(height, at::kFloat).view({1, height, 1, 1});
  const at::Tensor x = at::arange(width, at::kFloat).view({1, 1, width, 1});
  const at::Tensor channel = at::arange(3, at::kFloat).view({1, 1, 1, 3});
  const at::Tensor image = at::arange(n, at::kFloat).view({n, 1, 1, 1}) + seed;
  return (127.5 + 120.0 * at::sin(x * (0.3 + 0.1 * channel) + y * 0.2 + image))
      .round()
      .to(at::kByte);
}

// What the CPU path makes of `images` (Preprocess, i.e. OpenCV), as float rows.
at::Tensor PreprocessedOnCpu(const at::Tensor& images, const PreprocessSpec& spec) {
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < images.size(0); ++i) {
    const at::Tensor image = images[i].contiguous();
    cv::Mat pixels(static_cast<int>(image.size(0)), static_cast<int>(image.size(1)), CV_8UC3);
    std::memcpy(pixels.data, image.data_ptr(), static_cast<size_t>(image.numel()));
    absl::StatusOr<PreprocessedImage> out = Preprocess(RgbImage{pixels}, spec);
    EXPECT_TRUE(out.ok()) << out.status();
    rows.push_back(out->tensor);
  }
  return at::stack(rows);
}

PreprocessSpec SmallSpec() {
  PreprocessSpec spec;
  spec.input_size = 16;  // Resized to 18 on the shorter side, then cropped.
  return spec;
}

// An fp16 instance on the first CUDA device that preprocesses images of SmallSpec, warmed up
// and captured at batch sizes 1 and 8.
InstanceOptions CudaImageOptions() {
  InstanceOptions options;
  options.device = c10::Device(c10::kCUDA, 0);
  options.dtype = at::kHalf;
  options.input_size = 16;
  options.image_preprocess = SmallSpec();
  options.warmup_batch_sizes = {1, 8};
  options.cuda_graph_batch_sizes = {1, 8};
  return options;
}

// A mixed batch, as the batcher hands it over: runs of image parts (two sizes, enlarged and
// shrunk, one part of two images) around a part of preprocessed float rows.
struct MixedBatch {
  std::vector<at::Tensor> parts;
  at::Tensor rows;  // The same batch preprocessed on the CPU, [6, 3, 16, 16].
};
MixedBatch MakeMixedBatch() {
  const PreprocessSpec spec = SmallSpec();
  MixedBatch batch;
  const at::Tensor a = Images(2, 12, 20, 0);  // Enlarged (cubic).
  const at::Tensor b = Images(1, 12, 20, 5);  // Same size as a: one run with it.
  const at::Tensor floats = PreprocessedOnCpu(Images(1, 30, 30, 7), spec);
  const at::Tensor c = Images(2, 40, 33, 9);  // Shrunk (area).
  batch.parts = {a, b, floats, c};
  batch.rows = at::cat({PreprocessedOnCpu(a, spec), PreprocessedOnCpu(b, spec), floats,
                        PreprocessedOnCpu(c, spec)});
  return batch;
}

TEST(ModelInstanceTest, RunsOnCpuAndReturnsFloat32) {
  auto model = std::make_shared<TinyModel>();
  InstanceOptions options;
  options.input_size = 8;
  absl::StatusOr<std::unique_ptr<ModelInstance>> instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_FALSE(model->is_training());
  const at::Tensor batch = Batch(2, 8);
  absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->sizes(), (at::IntArrayRef{2, 4}));
  EXPECT_EQ(out->scalar_type(), at::kFloat);
  EXPECT_TRUE(out->device().is_cpu());
  EXPECT_TRUE(at::allclose(*out, Reference(*model, batch), 1e-5, 1e-6));
}

TEST(ModelInstanceTest, WarmsUpEachBatchSize) {
  auto model = std::make_shared<TinyModel>();
  InstanceOptions options;
  options.input_size = 8;
  options.warmup_batch_sizes = {1, 4};
  options.warmup_iterations = 2;
  ASSERT_TRUE(ModelInstance::Create(model, options).ok());
  EXPECT_EQ(model->calls.load(), 4);
}

TEST(ModelInstanceTest, DeferredWarmUpRunsOnlyWhenCalled) {
  auto model = std::make_shared<TinyModel>();
  InstanceOptions options;
  options.input_size = 8;
  options.warmup_batch_sizes = {1, 4};
  options.defer_warm_up = true;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_EQ(model->calls.load(), 0);
  ASSERT_TRUE((*instance)->WarmUp().ok());
  EXPECT_EQ(model->calls.load(), 2);
}

TEST(ModelInstanceTest, Bfloat16OnCpuIsCloseToFloat32) {
  auto reference = std::make_shared<TinyModel>();
  auto model = std::make_shared<TinyModel>();
  // Same weights in both.
  {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < model->parameters().size(); ++i) {
      model->parameters()[i].copy_(reference->parameters()[i]);
    }
  }
  InstanceOptions options;
  options.dtype = at::kBFloat16;
  options.input_size = 8;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const at::Tensor batch = Batch(3, 8);
  absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(model->last_dtype, at::kBFloat16);
  EXPECT_EQ(out->scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(*out, Reference(*reference, batch), /*rtol=*/2e-2, /*atol=*/2e-2));
}

TEST(ModelInstanceTest, ChannelsLastGivesSameResult) {
  auto model = std::make_shared<TinyModel>();
  InstanceOptions options;
  options.channels_last = true;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const at::Tensor batch = Batch(2, 6);
  absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::allclose(*out, Reference(*model, batch), 1e-5, 1e-6));
}

// A batch given as parts (as the batcher hands over its tasks' rows) gives exactly what their
// concatenation gives, row by row in order; parts of different shapes are refused.
TEST(ModelInstanceTest, RunPartsEqualsRunOnTheConcatenation) {
  auto model = std::make_shared<TinyModel>();
  auto reference = CopyOf(*model);
  InstanceOptions options;
  options.input_size = 6;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const at::Tensor batch = Batch(5, 6);
  absl::StatusOr<at::Tensor> out =
      (*instance)->RunParts({batch.narrow(0, 0, 2), batch.narrow(0, 2, 1), batch.narrow(0, 3, 2)});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::allclose(*out, Reference(*reference, batch), 1e-5, 1e-6));
  EXPECT_EQ((*instance)->RunParts({batch, Batch(1, 4)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*instance)->RunParts({}).status().code(), absl::StatusCode::kInvalidArgument);
}

// The test model really sees layout: a transposed or channel-swapped batch gives other logits,
// so the tests above would catch an instance that reorders its input.
TEST(ModelInstanceTest, TinyModelOutputDependsOnLayout) {
  TinyModel model;
  const at::Tensor batch = Batch(2, 6);
  const at::Tensor out = Reference(model, batch);
  EXPECT_GT((Reference(model, batch.transpose(2, 3).contiguous()) - out).abs().max().item<float>(),
            1e-3);
  EXPECT_GT((Reference(model, batch.flip(1).contiguous()) - out).abs().max().item<float>(), 1e-3);
  EXPECT_GT((Reference(model, batch.flip(0).contiguous()) - out).abs().max().item<float>(), 1e-3);
}

TEST(ModelInstanceTest, ThrowingModuleBecomesInternalStatus) {
  auto instance = ModelInstance::Create(std::make_shared<ThrowingModel>(), InstanceOptions{});
  ASSERT_TRUE(instance.ok()) << instance.status();
  absl::StatusOr<at::Tensor> out = (*instance)->Run(Batch(1, 4));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(out.status().message(), HasSubstr("kaboom in forward"));
}

TEST(ModelInstanceTest, ABatchThatRunsOutOfMemoryIsRunInHalves) {
  auto model = std::make_shared<MemoryBudgetModel>(/*max_rows=*/3);
  MemoryBudgetModel* seen = model.get();
  TinyModel reference;
  {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < reference.parameters().size(); ++i) {
      reference.parameters()[i].copy_(model->parameters()[i]);
    }
  }
  InstanceOptions options;
  options.input_size = 4;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  // 10 rows in two parts of 3 and 7: the cut at 5 falls inside the second part.
  const at::Tensor batch = Batch(10, 4);
  BatchStages stages;
  absl::StatusOr<at::Tensor> out =
      (*instance)->RunParts({batch.narrow(0, 0, 3), batch.narrow(0, 3, 7)}, &stages);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::allclose(*out, Reference(reference, batch), 1e-5, 1e-6));
  // 10 -> 5 + 5 -> (2 + 3) + (2 + 3).
  EXPECT_THAT(seen->attempted_rows, ::testing::ElementsAre(10, 5, 2, 3, 5, 2, 3));
  EXPECT_GT(stages.forward_seconds, 0.0);

  // A batch within the budget runs once; the instance is not left in a split mode.
  seen->attempted_rows.clear();
  ASSERT_TRUE((*instance)->Run(Batch(3, 4)).ok());
  EXPECT_THAT(seen->attempted_rows, ::testing::ElementsAre(3));
}

TEST(ModelInstanceTest, ARowThatDoesNotFitIsResourceExhausted) {
  auto model = std::make_shared<MemoryBudgetModel>(/*max_rows=*/0);
  MemoryBudgetModel* seen = model.get();
  InstanceOptions options;
  options.input_size = 4;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  absl::StatusOr<at::Tensor> out = (*instance)->Run(Batch(2, 4));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(out.status().message(), HasSubstr("out of memory"));
  EXPECT_THAT(seen->attempted_rows, ::testing::ElementsAre(2, 1));
}

TEST(ModelInstanceTest, WarmUpFailureFailsCreate) {
  InstanceOptions options;
  options.input_size = 4;
  options.warmup_batch_sizes = {2};
  auto instance = ModelInstance::Create(std::make_shared<ThrowingModel>(), options);
  EXPECT_EQ(instance.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(instance.status().message(), HasSubstr("warm-up at batch size 2"));
}

TEST(ModelInstanceTest, RejectsBadInputAndOptions) {
  InstanceOptions options;
  options.input_size = 8;
  auto instance = ModelInstance::Create(std::make_shared<TinyModel>(), options);
  ASSERT_TRUE(instance.ok());
  EXPECT_EQ((*instance)->Run(Batch(1, 4)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*instance)->Run(at::zeros({1, 3, 8, 8}, at::kDouble)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*instance)->Run(at::zeros({3, 8, 8})).status().code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(ModelInstance::Create(nullptr, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.dtype = at::kInt;
  EXPECT_EQ(ModelInstance::Create(std::make_shared<TinyModel>(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelInstanceTest, DeviceTopKNeedsACudaDevice) {
  InstanceOptions options;
  options.input_size = 8;
  options.device_top_k = 5;
  absl::StatusOr<std::unique_ptr<ModelInstance>> instance =
      ModelInstance::Create(std::make_shared<TinyModel>(), options);
  EXPECT_EQ(instance.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(instance.status().message(), HasSubstr("device_top_k 5 on cpu"));
  options.device_top_k = -1;
  EXPECT_EQ(ModelInstance::Create(std::make_shared<TinyModel>(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DeviceTest, ParsesCpuAndRejectsBadSyntax) {
  absl::StatusOr<c10::Device> cpu = ParseDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_TRUE(cpu->is_cpu());
  EXPECT_EQ(GpuMemoryUsedBytes(*cpu), 0.0);
  for (const char* bad : {"gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda0", ""}) {
    EXPECT_EQ(ParseDevice(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(DeviceTest, CudaNeedsACudaHost) {
  if (torch::cuda::is_available()) {
    absl::StatusOr<c10::Device> cuda = ParseDevice("cuda");
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    EXPECT_TRUE(cuda->is_cuda());
    EXPECT_EQ(cuda->index(), 0);
    EXPECT_EQ(ParseDevice("cuda:99").status().code(), absl::StatusCode::kInvalidArgument);
  } else {
    absl::Status status = ParseDevice("cuda:0").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(status.message(), HasSubstr("CUDA device requested but this build/host has no CUDA"));
  }
}

TEST(CudaGraphBucketsTest, PowersOfTwoBelowTheMaximumThenTheMaximum) {
  EXPECT_EQ(CudaGraphBatchSizes(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(CudaGraphBatchSizes(8), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(CudaGraphBatchSizes(12), (std::vector<int64_t>{1, 2, 4, 8, 12}));
  EXPECT_EQ(CudaGraphBatchSizes(64).size(), 7u);
}

TEST(CudaGraphBucketsTest, RequestedSizesAreSortedWithoutRepeatsAndEndAtTheMaximum) {
  EXPECT_EQ(CudaGraphBatchSizes(128, {}), CudaGraphBatchSizes(128));
  EXPECT_EQ(CudaGraphBatchSizes(128, {96, 48, 96, 16}),
            (std::vector<int64_t>{16, 48, 96, 128}));
  // The maximum is there once however it is asked for; larger sizes could never run.
  EXPECT_EQ(CudaGraphBatchSizes(64, {64, 8, 200}), (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(CudaGraphBatchSizes(1, {1}), (std::vector<int64_t>{1}));
}

TEST(CudaGraphBucketsTest, SmallestBucketThatHoldsTheBatch) {
  const std::vector<int64_t> buckets = {1, 2, 4, 8, 12};
  EXPECT_EQ(BucketFor(buckets, 1), 0);
  EXPECT_EQ(BucketFor(buckets, 3), 2);
  EXPECT_EQ(BucketFor(buckets, 4), 2);
  EXPECT_EQ(BucketFor(buckets, 9), 4);
  EXPECT_EQ(BucketFor(buckets, 13), -1);  // Larger than every graph: runs eagerly.
  EXPECT_EQ(BucketFor({}, 1), -1);
}

// CUDA graphs are a CUDA feature: on CPU the option changes nothing.
TEST(ModelInstanceTest, CudaGraphSizesAreIgnoredOnCpu) {
  auto model = std::make_shared<TinyModel>();
  InstanceOptions options;
  options.input_size = 8;
  options.cuda_graph_batch_sizes = {1, 2, 4};
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const at::Tensor batch = Batch(3, 8);
  absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::allclose(*out, Reference(*model, batch)));
}

// Runs only on a CUDA host (the lead's H100): pinned staging, stream, fp16 on device.
TEST(ModelInstanceCudaTest, RunsOnCudaInHalfPrecision) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto reference = std::make_shared<TinyModel>();
  auto model = CopyOf(*reference);
  InstanceOptions options;
  options.device = c10::Device(c10::kCUDA, 0);
  options.dtype = at::kHalf;
  options.input_size = 16;
  options.warmup_batch_sizes = {1, 8};
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  for (int64_t n : {1, 8, 3}) {  // Growing, then a smaller view of the pinned buffer.
    const at::Tensor batch = Batch(n, 16);
    absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(out->device().is_cpu());
    EXPECT_EQ(out->scalar_type(), at::kFloat);
    EXPECT_TRUE(at::allclose(*out, Reference(*reference, batch), 1e-2, 1e-2));
  }
  EXPECT_GT(GpuMemoryUsedBytes(options.device), 0.0);
}


// Runs only on a CUDA host: every batch size, inside a bucket, at a bucket's size and beyond the
// largest one (eager), gives the eager instance's answer; padding rows never leak into results.
TEST(ModelInstanceCudaTest, CudaGraphsGiveTheEagerResults) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto reference = std::make_shared<TinyModel>();
  auto model = CopyOf(*reference);
  InstanceOptions options;
  options.device = c10::Device(c10::kCUDA, 0);
  options.input_size = 16;
  options.warmup_batch_sizes = {1, 2, 4};
  options.cuda_graph_batch_sizes = CudaGraphBatchSizes(4);
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const int calls_after_capture = model->calls.load();
  for (int64_t n : {4, 1, 3, 2, 6}) {  // A full bucket first, so later padding rows are stale.
    at::manual_seed(n);
    const at::Tensor batch = at::rand({n, 3, 16, 16}, at::kFloat);
    absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->size(0), n);
    EXPECT_TRUE(at::allclose(*out, Reference(*reference, batch), 1e-4, 1e-4)) << "batch " << n;
    if (n > 1) {  // The same rows as two parts, staged one after the other.
      absl::StatusOr<at::Tensor> parts =
          (*instance)->RunParts({batch.narrow(0, 0, 1), batch.narrow(0, 1, n - 1)});
      ASSERT_TRUE(parts.ok()) << parts.status();
      EXPECT_TRUE(at::allclose(*parts, Reference(*reference, batch), 1e-4, 1e-4)) << "parts " << n;
      // Page-locked parts (what the services hand over for CUDA models) go to the GPU directly.
      const at::Tensor pinned = batch.pin_memory();
      absl::StatusOr<at::Tensor> from_pinned =
          (*instance)->RunParts({pinned.narrow(0, 0, n - 1), pinned.narrow(0, n - 1, 1)});
      ASSERT_TRUE(from_pinned.ok()) << from_pinned.status();
      EXPECT_TRUE(at::allclose(*from_pinned, Reference(*reference, batch), 1e-4, 1e-4))
          << "pinned parts " << n;
    }
  }
  // Replays do not call forward(); only the batches of 6 (beyond the largest graph: whole, in
  // parts and in pinned parts) ran eagerly.
  EXPECT_EQ(model->calls.load(), calls_after_capture + 3);
}

// [N,3,S,S] -> [N, classes] logits on a coarse grid (multiples of 1/4 within about +-4), so
// that dozens of classes share each value in a row: ties the top-k must break by class index.
class CoarseLogitsModel : public VisionModel {
 public:
  explicit CoarseLogitsModel(int64_t classes) {
    linear_ = register_module("head", torch::nn::Linear(3, classes));
  }
  torch::Tensor forward(torch::Tensor images) override {
    return (linear_->forward(images.mean({2, 3})) * 16).round() / 4;
  }

 private:
  torch::nn::Linear linear_{nullptr};
};

// NaN logits, [N, 10].
class NanLogitsModel : public VisionModel {
 public:
  torch::Tensor forward(torch::Tensor images) override {
    return at::full({images.size(0), 10}, NAN, images.options());
  }
};

// Runs only on a CUDA host: with device_top_k the rows are the logits (as an instance without
// it returns them) followed by the softmax top-k TopKSoftmax finds in those logits, ties in
// class order, in every serving dtype, from CUDA graphs and eagerly, for k = C and for the
// most classes the kernel takes.
TEST(ModelInstanceCudaTest, DeviceTopKColumnsAreTheHostsTopKOfTheLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (const int64_t classes : {int64_t{1000}, int64_t{3}, kMaxDeviceTopKClasses}) {
      SCOPED_TRACE(::testing::Message() << c10::toString(dtype) << ", " << classes << " classes");
      const int64_t k = std::min<int64_t>(5, classes);
      auto model = std::make_shared<CoarseLogitsModel>(classes);
      auto plain_model = std::make_shared<CoarseLogitsModel>(classes);
      {
        c10::NoGradGuard no_grad;
        for (size_t i = 0; i < model->parameters().size(); ++i) {
          plain_model->parameters()[i].copy_(model->parameters()[i]);
        }
      }
      InstanceOptions options;
      options.device = c10::Device(c10::kCUDA, 0);
      options.dtype = dtype;
      options.input_size = 16;
      options.warmup_batch_sizes = {1, 4};
      options.cuda_graph_batch_sizes = {1, 4};
      auto plain = ModelInstance::Create(plain_model, options);
      options.device_top_k = k;
      auto instance = ModelInstance::Create(model, options);
      ASSERT_TRUE(instance.ok()) << instance.status();
      ASSERT_TRUE(plain.ok()) << plain.status();
      const ClassifierOutputLayout layout{classes, k};
      for (int64_t n : {4, 1, 3, 6}) {  // Graphs (3 padded into 4), then eager beyond them.
        at::manual_seed(n);
        const at::Tensor batch = at::rand({n, 3, 16, 16});
        absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
        absl::StatusOr<at::Tensor> logits = (*plain)->Run(batch);
        ASSERT_TRUE(out.ok()) << out.status();
        ASSERT_TRUE(logits.ok()) << logits.status();
        ASSERT_EQ(out->sizes(), (at::IntArrayRef{n, layout.columns()}));
        EXPECT_TRUE(at::equal(out->narrow(1, 0, classes), *logits)) << "batch " << n;
        const auto host = TopKSoftmax(*logits, k);
        const auto device = TopKOfOutput(*out, layout, k);
        ASSERT_TRUE(host.ok()) << host.status();
        ASSERT_TRUE(device.ok()) << device.status();
        int ties = 0;
        for (int64_t r = 0; r < n; ++r) {
          for (int64_t j = 0; j < k; ++j) {
            EXPECT_EQ((*device)[r][j].index, (*host)[r][j].index)
                << "batch " << n << " row " << r << " place " << j;
            EXPECT_NEAR((*device)[r][j].score, (*host)[r][j].score, 1e-6);
            if (j > 0 && (*host)[r][j].score == (*host)[r][j - 1].score) ++ties;
          }
        }
        // The coarse logits do tie among the best classes, so the order of ties was tested.
        if (classes == 1000 && n == 6) {
          EXPECT_GT(ties, 0);
        }
      }
    }
  }
}

// Runs only on a CUDA host: NaN logits leave places that name no class (index -1), which the
// reader refuses (INTERNAL) instead of answering with a made-up class; a model with more classes
// than the kernel takes fails at warm-up, saying why.
TEST(ModelInstanceCudaTest, DeviceTopKOfNanLogitsAndOfTooManyClasses) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  InstanceOptions options;
  options.device = c10::Device(c10::kCUDA, 0);
  options.input_size = 16;
  options.warmup_batch_sizes = {1};
  options.device_top_k = 2;
  auto instance = ModelInstance::Create(std::make_shared<NanLogitsModel>(), options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  absl::StatusOr<at::Tensor> out = (*instance)->Run(Batch(2, 16));
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(1), 14);
  EXPECT_TRUE(at::isnan(out->narrow(1, 10, 2)).all().item<bool>());
  EXPECT_TRUE(at::equal(out->narrow(1, 12, 2), at::full({2, 2}, -1.0f)));
  EXPECT_EQ(TopKOfOutput(*out, ClassifierOutputLayout{10, 2}, 1).status().code(),
            absl::StatusCode::kInternal);

  absl::StatusOr<std::unique_ptr<ModelInstance>> too_many = ModelInstance::Create(
      std::make_shared<CoarseLogitsModel>(kMaxDeviceTopKClasses + 1), options);
  EXPECT_FALSE(too_many.ok());
  EXPECT_THAT(too_many.status().message(), HasSubstr("device_top_k 2 needs [N, C] logits"));
}

// Launch and Finish: batches launched one after another and finished later, in any order,
// each give what RunParts gives them alone; a launched batch let go unfinished is harmless.
TEST(ModelInstanceTest, LaunchedBatchesFinishWithTheirOwnOutputs) {
  auto model = std::make_shared<TinyModel>();
  InstanceOptions options;
  options.input_size = 8;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const std::vector<at::Tensor> first = {Batch(2, 8), Batch(1, 8) + 1};
  const std::vector<at::Tensor> second = {Batch(3, 8) * 2};
  absl::StatusOr<at::Tensor> first_alone = (*instance)->RunParts(first);
  absl::StatusOr<at::Tensor> second_alone = (*instance)->RunParts(second);
  ASSERT_TRUE(first_alone.ok() && second_alone.ok());
  auto launched_first = (*instance)->Launch(first);
  auto launched_second = (*instance)->Launch(second);
  { auto dropped = (*instance)->Launch(second); ASSERT_TRUE(dropped.ok()); }
  ASSERT_TRUE(launched_first.ok()) << launched_first.status();
  ASSERT_TRUE(launched_second.ok()) << launched_second.status();
  BatchStages stages;
  absl::StatusOr<at::Tensor> second_out = (*instance)->Finish(*std::move(launched_second), &stages);
  absl::StatusOr<at::Tensor> first_out = (*instance)->Finish(*std::move(launched_first));
  ASSERT_TRUE(first_out.ok() && second_out.ok());
  EXPECT_TRUE(at::equal(*first_out, *first_alone));
  EXPECT_TRUE(at::equal(*second_out, *second_alone));
  EXPECT_GE(stages.forward_seconds, 0.0);
  EXPECT_EQ((*instance)->Launch({}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Runs only on a CUDA host: five batches in flight on one stream (four in CUDA graphs, three of
// them in the same one, so sharing its static input and output; page-locked and pageable float
// parts, image parts through the preprocessing kernel; one eager), then finished, each equal to
// the same batch run alone; one let go unfinished leaves the instance serving.
TEST(ModelInstanceCudaTest, BatchesInFlightGiveWhatEachGivesAlone) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(11);
  auto model = std::make_shared<TinyModel>();
  InstanceOptions options = CudaImageOptions();
  options.cuda_graph_batch_sizes = CudaGraphBatchSizes(8);
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const at::Tensor rows = at::rand({7, 3, 16, 16}, at::kFloat);
  const at::Tensor pinned_rows = at::rand({5, 3, 16, 16}, at::kFloat).pin_memory();
  const MixedBatch mixed = MakeMixedBatch();  // 6 rows.
  const std::vector<std::vector<at::Tensor>> batches = {
      {pinned_rows.narrow(0, 0, 2), rows.narrow(0, 0, 4)},  // 6 rows: the graph of 8.
      {rows.narrow(0, 4, 3), pinned_rows.narrow(0, 2, 3), rows.narrow(0, 0, 1)},  // 7: graph 8.
      {rows, pinned_rows},                                  // 12 rows: eager.
      mixed.parts,                                          // 6 rows: graph 8.
      {Images(3, 40, 33, 21).pin_memory()},                 // 3 rows: graph 4.
  };
  std::vector<at::Tensor> alone;
  for (const std::vector<at::Tensor>& parts : batches) {
    absl::StatusOr<at::Tensor> out = (*instance)->RunParts(parts);
    ASSERT_TRUE(out.ok()) << out.status();
    alone.push_back(*out);
  }
  std::vector<ModelInstance::LaunchedBatch> in_flight;
  for (const std::vector<at::Tensor>& parts : batches) {
    absl::StatusOr<ModelInstance::LaunchedBatch> launched = (*instance)->Launch(parts);
    ASSERT_TRUE(launched.ok()) << launched.status();
    in_flight.push_back(*std::move(launched));
  }
  { auto dropped = (*instance)->Launch(batches[0]); ASSERT_TRUE(dropped.ok()); }
  for (size_t i = 0; i < in_flight.size(); ++i) {
    BatchStages stages;
    absl::StatusOr<at::Tensor> out = (*instance)->Finish(std::move(in_flight[i]), &stages);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(at::equal(*out, alone[i])) << "batch " << i << ": "
                                           << (*out - alone[i]).abs().max();
    EXPECT_GE(stages.forward_seconds, 0.0);
  }
  absl::StatusOr<at::Tensor> after = (*instance)->RunParts(batches[1]);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(at::equal(*after, alone[1]));
}

// RunParts reports where the batch's time went: each stage non-negative, the forward pass
// (a model that sleeps) at least as long as it slept, and the stages within the call's time.
TEST(ModelInstanceTest, ReportsTheStagesOfABatch) {
  class SlowModel : public TinyModel {
   public:
    torch::Tensor forward(torch::Tensor images) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return TinyModel::forward(images);
    }
  };
  InstanceOptions options;
  options.input_size = 8;
  auto instance = ModelInstance::Create(std::make_shared<SlowModel>(), options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  BatchStages stages;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<at::Tensor> out = (*instance)->RunParts({Batch(2, 8), Batch(1, 8)}, &stages);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_GE(stages.input_seconds, 0.0);
  EXPECT_GE(stages.forward_seconds, 0.020);
  EXPECT_GE(stages.output_seconds, 0.0);
  EXPECT_LE(stages.input_seconds + stages.forward_seconds + stages.output_seconds, wall);
}

// With image_preprocess, uint8 image parts are resized, cropped and normalised by the instance
// (the tensor ops a CUDA instance runs on the GPU) and give what CPU-preprocessed rows give, up
// to OpenCV's 8-bit rounding; without it they are refused.
TEST(ModelInstanceTest, ImagePartsArePreprocessedByTheInstance) {
  at::manual_seed(3);
  auto model = std::make_shared<TinyModel>();
  auto reference = CopyOf(*model);
  InstanceOptions options;
  options.input_size = 16;
  options.image_preprocess = SmallSpec();
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const MixedBatch batch = MakeMixedBatch();
  absl::StatusOr<at::Tensor> out = (*instance)->RunParts(batch.parts);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(0), 6);
  const at::Tensor expected = Reference(*reference, batch.rows);
  // One grey level is 0.0175 after normalisation; the model averages thousands of pixels.
  EXPECT_TRUE(at::allclose(*out, expected, 0, 5e-3)) << (*out - expected).abs().max();
  // Rows in order: the same parts reversed give other logits.
  std::vector<at::Tensor> reversed(batch.parts.rbegin(), batch.parts.rend());
  absl::StatusOr<at::Tensor> swapped = (*instance)->RunParts(reversed);
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  EXPECT_FALSE(at::allclose(*swapped, expected, 0, 5e-2)) << (*swapped - expected).abs().max();

  InstanceOptions plain;
  plain.input_size = 16;
  auto without = ModelInstance::Create(CopyOf(*reference), plain);
  ASSERT_TRUE(without.ok()) << without.status();
  absl::StatusOr<at::Tensor> refused = (*without)->RunParts({Images(1, 12, 20, 0)});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("uint8"));
  // A spec whose input size is not the instance's is refused at Create.
  InstanceOptions mismatched = options;
  mismatched.image_preprocess->input_size = 32;
  EXPECT_EQ(ModelInstance::Create(CopyOf(*reference), mismatched).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Runs only on a CUDA host: the same mixed batch, page-locked as the services hand it over,
// through CUDA graphs (a bucket) and eagerly (beyond the largest), in half precision.
TEST(ModelInstanceCudaTest, ImagePartsArePreprocessedOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(3);
  auto reference = std::make_shared<TinyModel>();
  auto model = CopyOf(*reference);
  InstanceOptions options = CudaImageOptions();
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const MixedBatch batch = MakeMixedBatch();
  const at::Tensor expected = Reference(*reference, batch.rows);
  std::vector<at::Tensor> pinned;
  for (const at::Tensor& part : batch.parts) pinned.push_back(part.pin_memory());
  // Page-locked views that start inside their storage (as ScheduleRows' chunks of a request do):
  // the DMA must start at the view, not at the storage.
  std::vector<at::Tensor> pinned_views;
  for (const at::Tensor& part : batch.parts) {
    at::Tensor doubled = at::cat({at::zeros_like(part), part}).pin_memory();
    pinned_views.push_back(doubled.narrow(0, part.size(0), part.size(0)));
    ASSERT_GT(pinned_views.back().storage_offset(), 0);
  }
  for (const std::vector<at::Tensor>* parts :
       std::vector<const std::vector<at::Tensor>*>{&batch.parts, &pinned, &pinned_views}) {
    absl::StatusOr<at::Tensor> out = (*instance)->RunParts(*parts);  // 6 rows: graph of 8.
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(at::allclose(*out, expected, 0, 1e-2)) << (*out - expected).abs().max();
  }
  std::vector<at::Tensor> twice = pinned;  // 12 rows: beyond the largest graph, eager.
  twice.insert(twice.end(), pinned.begin(), pinned.end());
  absl::StatusOr<at::Tensor> eager = (*instance)->RunParts(twice);
  ASSERT_TRUE(eager.ok()) << eager.status();
  EXPECT_TRUE(at::allclose(*eager, at::cat({expected, expected}), 0, 1e-2));
}

// An RGB uint8 [height, width, 3] image encoded as a JPEG (baseline unless `progressive`).
std::string JpegOf(const at::Tensor& rgb, bool progressive = false) {
  const at::Tensor image = rgb.contiguous();
  cv::Mat pixels(static_cast<int>(image.size(0)), static_cast<int>(image.size(1)), CV_8UC3,
                 image.data_ptr());
  cv::Mat bgr;
  cv::cvtColor(pixels, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> bytes;
  EXPECT_TRUE(cv::imencode(".jpg", bgr, bytes,
                           {cv::IMWRITE_JPEG_QUALITY, 95, cv::IMWRITE_JPEG_PROGRESSIVE,
                            progressive ? 1 : 0}));
  return std::string(bytes.begin(), bytes.end());
}

// `files` (all of `width` x `height`) as a JPEG part, page-locked when asked.
at::Tensor JpegPartOf(const std::vector<std::string>& files, int width, int height,
                      bool pinned) {
  std::vector<EncodedJpeg> jpegs;
  for (const std::string& file : files) jpegs.push_back({file, width, height});
  at::Tensor part = at::empty(JpegPartSizes(jpegs), at::TensorOptions(at::kByte).pinned_memory(pinned));
  FillJpegPart(jpegs, part);
  return part;
}

// What the CPU decoder makes of `files`: uint8 [n, height, width, 3].
at::Tensor DecodedOnCpu(const std::vector<std::string>& files) {
  std::vector<at::Tensor> images;
  for (const std::string& file : files) {
    absl::StatusOr<RgbImage> rgb = DecodeImage(file, ImageLimits());
    EXPECT_TRUE(rgb.ok()) << rgb.status();
    images.push_back(at::from_blob(rgb->pixels.data, {rgb->height(), rgb->width(), 3}, at::kByte)
                         .clone());
  }
  return at::stack(images);
}

// Bytes in place of a JPEG file that no decoder can decode (the services never put such a file
// in a JPEG part, but a file they do put there may still be one nvJPEG and libjpeg refuse).
// Not a subtly damaged file: nvJPEG decodes some of those without an error (a scan naming a
// component its frame lacks, 2026-12-03), and this test is about what happens on a failure.
constexpr std::string_view kUndecodable = "not a JPEG file at all \xFF\xD9";

// uint8 [n, height, width, 3] photo-like images: smooth luminance and colour, as a camera's
// (JPEG decoders differ most where the colour changes from pixel to pixel, since 4:2:0 files
// store it at half resolution and decoders upsample it differently).
at::Tensor SmoothImages(int64_t n, int64_t height, int64_t width, int seed) {
  const at::Tensor y = at::arange(height, at::kFloat).view({1, height, 1, 1});
  const at::Tensor x = at::arange(width, at::kFloat).view({1, 1, width, 1});
  const at::Tensor channel = at::arange(3, at::kFloat).view({1, 1, 1, 3});
  const at::Tensor image = at::arange(n, at::kFloat).view({n, 1, 1, 1}) + seed;
  return (127.5 + 90.0 * at::sin(x * 0.06 + channel + image) * at::cos(y * 0.05 + image))
      .round()
      .to(at::kByte);
}

// GPU JPEG decoding needs a CUDA device, and an instance without it refuses JPEG parts.
TEST(ModelInstanceTest, JpegPartsNeedGpuJpegDecoding) {
  InstanceOptions options;
  options.input_size = 16;
  options.image_preprocess = SmallSpec();
  options.image_preprocess->gpu_jpeg_decode = true;
  absl::StatusOr<std::unique_ptr<ModelInstance>> on_cpu =
      ModelInstance::Create(std::make_shared<TinyModel>(), options);
  EXPECT_EQ(on_cpu.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(on_cpu.status().message(), HasSubstr("CUDA"));

  options.image_preprocess->gpu_jpeg_decode = false;
  auto instance = ModelInstance::Create(std::make_shared<TinyModel>(), options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const std::string jpeg = JpegOf(Images(1, 18, 20, 1)[0]);
  absl::StatusOr<at::Tensor> refused =
      (*instance)->RunParts({JpegPartOf({jpeg}, 20, 18, /*pinned=*/false)});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("JPEG part"));
}

// Runs only on a CUDA host: nvJPEG decodes baseline files (on the hardware engines where the
// GPU has them) and progressive ones (default backend) within a grey level or two of the CPU
// decoder on average.
TEST(ModelInstanceCudaTest, GpuJpegDecoderDecodesLikeTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  absl::StatusOr<std::unique_ptr<GpuJpegDecoder>> decoder = GpuJpegDecoder::Create();
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  const at::Tensor images = SmoothImages(3, 48, 64, 11);
  const std::vector<std::string> files = {JpegOf(images[0]), JpegOf(images[1], true),
                                          JpegOf(images[2])};
  at::Tensor out = at::empty({3, 48, 64, 3}, at::TensorOptions(at::kByte).device(at::kCUDA));
  std::vector<EncodedJpeg> jpegs;
  std::vector<uint8_t*> outputs;
  for (size_t i = 0; i < files.size(); ++i) {
    jpegs.push_back({files[i], 64, 48});
    outputs.push_back(out[static_cast<int64_t>(i)].data_ptr<uint8_t>());
  }
  const std::vector<size_t> failed = (*decoder)->Decode(jpegs, outputs, nullptr);
  EXPECT_TRUE(failed.empty());
  torch::cuda::synchronize();
  const at::Tensor difference =
      (out.cpu().to(at::kInt) - DecodedOnCpu(files).to(at::kInt)).abs().to(at::kFloat);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_LT(difference[i].mean().item<float>(), 2.0) << "image " << i;
    EXPECT_LE(difference[i].max().item<float>(), 40) << "image " << i;
  }
  EXPECT_EQ((*decoder)->hardware_decoded() + (*decoder)->default_decoded(), 3);
  if ((*decoder)->hardware()) {
    EXPECT_EQ((*decoder)->hardware_decoded(), 2);  // The baseline two.
  }
  std::cout << "[          ] hardware JPEG engines: " << ((*decoder)->hardware() ? "yes" : "no")
            << "; mean |GPU - CPU| per image: " << difference.mean({1, 2, 3}) << std::endl;

  // A file no decoder can read is reported, the others still decode.
  const std::string bad(kUndecodable);
  jpegs[2].bytes = bad;
  EXPECT_EQ((*decoder)->Decode(jpegs, outputs, nullptr), std::vector<size_t>{2});
}

// Runs only on a CUDA host: a batch of JPEG parts (page-locked, as the services write them),
// image pixels and float rows gives what the same images decoded on the CPU give; a part with
// a file no decoder can read fails alone (with per-part errors) or fails the batch (without).
TEST(ModelInstanceCudaTest, JpegPartsAreDecodedOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  auto reference = std::make_shared<TinyModel>();
  InstanceOptions options;
  options.device = c10::Device(c10::kCUDA, 0);
  options.dtype = at::kHalf;
  options.input_size = 16;
  options.image_preprocess = SmallSpec();
  options.image_preprocess->gpu_jpeg_decode = true;
  options.warmup_batch_sizes = {1, 8};
  options.cuda_graph_batch_sizes = {1, 8};
  auto instance = ModelInstance::Create(CopyOf(*reference), options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  InstanceOptions pixels_options = options;
  pixels_options.image_preprocess->gpu_jpeg_decode = false;
  auto pixels_instance = ModelInstance::Create(CopyOf(*reference), pixels_options);
  ASSERT_TRUE(pixels_instance.ok()) << pixels_instance.status();

  const at::Tensor small = SmoothImages(2, 18, 20, 21);  // Enlarged to 18 (cubic).
  const at::Tensor large = SmoothImages(1, 30, 34, 23);  // Shrunk (area).
  const std::vector<std::string> small_files = {JpegOf(small[0]), JpegOf(small[1])};
  const std::vector<std::string> large_files = {JpegOf(large[0])};
  const at::Tensor floats = PreprocessedOnCpu(Images(1, 30, 30, 7), SmallSpec());
  const std::vector<at::Tensor> jpeg_parts = {
      JpegPartOf(small_files, 20, 18, true), floats, JpegPartOf(large_files, 34, 30, true),
      JpegPartOf({small_files[1]}, 20, 18, true)};
  const std::vector<at::Tensor> pixel_parts = {DecodedOnCpu(small_files).pin_memory(), floats,
                                               DecodedOnCpu(large_files).pin_memory(),
                                               DecodedOnCpu({small_files[1]}).pin_memory()};
  absl::StatusOr<at::Tensor> expected = (*pixels_instance)->RunParts(pixel_parts);
  ASSERT_TRUE(expected.ok()) << expected.status();
  absl::StatusOr<at::Tensor> out = (*instance)->RunParts(jpeg_parts);  // 5 rows: graph of 8.
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::allclose(*out, *expected, 0, 2e-2)) << (*out - *expected).abs().max();

  // The third part's file cannot be decoded: only that part fails, the others are unchanged.
  std::cout << "[          ] largest |GPU-decoded - CPU-decoded| output: "
            << (*out - *expected).abs().max().item<float>() << std::endl;
  std::vector<at::Tensor> with_bad = jpeg_parts;
  with_bad[2] = JpegPartOf({std::string(kUndecodable)}, 34, 30, true);
  std::vector<std::pair<size_t, absl::Status>> failed;
  absl::StatusOr<at::Tensor> partial = (*instance)->RunParts(with_bad, nullptr, &failed);
  ASSERT_TRUE(partial.ok()) << partial.status();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].first, 2u);
  EXPECT_EQ(failed[0].second.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(failed[0].second.message(), HasSubstr("image 0: cannot be decoded"));
  for (int64_t row : {0, 1, 2, 4}) {
    EXPECT_TRUE(at::allclose((*partial)[row], (*expected)[row], 0, 2e-2)) << "row " << row;
  }
  absl::StatusOr<at::Tensor> whole = (*instance)->RunParts(with_bad);
  EXPECT_EQ(whole.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(whole.status().message(), HasSubstr("cannot be decoded"));

  // JPEG batches launched while others are in flight (the decoder's buffers are shared)
  // decode as they do alone.
  std::vector<ModelInstance::LaunchedBatch> in_flight;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ModelInstance::LaunchedBatch> launched =
        (*instance)->Launch(i == 1 ? pixel_parts : jpeg_parts);
    ASSERT_TRUE(launched.ok()) << launched.status();
    in_flight.push_back(*std::move(launched));
  }
  for (ModelInstance::LaunchedBatch& batch : in_flight) {
    absl::StatusOr<at::Tensor> finished = (*instance)->Finish(std::move(batch));
    ASSERT_TRUE(finished.ok()) << finished.status();
    EXPECT_TRUE(at::allclose(*finished, *out, 0, 2e-2)) << (*finished - *out).abs().max();
  }
}

#ifdef VITSERVE_WITH_CUDA
// A TinyModel whose forward pass on CUDA also fills a scratch buffer of `bytes_per_row` per row
// through the CUDA caching allocator, as a large model's activations do. Records every pass's
// rows.
class DeviceMemoryHungryModel : public TinyModel {
 public:
  explicit DeviceMemoryHungryModel(int64_t bytes_per_row) : bytes_per_row_(bytes_per_row) {}
  torch::Tensor forward(torch::Tensor images) override {
    attempted_rows.push_back(images.size(0));
    // Written whole (a fill kernel), then one byte per row read back: no other large buffer.
    const at::Tensor scratch =
        at::ones({images.size(0), bytes_per_row_}, images.options().dtype(at::kByte));
    const at::Tensor last_byte = scratch.select(1, bytes_per_row_ - 1).to(at::kFloat);
    return TinyModel::forward(images) + (last_byte - 1).view({-1, 1});  // Adds exactly 0.
  }
  std::vector<int64_t> attempted_rows;

 private:
  const int64_t bytes_per_row_;
};

// Caps what this process's CUDA caching allocator may hold at what it holds now plus `headroom`
// bytes (the allocator then raises its real out-of-memory error beyond it), and lifts the cap
// when it goes out of scope.
class ScopedDeviceMemoryCap {
 public:
  explicit ScopedDeviceMemoryCap(int64_t headroom) {
    c10::cuda::CUDACachingAllocator::emptyCache();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    const auto reserved = static_cast<double>(
        stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
            .current);
    const double total = static_cast<double>(at::cuda::getDeviceProperties(0)->totalGlobalMem);
    c10::cuda::CUDACachingAllocator::setMemoryFraction((reserved + headroom) / total, 0);
  }
  ~ScopedDeviceMemoryCap() {
    c10::cuda::CUDACachingAllocator::setMemoryFraction(1.0, 0);
    c10::cuda::CUDACachingAllocator::emptyCache();
  }
  ScopedDeviceMemoryCap(const ScopedDeviceMemoryCap&) = delete;
  ScopedDeviceMemoryCap& operator=(const ScopedDeviceMemoryCap&) = delete;
};

// Runs only on a CUDA host: a real device out-of-memory error (the CUDA caching allocator's,
// under a per-process cap of 1.2 GiB above what the instance holds) in a batch of 8 rows of
// 256 MiB each. The batch is run again in halves that fit, its output is right, and the next
// batch runs whole; a single row that cannot fit is RESOURCE_EXHAUSTED.
TEST(ModelInstanceCudaTest, ABatchThatRunsOutOfDeviceMemoryIsRunInHalves) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  constexpr int64_t kMiB = 1 << 20;
  at::manual_seed(5);
  auto model = std::make_shared<DeviceMemoryHungryModel>(256 * kMiB);
  DeviceMemoryHungryModel* seen = model.get();
  auto reference = CopyOf(*model);
  InstanceOptions options;
  options.device = c10::Device(c10::kCUDA, 0);
  options.input_size = 8;
  auto instance = ModelInstance::Create(model, options);
  ASSERT_TRUE(instance.ok()) << instance.status();
  const at::Tensor batch = Batch(8, 8);
  {
    ScopedDeviceMemoryCap cap(1200 * kMiB);
    absl::StatusOr<at::Tensor> out = (*instance)->Run(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(at::allclose(*out, Reference(*reference, batch), 1e-4, 1e-4));
    // 8 rows (2 GiB) do not fit; 4 (1 GiB) do.
    EXPECT_THAT(seen->attempted_rows, ::testing::ElementsAre(8, 4, 4));
    seen->attempted_rows.clear();
    ASSERT_TRUE((*instance)->Run(Batch(4, 8)).ok());
    EXPECT_THAT(seen->attempted_rows, ::testing::ElementsAre(4));
  }
  auto huge_model = std::make_shared<DeviceMemoryHungryModel>(2048 * kMiB);
  auto huge = ModelInstance::Create(huge_model, options);
  ASSERT_TRUE(huge.ok()) << huge.status();
  {
    ScopedDeviceMemoryCap cap(1200 * kMiB);
    absl::StatusOr<at::Tensor> out = (*huge)->Run(Batch(2, 8));
    EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted) << out.status();
    EXPECT_THAT(out.status().message(), HasSubstr("out of memory"));
    EXPECT_THAT(huge_model->attempted_rows, ::testing::ElementsAre(2, 1));
  }
  // Without the cap the same instance serves the batch whole again.
  seen->attempted_rows.clear();
  ASSERT_TRUE((*instance)->Run(batch).ok());
  EXPECT_THAT(seen->attempted_rows, ::testing::ElementsAre(8));
}
#endif  // VITSERVE_WITH_CUDA

}  // namespace
}  // namespace vitserve

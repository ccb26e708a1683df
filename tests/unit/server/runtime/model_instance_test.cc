#include "server/runtime/model_instance.h"

#include <atomic>
#include <memory>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/nn/modules/linear.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

}  // namespace
}  // namespace vitserve

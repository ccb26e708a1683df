// Both inference RPCs do their CPU-heavy input work (Classify: decoding and preprocessing;
// ModelInfer: converting the input tensor) on the preprocessing WorkPool, never on gRPC's
// threads. The proof: while the pool's only worker is held, neither call can finish; once it is
// released, both finish with correct answers. The exception is work that is only a check and a
// copy (raw pixels a model preprocesses on its device): it is done where it arrives, and its
// batch runs while the pool is held.
#include <sys/stat.h>

#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "models/registry.h"
#include "prometheus/registry.h"
#include "server/api/inference_service.h"
#include "server/api/vision_service.h"
#include "server/api/work_pool.h"
#include "server/metrics/server_metrics.h"
#include "server/model_manager.h"
#include "tests/test_util/scoped_temp_dir.h"
#include "tests/test_util/test_models.h"

namespace vitserve {
namespace {

constexpr char kModel[] = "shvit_s1";
constexpr int64_t kSize = 224;
// Long enough for an inline (wrong) implementation to answer on a slow, shared CI machine;
// a correct one cannot answer at all while the pool is held, so this never fails spuriously.
constexpr absl::Duration kHeldFor = absl::Seconds(2);
constexpr absl::Duration kAnswerWithin = absl::Seconds(120);

class PreprocessOffloadTest : public ::testing::Test {
 protected:
  // The manager's options: quick mode, serving kModel as it is served by default on CPU.
  virtual ModelManagerOptions ManagerOptions() {
    ModelManagerOptions options;
    options.quick_model = kModel;
    options.defaults.max_batch_size = 2;
    return options;
  }

  void SetUp() override {
    auto manager = ModelManager::Create(ManagerOptions(), &registry_, &metrics_);
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = *std::move(manager);
    ASSERT_TRUE(manager_->LoadAll().ok());
    vision_ = std::make_unique<VisionService>(manager_.get(), ImageLimits{}, &pool_);
    inference_ = std::make_unique<InferenceService>(manager_.get(), "test", &pool_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(vision_.get());
    builder.RegisterService(inference_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
  }

  void TearDown() override {
    // A failed test may not have released the worker; the pool's destructor would wait for it.
    if (!release_.HasBeenNotified()) release_.Notify();
    if (server_ != nullptr) server_->Shutdown();
  }

  // Occupies the pool's only worker until release_ is notified.
  void HoldThePool() {
    absl::Notification holding;
    pool_.Schedule([this, &holding] {
      holding.Notify();
      release_.WaitForNotification();
    });
    holding.WaitForNotification();
  }

  // Holds the pool, starts an asynchronous call on `context` through `start` (given the
  // completion callback), checks that it cannot answer while the pool is held, releases the
  // pool and returns the call's status once it answers.
  grpc::Status AnswerOnlyAfterRelease(
      const char* rpc, grpc::ClientContext& context,
      const std::function<void(std::function<void(grpc::Status)>)>& start) {
    grpc::Status status;
    absl::Notification answered;
    HoldThePool();
    start([&](grpc::Status s) {
      status = std::move(s);
      answered.Notify();
    });
    EXPECT_FALSE(answered.WaitForNotificationWithTimeout(kHeldFor))
        << rpc << " answered while the preprocessing pool was held: it ran on a gRPC thread";
    release_.Notify();
    if (!answered.WaitForNotificationWithTimeout(kAnswerWithin)) {
      ADD_FAILURE() << rpc << " did not answer within " << kAnswerWithin << " of the release";
      context.TryCancel();  // The callback writes `status`: make it come before returning.
      answered.WaitForNotification();
    }
    return status;
  }

  // A Classify request for `model` with one 64x48 image: raw pixels or, with `png`, a PNG file.
  static v1::ClassifyRequest OneImage(const std::string& model, bool png) {
    v1::ClassifyRequest request;
    request.set_model(model);
    request.set_top_k(1);
    if (png) {
      std::vector<uchar> file;
      EXPECT_TRUE(cv::imencode(".png", cv::Mat(48, 64, CV_8UC3, cv::Scalar(127, 64, 30)), file));
      request.add_images()->set_encoded(std::string(file.begin(), file.end()));
    } else {
      v1::RawImage* raw = request.add_images()->mutable_raw();
      raw->set_width(64);
      raw->set_height(48);
      raw->set_rgb8(std::string(64 * 48 * 3, '\x7f'));
    }
    return request;
  }

  ComputeGate gate_;
  ModelRegistry registry_ = RegistryWithTestModels(&gate_);
  prometheus::Registry prometheus_;
  ServerMetrics metrics_{prometheus_};
  std::unique_ptr<ModelManager> manager_;
  WorkPool pool_{1};
  absl::Notification release_;
  std::unique_ptr<VisionService> vision_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(PreprocessOffloadTest, ClassifyWaitsForThePool) {
  auto stub = v1::Vision::NewStub(channel_);
  const v1::ClassifyRequest request = OneImage(kModel, /*png=*/false);
  v1::ClassifyResponse response;
  grpc::ClientContext context;
  const grpc::Status status = AnswerOnlyAfterRelease("Classify", context, [&](auto done) {
    stub->async()->Classify(&context, &request, &response, std::move(done));
  });
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_EQ(response.results(0).classes_size(), 1);
}

TEST_F(PreprocessOffloadTest, ModelInferWaitsForThePool) {
  auto stub = inference::GRPCInferenceService::NewStub(channel_);
  inference::ModelInferRequest request;
  request.set_model_name(kModel);
  inference::ModelInferRequest::InferInputTensor* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("UINT8");
  for (int64_t d : {int64_t{1}, int64_t{3}, kSize, kSize}) input->add_shape(d);
  request.add_raw_input_contents(std::string(3 * kSize * kSize, '\x40'));
  inference::ModelInferResponse response;
  grpc::ClientContext context;
  const grpc::Status status = AnswerOnlyAfterRelease("ModelInfer", context, [&](auto done) {
    stub->async()->ModelInfer(&context, &request, &response, std::move(done));
  });
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "logits");
  ASSERT_EQ(response.outputs(0).shape_size(), 2);
  EXPECT_EQ(response.outputs(0).shape(0), 1);
  EXPECT_EQ(response.outputs(0).shape(1), 1000);
  EXPECT_EQ(response.raw_output_contents(0).size(), 1000 * sizeof(float));
}

// Requests that fail validation are answered at once: only valid work waits for the pool.
TEST_F(PreprocessOffloadTest, InvalidModelInferIsAnsweredWithoutThePool) {
  auto stub = inference::GRPCInferenceService::NewStub(channel_);
  inference::ModelInferRequest request;
  request.set_model_name("no_such_model");
  inference::ModelInferResponse response;
  HoldThePool();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  const grpc::Status status = stub->ModelInfer(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
}

// A model with device preprocessing (ModelConfig.device_preprocessing, which CPU instances run
// too): Classify then sends raw pixels of one size to the batcher as they are. The model is
// kGatedModel, one row per batch and one instance, so a test can keep a batch computing while
// another waits.
class DevicePreprocessingOffloadTest : public PreprocessOffloadTest {
 protected:
  static constexpr char kServed[] = "on_device";

  ModelManagerOptions ManagerOptions() override {
    const std::string dir = repository_.File(kServed);
    EXPECT_EQ(mkdir(dir.c_str(), 0755), 0);
    std::ofstream(dir + "/config.pbtxt")
        << "architecture: \"" << kGatedModel << "\" allow_random_weights: true\n"
        << "device_preprocessing: true instance_count: 1 batching { max_batch_size: 1 }\n";
    ModelManagerOptions options;
    options.repository_dir = repository_.path();
    return options;
  }

  // Starts a Classify call of one image (raw pixels, or with `png` a PNG file) on kServed;
  // `answered` is notified when it ends.
  struct Call {
    v1::ClassifyRequest request;
    v1::ClassifyResponse response;
    grpc::ClientContext context;
    grpc::Status status;
    absl::Notification answered;
  };
  void Start(Call& call, bool png) {
    call.request = OneImage(kServed, png);
    stub_->async()->Classify(&call.context, &call.request, &call.response,
                             [&call](grpc::Status s) {
                               call.status = std::move(s);
                               call.answered.Notify();
                             });
  }

  // Waits until `call` ends; a failure, and the call cancelled, when it does not in time.
  void Finish(Call& call) {
    if (!call.answered.WaitForNotificationWithTimeout(kAnswerWithin)) {
      ADD_FAILURE() << "no answer within " << kAnswerWithin;
      call.context.TryCancel();
      call.answered.WaitForNotification();
    }
    EXPECT_TRUE(call.status.ok()) << call.status.error_message();
    ASSERT_EQ(call.response.results_size(), 1);
    EXPECT_EQ(call.response.results(0).classes_size(), 1);
  }

  ScopedTempDir repository_;
  std::unique_ptr<v1::Vision::Stub> stub_ = nullptr;
};

// Raw pixels the device preprocesses are only checked and copied, on the gRPC thread
// (PreprocessingIsACopy); with no other request waiting, the executor replies itself
// (OnPoolWhileQueued). So the whole call is answered while the pool is held.
TEST_F(DevicePreprocessingOffloadTest, RawPixelsForAnIdleModelNeedNoPool) {
  stub_ = v1::Vision::NewStub(channel_);
  HoldThePool();
  Call call;
  Start(call, /*png=*/false);
  Finish(call);
}

// While a request waits in the queue, the executor hands its finished batch's reply to the pool
// and takes the waiting one at once; that one, with nothing behind it, is answered by the
// executor.
TEST_F(DevicePreprocessingOffloadTest, RepliesGoToThePoolWhileRequestsWait) {
  stub_ = v1::Vision::NewStub(channel_);
  auto model = manager_->Get(kServed);
  ASSERT_TRUE(model.ok()) << model.status();
  gate_.ResetCounts();
  gate_.Hold();
  HoldThePool();
  Call first, second;
  Start(first, /*png=*/false);
  ASSERT_TRUE(gate_.WaitForBatches(1, kAnswerWithin));  // The first computes (held)...
  Start(second, /*png=*/false);
  const absl::Time give_up = absl::Now() + kAnswerWithin;
  while ((*model)->QueueDepth() < 1 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ((*model)->QueueDepth(), 1);  // ...while the second waits in the queue.
  gate_.Release();
  ASSERT_TRUE(second.answered.WaitForNotificationWithTimeout(kAnswerWithin))
      << "the second request, alone in its batch with none waiting, was not answered";
  EXPECT_FALSE(first.answered.HasBeenNotified())
      << "the first request's reply did not go to the (held) pool while the second waited";
  release_.Notify();
  Finish(first);
  Finish(second);
  EXPECT_EQ(gate_.BatchSizes(), (std::vector<int64_t>{1, 1}));
}

// An encoded image must be decoded: on the pool, even for a model that preprocesses on its
// device.
TEST_F(DevicePreprocessingOffloadTest, EncodedImagesWaitForThePool) {
  stub_ = v1::Vision::NewStub(channel_);
  Call call;
  HoldThePool();
  Start(call, /*png=*/true);
  EXPECT_FALSE(call.answered.WaitForNotificationWithTimeout(kHeldFor))
      << "Classify of a PNG answered while the preprocessing pool was held";
  release_.Notify();
  Finish(call);
}

}  // namespace
}  // namespace vitserve

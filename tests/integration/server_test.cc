// End-to-end tests of the server's wiring: a real VitServer in-process on ephemeral ports,
// serving shvit_s1 with random weights on CPU, driven through the generated gRPC stubs (the
// client library is tested on its own) and plain HTTP.
#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/image/decode.h"
#include "server/image/preprocess.h"
#include "server/model_manager.h"
#include "server/vitserve_server.h"
#include "vitserve/v1/vision.grpc.pb.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = "shvit_s1";

// A width x height RGB8 image, different for every `seed`: a gradient plus a seeded pattern.
std::string MakeRgb(int width, int height, int seed) {
  std::string rgb(static_cast<size_t>(width) * height * 3, '\0');
  uint32_t state = 2654435761u * static_cast<uint32_t>(seed + 1);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      state = state * 1664525u + 1013904223u;
      const size_t i = (static_cast<size_t>(y) * width + x) * 3;
      rgb[i] = static_cast<char>((x * 255 / width + seed * 37) & 0xff);
      rgb[i + 1] = static_cast<char>((y * 255 / height + seed * 91) & 0xff);
      rgb[i + 2] = static_cast<char>((state >> 24) & (seed % 2 ? 0xff : 0x3f));
    }
  }
  return rgb;
}

// `rgb` encoded with OpenCV (".jpg" or ".png").
std::string Encode(const std::string& rgb, int width, int height, const std::string& ext) {
  cv::Mat image(height, width, CV_8UC3, const_cast<char*>(rgb.data()));
  cv::Mat bgr;
  cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  EXPECT_TRUE(cv::imencode(ext, bgr, bytes));
  return std::string(bytes.begin(), bytes.end());
}

v1::Image RawImage(const std::string& rgb, int width, int height) {
  v1::Image image;
  image.mutable_raw()->set_width(width);
  image.mutable_raw()->set_height(height);
  image.mutable_raw()->set_rgb8(rgb);
  return image;
}

v1::Image EncodedImage(const std::string& bytes) {
  v1::Image image;
  image.set_encoded(bytes);
  return image;
}

// GET http://127.0.0.1:port/path -> {status code, body}; {-1, ""} when it cannot connect.
std::pair<int, std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return {-1, ""};
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  close(fd);
  int status = -1;
  if (response.size() > 12) status = std::atoi(response.c_str() + 9);  // "HTTP/1.x NNN"
  const size_t body = response.find("\r\n\r\n");
  return {status, body == std::string::npos ? "" : response.substr(body + 4)};
}

ServerOptions TestOptions() {
  ServerOptions options;
  options.grpc_port = 0;
  options.http_port = 0;
  options.host = "127.0.0.1";
  options.model = kModel;
  options.max_batch_size = 4;
  options.max_queue_delay_us = 2000;
  options.shutdown_grace = absl::Seconds(20);
  return options;
}

struct Client {
  explicit Client(int port)
      : channel(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                    grpc::InsecureChannelCredentials())),
        vision(v1::Vision::NewStub(channel)),
        kserve(inference::GRPCInferenceService::NewStub(channel)) {}

  grpc::Status Classify(const v1::ClassifyRequest& request, v1::ClassifyResponse* response,
                        absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return vision->Classify(&context, request, response);
  }

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Vision::Stub> vision;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve;
};

v1::ClassifyRequest OneImage(v1::Image image, uint32_t top_k = 0) {
  v1::ClassifyRequest request;
  request.set_model(kModel);
  *request.add_images() = std::move(image);
  request.set_top_k(top_k);
  return request;
}

void ExpectWellFormed(const v1::Classification& result, size_t k) {
  ASSERT_EQ(result.classes_size(), static_cast<int>(k));
  float sum = 0;
  for (int i = 0; i < result.classes_size(); ++i) {
    const v1::ClassScore& c = result.classes(i);
    EXPECT_GE(c.index(), 0);
    EXPECT_LT(c.index(), 1000);
    EXPECT_FALSE(c.label().empty());
    EXPECT_GT(c.score(), 0.0f);
    if (i > 0) {
      EXPECT_LE(c.score(), result.classes(i - 1).score()) << "not sorted";
    }
    sum += c.score();
  }
  EXPECT_LE(sum, 1.0f + 1e-5f);
}

// Largest difference between two probabilities of the same image computed in different batches:
// a few float ulps at 1e-3 (random weights give near-uniform probabilities of ~1e-3).
constexpr float kSame = 2e-9f;

// The full probability vector of `result` (top_k = all classes), by class index.
std::vector<float> ByClass(const v1::Classification& result) {
  std::vector<float> p(1000, -1.0f);
  for (const v1::ClassScore& c : result.classes()) p[c.index()] = c.score();
  return p;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
  return diff;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = BuiltinModelRegistry();
    auto server = VitServer::Start(TestOptions(), &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<Client>(server_->grpc_port());
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Shutdown();
  }

  ModelRegistry registry_;
  std::unique_ptr<VitServer> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ServerTest, ClassifiesEncodedAndRawImages) {
  const std::string rgb = MakeRgb(320, 240, 1);

  v1::ClassifyRequest jpeg = OneImage(EncodedImage(Encode(rgb, 320, 240, ".jpg")), 3);
  jpeg.set_request_id("req-1");
  v1::ClassifyResponse response;
  ASSERT_TRUE(client_->Classify(jpeg, &response).ok());
  EXPECT_EQ(response.model(), kModel);
  EXPECT_EQ(response.request_id(), "req-1");
  ASSERT_EQ(response.results_size(), 1);
  ExpectWellFormed(response.results(0), 3);

  // PNG is lossless, so it must give exactly what the raw pixels give; several images in one
  // request (more than max_batch_size = 4, so split over tasks) come back in order.
  v1::ClassifyResponse raw_response;
  ASSERT_TRUE(client_->Classify(OneImage(RawImage(rgb, 320, 240), 1000), &raw_response).ok());
  ExpectWellFormed(raw_response.results(0), 1000);
  v1::ClassifyRequest many;
  many.set_model(kModel);
  many.set_top_k(1000);
  for (int i = 0; i < 6; ++i) {
    *many.add_images() = i == 3 ? EncodedImage(Encode(rgb, 320, 240, ".png"))
                                : RawImage(MakeRgb(64, 48, 10 + i), 64, 48);
  }
  v1::ClassifyResponse many_response;
  grpc::Status status = client_->Classify(many, &many_response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(many_response.results_size(), 6);
  // Random weights give near-uniform probabilities: compare whole vectors, not rankings.
  EXPECT_LT(MaxAbsDiff(ByClass(many_response.results(3)), ByClass(raw_response.results(0))), kSame);
  EXPECT_GT(MaxAbsDiff(ByClass(many_response.results(2)), ByClass(raw_response.results(0))),
            10 * kSame);
}

TEST_F(ServerTest, ConcurrentClientsGetTheirOwnResults) {
  // Random weights give nearly uniform probabilities (~1e-3 each), so images are told apart by
  // their whole probability vector (top_k = 1000), not by their top classes.
  constexpr int kImages = 8;
  std::vector<v1::Image> images;
  std::vector<std::vector<float>> alone;
  for (int i = 0; i < kImages; ++i) {
    images.push_back(RawImage(MakeRgb(96, 80, 100 + i), 96, 80));
    v1::ClassifyResponse response;
    ASSERT_TRUE(client_->Classify(OneImage(images.back(), 1000), &response).ok());
    alone.push_back(ByClass(response.results(0)));
  }
  // A mix-up would be visible: every pair of images is far apart compared with kSame.
  for (int i = 0; i < kImages; ++i) {
    for (int j = i + 1; j < kImages; ++j) {
      ASSERT_GT(MaxAbsDiff(alone[i], alone[j]), 10 * kSame) << "images " << i << ", " << j;
    }
  }

  constexpr int kThreads = 16, kPerThread = 3;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  absl::Mutex mu;
  std::vector<std::string> failures;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Client client(server_->grpc_port());
      for (int r = 0; r < kPerThread; ++r) {
        const int which = (t * kPerThread + r) % kImages;
        v1::ClassifyRequest request = OneImage(images[which], 1000);
        request.set_request_id(absl::StrCat(t, "/", r));
        v1::ClassifyResponse response;
        grpc::Status status = client.Classify(request, &response);
        absl::MutexLock lock(&mu);
        if (!status.ok()) {
          failures.push_back(status.error_message());
          continue;
        }
        EXPECT_EQ(response.request_id(), request.request_id());
        EXPECT_LT(MaxAbsDiff(ByClass(response.results(0)), alone[which]), kSame)
            << "image " << which << " came back with another image's result";
        ++ok;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_THAT(failures, ::testing::IsEmpty());
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
}

TEST_F(ServerTest, BadInputsGetTheRightCodeAndTheServerKeepsServing) {
  const v1::Image good = RawImage(MakeRgb(64, 64, 3), 64, 64);
  auto code_of = [&](const v1::ClassifyRequest& request) {
    v1::ClassifyResponse response;
    return client_->Classify(request, &response);
  };

  v1::ClassifyRequest unknown = OneImage(good);
  unknown.set_model("no_such_model");
  EXPECT_EQ(code_of(unknown).error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::Status garbage = code_of(OneImage(EncodedImage("definitely not an image")));
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(garbage.error_message(), HasSubstr("image 0"));

  v1::ClassifyRequest no_images;
  no_images.set_model(kModel);
  EXPECT_EQ(code_of(no_images).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::Status too_many = code_of(OneImage(good, 1001));
  EXPECT_EQ(too_many.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_many.error_message(), HasSubstr("1..1000"));

  v1::ClassifyRequest short_raw = OneImage(RawImage(std::string(100, 'x'), 64, 64));
  EXPECT_EQ(code_of(short_raw).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::ClassifyRequest second_bad = OneImage(good);
  second_bad.add_images();  // Neither encoded nor raw.
  grpc::Status second = code_of(second_bad);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(second.error_message(), HasSubstr("image 1"));

  {
    grpc::ClientContext context;
    v1::DetectRequest request;
    request.set_model(kModel);
    v1::DetectResponse response;
    grpc::Status status = client_->vision->Detect(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_THAT(status.error_message(), HasSubstr("not implemented yet"));
  }
  {
    grpc::ClientContext context;
    v1::GetModelRequest request;
    request.set_name("no_such_model");
    v1::ModelDescription response;
    EXPECT_EQ(client_->vision->GetModel(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    v1::ClassifyResponse response;
    EXPECT_EQ(client_->Classify(OneImage(good), &response, absl::Microseconds(1)).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }

  // top_k 0 is "unset": the default, 5.
  v1::ClassifyResponse response;
  ASSERT_TRUE(client_->Classify(OneImage(good, 0), &response).ok());
  ExpectWellFormed(response.results(0), 5);

  // The bad requests above were counted by code.
  auto [status, metrics] = HttpGet(server_->http_port(), "/metrics");
  EXPECT_EQ(status, 200);
  EXPECT_THAT(metrics, HasSubstr("vitserve_requests_total"));
  EXPECT_THAT(metrics, HasSubstr("code=\"INVALID_ARGUMENT\""));
}

inference::ModelInferRequest InferRequest(const std::string& datatype, std::vector<int64_t> shape,
                                          std::string bytes) {
  inference::ModelInferRequest request;
  request.set_model_name(kModel);
  request.set_id("infer-1");
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype(datatype);
  for (int64_t d : shape) input->add_shape(d);
  request.add_raw_input_contents(std::move(bytes));
  return request;
}

std::string Bytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

TEST_F(ServerTest, KServeProtocol) {
  inference::GRPCInferenceService::Stub& kserve = *client_->kserve;
  {
    grpc::ClientContext context;
    inference::ServerReadyResponse response;
    ASSERT_TRUE(kserve.ServerReady(&context, {}, &response).ok());
    EXPECT_TRUE(response.ready());
  }
  {
    grpc::ClientContext context;
    inference::ServerMetadataResponse response;
    ASSERT_TRUE(kserve.ServerMetadata(&context, {}, &response).ok());
    EXPECT_EQ(response.name(), "vitserve");
    EXPECT_THAT(response.extensions(), ::testing::Contains("model_configuration"));
  }
  {
    grpc::ClientContext context;
    inference::ModelMetadataRequest request;
    request.set_name(kModel);
    inference::ModelMetadataResponse response;
    ASSERT_TRUE(kserve.ModelMetadata(&context, request, &response).ok());
    ASSERT_EQ(response.inputs_size(), 1);
    EXPECT_EQ(response.inputs(0).name(), "input");
    EXPECT_THAT(response.inputs(0).shape(), ::testing::ElementsAre(-1, 3, 224, 224));
    EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(-1, 1000));
  }
  {
    grpc::ClientContext context;
    inference::ModelConfigRequest request;
    request.set_name(kModel);
    inference::ModelConfigResponse response;
    ASSERT_TRUE(kserve.ModelConfig(&context, request, &response).ok());
    EXPECT_EQ(response.config().max_batch_size(), 4);
    EXPECT_EQ(response.config().input(0).data_type(), inference::TYPE_FP32);
    EXPECT_TRUE(response.config().parameters().contains("warning"));  // Random weights.
  }

  // The same pixels through Classify (raw RGB8) and ModelInfer (FP32, preprocessed here the
  // way the server does it) give the same top-1 class and probability.
  const std::string rgb = MakeRgb(200, 150, 7);
  v1::ClassifyResponse classified;
  ASSERT_TRUE(client_->Classify(OneImage(RawImage(rgb, 200, 150), 1), &classified).ok());
  auto model = server_->model_manager().Get(kModel);
  ASSERT_TRUE(model.ok());
  auto decoded = RgbImageFromRaw(rgb, 200, 150, ImageLimits{});
  ASSERT_TRUE(decoded.ok());
  auto pre = Preprocess(*decoded, (*model)->preprocess_spec());
  ASSERT_TRUE(pre.ok());
  const at::Tensor normalised = pre->tensor.unsqueeze(0).contiguous();
  model->reset();

  auto infer = [&](const inference::ModelInferRequest& request,
                   inference::ModelInferResponse* response) {
    grpc::ClientContext context;
    return kserve.ModelInfer(&context, request, response);
  };
  inference::ModelInferResponse fp32;
  grpc::Status status = infer(InferRequest("FP32", {1, 3, 224, 224}, Bytes(normalised)), &fp32);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(fp32.id(), "infer-1");
  EXPECT_EQ(fp32.model_version(), "1");
  ASSERT_EQ(fp32.outputs_size(), 1);
  EXPECT_EQ(fp32.outputs(0).name(), "logits");
  EXPECT_THAT(fp32.outputs(0).shape(), ::testing::ElementsAre(1, 1000));
  ASSERT_EQ(fp32.raw_output_contents(0).size(), 1000 * sizeof(float));
  at::Tensor logits = at::empty({1, 1000}, at::kFloat);
  std::memcpy(logits.data_ptr(), fp32.raw_output_contents(0).data(), 1000 * sizeof(float));
  const at::Tensor probs = logits.softmax(1);
  const int64_t best = probs.argmax(1).item<int64_t>();
  EXPECT_EQ(best, classified.results(0).classes(0).index());
  EXPECT_NEAR(probs[0][best].item<float>(), classified.results(0).classes(0).score(), 1e-5);

  // UINT8: raw pixels, normalised by the server. Compare with FP32 of the same pixels.
  auto handle = server_->model_manager().Get(kModel);
  ASSERT_TRUE(handle.ok());
  const v1::ModelConfig config = (*handle)->config();
  handle->reset();
  const at::Tensor mean =
      at::tensor(std::vector<float>(config.input().mean().begin(), config.input().mean().end()))
          .view({1, 3, 1, 1});
  const at::Tensor stdev =
      at::tensor(std::vector<float>(config.input().std().begin(), config.input().std().end()))
          .view({1, 3, 1, 1});
  const at::Tensor pixels = (normalised * stdev + mean).mul(255).round().clamp(0, 255);
  inference::ModelInferResponse u8, f32;
  ASSERT_TRUE(infer(InferRequest("UINT8", {3, 224, 224}, Bytes(pixels.to(at::kByte))), &u8).ok());
  ASSERT_TRUE(
      infer(InferRequest("FP32", {1, 3, 224, 224}, Bytes(((pixels / 255) - mean) / stdev)), &f32)
          .ok());
  EXPECT_THAT(u8.outputs(0).shape(), ::testing::ElementsAre(1000));  // Unbatched input.
  EXPECT_EQ(u8.raw_output_contents(0).size(), f32.raw_output_contents(0).size());
  {
    const float* a = reinterpret_cast<const float*>(u8.raw_output_contents(0).data());
    const float* b = reinterpret_cast<const float*>(f32.raw_output_contents(0).data());
    float max_diff = 0;
    for (int i = 0; i < 1000; ++i) max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
    EXPECT_LT(max_diff, 1e-3f);
  }

  // Bad tensors: INVALID_ARGUMENT naming what is allowed.
  const std::string good_bytes = Bytes(normalised);
  inference::ModelInferResponse ignored;
  for (const auto& [request, expected] :
       std::vector<std::pair<inference::ModelInferRequest, std::string>>{
           {InferRequest("FP32", {1, 3, 128, 128}, good_bytes), "expected [N,3,224,224]"},
           {InferRequest("INT64", {1, 3, 224, 224}, good_bytes), "allowed: FP32"},
           {InferRequest("FP32", {1, 3, 224, 224}, good_bytes.substr(8)), "bytes"},
           {InferRequest("FP32", {5, 3, 224, 224},
                         good_bytes + good_bytes + good_bytes + good_bytes + good_bytes),
            "max_batch_size"},
       }) {
    grpc::Status bad = infer(request, &ignored);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << expected;
    EXPECT_THAT(bad.error_message(), HasSubstr(expected));
  }
  {
    inference::ModelInferRequest request = InferRequest("FP32", {1, 3, 224, 224}, good_bytes);
    request.add_outputs()->set_name("probabilities");
    EXPECT_EQ(infer(request, &ignored).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    request.set_model_name("nope");
    EXPECT_EQ(infer(request, &ignored).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    inference::ModelStatisticsRequest request;
    inference::ModelStatisticsResponse response;
    ASSERT_TRUE(kserve.ModelStatistics(&context, request, &response).ok());
    ASSERT_EQ(response.model_stats_size(), 1);
    EXPECT_EQ(response.model_stats(0).name(), kModel);
    EXPECT_GE(response.model_stats(0).inference_count(), 4u);
  }
  {
    grpc::ClientContext context;
    inference::RepositoryIndexResponse response;
    ASSERT_TRUE(kserve.RepositoryIndex(&context, {}, &response).ok());
    ASSERT_EQ(response.models_size(), 1);
    EXPECT_EQ(response.models(0).state(), "READY");
  }
  {
    grpc::ClientContext context;
    inference::RepositoryModelLoadRequest request;
    request.set_model_name(kModel);
    inference::RepositoryModelLoadResponse response;
    EXPECT_EQ(kserve.RepositoryModelLoad(&context, request, &response).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);  // Quick mode has no repository.
  }
}

TEST_F(ServerTest, HealthCatalogueAndHttpEndpoints) {
  // grpc.health.v1.Health/Check through the generic stub: request {service = ""}, response
  // {status = SERVING (1)} encodes as the two bytes 0x08 0x01.
  grpc::GenericStub generic(client_->channel);
  for (const std::string service : {"", "vitserve.v1.Vision", "inference.GRPCInferenceService"}) {
    std::string request_bytes;
    if (!service.empty()) {
      request_bytes = absl::StrCat(std::string(1, '\x0a'),
                                   std::string(1, static_cast<char>(service.size())), service);
    }
    grpc::Slice slice(request_bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::ClientContext context;
    absl::Notification done;
    grpc::Status status;
    generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                      &response, [&](grpc::Status s) {
                        status = std::move(s);
                        done.Notify();
                      });
    done.WaitForNotification();
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << service;
  }

  {
    grpc::ClientContext context;
    v1::ListModelsResponse response;
    ASSERT_TRUE(client_->vision->ListModels(&context, {}, &response).ok());
    ASSERT_EQ(response.models_size(), 1);
    const v1::ModelDescription& d = response.models(0);
    EXPECT_EQ(d.name(), kModel);
    EXPECT_TRUE(d.ready());
    EXPECT_EQ(d.state(), "READY");
    EXPECT_TRUE(d.random_weights());
    EXPECT_EQ(d.input_size(), 224u);
    EXPECT_EQ(d.labels_size(), 0);  // Labels only in GetModel.
    EXPECT_GT(d.parameter_count(), 0);
  }
  {
    grpc::ClientContext context;
    v1::GetModelRequest request;
    request.set_name(kModel);
    v1::ModelDescription d;
    ASSERT_TRUE(client_->vision->GetModel(&context, request, &d).ok());
    EXPECT_EQ(d.labels_size(), 1000);
    EXPECT_EQ(d.batching().max_batch_size(), 4u);
  }

  EXPECT_EQ(HttpGet(server_->http_port(), "/v2/health/live").first, 200);
  EXPECT_EQ(HttpGet(server_->http_port(), "/v2/health/ready").first, 200);
  auto [status, metrics] = HttpGet(server_->http_port(), "/metrics");
  EXPECT_EQ(status, 200);
  EXPECT_THAT(metrics, HasSubstr("vitserve_model_ready"));
}

TEST_F(ServerTest, ClassifyStreamAnswersEachRequestWithItsId) {
  grpc::ClientContext context;
  auto stream = client_->vision->ClassifyStream(&context);
  constexpr int kRequests = 6;
  for (int i = 0; i < kRequests; ++i) {
    v1::ClassifyRequest request = OneImage(RawImage(MakeRgb(64, 64, 20 + i), 64, 64), 2);
    request.set_request_id(absl::StrCat("s", i));
    ASSERT_TRUE(stream->Write(request));
  }
  std::set<std::string> ids;
  v1::ClassifyResponse response;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(stream->Read(&response));
    ids.insert(response.request_id());
    ExpectWellFormed(response.results(0), 2);
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kRequests));

  // A failing request ends the stream with its status and request_id.
  v1::ClassifyRequest bad = OneImage(EncodedImage("garbage"));
  bad.set_request_id("bad-one");
  ASSERT_TRUE(stream->Write(bad));
  stream->WritesDone();
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("bad-one"));
}

// A server of its own, so its settings and shutdown do not affect the others.
class DedicatedServerTest : public ::testing::Test {
 protected:
  std::unique_ptr<VitServer> Start(ServerOptions options) {
    registry_ = BuiltinModelRegistry();
    auto server = VitServer::Start(std::move(options), &registry_);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }
  ModelRegistry registry_;
};

// Sends `count` Classify calls at once (callback API); returns their statuses.
std::vector<grpc::Status> Flood(Client& client, int count, const v1::Image& image) {
  struct Call {
    grpc::ClientContext context;
    v1::ClassifyRequest request;
    v1::ClassifyResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  absl::Mutex mu;
  int remaining = count;
  for (int i = 0; i < count; ++i) {
    calls.push_back(std::make_unique<Call>());
    Call* call = calls.back().get();
    call->request = OneImage(image);
    client.vision->async()->Classify(&call->context, &call->request, &call->response,
                                     [&, call](grpc::Status status) {
                                       absl::MutexLock lock(&mu);
                                       call->status = std::move(status);
                                       --remaining;
                                     });
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](int* remaining) { return *remaining == 0; }, &remaining));
  std::vector<grpc::Status> statuses;
  for (const auto& call : calls) statuses.push_back(call->status);
  return statuses;
}

TEST_F(DedicatedServerTest, FullQueueAnswersResourceExhaustedAtOnce) {
  ServerOptions options = TestOptions();
  options.max_batch_size = 1;
  options.max_queue_size = 1;
  auto server = Start(options);
  ASSERT_NE(server, nullptr);
  Client client(server->grpc_port());
  const v1::Image image = RawImage(MakeRgb(64, 64, 5), 64, 64);

  int ok = 0, exhausted = 0;
  for (const grpc::Status& status : Flood(client, 24, image)) {
    if (status.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << status.error_message();
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
  v1::ClassifyResponse response;
  EXPECT_TRUE(client.Classify(OneImage(image), &response).ok());
}

TEST_F(DedicatedServerTest, ShutdownFinishesAcceptedRequests) {
  ServerOptions options = TestOptions();
  options.max_batch_size = 1;
  auto server = Start(options);
  ASSERT_NE(server, nullptr);
  Client client(server->grpc_port());
  const v1::Image image = RawImage(MakeRgb(64, 64, 6), 64, 64);
  constexpr int kCalls = 6;

  std::vector<grpc::Status> statuses;
  std::thread flood([&] { statuses = Flood(client, kCalls, image); });
  // Wait until every call has been accepted (queued, computing or done), then shut down.
  for (;;) {
    auto model = server->model_manager().Get(kModel);
    ASSERT_TRUE(model.ok());
    const ModelStatisticsSnapshot stats = (*model)->Statistics();
    if ((*model)->InflightTasks() + static_cast<int64_t>(stats.success.count) >= kCalls) break;
    model->reset();
    absl::SleepFor(absl::Milliseconds(1));
  }
  server->Shutdown();
  flood.join();
  for (const grpc::Status& status : statuses) {
    EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  }
  v1::ClassifyResponse response;
  EXPECT_FALSE(client.Classify(OneImage(image), &response, absl::Seconds(2)).ok());
  EXPECT_EQ(HttpGet(server->http_port(), "/v2/health/ready").first, -1);  // HTTP stopped.
}

}  // namespace
}  // namespace vitserve

// End-to-end tests of the server's wiring: a real VitServer in-process on ephemeral ports,
// driven through the generated gRPC stubs (the client library is tested on its own) and plain
// HTTP. The models are the deterministic test models of tests/test_util/test_models.h: a
// fixed-weight probe whose outputs tell images apart by orders of magnitude more than the
// batch-to-batch rounding, and the same probe behind a ComputeGate, which holds a batch in
// compute for as long as a test needs (deadlines, full queues, drain) instead of sleeping.
#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/batching/batching_options.h"
#include "server/config/model_config.h"
#include "server/image/decode.h"
#include "server/image/preprocess.h"
#include "server/model_manager.h"
#include "server/vitserve_server.h"
#include "tests/test_util/scoped_temp_dir.h"
#include "tests/test_util/test_models.h"
#include "vitserve/v1/vision.grpc.pb.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = "test_probe";  // kProbeModel
constexpr int kClasses = static_cast<int>(kTestModelClasses);
constexpr int64_t kSize = kTestModelInputSize;

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
  options.rest_port = 0;
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

  // One call of `method` ("/package.Service/Method") through the generic stub, sending `bytes`
  // as they are; the reply's bytes go to `*reply`.
  grpc::Status CallWithBytes(const std::string& method, const std::string& bytes,
                             std::string* reply) {
    grpc::GenericStub generic(channel);
    grpc::Slice slice(bytes);
    const grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    absl::Notification done;
    grpc::Status status;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                      [&](grpc::Status s) {
                        status = std::move(s);
                        done.Notify();
                      });
    done.WaitForNotification();
    reply->clear();
    std::vector<grpc::Slice> slices;
    if (status.ok() && response.Dump(&slices).ok()) {
      for (const grpc::Slice& part : slices) {
        reply->append(reinterpret_cast<const char*>(part.begin()), part.size());
      }
    }
    return status;
  }

  // One bidirectional call of `method` through the generic stub: writes `messages` as they are,
  // half-closes, then reads every reply's bytes into `*replies` until the server finishes.
  grpc::Status StreamWithBytes(const std::string& method, const std::vector<std::string>& messages,
                               std::vector<std::string>* replies) {
    grpc::GenericStub generic(channel);
    grpc::CompletionQueue queue;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
        generic.PrepareCall(&context, method, &queue);
    int tag = 0;
    auto next = [&] {  // Waits for the one operation in flight; whether it succeeded.
      void* got = nullptr;
      bool ok = false;
      return queue.Next(&got, &ok) && got == &tag && ok;
    };
    call->StartCall(&tag);
    bool ok = next();
    for (const std::string& message : messages) {
      if (!ok) break;
      grpc::Slice slice(message);
      call->Write(grpc::ByteBuffer(&slice, 1), &tag);
      ok = next();
    }
    if (ok) {
      call->WritesDone(&tag);
      ok = next();
    }
    replies->clear();
    grpc::ByteBuffer reply;
    while (ok) {
      call->Read(&reply, &tag);
      if (!next()) break;
      std::vector<grpc::Slice> slices;
      std::string& bytes = replies->emplace_back();
      if (reply.Dump(&slices).ok()) {
        for (const grpc::Slice& part : slices) {
          bytes.append(reinterpret_cast<const char*>(part.begin()), part.size());
        }
      }
    }
    grpc::Status status;
    call->Finish(&status, &tag);
    next();
    queue.Shutdown();
    void* ignored_tag = nullptr;
    bool ignored_ok = false;
    while (queue.Next(&ignored_tag, &ignored_ok)) {
    }
    return status;
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
    EXPECT_LT(c.index(), kClasses);
    EXPECT_FALSE(c.label().empty());
    EXPECT_GT(c.score(), 0.0f);
    if (i > 0) {
      EXPECT_LE(c.score(), result.classes(i - 1).score()) << "not sorted";
    }
    sum += c.score();
  }
  EXPECT_LE(sum, 1.0f + 1e-5f);
}

// The same image computed in different batches: float rounding only (a few 1e-7).
constexpr float kSame = 1e-5f;
// Different images through the probe model differ by ~1e-1 in some class probability; a mix-up
// between two of them is at least this large (checked for each pair the tests use).
constexpr float kApart = 1e-2f;

// The full probability vector of `result` (top_k = all classes), by class index.
std::vector<float> ByClass(const v1::Classification& result) {
  std::vector<float> p(kClasses, -1.0f);
  for (const v1::ClassScore& c : result.classes()) p[c.index()] = c.score();
  return p;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
  return diff;
}

// Sum of the samples of Prometheus series `name` whose labels include every one of `labels`
// (text exposition format); 0 when there is none.
double MetricSum(const std::string& exposition, const std::string& name,
                 const std::map<std::string, std::string>& labels) {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::StartsWith(line, name + "{")) continue;
    const size_t close = line.rfind('}');
    if (close == absl::string_view::npos) continue;
    const absl::string_view label_text = line.substr(name.size() + 1, close - name.size() - 1);
    bool all = true;
    for (const auto& [key, value] : labels) {
      all = all && absl::StrContains(label_text, absl::StrCat(key, "=\"", value, "\""));
    }
    double sample = 0;
    if (all && absl::SimpleAtod(absl::StripAsciiWhitespace(line.substr(close + 1)), &sample)) {
      sum += sample;
    }
  }
  return sum;
}

// Writes `repository`/`name`/config.pbtxt with `config` (a test failure when it cannot).
void WriteModelConfig(const ScopedTempDir& repository, const std::string& name,
                      const std::string& config) {
  const std::string dir = repository.File(name);
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0) << dir;
  std::ofstream file(dir + "/config.pbtxt");
  file << config;
  ASSERT_TRUE(file.good()) << dir;
}

// Polls `done` every millisecond for up to `timeout`; whether it became true.
bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = RegistryWithTestModels(&gate_);
    auto server = VitServer::Start(TestOptions(), &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<Client>(server_->grpc_port());
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Shutdown();
  }

  // The probability vector of one raw image, classified alone.
  std::vector<float> ClassifyAlone(const v1::Image& image) {
    v1::ClassifyResponse response;
    grpc::Status status = client_->Classify(OneImage(image, kClasses), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return status.ok() ? ByClass(response.results(0)) : std::vector<float>(kClasses, -1.0f);
  }

  ComputeGate gate_;  // Unused by the probe model; the registry needs one.
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
  const std::vector<float> raw = ClassifyAlone(RawImage(rgb, 320, 240));
  v1::ClassifyRequest many;
  many.set_model(kModel);
  many.set_top_k(kClasses);
  std::vector<std::vector<float>> expected;
  for (int i = 0; i < 6; ++i) {
    if (i == 3) {
      *many.add_images() = EncodedImage(Encode(rgb, 320, 240, ".png"));
      expected.push_back(raw);
    } else {
      *many.add_images() = RawImage(MakeRgb(64, 48, 10 + i), 64, 48);
      expected.push_back(ClassifyAlone(many.images(i)));
    }
  }
  v1::ClassifyResponse many_response;
  grpc::Status status = client_->Classify(many, &many_response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(many_response.results_size(), 6);
  for (int i = 0; i < 6; ++i) {
    ExpectWellFormed(many_response.results(i), kClasses);
    EXPECT_LT(MaxAbsDiff(ByClass(many_response.results(i)), expected[i]), kSame) << "image " << i;
    for (int j = 0; j < 6; ++j) {
      if (MaxAbsDiff(expected[i], expected[j]) > kApart) {
        EXPECT_GT(MaxAbsDiff(ByClass(many_response.results(i)), expected[j]), kApart)
            << "image " << i << " came back with image " << j << "'s result";
      }
    }
  }
  EXPECT_GT(MaxAbsDiff(expected[2], raw), kApart) << "the test images must differ";
}

TEST_F(ServerTest, ConcurrentClientsGetTheirOwnResults) {
  constexpr int kImages = 8;
  std::vector<v1::Image> images;
  std::vector<std::vector<float>> alone;
  for (int i = 0; i < kImages; ++i) {
    images.push_back(RawImage(MakeRgb(96, 80, 100 + i), 96, 80));
    alone.push_back(ClassifyAlone(images.back()));
  }
  // A mix-up would be visible: every pair of images is far apart compared with kSame.
  for (int i = 0; i < kImages; ++i) {
    for (int j = i + 1; j < kImages; ++j) {
      ASSERT_GT(MaxAbsDiff(alone[i], alone[j]), kApart) << "images " << i << ", " << j;
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
        v1::ClassifyRequest request = OneImage(images[which], kClasses);
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
  int invalid_sent = 0;

  v1::ClassifyRequest unknown = OneImage(good);
  unknown.set_model("no_such_model");
  EXPECT_EQ(code_of(unknown).error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::Status garbage = code_of(OneImage(EncodedImage("definitely not an image")));
  ++invalid_sent;
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(garbage.error_message(), HasSubstr("image 0"));

  v1::ClassifyRequest no_images;
  no_images.set_model(kModel);
  ++invalid_sent;
  EXPECT_EQ(code_of(no_images).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::Status too_many = code_of(OneImage(good, kClasses + 1));
  ++invalid_sent;
  EXPECT_EQ(too_many.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_many.error_message(), HasSubstr(absl::StrCat("1..", kClasses)));

  v1::ClassifyRequest short_raw = OneImage(RawImage(std::string(100, 'x'), 64, 64));
  ++invalid_sent;
  EXPECT_EQ(code_of(short_raw).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::ClassifyRequest second_bad = OneImage(good);
  second_bad.add_images();  // Neither encoded nor raw.
  grpc::Status second = code_of(second_bad);
  ++invalid_sent;
  EXPECT_EQ(second.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(second.error_message(), HasSubstr("image 1"));

  {
    grpc::ClientContext context;
    v1::DetectRequest request;
    request.set_model(kModel);
    v1::DetectResponse response;
    grpc::Status status = client_->vision->Detect(&context, request, &response);
    ++invalid_sent;  // Detect on a classifier: counted under the model like the others.
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("Detect needs a detection model"));
  }
  {
    grpc::ClientContext context;
    v1::GetModelRequest request;
    request.set_name("no_such_model");
    v1::ModelDescription response;
    EXPECT_EQ(client_->vision->GetModel(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }

  // top_k 0 is "unset": the default, 5.
  v1::ClassifyResponse response;
  ASSERT_TRUE(client_->Classify(OneImage(good, 0), &response).ok());
  ExpectWellFormed(response.results(0), 5);

  // Each bad request above was counted once under its code, and the good ones as OK.
  auto [status, metrics] = HttpGet(server_->http_port(), "/metrics");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(MetricSum(metrics, "vitserve_requests_total",
                      {{"model", kModel}, {"code", "INVALID_ARGUMENT"}}),
            invalid_sent)
      << metrics;
  EXPECT_EQ(MetricSum(metrics, "vitserve_requests_total", {{"model", kModel}, {"code", "OK"}}), 1)
      << metrics;
  // Every computed batch (the warm-up's are not counted) is split into its three stages.
  const double batches =
      MetricSum(metrics, "vitserve_compute_duration_seconds_count", {{"model", kModel}});
  EXPECT_GE(batches, 1) << metrics;
  for (const char* stage : {"input", "forward", "output"}) {
    EXPECT_EQ(MetricSum(metrics, "vitserve_compute_stage_duration_seconds_count",
                        {{"model", kModel}, {"stage", stage}}),
              batches)
        << stage << "\n" << metrics;
  }
  EXPECT_GT(MetricSum(metrics, "vitserve_compute_stage_duration_seconds_sum",
                      {{"model", kModel}, {"stage", "forward"}}),
            0)
      << metrics;
}

// --max-image-bytes and --max-image-pixels reach the RPCs: a request over either limit gets
// RESOURCE_EXHAUSTED naming the flag, and one just inside them is served.
TEST(ServerImageLimitsTest, RequestsOverTheImageLimitsAreRefusedNamingTheFlag) {
  ComputeGate gate;
  ModelRegistry registry = RegistryWithTestModels(&gate);
  ServerOptions options = TestOptions();
  const std::string png = Encode(MakeRgb(64, 64, 8), 64, 64, ".png");
  options.image_limits.max_encoded_bytes = static_cast<int64_t>(png.size());
  options.image_limits.max_pixels = 64 * 64;
  auto server = VitServer::Start(options, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->grpc_port());
  v1::ClassifyResponse response;

  EXPECT_TRUE(client.Classify(OneImage(EncodedImage(png)), &response).ok());
  EXPECT_TRUE(client.Classify(OneImage(RawImage(MakeRgb(64, 64, 8), 64, 64)), &response).ok());

  grpc::Status too_big = client.Classify(OneImage(EncodedImage(png + std::string(1, '\0'))),
                                         &response);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << too_big.error_message();
  EXPECT_THAT(too_big.error_message(), HasSubstr("--max-image-bytes"));

  grpc::Status too_many_pixels =
      client.Classify(OneImage(RawImage(MakeRgb(65, 64, 8), 65, 64)), &response);
  EXPECT_EQ(too_many_pixels.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(too_many_pixels.error_message(), HasSubstr("--max-image-pixels"));

  EXPECT_TRUE(client.Classify(OneImage(EncodedImage(png)), &response).ok());  // Still serving.
  (*server)->Shutdown();
}

// --instance-count reaches quick mode's model (two instances, each serving), and a count
// outside 0..kMaxInstanceCount is refused at start, naming the flag. 0 (automatic) is one on CPU.
TEST(ServerInstanceCountTest, TheFlagSetsTheModelsInstancesAndIsChecked) {
  ComputeGate gate;
  ModelRegistry registry = RegistryWithTestModels(&gate);
  for (int bad : {-1, static_cast<int>(kMaxInstanceCount) + 1}) {
    ServerOptions options = TestOptions();
    options.instance_count = bad;
    auto refused = VitServer::Start(options, &registry);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(refused.status().message(), HasSubstr("--instance-count"));
  }
  for (int count : {0, 1, 3}) {
    ServerOptions options = TestOptions();
    options.instance_count = count;
    auto server = VitServer::Start(options, &registry);
    ASSERT_TRUE(server.ok()) << server.status();
    Client client((*server)->grpc_port());
    grpc::ClientContext context;
    v1::GetModelRequest get;
    get.set_name(kModel);
    v1::ModelDescription description;
    ASSERT_TRUE(client.vision->GetModel(&context, get, &description).ok());
    EXPECT_EQ(description.instance_count(), count == 0 ? kAutoInstanceCountOnCpu
                                                       : static_cast<uint32_t>(count))
        << count;
    v1::ClassifyResponse response;
    EXPECT_TRUE(client.Classify(OneImage(RawImage(MakeRgb(64, 64, 8), 64, 64)), &response).ok());
    (*server)->Shutdown();
  }
}

// --executor-idle-spin-us outside -1..10,000 is refused at start, naming the flag; a server whose
// executors spin the most serves as any other (the spin itself: DynamicBatcherTest.IdleSpin*).
TEST(ServerExecutorIdleSpinTest, TheFlagIsCheckedAndASpinningServerServes) {
  ComputeGate gate;
  ModelRegistry registry = RegistryWithTestModels(&gate);
  for (int64_t bad : {int64_t{-2}, absl::ToInt64Microseconds(kMaxIdleSpin) + 1}) {
    ServerOptions options = TestOptions();
    options.executor_idle_spin_us = bad;
    auto refused = VitServer::Start(options, &registry);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(refused.status().message(), HasSubstr("--executor-idle-spin-us"));
  }
  ServerOptions options = TestOptions();
  options.executor_idle_spin_us = absl::ToInt64Microseconds(kMaxIdleSpin);
  auto server = VitServer::Start(options, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->grpc_port());
  for (int request = 0; request < 3; ++request) {
    v1::ClassifyResponse response;
    ASSERT_TRUE(client.Classify(OneImage(RawImage(MakeRgb(64, 64, 8), 64, 64)), &response).ok());
    EXPECT_EQ(response.results_size(), 1);
    absl::SleepFor(absl::Milliseconds(20));  // The next request finds the executors asleep.
  }
  (*server)->Shutdown();
}

// The default (-1) polls only for models on a GPU (ModelIdleSpin): a model on the CPU counts no
// poll over back-to-back requests, where the same server told to poll counts some (each request
// comes right after the previous reply, so an executor that polls has one to count).
TEST(ServerExecutorIdleSpinTest, TheDefaultDoesNotPollForAModelOnTheCpu) {
  ComputeGate gate;
  ModelRegistry registry = RegistryWithTestModels(&gate);
  auto polls_after_back_to_back_requests = [&](int64_t spin_us) {
    ServerOptions options = TestOptions();
    options.executor_idle_spin_us = spin_us;
    auto server = VitServer::Start(options, &registry);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return -1.0;
    Client client((*server)->grpc_port());
    for (int request = 0; request < 20; ++request) {
      v1::ClassifyResponse response;
      EXPECT_TRUE(
          client.Classify(OneImage(RawImage(MakeRgb(64, 64, 8), 64, 64)), &response).ok());
    }
    const std::string metrics = HttpGet((*server)->http_port(), "/metrics").second;
    (*server)->Shutdown();
    return MetricSum(metrics, "vitserve_executor_idle_polls_total", {{"model", kModel}});
  };
  EXPECT_EQ(ServerOptions{}.executor_idle_spin_us, -1);
  EXPECT_EQ(polls_after_back_to_back_requests(-1), 0);
  EXPECT_GE(polls_after_back_to_back_requests(absl::ToInt64Microseconds(kMaxIdleSpin)), 1);
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

// The [rows, kClasses] FP32 logits of a ModelInfer response.
at::Tensor Logits(const inference::ModelInferResponse& response) {
  const std::string& bytes = response.raw_output_contents(0);
  at::Tensor logits = at::empty({static_cast<int64_t>(bytes.size() / sizeof(float) / kClasses),
                                 kClasses},
                                at::kFloat);
  std::memcpy(logits.data_ptr(), bytes.data(), bytes.size());
  return logits;
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
    EXPECT_THAT(response.inputs(0).shape(), ::testing::ElementsAre(-1, 3, kSize, kSize));
    EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(-1, kClasses));
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
  // way the server does it) give the same probabilities for every class.
  const std::string rgb = MakeRgb(200, 150, 7);
  const std::vector<float> classified = ClassifyAlone(RawImage(rgb, 200, 150));
  auto model = server_->model_manager().Get(kModel);
  ASSERT_TRUE(model.ok());
  auto decoded = RgbImageFromRaw(rgb, 200, 150, ImageLimits{});
  ASSERT_TRUE(decoded.ok());
  auto pre = Preprocess(*decoded, (*model)->preprocess_spec());
  ASSERT_TRUE(pre.ok());
  const at::Tensor normalised = pre->tensor.unsqueeze(0).contiguous();
  const v1::ModelConfig config = (*model)->config();
  model->reset();

  auto infer = [&](const inference::ModelInferRequest& request,
                   inference::ModelInferResponse* response) {
    grpc::ClientContext context;
    return kserve.ModelInfer(&context, request, response);
  };
  inference::ModelInferResponse fp32;
  grpc::Status status =
      infer(InferRequest("FP32", {1, 3, kSize, kSize}, Bytes(normalised)), &fp32);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(fp32.id(), "infer-1");
  EXPECT_EQ(fp32.model_version(), "1");
  ASSERT_EQ(fp32.outputs_size(), 1);
  EXPECT_EQ(fp32.outputs(0).name(), "logits");
  EXPECT_EQ(fp32.outputs(0).datatype(), "FP32");
  EXPECT_THAT(fp32.outputs(0).shape(), ::testing::ElementsAre(1, kClasses));
  ASSERT_EQ(fp32.raw_output_contents(0).size(), kClasses * sizeof(float));
  const at::Tensor fp32_logits = Logits(fp32);
  const at::Tensor probs = fp32_logits.softmax(1);
  const std::vector<float> kserve_probs(probs.data_ptr<float>(),
                                        probs.data_ptr<float>() + kClasses);
  EXPECT_LT(MaxAbsDiff(kserve_probs, classified), kSame);

  // FP16: the same normalised input rounded to half precision gives the FP32 logits within
  // fp16 rounding (inputs carry ~3 significant digits; logits are O(1)).
  inference::ModelInferResponse fp16;
  status = infer(InferRequest("FP16", {1, 3, kSize, kSize}, Bytes(normalised.to(at::kHalf))),
                 &fp16);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(fp16.outputs(0).datatype(), "FP32");
  const double fp16_error = (Logits(fp16) - fp32_logits).abs().max().item<double>();
  EXPECT_LT(fp16_error, 2e-2);
  // ... and differs from the logits of another image by far more: the input was really read.
  const at::Tensor other = normalised.flip(3).contiguous();
  inference::ModelInferResponse other_response;
  ASSERT_TRUE(infer(InferRequest("FP16", {1, 3, kSize, kSize}, Bytes(other.to(at::kHalf))),
                    &other_response)
                  .ok());
  EXPECT_GT((Logits(other_response) - fp32_logits).abs().max().item<double>(), 50 * fp16_error);

  // UINT8: raw pixels [C,H,W], normalised by the server. Compare with FP32 of the same pixels.
  const at::Tensor mean =
      at::tensor(std::vector<float>(config.input().mean().begin(), config.input().mean().end()))
          .view({1, 3, 1, 1});
  const at::Tensor stdev =
      at::tensor(std::vector<float>(config.input().std().begin(), config.input().std().end()))
          .view({1, 3, 1, 1});
  const at::Tensor pixels = (normalised * stdev + mean).mul(255).round().clamp(0, 255);
  inference::ModelInferResponse u8, f32;
  ASSERT_TRUE(
      infer(InferRequest("UINT8", {3, kSize, kSize}, Bytes(pixels.to(at::kByte))), &u8).ok());
  ASSERT_TRUE(infer(InferRequest("FP32", {1, 3, kSize, kSize},
                                 Bytes(((pixels / 255) - mean) / stdev)),
                    &f32)
                  .ok());
  EXPECT_THAT(u8.outputs(0).shape(), ::testing::ElementsAre(kClasses));  // Unbatched input.
  ASSERT_EQ(u8.raw_output_contents(0).size(), f32.raw_output_contents(0).size());
  EXPECT_LT((Logits(u8) - Logits(f32)).abs().max().item<double>(), 1e-4);

  // Bad tensors: INVALID_ARGUMENT naming what is allowed.
  const std::string good_bytes = Bytes(normalised);
  inference::ModelInferResponse ignored;
  for (const auto& [request, expected] :
       std::vector<std::pair<inference::ModelInferRequest, std::string>>{
           {InferRequest("FP32", {1, 3, 128, 128}, good_bytes),
            absl::StrCat("expected [N,3,", kSize, ",", kSize, "]")},
           {InferRequest("INT64", {1, 3, kSize, kSize}, good_bytes), "allowed: FP32"},
           {InferRequest("FP32", {1, 3, kSize, kSize}, good_bytes.substr(8)), "bytes"},
           {InferRequest("FP32", {5, 3, kSize, kSize},
                         good_bytes + good_bytes + good_bytes + good_bytes + good_bytes),
            "max_batch_size"},
       }) {
    grpc::Status bad = infer(request, &ignored);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << expected;
    EXPECT_THAT(bad.error_message(), HasSubstr(expected));
  }
  {
    inference::ModelInferRequest request = InferRequest("FP32", {1, 3, kSize, kSize}, good_bytes);
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
    // One Classify and five ModelInfer calls succeeded, one image each.
    EXPECT_EQ(response.model_stats(0).inference_count(), 6u);
  }
  {
    // Bytes that are not a ModelInferRequest (a valid one cut inside its raw contents):
    // INVALID_ARGUMENT from the raw method, and the next request is served.
    const std::string whole =
        InferRequest("FP32", {1, 3, kSize, kSize}, good_bytes).SerializeAsString();
    std::string reply;
    const grpc::Status junk = client_->CallWithBytes(
        "/inference.GRPCInferenceService/ModelInfer", whole.substr(0, whole.size() - 100), &reply);
    EXPECT_EQ(junk.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(junk.error_message(), HasSubstr("not a valid inference.ModelInferRequest"));
    // The same bytes whole, through the generic stub, are answered as the typed stub is.
    const grpc::Status good = client_->CallWithBytes(
        "/inference.GRPCInferenceService/ModelInfer", whole, &reply);
    ASSERT_TRUE(good.ok()) << good.error_message();
    inference::ModelInferResponse response;
    ASSERT_TRUE(response.ParseFromString(reply));
    EXPECT_LT((Logits(response) - fp32_logits).abs().max().item<double>(), 1e-5);
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
  for (const std::string service : {"", "vitserve.v1.Vision", "inference.GRPCInferenceService"}) {
    std::string request_bytes;
    if (!service.empty()) {
      request_bytes = absl::StrCat(std::string(1, '\x0a'),
                                   std::string(1, static_cast<char>(service.size())), service);
    }
    std::string bytes;
    const grpc::Status status =
        client_->CallWithBytes("/grpc.health.v1.Health/Check", request_bytes, &bytes);
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
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
    EXPECT_EQ(d.input_size(), static_cast<uint32_t>(kSize));
    EXPECT_EQ(d.labels_size(), 0);  // Labels only in GetModel.
    EXPECT_EQ(d.parameter_count(), 3 * kSize * kSize * kClasses + kClasses);
  }
  {
    grpc::ClientContext context;
    v1::GetModelRequest request;
    request.set_name(kModel);
    v1::ModelDescription d;
    ASSERT_TRUE(client_->vision->GetModel(&context, request, &d).ok());
    EXPECT_EQ(d.labels_size(), kClasses);
    EXPECT_EQ(d.batching().max_batch_size(), 4u);
  }

  EXPECT_EQ(HttpGet(server_->http_port(), "/v2/health/live").first, 200);
  EXPECT_EQ(HttpGet(server_->http_port(), "/v2/health/ready").first, 200);
  auto [status, metrics] = HttpGet(server_->http_port(), "/metrics");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(MetricSum(metrics, "vitserve_model_ready", {{"model", kModel}}), 1) << metrics;
}

// ModelStreamInfer, a raw method: each request is answered with its own id and its own tensor
// (read from gRPC's buffer); a failing request, malformed bytes among them, is answered in-band
// and the stream goes on.
TEST_F(ServerTest, ModelStreamInferAnswersEachRequestInBand) {
  std::vector<std::string> tensors;
  std::vector<at::Tensor> unary;
  for (int i = 0; i < 2; ++i) {
    const at::Tensor input =
        at::sin(at::arange(3 * kSize * kSize, at::kFloat) * (0.01 * (i + 1))).view(
            {1, 3, kSize, kSize});
    tensors.push_back(Bytes(input));
    inference::ModelInferResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(client_->kserve
                    ->ModelInfer(&context, InferRequest("FP32", {1, 3, kSize, kSize}, tensors[i]),
                                 &response)
                    .ok());
    unary.push_back(Logits(response));
  }
  ASSERT_GT((unary[0] - unary[1]).abs().max().item<double>(), 1e-3);

  auto request = [&](const std::string& id, const std::string& model, const std::string& bytes) {
    inference::ModelInferRequest message = InferRequest("FP32", {1, 3, kSize, kSize}, bytes);
    message.set_id(id);
    message.set_model_name(model);
    return message.SerializeAsString();
  };
  const std::string truncated = request("cut", kModel, tensors[0]);
  std::vector<std::string> replies;
  const grpc::Status status = client_->StreamWithBytes(
      "/inference.GRPCInferenceService/ModelStreamInfer",
      {request("first", kModel, tensors[0]), truncated.substr(0, truncated.size() - 100),
       request("unknown", "no_such_model", tensors[0]),
       request("short", kModel, tensors[1].substr(4)), request("second", kModel, tensors[1])},
      &replies);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(replies.size(), 5u);
  std::map<std::string, inference::ModelStreamInferResponse> by_id;
  for (const std::string& bytes : replies) {
    inference::ModelStreamInferResponse response;
    ASSERT_TRUE(response.ParseFromString(bytes));
    by_id[response.infer_response().id()] = response;
  }
  // The malformed message has no id to echo: its answer is the one with an empty id.
  ASSERT_EQ(by_id.size(), 5u);
  EXPECT_THAT(by_id[""].error_message(),
              HasSubstr("INVALID_ARGUMENT: the request is not a valid inference.ModelInferRequest"));
  EXPECT_THAT(by_id["unknown"].error_message(), HasSubstr("NOT_FOUND"));
  EXPECT_THAT(by_id["short"].error_message(), HasSubstr("INVALID_ARGUMENT"));
  for (const auto& [id, row] : {std::pair<std::string, int>{"first", 0}, {"second", 1}}) {
    const inference::ModelStreamInferResponse& answer = by_id[id];
    ASSERT_TRUE(answer.error_message().empty()) << id << ": " << answer.error_message();
    EXPECT_LT((Logits(answer.infer_response()) - unary[row]).abs().max().item<double>(), 1e-5)
        << id;
  }
}

TEST_F(ServerTest, ClassifyStreamAnswersEachRequestWithItsOwnResult) {
  constexpr int kRequests = 6;
  std::vector<v1::Image> images;
  std::vector<std::vector<float>> alone;
  for (int i = 0; i < kRequests; ++i) {
    images.push_back(RawImage(MakeRgb(64, 64, 20 + i), 64, 64));
    alone.push_back(ClassifyAlone(images.back()));
  }
  grpc::ClientContext context;
  auto stream = client_->vision->ClassifyStream(&context);
  for (int i = 0; i < kRequests; ++i) {
    v1::ClassifyRequest request = OneImage(images[i], kClasses);
    request.set_request_id(absl::StrCat("s", i));
    ASSERT_TRUE(stream->Write(request));
  }
  std::set<std::string> ids;
  v1::ClassifyResponse response;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(stream->Read(&response));
    ids.insert(response.request_id());
    ASSERT_EQ(response.results_size(), 1);
    ExpectWellFormed(response.results(0), kClasses);
    int which = -1;
    ASSERT_TRUE(absl::SimpleAtoi(absl::StripPrefix(response.request_id(), "s"), &which));
    ASSERT_GE(which, 0);
    ASSERT_LT(which, kRequests);
    // The streamed result of each request equals its unary result, and no other image's.
    EXPECT_LT(MaxAbsDiff(ByClass(response.results(0)), alone[which]), kSame)
        << response.request_id();
    for (int j = 0; j < kRequests; ++j) {
      if (j != which) {
        EXPECT_GT(MaxAbsDiff(ByClass(response.results(0)), alone[j]), kApart)
            << response.request_id() << " came back with image " << j << "'s result";
      }
    }
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

// Classify calls made with the callback API: each one's status arrives when the server answers,
// so a test can check which calls are answered while a batch is held in compute.
class AsyncCalls {
 public:
  explicit AsyncCalls(Client* client) : client_(client) {}
  // Waits for every call (each has its own deadline).
  ~AsyncCalls() { WaitForAll(); }

  // Starts one call; returns its index. `timeout` is its gRPC deadline.
  int Start(v1::ClassifyRequest request, absl::Duration timeout = absl::Seconds(60)) {
    auto call = std::make_unique<Call>();
    call->request = std::move(request);
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    Call* raw = call.get();
    int index;
    {
      absl::MutexLock lock(&mu_);
      index = static_cast<int>(calls_.size());
      calls_.push_back(std::move(call));
    }
    client_->vision->async()->Classify(&raw->context, &raw->request, &raw->response,
                                       [this, raw](grpc::Status status) {
                                         absl::MutexLock lock(&mu_);
                                         raw->status = std::move(status);
                                         raw->answered = true;
                                       });
    return index;
  }

  bool Answered(int index) const {
    absl::MutexLock lock(&mu_);
    return calls_[index]->answered;
  }
  int AnsweredCount() const {
    absl::MutexLock lock(&mu_);
    int answered = 0;
    for (const auto& call : calls_) answered += call->answered ? 1 : 0;
    return answered;
  }
  // Waits for call `index` to be answered (bounded by its own deadline) and returns its status.
  grpc::Status Wait(int index) {
    absl::MutexLock lock(&mu_);
    Call* call = calls_[index].get();
    mu_.Await(absl::Condition(&call->answered));
    return call->status;
  }
  void WaitForAll() {
    for (int i = 0; i < static_cast<int>(Size()); ++i) Wait(i);
  }
  std::vector<grpc::Status> Statuses() {
    WaitForAll();
    absl::MutexLock lock(&mu_);
    std::vector<grpc::Status> statuses;
    for (const auto& call : calls_) statuses.push_back(call->status);
    return statuses;
  }

 private:
  struct Call {
    grpc::ClientContext context;
    v1::ClassifyRequest request;
    v1::ClassifyResponse response;
    grpc::Status status;
    bool answered = false;
  };
  size_t Size() const {
    absl::MutexLock lock(&mu_);
    return calls_.size();
  }

  Client* client_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Call>> calls_ ABSL_GUARDED_BY(mu_);
};

// A server of its own serving kGatedModel, so a test can hold a batch in compute.
class GatedServerTest : public ::testing::Test {
 protected:
  static ServerOptions GatedOptions() {
    ServerOptions options = TestOptions();
    options.model = kGatedModel;
    options.max_batch_size = 1;
    // One executor, so that holding the gate holds every batch (a CPU model's default is two).
    options.instance_count = 1;
    return options;
  }
  void Start(ServerOptions options) {
    registry_ = RegistryWithTestModels(&gate_);
    auto server = VitServer::Start(std::move(options), &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<Client>(server_->grpc_port());
    calls_ = std::make_unique<AsyncCalls>(client_.get());
    gate_.ResetCounts();  // Forget the warm-up batches.
  }
  void TearDown() override {
    gate_.Release();  // First, so that a failed test's held calls can finish.
    calls_.reset();   // Waits for every call.
    client_.reset();
    if (server_) server_->Shutdown();
  }
  int64_t QueueDepth() {
    auto model = server_->model_manager().Get(kGatedModel);
    return model.ok() ? (*model)->QueueDepth() : -1;
  }
  static v1::ClassifyRequest Request(int images, int seed) {
    v1::ClassifyRequest request;
    request.set_model(kGatedModel);
    for (int i = 0; i < images; ++i) {
      *request.add_images() = RawImage(MakeRgb(40, 40, seed + i), 40, 40);
    }
    return request;
  }
  // Holds compute, starts one call and waits until its batch is being computed.
  void HoldOneBatchInCompute(AsyncCalls& calls) {
    gate_.Hold();
    calls.Start(Request(1, 1));
    ASSERT_TRUE(gate_.WaitForBatches(1, absl::Seconds(30)));
  }
  std::string Metrics() { return HttpGet(server_->http_port(), "/metrics").second; }

  ComputeGate gate_;
  ModelRegistry registry_;
  std::unique_ptr<VitServer> server_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<AsyncCalls> calls_;  // Calls made with the callback API, on client_.
};

TEST_F(GatedServerTest, FullQueueAnswersResourceExhaustedWhileTheQueueIsFull) {
  ServerOptions options = GatedOptions();
  options.max_queue_size = 2;
  Start(options);
  AsyncCalls& calls = *calls_;
  HoldOneBatchInCompute(calls);
  // Two more fill the queue (max_queue_size = 2) while the first is computing.
  calls.Start(Request(1, 2));
  calls.Start(Request(1, 3));
  ASSERT_TRUE(WaitFor([&] { return QueueDepth() == 2; }));
  // The next one is refused at once: answered while compute is still held, so no batch had to
  // finish first.
  const int refused = calls.Start(Request(1, 4), absl::Seconds(10));
  const grpc::Status status = calls.Wait(refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("queue"));
  EXPECT_EQ(gate_.BatchesEntered(), 1);
  EXPECT_EQ(calls.AnsweredCount(), 1);

  gate_.Release();
  const std::vector<grpc::Status> statuses = calls.Statuses();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_message();
  EXPECT_EQ(gate_.BatchSizes(), std::vector<int64_t>({1, 1, 1}));  // The refused one never ran.
  v1::ClassifyResponse response;
  EXPECT_TRUE(client_->Classify(Request(1, 5), &response).ok());
}

// Overload is refused at the door: once max_queue_size requests wait and a batch computes (the
// admission limit), further requests get RESOURCE_EXHAUSTED on arrival, before they are
// decoded, so neither decoded work nor memory piles up in front of the queue; the limit
// frees as requests are answered.
TEST_F(GatedServerTest, OverloadIsRefusedBeforeDecoding) {
  ServerOptions options = GatedOptions();
  options.max_queue_size = 2;
  Start(options);
  auto model = server_->model_manager().Get(kGatedModel);
  ASSERT_TRUE(model.ok());
  EXPECT_EQ((*model)->AdmissionLimit(), 3);  // 2 waiting + 1 instance x max_batch_size 1.
  auto decoded = [&] {
    return MetricSum(Metrics(), "vitserve_preprocess_duration_seconds_count",
                     {{"model", kGatedModel}});
  };
  const double decoded_before = decoded();
  AsyncCalls& calls = *calls_;
  HoldOneBatchInCompute(calls);
  calls.Start(Request(1, 2));
  calls.Start(Request(1, 3));
  ASSERT_TRUE(WaitFor([&] { return QueueDepth() == 2; }));
  constexpr int kFlood = 24;
  std::vector<int> flood;
  for (int i = 0; i < kFlood; ++i) flood.push_back(calls.Start(Request(1, 100 + i)));
  for (int call : flood) {
    const grpc::Status status = calls.Wait(call);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("overloaded"));
  }
  // Only the three admitted requests were ever decoded.
  EXPECT_EQ(decoded() - decoded_before, 3) << Metrics();
  EXPECT_EQ(gate_.BatchesEntered(), 1);

  gate_.Release();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(calls.Wait(i).ok()) << i;
  v1::ClassifyResponse response;
  EXPECT_TRUE(client_->Classify(Request(1, 5), &response).ok());  // Admissions were given back.
}

// A request of several images is split into max_batch_size tasks; when a later task does not
// fit in the queue, the request fails with RESOURCE_EXHAUSTED only after its queued tasks ran
// (nothing is left behind computing for a finished call), and the server keeps serving.
TEST_F(GatedServerTest, RequestWhoseLaterChunkIsRefusedFailsAfterItsQueuedChunksRan) {
  ServerOptions options = GatedOptions();
  options.max_queue_size = 2;
  Start(options);
  AsyncCalls& calls = *calls_;
  HoldOneBatchInCompute(calls);
  const int split = calls.Start(Request(4, 10));  // Chunks 1 and 2 queue; chunk 3 is refused.
  ASSERT_TRUE(WaitFor([&] { return QueueDepth() == 2; }));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(calls.Answered(split)) << "answered while its queued chunks were still waiting";

  gate_.Release();
  const grpc::Status status = calls.Wait(split);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_TRUE(calls.Wait(0).ok());
  EXPECT_EQ(gate_.BatchSizes(), std::vector<int64_t>({1, 1, 1}));  // Held one + two chunks.
  EXPECT_EQ(QueueDepth(), 0);
  v1::ClassifyResponse response;
  EXPECT_TRUE(client_->Classify(Request(2, 20), &response).ok());
}

// A request whose deadline passes while it waits behind a batch is dropped by the server
// before compute, and counted as DEADLINE_EXCEEDED (not CANCELLED: the deadline is the reason).
TEST_F(GatedServerTest, ServerDropsARequestWhoseDeadlinePassedInTheQueue) {
  Start(GatedOptions());
  AsyncCalls& calls = *calls_;
  HoldOneBatchInCompute(calls);
  const int late = calls.Start(Request(1, 30), absl::Milliseconds(200));
  ASSERT_TRUE(WaitFor([&] { return QueueDepth() == 1; }));
  EXPECT_EQ(calls.Wait(late).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // gRPC sends the deadline as a timeout, so the server's copy ends a little after the client's
  // (by the time the request took to arrive): give it ample time to pass there too.
  absl::SleepFor(absl::Milliseconds(200));
  gate_.Release();
  EXPECT_TRUE(calls.Wait(0).ok());
  // The executor takes the expired request next and must drop it, not compute it.
  ASSERT_TRUE(WaitFor([&] { return QueueDepth() == 0; }));
  ASSERT_TRUE(WaitFor([&] {
    return MetricSum(Metrics(), "vitserve_requests_total",
                     {{"model", kGatedModel}, {"code", "DEADLINE_EXCEEDED"}}) == 1;
  })) << Metrics();
  EXPECT_EQ(gate_.BatchSizes(), std::vector<int64_t>({1}));  // Compute never saw it.
  EXPECT_EQ(MetricSum(Metrics(), "vitserve_requests_total",
                      {{"model", kGatedModel}, {"code", "CANCELLED"}}),
            0);
  v1::ClassifyResponse response;
  EXPECT_TRUE(client_->Classify(Request(1, 31), &response).ok());
}

// A batch that runs out of device memory is run again in halves, so its requests get their
// answers; a single row that does not fit fails only its request; the server keeps serving.
TEST_F(GatedServerTest, ABatchThatRunsOutOfMemoryIsSplitAndTheServerRecovers) {
  ServerOptions options = GatedOptions();
  options.max_batch_size = 8;
  Start(options);
  const v1::ClassifyRequest six = [] {
    v1::ClassifyRequest request = Request(6, 60);
    request.set_top_k(kClasses);
    return request;
  }();
  std::vector<std::vector<float>> alone;
  for (const v1::Image& image : six.images()) {
    v1::ClassifyRequest one;
    one.set_model(kGatedModel);
    one.set_top_k(kClasses);
    *one.add_images() = image;
    v1::ClassifyResponse response;
    ASSERT_TRUE(client_->Classify(one, &response).ok());
    alone.push_back(ByClass(response.results(0)));
  }

  gate_.SetMemoryBudget(2);
  gate_.ResetCounts();
  v1::ClassifyResponse response;
  grpc::Status status = client_->Classify(six, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 6);
  for (int i = 0; i < 6; ++i) {
    EXPECT_LT(MaxAbsDiff(ByClass(response.results(i)), alone[i]), kSame) << "image " << i;
  }
  // 6 rows -> 3 + 3 -> (1 + 2) + (1 + 2); the passes of 6 and 3 rows ran out of memory.
  EXPECT_EQ(gate_.BatchSizes(), std::vector<int64_t>({6, 3, 1, 2, 3, 1, 2}));

  gate_.SetMemoryBudget(0);
  status = client_->Classify(Request(1, 70), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("out of memory"));

  gate_.SetMemoryBudget(-1);
  status = client_->Classify(six, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(MaxAbsDiff(ByClass(response.results(5)), alone[5]), kSame);
  EXPECT_EQ(MetricSum(Metrics(), "vitserve_requests_total",
                      {{"model", kGatedModel}, {"code", "RESOURCE_EXHAUSTED"}}),
            1);
}

// Unloading a model (KServe RepositoryModelUnload) with requests computing and queued: the
// accepted requests finish with their answers and later ones get UNAVAILABLE.
TEST_F(GatedServerTest, UnloadWithRequestsInFlightFinishesThemAndRefusesNewOnes) {
  Start(GatedOptions());
  AsyncCalls& calls = *calls_;
  HoldOneBatchInCompute(calls);
  constexpr int kQueued = 3;
  for (int i = 0; i < kQueued; ++i) calls.Start(Request(1, 80 + i));
  ASSERT_TRUE(WaitFor([&] { return QueueDepth() == kQueued; }));

  grpc::Status unloaded;
  std::thread unload([&] {
    inference::RepositoryModelUnloadRequest request;
    request.set_model_name(kGatedModel);
    inference::RepositoryModelUnloadResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    unloaded = client_->kserve->RepositoryModelUnload(&context, request, &response);
  });
  // Once unloaded, the model is no longer handed out: a new request is refused at once.
  ASSERT_TRUE(WaitFor([&] { return !server_->model_manager().Get(kGatedModel).ok(); }));
  v1::ClassifyResponse response;
  grpc::Status refused = client_->Classify(Request(1, 90), &response, absl::Seconds(10));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_EQ(calls.AnsweredCount(), 0) << "an accepted request was answered before it ran";

  gate_.Release();
  unload.join();
  EXPECT_TRUE(unloaded.ok()) << unloaded.error_message();
  const std::vector<grpc::Status> statuses = calls.Statuses();
  for (size_t i = 0; i < statuses.size(); ++i) {
    EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_code() << " "
                                  << statuses[i].error_message();
  }
  EXPECT_EQ(gate_.BatchSizes(), std::vector<int64_t>(1 + kQueued, 1));

  // The model stays unavailable (quick mode cannot load it again; a repository can: see
  // ModelManagerTest.UnloadStopsHandingOutButHeldHandleFinishes).
  EXPECT_EQ(client_->Classify(Request(1, 91), &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

// Shutdown with requests computing and queued: every accepted request succeeds, new ones are
// refused, and the servers stop.
TEST_F(GatedServerTest, ShutdownFinishesAcceptedRequests) {
  Start(GatedOptions());
  AsyncCalls& calls = *calls_;
  HoldOneBatchInCompute(calls);
  constexpr int kQueued = 3;
  for (int i = 0; i < kQueued; ++i) calls.Start(Request(1, 40 + i));
  ASSERT_TRUE(WaitFor([&] { return QueueDepth() == kQueued; }));

  std::thread shutdown([&] { server_->Shutdown(); });
  // While it drains, a new call is refused.
  absl::SleepFor(absl::Milliseconds(200));
  v1::ClassifyResponse response;
  EXPECT_FALSE(client_->Classify(Request(1, 50), &response, absl::Seconds(5)).ok());
  EXPECT_EQ(calls.AnsweredCount(), 0) << "an accepted request was answered before it ran";
  gate_.Release();
  shutdown.join();
  const std::vector<grpc::Status> statuses = calls.Statuses();
  for (size_t i = 0; i < statuses.size(); ++i) {
    EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_code() << " "
                                  << statuses[i].error_message();
  }
  EXPECT_EQ(gate_.BatchSizes(), std::vector<int64_t>(1 + kQueued, 1));
  EXPECT_EQ(HttpGet(server_->http_port(), "/v2/health/ready").first, -1);  // HTTP stopped.
}

// Device preprocessing (ModelConfig.device_preprocessing): Classify images travel as uint8 pixels
// and the instance resizes and normalises them with tensor ops, a batch at a time. On CPU the
// same ops run as on a GPU, so this checks the served path end to end: the same probe model with
// and without it gives the same answers, up to OpenCV's 8-bit rounding, for enlarged and shrunk
// images, several per request, mixed sizes (preprocessed on the CPU then) and concurrent
// requests whose batches mix image sizes and CPU-preprocessed rows.
class DevicePreprocessingServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // on_device_nhwc also takes its input in channels-last memory (ModelConfig.channels_last)
    // and sets approximate_gelu: false (the others take the server's default, true); the probe
    // has no MLP, so only its description shows it.
    struct Variant {
      const char* name;
      bool on_device;
      bool channels_last;
    };
    for (const Variant& v : {Variant{"on_cpu", false, false}, Variant{"on_device", true, false},
                             Variant{"on_device_nhwc", true, true}}) {
      WriteModelConfig(
          repository_, v.name,
          absl::StrCat("architecture: \"", kModel, "\" allow_random_weights: true\n",
                       "device_preprocessing: ", v.on_device ? "true" : "false",
                       " channels_last: ", v.channels_last ? "true" : "false",
                       v.channels_last ? " approximate_gelu: false" : "", "\n",
                       "input { interpolation: \"bicubic\" crop_pct: 0.875 }\n",
                       "batching { max_batch_size: 8 max_queue_delay_us: 20000 }\n"));
    }
    registry_ = RegistryWithTestModels(&gate_);
    ServerOptions options = TestOptions();
    options.model.clear();
    options.model_repository = repository_.path();
    auto server = VitServer::Start(options, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<Client>(server_->grpc_port());
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Shutdown();
  }

  // Every image's probability vector from `model`, for one request of `images`.
  std::vector<std::vector<float>> Classify(const std::string& model,
                                           const std::vector<v1::Image>& images) {
    v1::ClassifyRequest request;
    request.set_model(model);
    request.set_top_k(kClasses);
    for (const v1::Image& image : images) *request.add_images() = image;
    v1::ClassifyResponse response;
    grpc::Status status = client_->Classify(request, &response);
    EXPECT_TRUE(status.ok()) << model << ": " << status.error_message();
    std::vector<std::vector<float>> out;
    for (const v1::Classification& result : response.results()) out.push_back(ByClass(result));
    return out;
  }

  ScopedTempDir repository_;
  ComputeGate gate_;
  ModelRegistry registry_;
  std::unique_ptr<VitServer> server_;
  std::unique_ptr<Client> client_;
};

// Bicubic and area resizing on the device give OpenCV's pixels but a rare one that OpenCV's
// arithmetic rounds the other way (one grey level apart; see tensor_preprocess_test). The probe
// weighs every input pixel, so one such pixel moves a probability by about 1e-4; the issue's
// bar for device preprocessing is 1e-3.
constexpr float kRounding = 1e-3f;

TEST_F(DevicePreprocessingServerTest, AnswersAsCpuPreprocessingDoes) {
  v1::GetModelRequest get;
  get.set_name("on_device");
  v1::ModelDescription description;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(client_->vision->GetModel(&context, get, &description).ok());
  }
  EXPECT_TRUE(description.device_preprocessing());
  get.set_name("on_cpu");
  {
    grpc::ClientContext context;
    ASSERT_TRUE(client_->vision->GetModel(&context, get, &description).ok());
  }
  EXPECT_FALSE(description.device_preprocessing());
  EXPECT_FALSE(description.channels_last());
  EXPECT_TRUE(description.approximate_gelu());
  get.set_name("on_device_nhwc");
  {
    grpc::ClientContext context;
    ASSERT_TRUE(client_->vision->GetModel(&context, get, &description).ok());
  }
  EXPECT_TRUE(description.channels_last());
  EXPECT_FALSE(description.approximate_gelu());

  // The probe, configured for bicubic and crop_pct 0.875, resizes to 36 on the shorter side:
  // 32x32 and 30x20 are enlarged, 64x48 shrunk (within twice), 320x240 (a PNG) far larger, so
  // preprocessed on the CPU either way.
  const std::vector<std::vector<v1::Image>> requests = {
      {RawImage(MakeRgb(32, 32, 1), 32, 32)},
      {RawImage(MakeRgb(30, 20, 2), 30, 20), RawImage(MakeRgb(30, 20, 3), 30, 20)},
      {RawImage(MakeRgb(64, 48, 4), 64, 48)},
      {EncodedImage(Encode(MakeRgb(320, 240, 5), 320, 240, ".png"))},
      {RawImage(MakeRgb(32, 32, 6), 32, 32), RawImage(MakeRgb(64, 48, 7), 64, 48)},  // Mixed.
  };
  std::vector<std::vector<std::vector<float>>> expected;
  for (const auto& images : requests) expected.push_back(Classify("on_cpu", images));
  EXPECT_GT(MaxAbsDiff(expected[0][0], expected[4][0]), kApart) << "the test images must differ";

  for (const char* model : {"on_device", "on_device_nhwc"}) {
    for (size_t r = 0; r < requests.size(); ++r) {
      const auto actual = Classify(model, requests[r]);
      ASSERT_EQ(actual.size(), expected[r].size()) << model;
      for (size_t i = 0; i < actual.size(); ++i) {
        EXPECT_LT(MaxAbsDiff(actual[i], expected[r][i]), kRounding)
            << model << " request " << r << " image " << i;
      }
    }
  }

  // Concurrently, so that batches (of up to 8 rows, waiting up to 20 ms) mix image sizes and
  // CPU-preprocessed rows: each request still gets its own answers.
  constexpr int kRounds = 3;
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (size_t r = 0; r < requests.size(); ++r) {
    threads.emplace_back([&, r] {
      Client client(server_->grpc_port());
      for (int round = 0; round < kRounds; ++round) {
        v1::ClassifyRequest request;
        request.set_model("on_device");
        request.set_top_k(kClasses);
        for (const v1::Image& image : requests[r]) *request.add_images() = image;
        v1::ClassifyResponse response;
        grpc::Status status = client.Classify(request, &response);
        if (!status.ok() || response.results_size() != static_cast<int>(expected[r].size())) {
          ++mismatches;
          continue;
        }
        for (int i = 0; i < response.results_size(); ++i) {
          if (MaxAbsDiff(ByClass(response.results(i)), expected[r][static_cast<size_t>(i)]) >=
              kRounding) {
            ++mismatches;
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Classify requests of raw pixels that on_device takes as a copy are read with the pixels left
// in gRPC's buffer (server/api/deferred_classify.h); on_cpu parses them whole. Bad ones get the
// same answers from both, bytes that are no ClassifyRequest get INVALID_ARGUMENT, and the server
// keeps serving.
TEST_F(DevicePreprocessingServerTest, BadRawRequestsGetTheSameAnswersWithPixelsLeftInTheBuffer) {
  const v1::Image good = RawImage(MakeRgb(32, 32, 1), 32, 32);
  auto answer = [&](const char* model, v1::ClassifyRequest request) {
    request.set_model(model);
    v1::ClassifyResponse response;
    grpc::Status status = client_->Classify(request, &response);
    // The model's own name is the only difference allowed.
    return std::make_pair(status.error_code(),
                          absl::StrReplaceAll(status.error_message(), {{model, "<model>"}}));
  };
  std::vector<v1::ClassifyRequest> bad;
  bad.push_back(OneImage(RawImage(std::string(100, 'x'), 32, 32)));  // Too few bytes.
  bad.push_back(OneImage(good));
  bad.back().add_images()->mutable_raw()->set_width(32);  // No height nor pixels.
  bad.push_back(OneImage(good, kClasses + 1));             // top_k beyond the classes.
  bad.push_back(OneImage(good));
  *bad.back().add_images() = RawImage(MakeRgb(32, 32, 2).substr(3), 32, 32);
  for (size_t i = 0; i < bad.size(); ++i) {
    const auto on_cpu = answer("on_cpu", bad[i]);
    EXPECT_NE(on_cpu.first, grpc::StatusCode::OK) << i;
    EXPECT_EQ(answer("on_device", bad[i]), on_cpu) << i << ": " << on_cpu.second;
  }

  // Bytes that are not a ClassifyRequest: a model name, then an image cut short.
  const std::string junk("\x0a\x09on_device\x12\xff", 13);
  std::string reply;
  const grpc::Status junk_status =
      client_->CallWithBytes("/vitserve.v1.Vision/Classify", junk, &reply);
  EXPECT_EQ(junk_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(junk_status.error_message(),
              HasSubstr("not a valid vitserve.v1.ClassifyRequest"));

  // Still serving, the same answer either way.
  const std::vector<std::vector<float>> on_cpu = Classify("on_cpu", {good, good});
  const std::vector<std::vector<float>> on_device = Classify("on_device", {good, good});
  ASSERT_EQ(on_device.size(), 2u);
  ASSERT_EQ(on_cpu.size(), 2u);
  EXPECT_LT(MaxAbsDiff(on_device[1], on_cpu[1]), kRounding);
}

// A server of the models in `repository` (no model named on its command line), from `registry`
// (which must outlive it).
absl::StatusOr<std::unique_ptr<VitServer>> StartWithRepository(const ScopedTempDir& repository,
                                                               const ModelRegistry* registry) {
  ServerOptions options = TestOptions();
  options.model.clear();
  options.model_repository = repository.path();
  return VitServer::Start(options, registry);
}

// A classifier on a GPU computes its softmax top-k there (ServableModel::output_layout), on a
// CUDA host only: Classify answers as the same model on the CPU does, for the default top_k and
// fewer (read from the GPU's columns) and for every class (the host's softmax of the logits);
// ModelInfer still returns the logits alone.
TEST(DeviceTopKCudaTest, ClassifyAnswersAsOnTheCpuAndModelInferGetsTheLogitsAlone) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ScopedTempDir repository;
  for (const char* device : {"cpu", "cuda"}) {
    WriteModelConfig(repository, device,
                     absl::StrCat("architecture: \"", kModel, "\" allow_random_weights: true ",
                                  "device: \"", device, "\"\n",
                                  "batching { max_batch_size: 4 max_queue_delay_us: 1000 }\n"));
  }
  ComputeGate gate;
  ModelRegistry registry = RegistryWithTestModels(&gate);
  auto server = StartWithRepository(repository, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->grpc_port());
  for (int seed : {1, 2}) {
    const v1::Image image = RawImage(MakeRgb(32, 32, seed), 32, 32);
    for (uint32_t top_k : {0u, 3u, static_cast<uint32_t>(kClasses)}) {
      SCOPED_TRACE(::testing::Message() << "image " << seed << ", top_k " << top_k);
      v1::ClassifyRequest request = OneImage(image, top_k);
      v1::ClassifyResponse on_cpu, on_gpu;
      request.set_model("cpu");
      ASSERT_TRUE(client.Classify(request, &on_cpu).ok());
      request.set_model("cuda");
      ASSERT_TRUE(client.Classify(request, &on_gpu).ok());
      const int k = top_k == 0 ? 5 : static_cast<int>(top_k);
      ExpectWellFormed(on_gpu.results(0), static_cast<size_t>(k));
      ASSERT_EQ(on_cpu.results(0).classes_size(), k);
      for (int j = 0; j < k; ++j) {
        const v1::ClassScore& cpu = on_cpu.results(0).classes(j);
        const v1::ClassScore& gpu = on_gpu.results(0).classes(j);
        EXPECT_EQ(gpu.index(), cpu.index()) << "place " << j;
        EXPECT_EQ(gpu.label(), cpu.label()) << "place " << j;
        EXPECT_NEAR(gpu.score(), cpu.score(), 1e-5) << "place " << j;
      }
    }
  }
  at::manual_seed(3);
  inference::ModelInferRequest infer =
      InferRequest("FP32", {2, 3, 32, 32}, Bytes(at::rand({2, 3, 32, 32})));
  infer.set_model_name("cuda");
  inference::ModelInferResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(client.kserve->ModelInfer(&context, infer, &response).ok());
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(2, kClasses));
  EXPECT_EQ(response.raw_output_contents(0).size(), 2 * kClasses * sizeof(float));
}

// GPU JPEG decoding (ModelConfig.gpu_jpeg_decoding), on a CUDA host only: the same probe on
// the GPU with and without it gives the same answers for baseline JPEGs (decoded by nvJPEG)
// within what two JPEG decoders' rounding moves a probability; a progressive file takes the
// CPU decoder either way; a file no decoder can read gets INVALID_ARGUMENT from both, and
// fails alone when it shares a batch with good requests.
TEST(GpuJpegDecodingCudaTest, ServerAnswersAsTheCpuDecoderDoes) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ScopedTempDir repository;
  for (const auto& [name, gpu] : {std::pair<const char*, bool>{"cpu_jpeg", false},
                                  std::pair<const char*, bool>{"gpu_jpeg", true}}) {
    WriteModelConfig(
        repository, name,
        absl::StrCat("architecture: \"", kModel, "\" allow_random_weights: true device: \"cuda\"\n",
                     "device_preprocessing: true gpu_jpeg_decoding: ", gpu ? "true" : "false",
                     "\nbatching { max_batch_size: 8 max_queue_delay_us: 20000 }\n"));
  }
  ComputeGate gate;
  ModelRegistry registry = RegistryWithTestModels(&gate);
  auto server = StartWithRepository(repository, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->grpc_port());
  v1::GetModelRequest get;
  v1::ModelDescription description;
  for (const auto& [name, gpu] : {std::pair<const char*, bool>{"cpu_jpeg", false},
                                  std::pair<const char*, bool>{"gpu_jpeg", true}}) {
    get.set_name(name);
    grpc::ClientContext context;
    ASSERT_TRUE(client.vision->GetModel(&context, get, &description).ok());
    EXPECT_EQ(description.gpu_jpeg_decoding(), gpu) << name;
  }

  auto classify = [&](Client& via, const std::string& model, const std::vector<v1::Image>& images,
                      std::vector<std::vector<float>>* out) {
    v1::ClassifyRequest request;
    request.set_model(model);
    request.set_top_k(kClasses);
    for (const v1::Image& image : images) *request.add_images() = image;
    v1::ClassifyResponse response;
    grpc::Status status = via.Classify(request, &response);
    out->clear();
    for (const v1::Classification& result : response.results()) out->push_back(ByClass(result));
    return status;
  };
  // Photo-like: smooth luminance and colour.
  auto smooth = [](int width, int height, int seed) {
    std::string rgb(static_cast<size_t>(width) * height * 3, '\0');
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        for (int c = 0; c < 3; ++c) {
          rgb[(static_cast<size_t>(y) * width + x) * 3 + c] = static_cast<char>(std::lround(
              127.5 + 90.0 * std::sin(x * 0.06 + c + seed) * std::cos(y * 0.05 + seed)));
        }
      }
    }
    return rgb;
  };
  auto progressive = [](const std::string& rgb, int width, int height) {
    cv::Mat image(height, width, CV_8UC3, const_cast<char*>(rgb.data()));
    cv::Mat bgr;
    cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
    std::vector<uchar> bytes;
    EXPECT_TRUE(cv::imencode(".jpg", bgr, bytes, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
    return std::string(bytes.begin(), bytes.end());
  };
  const std::vector<std::vector<v1::Image>> requests = {
      {EncodedImage(Encode(smooth(64, 48, 1), 64, 48, ".jpg"))},
      {EncodedImage(Encode(smooth(50, 40, 2), 50, 40, ".jpg")),
       EncodedImage(Encode(smooth(50, 40, 3), 50, 40, ".jpg"))},
      {EncodedImage(progressive(smooth(64, 48, 4), 64, 48))},
  };
  // The two decoders differ by about a grey level (nvJPEG's chroma upsampling is not
  // libjpeg-turbo's), which moves this probe's probabilities by a few 1e-3 (3.6e-3 to 8.4e-3
  // on the H200, 2026-12-03; bench/preprocess_parity.sh measures photos on a real model:
  // 9e-5). So a baseline file's answer differs from the CPU decoder's, a little: that it
  // differs at all shows nvJPEG decoded it. The progressive file takes the CPU decoder on
  // both models: the same answer exactly.
  constexpr float kDecoders = 2e-2f;
  for (size_t r = 0; r < requests.size(); ++r) {
    std::vector<std::vector<float>> expected, actual;
    ASSERT_TRUE(classify(client, "cpu_jpeg", requests[r], &expected).ok());
    grpc::Status status = classify(client, "gpu_jpeg", requests[r], &actual);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(actual.size(), expected.size());
    for (size_t i = 0; i < actual.size(); ++i) {
      const float difference = MaxAbsDiff(actual[i], expected[i]);
      std::cout << "[          ] request " << r << " image " << i
                << ": largest probability difference " << difference << std::endl;
      if (r == 2) {
        EXPECT_EQ(difference, 0.0f) << "the progressive file must take the CPU decoder";
      } else {
        EXPECT_GT(difference, 0.0f) << "request " << r << " image " << i
                                    << ": not decoded by nvJPEG?";
        EXPECT_LT(difference, kDecoders) << "request " << r << " image " << i;
      }
    }
  }

  // A JPEG without its scan (the compressed data): its frame header reads and it ends with the
  // end-of-image marker, but it cannot be decoded. nvJPEG decodes it without an error
  // (2026-12-03), so the server checks a JPEG's structure before it sends it to the GPU
  // (CheckJpegStructure), and this one takes the CPU decoder, which refuses it.
  std::string bad = Encode(smooth(64, 48, 5), 64, 48, ".jpg");
  const size_t sos = bad.find("\xFF\xDA");
  ASSERT_NE(sos, std::string::npos);
  bad = bad.substr(0, sos) + "\xFF\xD9";
  std::vector<std::vector<float>> ignored;
  for (const char* model : {"cpu_jpeg", "gpu_jpeg"}) {
    grpc::Status status = classify(client, model, {EncodedImage(bad)}, &ignored);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << model;
  }
  // In the same batches as good requests (8 rows wait up to 20 ms): only it fails.
  std::atomic<int> good_answered{0}, bad_refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      Client own((*server)->grpc_port());
      std::vector<std::vector<float>> out;
      for (int round = 0; round < 3; ++round) {
        if (t == 0) {
          bad_refused += classify(own, "gpu_jpeg", {EncodedImage(bad)}, &out).error_code() ==
                         grpc::StatusCode::INVALID_ARGUMENT;
        } else {
          good_answered += classify(own, "gpu_jpeg", requests[0], &out).ok() && out.size() == 1;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(bad_refused.load(), 3);
  EXPECT_EQ(good_answered.load(), 15);
  (*server)->Shutdown();
}

}  // namespace
}  // namespace vitserve

namespace vitserve {
namespace {

// Three bands, dark | mid grey | bright, across the width (or down the height when `rows`;
// bright first when `reversed`): the segmentation probe labels them 1 | 0 | 2.
std::string Bands(int width, int height, bool rows, bool reversed = false) {
  std::string rgb(static_cast<size_t>(width) * height * 3, '\0');
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const int position = rows ? y : x;
      const int along = reversed ? (rows ? height : width) - 1 - position : position;
      const int length = rows ? height : width;
      const char level = along * 3 < length ? 0 : along * 3 < 2 * length ? 127 : static_cast<char>(255);
      std::memset(&rgb[(static_cast<size_t>(y) * width + x) * 3], level, 3);
    }
  }
  return rgb;
}

// The label at (x, y) of a map in either wire format.
int LabelAt(const v1::SegmentationMap& map, v1::SegmentRequest::MaskFormat format, int x, int y) {
  if (format == v1::SegmentRequest::RAW) {
    const size_t i = (static_cast<size_t>(y) * map.width() + x) * 2;
    return static_cast<uint8_t>(map.mask()[i]) | (static_cast<uint8_t>(map.mask()[i + 1]) << 8);
  }
  const cv::Mat decoded = cv::imdecode(
      std::vector<uchar>(map.mask().begin(), map.mask().end()), cv::IMREAD_UNCHANGED);
  return decoded.type() == CV_8UC1 ? decoded.at<uint8_t>(y, x) : decoded.at<uint16_t>(y, x);
}

class SegmentationServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteModel("probe_seg", absl::StrCat("architecture: \"", kSegmentationProbe,
                                         "\" allow_random_weights: true\n"
                                         "batching { max_batch_size: 8 max_queue_delay_us: 20000 }\n"));
    WriteModel("probe_cls",
               absl::StrCat("architecture: \"", kProbeModel, "\" allow_random_weights: true\n"));
    // A zoo backbone with the segmentation decoder, from the config alone.
    WriteModel("shvit_seg",
               "architecture: \"shvit_s1\" task: SEGMENTATION num_classes: 6 "
               "allow_random_weights: true input { size: 64 }\n"
               "batching { max_batch_size: 2 }\n");
    registry_ = RegistryWithTestModels(&gate_);
    ServerOptions options = TestOptions();
    options.model.clear();
    options.model_repository = repository_.path();
    auto server = VitServer::Start(options, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<Client>(server_->grpc_port());
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Shutdown();
  }
  void WriteModel(const std::string& name, const std::string& config) {
    WriteModelConfig(repository_, name, config);
  }
  grpc::Status Segment(const v1::SegmentRequest& request, v1::SegmentResponse* response,
                       Client* client = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    return (client != nullptr ? client : client_.get())->vision->Segment(&context, request, response);
  }

  ScopedTempDir repository_;
  ComputeGate gate_;
  ModelRegistry registry_;
  std::unique_ptr<VitServer> server_;
  std::unique_ptr<Client> client_;
};

struct BandImage {
  v1::Image image;
  int width;
  int height;
  bool rows;
  bool reversed;
};

// Three images whose maps differ even after stretching to the model's square input, so a map
// sent to the wrong image shows.
std::vector<BandImage> BandImages() {
  return {
      {EncodedImage(Encode(Bands(90, 60, false), 90, 60, ".png")), 90, 60, false, false},
      {RawImage(Bands(40, 100, true), 40, 100), 40, 100, true, false},
      {RawImage(Bands(200, 50, false, true), 200, 50), 200, 50, false, true},
  };
}

// Each image's map has its own size and the bands where the image has them: at the centre of
// each band, dark -> 1, grey -> 0, bright -> 2.
void ExpectBands(const v1::SegmentationMap& map, const BandImage& image,
                 v1::SegmentRequest::MaskFormat format) {
  ASSERT_EQ(static_cast<int>(map.width()), image.width);
  ASSERT_EQ(static_cast<int>(map.height()), image.height);
  const int expected[3] = {image.reversed ? 2 : 1, 0, image.reversed ? 1 : 2};
  for (int band = 0; band < 3; ++band) {
    for (int across : {1, 2, 3}) {  // Quarter, half, three quarters across the bands.
      const int along_length = image.rows ? image.height : image.width;
      const int across_length = image.rows ? image.width : image.height;
      const int along = (2 * band + 1) * along_length / 6;
      const int other = across * across_length / 4;
      const int x = image.rows ? other : along;
      const int y = image.rows ? along : other;
      EXPECT_EQ(LabelAt(map, format, x, y), expected[band])
          << image.width << "x" << image.height << " at (" << x << ", " << y << ")";
    }
  }
}

TEST_F(SegmentationServerTest, EachImageGetsItsOwnMapAtItsOwnSize) {
  for (auto format : {v1::SegmentRequest::PNG, v1::SegmentRequest::RAW}) {
    SCOPED_TRACE(v1::SegmentRequest::MaskFormat_Name(format));
    const std::vector<BandImage> images = BandImages();
    v1::SegmentRequest request;
    request.set_model("probe_seg");
    request.set_format(format);
    request.set_request_id("r1");
    for (const BandImage& image : images) *request.add_images() = image.image;
    v1::SegmentResponse response;
    const grpc::Status status = Segment(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.model(), "probe_seg");
    EXPECT_EQ(response.request_id(), "r1");
    EXPECT_THAT(response.labels(), ::testing::ElementsAre("0", "1", "2"));
    ASSERT_EQ(response.results_size(), 3);
    for (int i = 0; i < 3; ++i) {
      ExpectBands(response.results(i), images[static_cast<size_t>(i)], format);
      if (format == v1::SegmentRequest::RAW) {
        EXPECT_EQ(response.results(i).mask().size(),
                  static_cast<size_t>(images[static_cast<size_t>(i)].width) *
                      images[static_cast<size_t>(i)].height * 2);
      }
    }
  }
}

// Requests from several clients at once share batches (up to 8 rows, 20 ms delay): each still
// gets the maps of its own images.
TEST_F(SegmentationServerTest, ConcurrentRequestsGetTheirOwnMaps) {
  const std::vector<BandImage> images = BandImages();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      Client client(server_->grpc_port());
      const BandImage& image = images[static_cast<size_t>(t % 3)];
      for (int round = 0; round < 3; ++round) {
        v1::SegmentRequest request;
        request.set_model("probe_seg");
        *request.add_images() = image.image;
        v1::SegmentResponse response;
        if (!Segment(request, &response, &client).ok() || response.results_size() != 1) {
          ++failures;
          continue;
        }
        const v1::SegmentationMap& map = response.results(0);
        if (static_cast<int>(map.width()) != image.width ||
            static_cast<int>(map.height()) != image.height) {
          ++failures;
          continue;
        }
        const int length = image.rows ? image.height : image.width;
        const int centre = length / 2, first = length / 6, last = 5 * length / 6;
        auto at = [&](int along) {
          return image.rows ? LabelAt(map, v1::SegmentRequest::PNG, image.width / 2, along)
                            : LabelAt(map, v1::SegmentRequest::PNG, along, image.height / 2);
        };
        const int low = image.reversed ? 2 : 1, high = image.reversed ? 1 : 2;
        if (at(first) != low || at(centre) != 0 || at(last) != high) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(SegmentationServerTest, ABackboneWithTheDecoderServesFromItsConfig) {
  v1::SegmentRequest request;
  request.set_model("shvit_seg");
  *request.add_images() = RawImage(MakeRgb(120, 80, 3), 120, 80);
  *request.add_images() = EncodedImage(Encode(MakeRgb(50, 70, 4), 50, 70, ".jpg"));
  v1::SegmentResponse response;
  const grpc::Status status = Segment(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.results(0).width(), 120u);
  EXPECT_EQ(response.results(0).height(), 80u);
  EXPECT_EQ(response.results(1).width(), 50u);
  EXPECT_EQ(response.results(1).height(), 70u);
  EXPECT_EQ(response.labels_size(), 6);
  const cv::Mat map = cv::imdecode(std::vector<uchar>(response.results(0).mask().begin(),
                                                      response.results(0).mask().end()),
                                   cv::IMREAD_UNCHANGED);
  ASSERT_EQ(map.size(), cv::Size(120, 80));
  double max_class = 0;
  cv::minMaxLoc(map, nullptr, &max_class);
  EXPECT_LT(max_class, 6);
  v1::GetModelRequest get;
  get.set_name("shvit_seg");
  v1::ModelDescription description;
  grpc::ClientContext context;
  ASSERT_TRUE(client_->vision->GetModel(&context, get, &description).ok());
  EXPECT_EQ(description.task(), v1::SEGMENTATION);
  EXPECT_EQ(description.num_classes(), 6u);
}

TEST_F(SegmentationServerTest, WrongTaskAndBadRequestsAreRefusedAndTheServerKeepsServing) {
  auto segment = [this](const std::string& model, std::vector<v1::Image> images) {
    v1::SegmentRequest request;
    request.set_model(model);
    for (v1::Image& image : images) *request.add_images() = std::move(image);
    v1::SegmentResponse response;
    return Segment(request, &response);
  };
  const v1::Image good = RawImage(Bands(40, 40, false), 40, 40);
  grpc::Status status = segment("probe_cls", {good});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("Segment needs a segmentation model"));
  status = segment("probe_seg", {});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  status = segment("probe_seg", {good, EncodedImage("not an image")});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("image 1"));
  status = segment("nope", {good});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::SegmentRequest bad_format;
  bad_format.set_model("probe_seg");
  *bad_format.add_images() = good;
  bad_format.set_format(static_cast<v1::SegmentRequest::MaskFormat>(7));
  v1::SegmentResponse response;
  EXPECT_EQ(Segment(bad_format, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Classify on the segmentation model.
  v1::ClassifyRequest classify;
  classify.set_model("probe_seg");
  *classify.add_images() = good;
  v1::ClassifyResponse classified;
  status = client_->Classify(classify, &classified);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("Classify needs a classification"));
  // Still serving.
  EXPECT_TRUE(segment("probe_seg", {good}).ok());
}

}  // namespace
}  // namespace vitserve

namespace vitserve {
namespace {

// A grey image with one white (or black) rectangle [x0, x1) x [y0, y1).
std::string Rectangle(int width, int height, int x0, int y0, int x1, int y1, bool white) {
  std::string rgb(static_cast<size_t>(width) * height * 3, static_cast<char>(127));
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) {
      std::memset(&rgb[(static_cast<size_t>(y) * width + x) * 3], white ? 255 : 0, 3);
    }
  }
  return rgb;
}

class DetectionServerTest : public SegmentationServerTest {
 protected:
  void SetUp() override {
    WriteModel("probe_det", absl::StrCat("architecture: \"", kDetectionProbe,
                                         "\" allow_random_weights: true\n"
                                         "batching { max_batch_size: 8 max_queue_delay_us: 20000 }\n"));
    WriteModel("shvit_det",
               "architecture: \"shvit_s1\" task: DETECTION num_classes: 5 "
               "allow_random_weights: true input { size: 64 } detection { max_detections: 3 }\n");
    SegmentationServerTest::SetUp();
  }
  grpc::Status Detect(const v1::DetectRequest& request, v1::DetectResponse* response,
                      Client* client = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    return (client != nullptr ? client : client_.get())->vision->Detect(&context, request, response);
  }
};

struct Placed {
  v1::Image image;
  int width, height;
  float x0, y0, x1, y1;  // The rectangle, original pixels.
  int expected_class;
};

std::vector<Placed> PlacedRectangles() {
  return {
      {EncodedImage(Encode(Rectangle(160, 120, 20, 30, 70, 90, true), 160, 120, ".png")), 160, 120,
       20, 30, 70, 90, 0},
      {RawImage(Rectangle(90, 200, 40, 120, 85, 190, true), 90, 200), 90, 200, 40, 120, 85, 190, 0},
      {RawImage(Rectangle(300, 60, 100, 10, 220, 50, false), 300, 60), 300, 60, 100, 10, 220, 50, 1},
  };
}

// The box is the rectangle, up to the blur of stretching it to 32x32 and back: about a model
// pixel, here 1.5 of them, in original pixels.
void ExpectBox(const v1::Detections& result, const Placed& placed) {
  ASSERT_EQ(result.boxes_size(), 1) << placed.width << "x" << placed.height;
  const v1::Box& box = result.boxes(0);
  const float tolerance_x = 1.5f * placed.width / 32, tolerance_y = 1.5f * placed.height / 32;
  EXPECT_NEAR(box.x1(), placed.x0, tolerance_x);
  EXPECT_NEAR(box.x2(), placed.x1, tolerance_x);
  EXPECT_NEAR(box.y1(), placed.y0, tolerance_y);
  EXPECT_NEAR(box.y2(), placed.y1, tolerance_y);
  EXPECT_EQ(box.index(), placed.expected_class);
  EXPECT_EQ(box.label(), absl::StrCat(placed.expected_class));
  EXPECT_GT(box.score(), 0.9f);
}

TEST_F(DetectionServerTest, BoxesComeBackInEachImagesOriginalPixels) {
  const std::vector<Placed> images = PlacedRectangles();
  v1::DetectRequest request;
  request.set_model("probe_det");
  request.set_request_id("d1");
  for (const Placed& placed : images) *request.add_images() = placed.image;
  v1::DetectResponse response;
  const grpc::Status status = Detect(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.model(), "probe_det");
  EXPECT_EQ(response.request_id(), "d1");
  ASSERT_EQ(response.results_size(), 3);
  for (int i = 0; i < 3; ++i) ExpectBox(response.results(i), images[static_cast<size_t>(i)]);

  // Above the peak's score nothing is left.
  request.set_score_threshold(0.99999f);
  response.Clear();
  ASSERT_TRUE(Detect(request, &response).ok());
  ASSERT_EQ(response.results_size(), 3);
  for (const v1::Detections& result : response.results()) EXPECT_EQ(result.boxes_size(), 0);
}

TEST_F(DetectionServerTest, ConcurrentRequestsGetTheirOwnBoxes) {
  const std::vector<Placed> images = PlacedRectangles();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      Client client(server_->grpc_port());
      const Placed& placed = images[static_cast<size_t>(t % 3)];
      for (int round = 0; round < 3; ++round) {
        v1::DetectRequest request;
        request.set_model("probe_det");
        *request.add_images() = placed.image;
        v1::DetectResponse response;
        if (!Detect(request, &response, &client).ok() || response.results_size() != 1 ||
            response.results(0).boxes_size() != 1) {
          ++failures;
          continue;
        }
        const v1::Box& box = response.results(0).boxes(0);
        const float cx = (box.x1() + box.x2()) / 2, cy = (box.y1() + box.y2()) / 2;
        if (std::abs(cx - (placed.x0 + placed.x1) / 2) > placed.width / 16.0f ||
            std::abs(cy - (placed.y0 + placed.y1) / 2) > placed.height / 16.0f ||
            box.index() != placed.expected_class) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(DetectionServerTest, ABackboneDetectorFromItsConfigHonoursItsDefaults) {
  v1::DetectRequest request;
  request.set_model("shvit_det");
  *request.add_images() = RawImage(MakeRgb(100, 70, 5), 100, 70);
  request.set_score_threshold(0.01f);  // Untrained: keep whatever it finds.
  v1::DetectResponse response;
  grpc::Status status = Detect(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_LE(response.results(0).boxes_size(), 3);  // detection { max_detections: 3 }
  for (const v1::Box& box : response.results(0).boxes()) {
    EXPECT_GE(box.x1(), 0);
    EXPECT_LE(box.x2(), 100);
    EXPECT_GE(box.y1(), 0);
    EXPECT_LE(box.y2(), 70);
    EXPECT_GE(box.index(), 0);
    EXPECT_LT(box.index(), 5);
  }
  request.set_max_detections(1);
  response.Clear();
  ASSERT_TRUE(Detect(request, &response).ok());
  EXPECT_LE(response.results(0).boxes_size(), 1);
}

TEST_F(DetectionServerTest, BadRequestsAreRefusedAndTheServerKeepsServing) {
  const v1::Image good = RawImage(Rectangle(40, 40, 10, 10, 30, 30, true), 40, 40);
  auto detect = [this, &good](const std::string& model, float threshold, uint32_t max) {
    v1::DetectRequest request;
    request.set_model(model);
    *request.add_images() = good;
    request.set_score_threshold(threshold);
    request.set_max_detections(max);
    v1::DetectResponse response;
    return Detect(request, &response);
  };
  grpc::Status status = detect("probe_cls", 0, 0);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("Detect needs a detection model"));
  status = detect("probe_seg", 0, 0);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  status = detect("probe_det", 1.5f, 0);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("score_threshold 1.5"));
  status = detect("probe_det", -0.5f, 0);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  status = detect("probe_det", 0, 20000);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("max_detections 20000"));
  v1::DetectRequest empty;
  empty.set_model("probe_det");
  v1::DetectResponse response;
  EXPECT_EQ(Detect(empty, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Segment on the detector.
  v1::SegmentRequest segment;
  segment.set_model("probe_det");
  *segment.add_images() = good;
  v1::SegmentResponse segmented;
  EXPECT_EQ(Segment(segment, &segmented).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(detect("probe_det", 0, 0).ok());
}

}  // namespace
}  // namespace vitserve

namespace vitserve {
namespace {

// A KServe request of one 32 x 32 RGB image as UINT8 [1, 3, 32, 32] (planar).
inference::ModelInferRequest PlanarUint8(const std::string& model, const std::string& rgb) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("UINT8");
  for (int64_t d : {1, 3, 32, 32}) input->add_shape(d);
  std::string planar(rgb.size(), '\0');
  for (size_t pixel = 0; pixel < rgb.size() / 3; ++pixel) {
    for (size_t c = 0; c < 3; ++c) planar[c * (rgb.size() / 3) + pixel] = rgb[pixel * 3 + c];
  }
  request.add_raw_input_contents(std::move(planar));
  return request;
}

template <typename T>
std::vector<T> OutputValues(const inference::ModelInferResponse& response,
                            const std::string& name) {
  for (int i = 0; i < response.outputs_size(); ++i) {
    if (response.outputs(i).name() != name) continue;
    const std::string& raw = response.raw_output_contents(i);
    std::vector<T> values(raw.size() / sizeof(T));
    std::memcpy(values.data(), raw.data(), values.size() * sizeof(T));
    return values;
  }
  ADD_FAILURE() << "no output " << name;
  return {};
}

// A 32 x 32 image is its own model input (the probes take 32 x 32), so KServe ModelInfer, in
// input pixels, must answer the boxes Detect answers in original pixels.
TEST_F(DetectionServerTest, ModelInferAnswersTheBoxesDetectDoes) {
  for (bool white : {true, false}) {
    const std::string rgb = Rectangle(32, 32, 4, 10, 20, 18, white);
    v1::DetectRequest detect;
    detect.set_model("probe_det");
    *detect.add_images() = RawImage(rgb, 32, 32);
    v1::DetectResponse detected;
    ASSERT_TRUE(Detect(detect, &detected).ok());
    ASSERT_GE(detected.results(0).boxes_size(), 1);

    inference::ModelInferRequest request = PlanarUint8("probe_det", rgb);
    (*request.mutable_parameters())["max_detections"].set_int64_param(5);
    inference::ModelInferResponse response;
    grpc::ClientContext context;
    const grpc::Status status = client_->kserve->ModelInfer(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.outputs_size(), 4);
    EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(1, 5, 4));
    const int found = OutputValues<int32_t>(response, "num_detections").at(0);
    ASSERT_EQ(found, detected.results(0).boxes_size());
    const std::vector<float> boxes = OutputValues<float>(response, "boxes");
    const std::vector<float> scores = OutputValues<float>(response, "scores");
    const std::vector<int32_t> classes = OutputValues<int32_t>(response, "classes");
    for (int j = 0; j < found; ++j) {
      const v1::Box& expected = detected.results(0).boxes(j);
      EXPECT_NEAR(boxes[j * 4 + 0], expected.x1(), 1e-3) << j;
      EXPECT_NEAR(boxes[j * 4 + 1], expected.y1(), 1e-3) << j;
      EXPECT_NEAR(boxes[j * 4 + 2], expected.x2(), 1e-3) << j;
      EXPECT_NEAR(boxes[j * 4 + 3], expected.y2(), 1e-3) << j;
      EXPECT_NEAR(scores[j], expected.score(), 1e-5) << j;
      EXPECT_EQ(classes[j], expected.index()) << j;
    }
    EXPECT_EQ(classes[found], -1);  // An unused slot.
    EXPECT_EQ(classes[0], white ? 0 : 1);
  }
}

TEST_F(DetectionServerTest, ModelInferRefusesBadDetectionParametersAndOutputs) {
  const std::string rgb = Rectangle(32, 32, 4, 10, 20, 18, true);
  inference::ModelInferRequest request = PlanarUint8("probe_det", rgb);
  (*request.mutable_parameters())["score_threshold"].set_double_param(2.0);
  inference::ModelInferResponse response;
  {
    grpc::ClientContext context;
    const grpc::Status status = client_->kserve->ModelInfer(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("score_threshold 2 is out of range"));
  }
  request.mutable_parameters()->clear();
  request.add_outputs()->set_name("logits");
  {
    grpc::ClientContext context;
    const grpc::Status status = client_->kserve->ModelInfer(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("unknown output 'logits'"));
  }
  // Metadata lists the detection outputs.
  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("probe_det");
  inference::ModelMetadataResponse metadata;
  grpc::ClientContext context;
  ASSERT_TRUE(client_->kserve->ModelMetadata(&context, metadata_request, &metadata).ok());
  std::vector<std::string> names;
  for (const auto& output : metadata.outputs()) names.push_back(output.name());
  EXPECT_THAT(names, ::testing::ElementsAre("boxes", "scores", "classes", "num_detections"));
}

// Likewise KServe's label_map equals Segment's RAW mask for a 32 x 32 image.
TEST_F(SegmentationServerTest, ModelInferAnswersTheMapSegmentDoes) {
  for (bool rows : {false, true}) {
    const std::string rgb = Bands(32, 32, rows);
    v1::SegmentRequest segment;
    segment.set_model("probe_seg");
    segment.set_format(v1::SegmentRequest::RAW);
    *segment.add_images() = RawImage(rgb, 32, 32);
    v1::SegmentResponse segmented;
    ASSERT_TRUE(Segment(segment, &segmented).ok());
    const std::string& mask = segmented.results(0).mask();
    ASSERT_EQ(mask.size(), 32u * 32u * 2u);

    inference::ModelInferRequest request = PlanarUint8("probe_seg", rgb);
    request.add_outputs()->set_name("label_map");
    inference::ModelInferResponse response;
    grpc::ClientContext context;
    const grpc::Status status = client_->kserve->ModelInfer(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(1, 32, 32));
    const std::vector<int32_t> map = OutputValues<int32_t>(response, "label_map");
    ASSERT_EQ(map.size(), 32u * 32u);
    int differing = 0;
    std::set<int32_t> classes;
    for (size_t i = 0; i < map.size(); ++i) {
      uint16_t expected;
      std::memcpy(&expected, mask.data() + i * 2, 2);
      differing += map[i] != expected ? 1 : 0;
      classes.insert(map[i]);
    }
    EXPECT_EQ(differing, 0);
    EXPECT_EQ(classes, (std::set<int32_t>{0, 1, 2}));
  }
}

}  // namespace
}  // namespace vitserve

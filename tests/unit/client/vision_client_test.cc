#include "client/vision_client.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "client/image_io.h"
#include "gtest/gtest.h"
#include "tests/unit/client/fake_vision_server.h"

namespace vitserve::client {
namespace {

std::string WriteTempFile(const std::string& name, const std::string& bytes) {
  const std::string path = (std::filesystem::path(::testing::TempDir()) / name).string();
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(VisionClientTest, ClassifySendsImageBytesAndTopK) {
  testing::FakeServer server;
  auto client = VisionClient::Connect(server.address());
  ASSERT_TRUE(client.ok()) << client.status();
  const std::string bytes("\xff\xd8\xff\xe0 fake jpeg \0 with nul", 24);
  absl::StatusOr<v1::Image> image = ReadImageFile(WriteTempFile("cat.jpg", bytes));
  ASSERT_TRUE(image.ok()) << image.status();

  v1::ClassifyRequest request;
  request.set_model("shvit_s1");
  request.set_top_k(3);
  *request.add_images() = *image;
  *request.add_images() = *image;
  absl::StatusOr<v1::ClassifyResponse> response = (*client)->Classify(request);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 2);
  EXPECT_EQ(response->results(0).classes_size(), 3);

  absl::MutexLock lock(&server.vision.mu);
  const v1::ClassifyRequest& sent = server.vision.last_classify;
  EXPECT_EQ(sent.model(), "shvit_s1");
  EXPECT_EQ(sent.top_k(), 3u);
  ASSERT_EQ(sent.images_size(), 2);
  EXPECT_EQ(sent.images(0).encoded(), bytes);
}

TEST(VisionClientTest, ErrorKeepsCodeAndServerMessage) {
  testing::FakeServer server;
  server.vision.error_code = grpc::StatusCode::INVALID_ARGUMENT;
  server.vision.error_message = "image 0: unsupported format; allowed: JPEG, PNG, BMP, WebP";
  auto client = VisionClient::Connect(server.address());
  ASSERT_TRUE(client.ok());
  absl::StatusOr<v1::ClassifyResponse> response = (*client)->Classify(v1::ClassifyRequest());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(response.status().message(), server.vision.error_message);

  absl::StatusOr<v1::ModelDescription> model = (*client)->GetModel("nope");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(model.status().message(), "model 'nope' is not loaded");
}

TEST(VisionClientTest, KServeHealthAndMetadata) {
  testing::FakeServer server;
  auto client = VisionClient::Connect(server.address());
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->ServerLive().value_or(false), true);
  EXPECT_EQ((*client)->ServerReady().value_or(false), true);
  EXPECT_EQ((*client)->ModelReady("shvit_s1").value_or(false), true);
  EXPECT_EQ((*client)->ModelReady("x").status().code(), absl::StatusCode::kNotFound);
  auto metadata = (*client)->ModelMetadata("shvit_s1");
  ASSERT_TRUE(metadata.ok());
  EXPECT_EQ(metadata->inputs(0).name(), "pixel_values");
}

TEST(VisionClientTest, UnreachableServerIsUnavailable) {
  ClientOptions options;
  options.timeout = absl::Seconds(5);
  // Port 1 on loopback: nothing listens there, so the connection is refused at once.
  auto client = VisionClient::Connect("127.0.0.1:1", options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->ListModels().status().code(), absl::StatusCode::kUnavailable);
}

TEST(VisionClientTest, ConnectRejectsBadArguments) {
  EXPECT_EQ(VisionClient::Connect("").status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions options;
  options.timeout = absl::ZeroDuration();
  EXPECT_EQ(VisionClient::Connect("localhost:1", options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ImageIoTest, ReadErrorsAndSyntheticImage) {
  EXPECT_EQ(ReadImageFile("/nonexistent/x.jpg").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadImageFile(WriteTempFile("empty.jpg", "")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadImageFile(::testing::TempDir()).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<v1::Image> raw = SyntheticRawImage(7, 5);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->raw().width(), 7u);
  EXPECT_EQ(raw->raw().height(), 5u);
  EXPECT_EQ(raw->raw().rgb8().size(), 7u * 5 * 3);
  EXPECT_FALSE(SyntheticRawImage(0, 5).ok());
}

}  // namespace
}  // namespace vitserve::client

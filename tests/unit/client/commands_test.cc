#include "client/commands.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/unit/client/fake_vision_server.h"

namespace vitserve::client {
namespace {

namespace fs = std::filesystem;

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
    options_.server = server_.address();
    options_.model = "shvit_s1";
  }

  std::string WriteImage(const std::string& name) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << "\x89PNG fake bytes";
    return path;
  }

  int Run() {
    out_.str("");
    err_.str("");
    return RunCli(options_, out_, err_);
  }

  testing::FakeServer server_;
  fs::path dir_;
  CliOptions options_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(CommandsTest, ClassifyJsonOneLinePerImage) {
  options_.command = "classify";
  options_.json = true;
  options_.top_k = 2;
  options_.batch = 2;
  options_.args = {WriteImage("a.png"), WriteImage("b.png"), WriteImage("c.png")};
  ASSERT_EQ(Run(), kExitOk) << err_.str();
  std::istringstream lines(out_.str());
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line, "{\"image\":\"" + options_.args[n] +
                        R"(","model":"shvit_s1","classes":[{"index":0,"label":"tabby \"cat\"",)"
                        R"("score":0.5},{"index":1,"label":"class_1","score":0.25}]})");
    ++n;
  }
  EXPECT_EQ(n, 3);
  EXPECT_EQ(server_.vision.classify_calls.load(), 2);  // batches of 2 + 1
  EXPECT_EQ(err_.str(), "");
}

TEST_F(CommandsTest, ServerErrorPrintsCodeAndMessage) {
  server_.vision.error_code = grpc::StatusCode::INVALID_ARGUMENT;
  server_.vision.error_message = "image 0: cannot decode";
  options_.command = "classify";
  options_.args = {WriteImage("a.png")};
  EXPECT_EQ(Run(), kExitFailure);
  EXPECT_EQ(err_.str(), "error: INVALID_ARGUMENT: image 0: cannot decode\n");
}

TEST_F(CommandsTest, MissingImageFileFails) {
  options_.command = "classify";
  options_.args = {(dir_ / "missing.jpg").string()};
  EXPECT_EQ(Run(), kExitFailure);
  EXPECT_EQ(err_.str().rfind("error: NOT_FOUND: ", 0), 0u) << err_.str();
  EXPECT_EQ(server_.vision.classify_calls.load(), 0);
}

TEST_F(CommandsTest, UsageErrors) {
  options_.command = "frobnicate";
  EXPECT_EQ(Run(), kExitUsage);
  EXPECT_NE(err_.str().find("unknown command 'frobnicate'"), std::string::npos);
  options_.command = "classify";
  options_.args = {"x.jpg"};
  options_.model = "";
  EXPECT_EQ(Run(), kExitUsage);
  EXPECT_NE(err_.str().find("--model"), std::string::npos);
  options_.model = "shvit_s1";
  options_.args = {};
  EXPECT_EQ(Run(), kExitUsage);
  options_.command = "";
  EXPECT_EQ(Run(), kExitUsage);
  options_.command = "help";
  EXPECT_EQ(Run(), kExitOk);
  for (const char* cmd : {"classify", "detect", "segment", "models", "health", "bench"}) {
    EXPECT_NE(out_.str().find(std::string("  ") + cmd), std::string::npos) << cmd;
  }
}

TEST_F(CommandsTest, DetectAndSegmentWithMasks) {
  options_.command = "detect";
  options_.json = true;
  options_.args = {WriteImage("d.jpg")};
  ASSERT_EQ(Run(), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "{\"image\":\"" + options_.args[0] +
                            R"(","model":"shvit_s1","boxes":[{"x1":1,"y1":2,"x2":30.5,"y2":40,)"
                            R"("score":0.75,"index":3,"label":"dog"}]})" "\n");

  options_.command = "segment";
  options_.output_dir = (dir_ / "masks").string();
  ASSERT_EQ(Run(), kExitOk) << err_.str();
  const std::string mask = (dir_ / "masks" / "d.mask.png").string();
  EXPECT_NE(out_.str().find(R"("width":4,"height":2,"mask_png_bytes":9)"), std::string::npos)
      << out_.str();
  std::ifstream in(mask, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes, "\x89PNG-fake");
}

TEST_F(CommandsTest, ModelsJsonAndTable) {
  options_.command = "models";
  options_.json = true;
  ASSERT_EQ(Run(), kExitOk);
  EXPECT_EQ(out_.str().substr(0, out_.str().find('\n')),
            R"({"name":"shvit_s1","task":"classification","input_size":32,"ready":true,)"
            R"("state":"READY","architecture":"shvit_s1","parameter_count":6300000,)"
            R"("precision":"fp32","device":"cpu","num_classes":0,"instance_count":0,)"
            R"("random_weights":false})");
  options_.json = false;
  ASSERT_EQ(Run(), kExitOk);
  EXPECT_EQ(out_.str().rfind("NAME", 0), 0u);
  EXPECT_NE(out_.str().find("loading_model"), std::string::npos);
}

TEST_F(CommandsTest, HealthExitStatusFollowsReadiness) {
  options_.command = "health";
  options_.model = "";
  ASSERT_EQ(Run(), kExitOk) << err_.str();
  EXPECT_EQ(out_.str().rfind("SERVING\n", 0), 0u) << out_.str();
  EXPECT_NE(out_.str().find("grpc.health.v1 SERVING"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("model loading_model: NOT_SERVING (LOADING)"), std::string::npos);
  // The standard health protocol alone can make the server NOT_SERVING.
  server_.health.status = grpc::health::v1::HealthCheckResponse::NOT_SERVING;
  EXPECT_EQ(Run(), kExitFailure);
  EXPECT_EQ(out_.str().rfind("NOT_SERVING\n", 0), 0u) << out_.str();
  EXPECT_NE(out_.str().find("grpc.health.v1 NOT_SERVING"), std::string::npos) << out_.str();
  options_.json = true;
  EXPECT_EQ(Run(), kExitFailure);
  EXPECT_NE(out_.str().find(R"("grpc_health":"NOT_SERVING")"), std::string::npos) << out_.str();
  options_.json = false;
  server_.health.status = grpc::health::v1::HealthCheckResponse::SERVING;
  server_.inference.ready = false;
  EXPECT_EQ(Run(), kExitFailure);
  EXPECT_EQ(out_.str().rfind("NOT_SERVING\n", 0), 0u);
  options_.server = "127.0.0.1:1";
  EXPECT_EQ(Run(), kExitFailure);
  EXPECT_EQ(err_.str().rfind("error: UNAVAILABLE: ", 0), 0u) << err_.str();
}

TEST_F(CommandsTest, BenchJsonSummary) {
  options_.command = "bench";
  options_.json = true;
  options_.concurrency = 2;
  options_.duration_s = 0.3;
  ASSERT_EQ(Run(), kExitOk) << err_.str();
  EXPECT_NE(out_.str().find("\"throughput_img_s\":"), std::string::npos);
  EXPECT_NE(out_.str().find("\"errors\":0"), std::string::npos);
  const std::string out = out_.str();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST_F(CommandsTest, BenchChannelsSpreadCallsOverSeparateConnections) {
  options_.command = "bench";
  options_.json = true;
  options_.concurrency = 6;
  options_.channels = 3;
  options_.duration_s = 0.3;
  ASSERT_EQ(Run(), kExitOk) << err_.str();
  EXPECT_GT(server_.vision.classify_calls.load(), 3);
  absl::MutexLock lock(&server_.vision.mu);
  // Each channel is its own TCP connection, so the server sees three client ports.
  EXPECT_EQ(server_.vision.classify_peers.size(), 3u);
  options_.channels = 0;
  EXPECT_EQ(Run(), kExitUsage);
}

TEST_F(CommandsTest, BenchUnknownModelFailsFast) {
  options_.command = "bench";
  options_.model = "nope";
  options_.duration_s = 0.3;
  EXPECT_EQ(Run(), kExitFailure);
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: model 'nope' is not loaded\n");
  options_.model = "shvit_s1";
  options_.input = "jpeg";  // without --image
  EXPECT_EQ(Run(), kExitUsage);
}

}  // namespace
}  // namespace vitserve::client

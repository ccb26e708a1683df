// vitserve-bench-grpc-rtt: the round trip of one gRPC call at a time, from the leanest client
// (one thread that starts a call and waits on its own completion queue), optionally after an
// idle gap before each call. It measures the floor under a lone request's latency: what gRPC,
// the kernel and waking idle threads cost, without the model. Against a running vitserve:
//   - a Classify of the served size for a model the server does not have (it is answered
//     NOT_FOUND on the gRPC thread): the request's transport alone, both ways;
//   - the same with --model set to a served model: the whole lone request, as a client with
//     no threads of its own sees it (compare `vitserve-client bench --concurrency 1`);
//   - --gap_us: a closed-loop client waits for its reply before it sends again, so the server's
//     threads and the client's sleep between calls; the gap makes a trivial call pay the
//     wake-ups that a served request pays.
// Prints the latency (mean, p50, p90, p99, max in microseconds), then each outcome's count.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "client/grpc_status.h"
#include "client/latency_stats.h"
#include "vitserve/v1/vision.pb.h"

ABSL_FLAG(std::string, server, "localhost:8001", "vitserve's gRPC address");
ABSL_FLAG(std::string, model, "no_such_model",
          "model named in the Classify request; the default is one no server serves, so the "
          "call measures gRPC alone (answered NOT_FOUND before any model work)");
ABSL_FLAG(int32_t, image_size, 224, "raw RGB8 image of image_size x image_size pixels");
ABSL_FLAG(std::string, method, "/vitserve.v1.Vision/Classify",
          "full method name; another method (e.g. /grpc.health.v1.Health/Check) is sent an "
          "empty message");
ABSL_FLAG(int32_t, calls, 2000, "calls measured (after --warmup_calls)");
ABSL_FLAG(int32_t, warmup_calls, 100, "calls made first and not measured");
ABSL_FLAG(int32_t, gap_us, 0, "idle time before each call, in microseconds");

namespace {

// The request's bytes: a Classify of one raw image, or an empty message for other methods.
std::string RequestBytes(const std::string& method) {
  if (method != "/vitserve.v1.Vision/Classify") return std::string();
  const int32_t size = absl::GetFlag(FLAGS_image_size);
  vitserve::v1::ClassifyRequest request;
  request.set_model(absl::GetFlag(FLAGS_model));
  vitserve::v1::RawImage* raw = request.add_images()->mutable_raw();
  raw->set_width(static_cast<uint32_t>(size));
  raw->set_height(static_cast<uint32_t>(size));
  std::string pixels(static_cast<size_t>(size) * size * 3, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>(i * 7 % 251);
  raw->set_rgb8(std::move(pixels));
  return request.SerializeAsString();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "round trip of one gRPC call at a time from a one-thread client, optionally after an "
      "idle gap (the floor under a lone request's latency).\n"
      "  vitserve-bench-grpc-rtt --server localhost:8001 --image_size 224 --gap_us 500\n"
      "  vitserve-bench-grpc-rtt --model deit_tiny_patch16_224   # the whole lone request");
  absl::ParseCommandLine(argc, argv);
  const std::string method = absl::GetFlag(FLAGS_method);
  const int32_t calls = absl::GetFlag(FLAGS_calls);
  const int32_t warmup_calls = absl::GetFlag(FLAGS_warmup_calls);
  const int32_t gap_us = absl::GetFlag(FLAGS_gap_us);
  if (calls < 1 || warmup_calls < 0 || gap_us < 0 || absl::GetFlag(FLAGS_image_size) < 1) {
    std::fprintf(stderr, "error: --calls and --image_size must be positive, --warmup_calls and "
                         "--gap_us at least 0\n");
    return 2;
  }

  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(64 << 20);
  grpc::GenericStub stub(grpc::CreateCustomChannel(
      absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials(), arguments));
  const std::string bytes = RequestBytes(method);
  grpc::Slice slice(bytes);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::CompletionQueue queue;

  std::vector<double> samples_ms;
  samples_ms.reserve(static_cast<size_t>(calls));
  std::map<std::string, int64_t> statuses;  // "OK", "NOT_FOUND: <message>", ... -> calls
  for (int32_t i = 0; i < warmup_calls + calls; ++i) {
    if (gap_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(gap_us));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::ByteBuffer reply;
    grpc::Status status;
    const auto started = std::chrono::steady_clock::now();
    std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
        stub.PrepareUnaryCall(&context, method, request, &queue);
    call->StartCall();
    call->Finish(&reply, &status, /*tag=*/nullptr);
    void* tag = nullptr;
    bool ok = false;
    if (!queue.Next(&tag, &ok)) {
      std::fprintf(stderr, "error: the completion queue shut down\n");
      return 1;
    }
    const auto ended = std::chrono::steady_clock::now();
    if (i < warmup_calls) continue;
    samples_ms.push_back(std::chrono::duration<double, std::milli>(ended - started).count());
    ++statuses[vitserve::client::FormatStatus(vitserve::client::FromGrpcStatus(status))];
  }

  const vitserve::client::LatencySummary summary =
      vitserve::client::Summarize(std::move(samples_ms));
  std::printf("%s, %zu request bytes, gap %d us: %lld calls, mean %.1f us, p50 %.1f, p90 %.1f, "
              "p99 %.1f, max %.1f\n",
              method.c_str(), bytes.size(), gap_us, static_cast<long long>(summary.count),
              summary.mean_ms * 1e3, summary.p50_ms * 1e3, summary.p90_ms * 1e3,
              summary.p99_ms * 1e3, summary.max_ms * 1e3);
  for (const auto& [outcome, count] : statuses) {
    std::printf("  %lld x %s\n", static_cast<long long>(count), outcome.c_str());
  }
  return 0;
}

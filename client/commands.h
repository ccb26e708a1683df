// The subcommands of `vitserve-client` as library code: main.cc turns flags into CliOptions
// and calls RunCli, which talks to the server through VisionClient and writes results to `out`
// and errors to `err`. Kept out of main.cc so tests can drive every subcommand.
//
// Exit codes: kExitOk; kExitFailure when a call fails (the line `error: <CODE>: <message>` goes
// to `err`), an input file cannot be read, or `health` finds the server not ready;
// kExitUsage for a usage error (unknown subcommand, missing or bad option).
// Thread-safety: RunCli may run concurrently with itself; it shares nothing.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/bench.h"
#include "client/vision_client.h"

namespace vitserve::client {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

inline constexpr char kDefaultServer[] = "localhost:8001";

struct CliOptions {
  std::string command;             // classify, detect, segment, models, health, bench, help
  std::vector<std::string> args;   // positional arguments after the subcommand (images)
  std::string server = kDefaultServer;
  std::string model;
  ClientOptions client;
  bool json = false;
  // classify / detect / segment
  int batch = 1;                   // images per request
  int top_k = 0;                   // 0: the server's default (5)
  double score_threshold = 0;      // detect; 0: the server's default (0.3)
  int max_detections = 0;          // detect; 0: the server's default (100)
  std::string output_dir;          // segment: write <image stem>.mask.png files here
  std::string annotate_dir;        // detect / segment: write <image stem>.annotated.png here
  // bench
  int concurrency = 1;
  int channels = 1;                // connections the requests are spread over
  double rate = 0;                 // > 0: open loop
  std::string arrival = "constant";  // or "poisson"
  double duration_s = 10;
  double warmup_s = 0;
  std::string input;               // jpeg|raw|tensor; empty: jpeg with --image, else raw
  std::string image;               // bench: the image file for --input jpeg
  // bench --input tensor: "system" sends the tensors in POSIX shared memory registered with
  // the server (Triton's extension, as perf_analyzer --shared-memory system); "none": in
  // the requests.
  std::string shared_memory = "none";
};

// The text of `vitserve-client help`.
std::string UsageText();

// Runs options.command; returns the process exit code.
int RunCli(const CliOptions& options, std::ostream& out, std::ostream& err);

// What `bench` sends: the RPC it calls and a StartCallFn bound to `client` and to a request
// built once (kept alive by the function). NOT_FOUND etc. from the server's model catalogue;
// INVALID_ARGUMENT for an unusable --input / --image combination.
struct BenchWorkload {
  std::string rpc;    // "Classify", "Detect", "Segment", "ModelInfer"
  std::string input;  // "jpeg", "raw", "tensor"
  StartCallFn start_call;
  // What the calls use besides the client (shared memory regions); released after them.
  std::shared_ptr<void> resources;
};
absl::StatusOr<BenchWorkload> MakeBenchWorkload(VisionClient& client, const CliOptions& options);

}  // namespace vitserve::client

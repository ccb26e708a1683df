// vitserve: flags (or VITSERVE_* environment variables) -> ServerOptions -> VitServer, plus
// signal handling. Everything else lives in the vitserve_server library.
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <opencv2/core/utility.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/flag_names.h"
#include "common/malloc_settings.h"
#include "common/mutex_mode.h"
#include "models/registry.h"
#include "server/batching/batching_options.h"
#include "server/config/model_config.h"
#include "server/log.h"
#include "server/model_manager.h"
#include "server/runtime/device.h"
#include "server/vitserve_server.h"

ABSL_FLAG(int32_t, grpc_port, 8001, "gRPC port (Vision, KServe v2, health, reflection); 0: any");
ABSL_FLAG(int32_t, http_port, 8002,
          "plaintext HTTP port for Prometheus and probes (/metrics, /v2/health/live, "
          "/v2/health/ready): no TLS, no token, so keep it internal (--http-address) or turn it "
          "off with -1 and scrape /metrics on the REST port, which has both");
ABSL_FLAG(int32_t, rest_port, 8000,
          "HTTP/REST port: KServe v2 REST (/v2/...) and the plain endpoint "
          "POST /v1/models/{m}:classify|:detect|:segment; 0: any; -1: no REST");
ABSL_FLAG(int32_t, rest_threads, 64,
          "REST connections served at once (a keep-alive connection holds one while idle)");
ABSL_FLAG(std::string, host, "0.0.0.0", "gRPC and REST listening address");
ABSL_FLAG(double, max_request_seconds,
          absl::ToDoubleSeconds(vitserve::ServerOptions{}.max_request_time),
          "the longest any request may stay in the server: its deadline is capped to arrival + "
          "this, whatever deadline the client set (DEADLINE_EXCEEDED / HTTP 504 beyond)");
ABSL_FLAG(int32_t, max_concurrent_streams, vitserve::ServerOptions{}.max_concurrent_streams,
          "gRPC calls (HTTP/2 streams) one connection may have open at once; more wait in the "
          "client");
ABSL_FLAG(bool, reuse_port, false,
          "let several vitserve processes listen on the same gRPC and REST ports (SO_REUSEPORT, "
          "set on all of them; the kernel spreads connections over them). Off: a port that "
          "another process listens on is an error at start");
ABSL_FLAG(int64_t, max_request_bytes, vitserve::ServerOptions{}.grpc_max_message_bytes,
          "largest request accepted: a gRPC message or a REST body (larger: RESOURCE_EXHAUSTED "
          "or HTTP 413)");
ABSL_FLAG(std::string, model, "",
          "quick mode: serve this registry architecture (see --list-models); default shvit_s1 "
          "when --model-repository is not given either");
ABSL_FLAG(std::string, weights, "",
          "quick mode: weights file (.safetensors, timm state-dict names); without it the model "
          "serves RANDOM weights");
ABSL_FLAG(std::string, model_repository, "",
          "Triton-style repository: <dir>/<model>/config.pbtxt (+ weights, labels.txt)");
ABSL_FLAG(std::string, device, "cpu", "default device: cpu, cuda or cuda:N");
ABSL_FLAG(std::string, precision, "fp32", "default precision: fp32, fp16 or bf16");
ABSL_FLAG(int32_t, max_batch_size, 8, "default most images per forward pass");
ABSL_FLAG(int64_t, max_queue_delay_us, 1000,
          "default time the oldest queued image waits for a fuller batch (microseconds)");
ABSL_FLAG(int64_t, executor_idle_spin_us, vitserve::ServerOptions{}.executor_idle_spin_us,
          "how long a model's executor thread that finds its queue empty keeps polling it "
          "before it sleeps (microseconds, 0..10000; -1: 1000 for models on a GPU, 0 on the "
          "CPU, whose forward pass needs the core): a request arriving meanwhile starts "
          "without waiting for a sleeping thread to be woken, at the cost of up to that much "
          "CPU after each batch (one executor polls at a time, while no batch computes). Only "
          "while polls pay: after a poll that ran out executors sleep at once, until a request "
          "again comes within that time of one going idle");
// The flag's help names kGpuIdleSpin's value.
static_assert(vitserve::kGpuIdleSpin == absl::Microseconds(1000));
ABSL_FLAG(bool, cuda_graphs, true,
          "default for CUDA models: capture a CUDA graph per batch-size bucket at load and replay "
          "it (batches padded to powers of two and max batch); faster small batches, shorter "
          "warm-up. --cuda-graphs=false (or cuda_graphs: false in a model config) runs eagerly");
ABSL_FLAG(std::vector<std::string>, cuda_graph_batch_sizes, {},
          "default for CUDA models with CUDA graphs: the batch sizes to capture a graph for, "
          "comma-separated, e.g. 16,32,48,64,96,128 (max batch is always added; a batch replays "
          "the smallest that holds it, so more sizes pad less and add a capture each at load); "
          "sizes above a model's max batch are left out for it; empty: powers of two below max "
          "batch. Per model: cuda_graph_batch_sizes");
ABSL_FLAG(bool, device_preprocessing, true,
          "default for CUDA models: Classify images go to the GPU as uint8 pixels and are "
          "resized, cropped and normalised there, a batch at a time, so the CPU only decodes "
          "(device_preprocessing: true|false in a model config decides per model; no effect on "
          "CPU models). On the H200 it served shvit_s1 1.7x faster than CPU preprocessing, with "
          "top-1 probabilities within 4e-5 of it (docs/performance.md)");
ABSL_FLAG(bool, channels_last, true,
          "default for CUDA models: weights and input in channels-last (NHWC) memory, so "
          "convolutions run cuDNN's NHWC tensor-core kernels (channels_last: true|false in a "
          "model config decides per model; off on CPU unless a config says so). On the H200 it "
          "made shvit_s1 alone 1.55x faster at batch 128 and left the ViTs unchanged "
          "(docs/performance.md)");
ABSL_FLAG(bool, approximate_gelu, true,
          "default for CUDA models in fp16/bf16: each ViT-family MLP (ViT/DeiT, TokenLearner, "
          "ViTTM, Fibottention) computes GELU in its tanh form inside its first matrix product "
          "instead of exact (erf) GELU as a separate kernel; the two differ by at most 4.7e-4, "
          "below fp16's rounding step for values above 0.5 (approximate_gelu: true|false in a "
          "model config decides per model; no effect in fp32, on CPU or on other models). "
          "false: exact GELU, as timm (docs/performance.md, run V)");
ABSL_FLAG(bool, gpu_jpeg_decoding, true,
          "default for CUDA models with device preprocessing: Classify JPEGs go to the GPU still "
          "encoded and are decoded there with nvJPEG (the GPU's hardware JPEG engines where it "
          "has them), so the CPU only reads their headers; baseline JPEGs of one size per "
          "request without EXIF rotation, others keep the CPU decoder (gpu_jpeg_decoding: "
          "true|false in a model config decides per model; off in builds without nvJPEG). On "
          "the H200 it served shvit_s1 640x480 JPEGs 3.8x faster than CPU decoding, with top-1 "
          "probabilities within 9e-5 of it (docs/performance.md)");
ABSL_FLAG(bool, cudnn_benchmark, false,
          "let cuDNN time its convolution algorithms for each input shape at warm-up and keep "
          "the fastest (process-wide; with CUDA graphs every served shape is warmed up at load)");
ABSL_FLAG(std::string, kserve_input_datatype, "FP32",
          "default datatype that KServe model metadata declares for the input: FP32 or UINT8 "
          "(raw RGB pixels, a quarter of the bytes). ModelInfer accepts both either way; this "
          "decides what metadata-driven clients such as perf_analyzer send "
          "(kserve_input_datatype in a model config decides per model)");
ABSL_FLAG(bool, allow_client_shm, false,
          "let KServe gRPC clients on this host pass tensors in POSIX shared memory (Triton's "
          "system shared-memory extension: SystemSharedMemoryRegister, then inputs and outputs "
          "that name a region; perf_analyzer --shared-memory system). Off by default, as in "
          "Triton: a client that registers a region makes the server map memory it names, so "
          "allow it only for trusted local clients");
ABSL_FLAG(int32_t, instance_count, 0,
          "default model instances per model (instance_count in a model config decides per "
          "model): each has its own copy of the weights, its CUDA graphs and stream, and its own "
          "executor thread, all taking batches from the model's one queue. 0 (the default): 2 "
          "for a model on a GPU, where one batch's copies and preprocessing then overlap "
          "another's forward pass (5-12% more images/s on the H200, docs/performance.md); 2 on "
          "a CPU too, each on half the cores (--intra-op-threads): on 2 cores it served "
          "shvit_s1 at 98% of the model alone instead of 67-78%, a lone request 19 ms instead "
          "of 16 (docs/performance.md)");
ABSL_FLAG(int32_t, max_queue_size, 256,
          "default most requests waiting per model, being decoded or queued; a request beyond "
          "it (and beyond the batches computing) is refused with RESOURCE_EXHAUSTED on arrival, "
          "before it is decoded, so overload cannot pile up work or memory");
ABSL_FLAG(int64_t, max_image_bytes, vitserve::ImageLimits{}.max_encoded_bytes,
          "largest encoded image accepted (bytes)");
ABSL_FLAG(int64_t, max_image_pixels, vitserve::ImageLimits{}.max_pixels,
          "largest decoded image accepted (width * height)");
ABSL_FLAG(int32_t, max_images_per_request, vitserve::ImageLimits{}.max_images_per_request,
          "most images in one Classify request (each becomes a model input row of about 0.6 MB "
          "whatever its encoded size); beyond it RESOURCE_EXHAUSTED");
ABSL_FLAG(double, shutdown_grace_seconds, 30,
          "on SIGTERM/SIGINT, how long accepted requests may take to finish; calls still running "
          "then are cancelled, and a shutdown still unfinished 10 s later (a model load or a "
          "forward pass that cannot be interrupted) ends with exit status 1 at once (a second "
          "signal ends it sooner), so that the process is gone before a Kubernetes "
          "terminationGracePeriodSeconds of grace + 15 s");
ABSL_FLAG(bool, list_models, false, "print the architectures this build can serve and exit");
ABSL_FLAG(int, intra_op_threads, 0,
          "LibTorch intra-op threads for CPU tensor work (0: 1 when --device is cuda, since "
          "requests already run in parallel on the preprocessing pool and parallel copies of "
          "small tensors only spin; for CPU models the cores shared among a model's instances "
          "(--instance-count, 2 by default on CPU), so each instance's forward pass runs on its "
          "share)");
ABSL_FLAG(std::string, http_address, "0.0.0.0",
          "IPv4 address of the HTTP port (/metrics, /v2/health/*): e.g. 127.0.0.1 or an "
          "internal interface, to keep metrics off the network that reaches --host");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls-key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: mutual TLS, only clients with a certificate this CA signed may "
          "connect");
ABSL_FLAG(std::string, auth_token_file, "",
          "file whose first line is a bearer token every gRPC call must send as 'authorization: "
          "Bearer <token>' (else UNAUTHENTICATED); needs TLS");
ABSL_FLAG(bool, auth_exempt_metrics, false,
          "with --auth-token-file, let GET /metrics on the REST port through without a token");
ABSL_FLAG(bool, auth_exempt_health, true,
          "with --auth-token-file, let grpc.health.v1.Health calls (Kubernetes probes) through "
          "without a token");
ABSL_FLAG(int, preprocess_threads, 0,
          "threads that decode and preprocess images and convert ModelInfer tensors, off gRPC's "
          "threads (0: one per core)");

namespace vitserve {
namespace {

// How long past the grace a shutdown may still take (the executors finishing the batch they
// compute, the models being freed) before the process exits regardless, with status 1.
constexpr absl::Duration kShutdownOverrun = absl::Seconds(10);

constexpr char kUsage[] =
    R"(vitserve: a gRPC and HTTP/REST server for vision models (LibTorch) with dynamic batching.

Serves vitserve.v1.Vision (Classify, Detect, Segment, ClassifyStream, ListModels, GetModel), the
KServe v2 / Open Inference Protocol (inference.GRPCInferenceService: works with tritonclient and
perf_analyzer), grpc.health.v1.Health and server reflection on --grpc-port (8001); KServe v2
REST and a plain image endpoint (curl -F image=@cat.jpg host:8000/v1/models/M:classify) on
--rest-port (8000); Prometheus /metrics plus /v2/health/{live,ready} on --http-port (8002).

Quick mode serves one architecture (--model, optionally --weights); repository mode serves every
model of --model-repository (<dir>/<model>/config.pbtxt, Triton-style). Flag names accept '-' or
'_' (--grpc-port = --grpc_port). Every flag can also come from the environment variable
VITSERVE_<FLAG NAME IN UPPER CASE> (e.g. VITSERVE_GRPC_PORT=9001); the command line wins.
SIGTERM/SIGINT drain accepted requests (up to --shutdown-grace-seconds) and exit 0; a shutdown
still held 10 s past the grace (a model load, a long forward pass) exits 1 there.

Examples:
  vitserve                                         # shvit_s1, random weights, CPU
  vitserve --model deit_tiny_patch16_224 --weights deit_tiny.safetensors
  vitserve --model-repository /models --device cuda --precision fp16
  vitserve --tls-cert server.pem --tls-key server.key [--tls-client-ca ca.pem]
           [--auth-token-file token.txt]             # TLS, mutual TLS, bearer token
  vitserve --list-models)";

// The flags that may also come from VITSERVE_<NAME>.
constexpr const char* kFlagNames[] = {"grpc_port",
                                      "http_port",
                                      "rest_port",
                                      "rest_threads",
                                      "max_request_bytes",
                                      "max_request_seconds",
                                      "max_concurrent_streams",
                                      "reuse_port",
                                      "host",
                                      "model",
                                      "weights",
                                      "model_repository",
                                      "device",
                                      "precision",
                                      "max_batch_size",
                                      "max_queue_delay_us",
                                      "max_queue_size",
                                      "executor_idle_spin_us",
                                      "instance_count",
                                      "cuda_graphs",
                                      "cuda_graph_batch_sizes",
                                      "device_preprocessing",
                                      "channels_last",
                                      "approximate_gelu",
                                      "gpu_jpeg_decoding",
                                      "cudnn_benchmark",
                                      "kserve_input_datatype",
                                      "allow_client_shm",
                                      "max_image_bytes",
                                      "max_image_pixels",
                                      "max_images_per_request",
                                      "shutdown_grace_seconds",
                                      "preprocess_threads",
                                      "http_address",
                                      "tls_cert",
                                      "tls_key",
                                      "tls_client_ca",
                                      "auth_token_file",
                                      "auth_exempt_health",
                                      "auth_exempt_metrics",
                                      "intra_op_threads",
                                      "list_models"};

// Applies VITSERVE_<FLAG> environment variables; the command line, parsed afterwards, wins.
bool ApplyEnvironment() {
  for (const char* name : kFlagNames) {
    const std::string variable = absl::StrCat("VITSERVE_", absl::AsciiStrToUpper(name));
    const char* value = std::getenv(variable.c_str());
    if (value == nullptr) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(value, &error)) {
      std::cerr << "vitserve: bad value '" << value << "' in " << variable << ": " << error << "\n";
      return false;
    }
  }
  return true;
}

void ListModels(const ModelRegistry& registry) {
  std::cout << absl::StrFormat("%-34s %-12s %-15s %6s %8s\n", "ARCHITECTURE", "FAMILY", "TASK",
                               "INPUT", "CLASSES");
  for (const std::string& name : registry.Names()) {
    auto info = registry.FindInfo(name);
    if (!info.ok()) continue;
    std::cout << absl::StrFormat("%-34s %-12s %-15s %6d %8d\n", name, (*info)->family,
                                 std::string(ModelTaskName((*info)->task)), (*info)->input_size,
                                 (*info)->num_classes);
  }
}

void PrintBanner(VitServer& server) {
  const ServerOptions& o = server.options();
  std::string banner = absl::StrCat(
      "vitserve ", VitserveVersion(), "\n", "  gRPC  ", o.host, ":", server.grpc_port(),
      "  (vitserve.v1.Vision, inference.GRPCInferenceService, grpc.health.v1.Health, "
      "reflection)\n",
      server.rest_port() >= 0
          ? absl::StrCat("  REST  ", o.host, ":", server.rest_port(),
                         "  (KServe v2 REST /v2/..., POST /v1/models/{m}:classify|:detect|"
                         ":segment, /metrics)\n")
          : std::string(),
      server.http_port() >= 0
          ? absl::StrCat("  HTTP  ", o.http_address, ":", server.http_port(),
                         "  (/metrics, /v2/health/live, /v2/health/ready; plaintext, no token)\n")
          : std::string(),
      "  mode  ",
      o.model_repository.empty() ? absl::StrCat("quick (", o.model, ")")
                                 : absl::StrCat("repository ", o.model_repository),
      "\n  default device ", o.device, ", precision ", o.precision, ", max batch ",
      o.max_batch_size, ", queue delay ", o.max_queue_delay_us, "us, queue size ", o.max_queue_size,
      "\n  models:\n");
  bool random = false;
  for (const ModelStatus& status : server.model_manager().List()) {
    auto model = server.model_manager().Get(status.name);
    if (model.ok()) {
      const auto& config = (*model)->config();
      absl::StrAppend(&banner, "    ", status.name, "  [",
                      std::string(ModelStateName(status.state)), "] ", config.architecture(),
                      " on ", config.device(), ", ", (*model)->parameter_count(), " parameters",
                      (*model)->random_weights() ? "  RANDOM WEIGHTS" : "", "\n");
      random = random || (*model)->random_weights();
    } else {
      absl::StrAppend(&banner, "    ", status.name, "  [",
                      std::string(ModelStateName(status.state)), "] ", status.reason, "\n");
    }
  }
  if (random) {
    absl::StrAppend(&banner,
                    "\n  ********************************************************************\n"
                    "  WARNING: serving RANDOM (untrained) weights: predictions are meaningless.\n"
                    "  Pass --weights FILE.safetensors (quick mode) for a trained model.\n"
                    "  ********************************************************************\n");
  }
  std::cout << banner << std::flush;
}

int Run(int argc, char** argv) {
  UseReleaseMutexes();
  absl::SetProgramUsageMessage(kUsage);
  // --help lists this file's flags (absl's default looks for <program>.cc or <program>_main.cc).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_helpshort_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
  };
  usage_config.contains_help_flags = usage_config.contains_helpshort_flags;
  usage_config.version_string = [] { return absl::StrCat("vitserve ", VitserveVersion(), "\n"); };
  absl::SetFlagsUsageConfig(usage_config);
  if (WantsHelp(argc, argv)) {
    std::cout << kUsage << "\n\nFlags (environment variable VITSERVE_<NAME>, e.g. "
              << "VITSERVE_GRPC_PORT):\n"
              << DashedFlagHelp({std::begin(kFlagNames), std::end(kFlagNames)});
    return 0;
  }
  if (!ApplyEnvironment()) return 2;
  std::vector<std::string> storage = NormalizeFlagNames(argc, argv);
  std::vector<char*> args = ArgvPointers(storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());

  const ModelRegistry registry = BuiltinModelRegistry();
  if (absl::GetFlag(FLAGS_list_models)) {
    ListModels(registry);
    return 0;
  }

  ServerOptions options;
  options.grpc_port = absl::GetFlag(FLAGS_grpc_port);
  options.http_port = absl::GetFlag(FLAGS_http_port);
  options.rest_port = absl::GetFlag(FLAGS_rest_port);
  options.rest_threads = absl::GetFlag(FLAGS_rest_threads);
  const int64_t max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  if (max_request_bytes < 1 || max_request_bytes > std::numeric_limits<int>::max()) {
    std::cerr << "vitserve: --max-request-bytes must be in [1, "
              << std::numeric_limits<int>::max() << "], got " << max_request_bytes << "\n";
    return 2;
  }
  options.grpc_max_message_bytes = static_cast<int>(max_request_bytes);
  options.max_request_time = absl::Seconds(absl::GetFlag(FLAGS_max_request_seconds));
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.reuse_port = absl::GetFlag(FLAGS_reuse_port);
  options.host = absl::GetFlag(FLAGS_host);
  options.model = absl::GetFlag(FLAGS_model);
  options.weights = absl::GetFlag(FLAGS_weights);
  options.model_repository = absl::GetFlag(FLAGS_model_repository);
  options.device = absl::GetFlag(FLAGS_device);
  options.precision = absl::GetFlag(FLAGS_precision);
  options.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.max_queue_delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  options.executor_idle_spin_us = absl::GetFlag(FLAGS_executor_idle_spin_us);
  options.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  options.instance_count = absl::GetFlag(FLAGS_instance_count);
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  for (const std::string& size : absl::GetFlag(FLAGS_cuda_graph_batch_sizes)) {
    uint32_t value = 0;
    if (!absl::SimpleAtoi(size, &value) || value < 1) {
      std::cerr << "vitserve: --cuda-graph-batch-sizes takes batch sizes >= 1 separated by "
                   "commas, got '"
                << size << "'\n";
      return 2;
    }
    options.cuda_graph_batch_sizes.push_back(value);
  }
  options.device_preprocessing = absl::GetFlag(FLAGS_device_preprocessing);
  options.channels_last = absl::GetFlag(FLAGS_channels_last);
  options.approximate_gelu = absl::GetFlag(FLAGS_approximate_gelu);
  options.gpu_jpeg_decoding = absl::GetFlag(FLAGS_gpu_jpeg_decoding);
  options.cudnn_benchmark = absl::GetFlag(FLAGS_cudnn_benchmark);
  options.kserve_input_datatype = absl::GetFlag(FLAGS_kserve_input_datatype);
  options.allow_client_shm = absl::GetFlag(FLAGS_allow_client_shm);
  options.image_limits.max_encoded_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  options.image_limits.max_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  options.image_limits.max_images_per_request = absl::GetFlag(FLAGS_max_images_per_request);
  options.shutdown_grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds));
  options.preprocess_threads = absl::GetFlag(FLAGS_preprocess_threads);
  options.http_address = absl::GetFlag(FLAGS_http_address);
  options.security.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.security.key_file = absl::GetFlag(FLAGS_tls_key);
  options.security.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.security.token_file = absl::GetFlag(FLAGS_auth_token_file);
  options.security.token_exempt_health = absl::GetFlag(FLAGS_auth_exempt_health);
  options.security.token_exempt_metrics = absl::GetFlag(FLAGS_auth_exempt_metrics);
  // Requests are decoded concurrently on the preprocessing pool; OpenCV's own thread pool on
  // top of that would only oversubscribe the cores.
  cv::setNumThreads(1);
  // The same for LibTorch's CPU work (copies, concatenation, top-k) when the models run on a
  // GPU: measured on the H200 (2026-12-01, shvit_s1, 256 clients), OpenMP spin-waiting in
  // small parallel copies called from many threads at once was the largest CPU cost.
  const int intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  if (intra_op_threads < 0) {
    std::cerr << "vitserve: --intra-op-threads must be >= 0\n";
    return 2;
  }
  // For CPU models only: on the H200 it made no difference to CUDA serving's throughput and
  // measured 0.03-0.08 ms slower at one request at a time (docs/performance.md).
  if (!absl::StartsWith(options.device, "cuda")) {
    if (absl::Status malloc_settings = KeepFreedMemoryForReuse(); !malloc_settings.ok()) {
      LogWarning(std::string(malloc_settings.message()));
    }
  }
  // LibTorch's own default is one thread per core.
  at::set_num_threads(intra_op_threads > 0
                          ? intra_op_threads
                          : DefaultIntraOpThreads(options.device, at::get_num_threads(),
                                                  options.instance_count));
  // That count is for the executors' forward passes. This thread only loads models, and
  // RunTorchSeriallyOnThisThread says why it must not keep a team of OpenMP threads beside them.
  RunTorchSeriallyOnThisThread();
  if (!options.model.empty() && !options.model_repository.empty()) {
    std::cerr << "vitserve: give either --model (quick mode) or --model-repository, not both\n";
    return 2;
  }
  if (options.model.empty() && options.model_repository.empty()) {
    options.model = kDefaultQuickModel;
  }

  // Block SIGINT/SIGTERM in this thread before any other starts, so every thread inherits the
  // mask and only the sigwait thread below ever receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<VitServer>> server = VitServer::Start(options, &registry);
  if (!server.ok()) {
    std::cerr << "vitserve: cannot start: " << server.status() << "\n";
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  PrintBanner(**server);

  VitServer* raw = server->get();
  const absl::Duration grace = options.shutdown_grace;
  std::thread signal_thread([raw, signals, grace] {
    int signal = 0;
    sigwait(&signals, &signal);
    LogInfo(absl::StrCat("received ", signal == SIGTERM ? "SIGTERM" : "SIGINT",
                         ": draining accepted requests, then exiting"));
    std::thread([signals] {  // A second signal forces the exit.
      int again = 0;
      sigwait(&signals, &again);
      LogWarning("second signal: exiting without finishing the drain");
      std::_Exit(1);
    })
        .detach();
    // The grace bounds the shutdown too. Past it gRPC cancels the calls still running, but a
    // model load (RepositoryModelLoad) or a forward pass in progress cannot be interrupted and
    // would hold the exit for as long as it takes; the process (and everything it was doing)
    // is going away anyway.
    std::thread([grace] {
      absl::SleepFor(grace + kShutdownOverrun);
      LogWarning(absl::StrCat("the shutdown did not finish within --shutdown-grace-seconds (",
                              absl::FormatDuration(grace), ") + ",
                              absl::FormatDuration(kShutdownOverrun),
                              " (a model still loading, or a forward pass): exiting now"));
      std::_Exit(1);
    })
        .detach();
    raw->Shutdown();
  });

  raw->Wait();
  signal_thread.join();
  LogInfo("shut down cleanly");
  server->reset();
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) { return vitserve::Run(argc, argv); }

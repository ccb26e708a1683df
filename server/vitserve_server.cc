#include "server/vitserve_server.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/thread_name.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "prometheus/registry.h"
#include "server/api/inference_service.h"
#include "server/api/vision_service.h"
#include "server/api/work_pool.h"
#include "server/batching/batching_options.h"
#include "server/config/model_config.h"
#include "server/image/gpu_jpeg_decoder.h"
#include "server/log.h"
#include "common/status_macros.h"
#include "server/metrics/http_server.h"
#include "server/rest/rest_server.h"
#include "server/metrics/server_metrics.h"
#include "server/model_manager.h"
#include "server/runtime/device.h"

#ifndef VITSERVE_VERSION
#define VITSERVE_VERSION "0.0.0"
#endif

namespace vitserve {
namespace {

// The gRPC services whose health is reported besides the server as a whole ("").
constexpr const char* kHealthServices[] = {"", "vitserve.v1.Vision",
                                           "inference.GRPCInferenceService"};
constexpr absl::Duration kMonitorPeriod = absl::Seconds(1);

absl::StatusOr<v1::Precision> ParsePrecision(const std::string& precision) {
  const std::string p = absl::AsciiStrToLower(precision);
  if (p == "fp32") return v1::FP32;
  if (p == "fp16") return v1::FP16;
  if (p == "bf16") return v1::BF16;
  return absl::InvalidArgumentError(
      absl::StrCat("precision '", precision, "' is not one of fp32, fp16, bf16"));
}

std::string ListenAddress(const std::string& host, int port) {
  // An IPv6 literal needs brackets in "host:port".
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

absl::Status ValidateOptions(const ServerOptions& o) {
  if (!o.model.empty() && !o.model_repository.empty()) {
    return absl::InvalidArgumentError(
        "give either a model (quick mode) or a model repository, not both");
  }
  if (!o.weights.empty() && !o.model_repository.empty()) {
    return absl::InvalidArgumentError(
        "weights apply to quick mode only; a repository names each model's weights in its "
        "config.pbtxt");
  }
  if (o.rest_port < -1 || o.rest_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rest port ", o.rest_port, " is outside 0..65535 (0: any free port, -1: no REST)"));
  }
  if (absl::Status s = ValidateKserveInputDatatype(o.kserve_input_datatype); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kserve-input-datatype ", s.message()));
  }
  if (o.rest_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rest-threads ", o.rest_threads, " must be at least 1"));
  }
  if (o.grpc_port < 0 || o.grpc_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("grpc port ", o.grpc_port, " is outside 0..65535 (0: any free port)"));
  }
  if (o.http_port < -1 || o.http_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "http port ", o.http_port, " is outside -1..65535 (0: any free port; -1: off)"));
  }
  if (o.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch size ", o.max_batch_size, " must be at least 1"));
  }
  if (o.max_queue_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max queue size ", o.max_queue_size, " must be at least 1"));
  }
  if (o.instance_count < 0 || o.instance_count > static_cast<int>(kMaxInstanceCount)) {
    return absl::InvalidArgumentError(absl::StrCat("--instance-count ", o.instance_count,
                                                   " is outside 0..", kMaxInstanceCount,
                                                   " (0: 2 on a GPU, 1 on CPU)"));
  }
  if (o.max_queue_delay_us < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max queue delay ", o.max_queue_delay_us, "us must be >= 0"));
  }
  if (o.executor_idle_spin_us < -1 ||
      absl::Microseconds(o.executor_idle_spin_us) > kMaxIdleSpin) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--executor-idle-spin-us ", o.executor_idle_spin_us, " is outside -1..",
        absl::ToInt64Microseconds(kMaxIdleSpin), " (-1: ",
        absl::ToInt64Microseconds(kGpuIdleSpin), " on a GPU, 0 on CPU)"));
  }
  if (o.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("shutdown grace must be >= 0");
  }
  if (o.image_limits.max_images_per_request < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-images-per-request ", o.image_limits.max_images_per_request,
        " must be at least 1"));
  }
  if (o.max_request_time <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--max-request-seconds must be > 0");
  }
  if (o.max_concurrent_streams < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--max-concurrent-streams ",
                                                   o.max_concurrent_streams, " must be >= 1"));
  }
  if (o.grpc_max_message_bytes < 1) {
    return absl::InvalidArgumentError("grpc max message bytes must be positive");
  }
  return ValidateDeviceString(o.device);
}

}  // namespace

const char* VitserveVersion() { return VITSERVE_VERSION; }

VitServer::VitServer(ServerOptions options) : options_(std::move(options)) {}

VitServer::~VitServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<VitServer>> VitServer::Start(ServerOptions options,
                                                            const ModelRegistry* registry) {
  if (registry == nullptr) return absl::InvalidArgumentError("no model registry");
  absl::Status valid = ValidateOptions(options);
  if (!valid.ok()) return valid;
  if (options.model.empty() && options.model_repository.empty()) {
    options.model = kDefaultQuickModel;
  }
  std::unique_ptr<VitServer> server(new VitServer(std::move(options)));
  absl::Status started = server->StartServing(registry);
  if (!started.ok()) {
    server->Shutdown();
    return started;
  }
  return server;
}

absl::Status VitServer::StartHttpServer() {
  absl::flat_hash_map<std::string, HttpHandler> routes;
  prometheus::Registry* prometheus = prometheus_.get();
  routes["/metrics"] = [prometheus] {
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                        SerializeMetrics(*prometheus)};
  };
  routes["/v2/health/live"] = [] { return HttpResponse{200, "text/plain", "live\n"}; };
  routes["/v2/health/ready"] = [this] {
    return Ready() ? HttpResponse{200, "text/plain", "ready\n"}
                   : HttpResponse{503, "text/plain", "not ready\n"};
  };
  absl::StatusOr<std::unique_ptr<HttpServer>> http =
      HttpServer::Start(options_.http_port, std::move(routes), options_.http_address);
  if (!http.ok()) {
    return absl::Status(
        http.status().code(),
        absl::StrCat("HTTP server on port ", options_.http_port, ": ", http.status().message()));
  }
  http_ = *std::move(http);
  http_port_ = http_->bound_port();
  return absl::OkStatus();
}

absl::Status VitServer::StartServing(const ModelRegistry* registry) {
  absl::StatusOr<v1::Precision> precision = ParsePrecision(options_.precision);
  if (!precision.ok()) return precision.status();

  prometheus_ = std::make_unique<prometheus::Registry>();
  metrics_ = std::make_unique<ServerMetrics>(*prometheus_);

  ModelManagerOptions manager_options;
  manager_options.repository_dir = options_.model_repository;
  manager_options.quick_model = options_.model;
  manager_options.quick_weights = options_.weights;
  manager_options.defaults.device = options_.device;
  manager_options.defaults.precision = *precision;
  manager_options.defaults.max_batch_size = static_cast<uint32_t>(options_.max_batch_size);
  manager_options.defaults.max_queue_delay_us = static_cast<uint64_t>(options_.max_queue_delay_us);
  manager_options.defaults.max_queue_size = static_cast<uint32_t>(options_.max_queue_size);
  manager_options.defaults.executor_idle_spin_us = options_.executor_idle_spin_us;
  manager_options.defaults.instance_count = static_cast<uint32_t>(options_.instance_count);
  manager_options.defaults.cuda_graphs = options_.cuda_graphs;
  manager_options.defaults.cuda_graph_batch_sizes = options_.cuda_graph_batch_sizes;
  manager_options.defaults.device_preprocessing = options_.device_preprocessing;
  manager_options.defaults.channels_last = options_.channels_last;
  manager_options.defaults.approximate_gelu = options_.approximate_gelu;
  // A build without nvJPEG leaves it off unless a model config asks for it (which then fails
  // that model's load with the reason).
  manager_options.defaults.gpu_jpeg_decoding =
      options_.gpu_jpeg_decoding && GpuJpegDecodingBuilt();
  manager_options.defaults.kserve_input_datatype = options_.kserve_input_datatype;
  manager_options.cudnn_benchmark = options_.cudnn_benchmark;
  absl::StatusOr<std::unique_ptr<ModelManager>> manager =
      ModelManager::Create(std::move(manager_options), registry, metrics_.get());
  if (!manager.ok()) return manager.status();
  manager_ = *std::move(manager);

  // The pool's threads run in parallel with each other and with the executors' forward passes:
  // their tensor work stays on each thread (RunTorchSeriallyOnThisThread says why).
  preprocess_pool_ =
      std::make_unique<WorkPool>(options_.preprocess_threads, RunTorchSeriallyOnThisThread);
  vision_ = std::make_unique<VisionService>(manager_.get(), options_.image_limits,
                                            preprocess_pool_.get(), options_.max_request_time);
  inference_ = std::make_unique<InferenceService>(manager_.get(), std::string(VitserveVersion()),
                                                  preprocess_pool_.get(),
                                                  options_.max_request_time, &shared_memory_);

  // Both are process-wide switches of gRPC that only take effect for servers built afterwards.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = ListenAddress(options_.host, options_.grpc_port);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options_.security);
  if (!credentials.ok()) return credentials.status();
  builder.AddListeningPort(address, *credentials, &grpc_port_);
  builder.SetMaxReceiveMessageSize(options_.grpc_max_message_bytes);
  builder.SetMaxSendMessageSize(options_.grpc_max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  // gRPC sets SO_REUSEPORT by default on Linux: a second server would share the port unseen.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, options_.reuse_port ? 1 : 0);
  builder.RegisterService(vision_.get());
  builder.RegisterService(inference_.get());
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || grpc_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", address, " (address in use or not available?)"));
  }
  UpdateHealth();  // NOT_SERVING until the models are loaded.

  if (options_.rest_port >= 0) {
    RestOptions rest;
    rest.address = options_.host;
    rest.port = options_.rest_port;
    rest.threads = options_.rest_threads;
    rest.reuse_port = options_.reuse_port;
    rest.max_body_bytes = options_.grpc_max_message_bytes;
    rest.image_limits = options_.image_limits;
    rest.max_request_time = options_.max_request_time;
    rest.server_version = VitserveVersion();
    rest.security = options_.security;
    prometheus::Registry* registry = prometheus_.get();
    rest.metrics_text = [registry] { return SerializeMetrics(*registry); };
    absl::StatusOr<std::unique_ptr<RestServer>> started =
        RestServer::Start(std::move(rest), manager_.get(), preprocess_pool_.get(),
                          [this] { return Ready(); });
    if (!started.ok()) return started.status();
    rest_ = *std::move(started);
    rest_port_ = rest_->bound_port();
  }

  if (options_.http_port >= 0) VITSERVE_RETURN_IF_ERROR(StartHttpServer());

  absl::Status loaded = manager_->LoadAll();
  if (!loaded.ok()) {
    // Quick mode has one model: without it there is nothing to serve. A repository keeps
    // serving the models that loaded (the failed ones answer UNAVAILABLE with their reason,
    // and /v2/health/ready stays 503 so an orchestrator sees the problem).
    const std::vector<ModelStatus> models = manager_->List();
    if (!options_.model_repository.empty() &&
        absl::c_any_of(models,
                       [](const ModelStatus& m) { return m.state == ModelState::kReady; })) {
      LogError(std::string(loaded.message()));
    } else {
      return loaded;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    loaded_ = true;
  }
  UpdateHealth();
  monitor_ = std::thread([this] {
    SetCurrentThreadName("monitor");
    MonitorLoop();
  });
  return absl::OkStatus();
}

bool VitServer::Ready() const {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_ || !loaded_) return false;
  }
  return manager_ != nullptr && manager_->AllReady();
}

void VitServer::UpdateHealth() {
  if (grpc_server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  if (health == nullptr) return;
  const bool serving = Ready();
  for (const char* service : kHealthServices) health->SetServingStatus(service, serving);
}

void VitServer::MonitorLoop() {
  std::optional<c10::Device> gpu;
  if (absl::StartsWith(options_.device, "cuda")) {
    absl::StatusOr<c10::Device> device = ParseDevice(options_.device);
    if (device.ok()) gpu = *device;
  }
  absl::MutexLock lock(&mu_);
  while (!shutting_down_) {
    mu_.Unlock();
    UpdateHealth();
    if (gpu.has_value()) metrics_->SetGpuMemoryUsed(gpu->str(), GpuMemoryUsedBytes(*gpu));
    mu_.Lock();
    monitor_cv_.WaitWithTimeout(&mu_, kMonitorPeriod);
  }
}

void VitServer::Shutdown() {
  absl::MutexLock serial(&shutdown_mu_);
  if (shutdown_done_.HasBeenNotified()) return;
  const absl::Time start = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    monitor_cv_.SignalAll();
  }
  if (monitor_.joinable()) monitor_.join();
  if (inference_ != nullptr) inference_->SetShuttingDown();
  // REST stops beside the gRPC drain: cpp-httplib's Stop waits for its connections' threads,
  // an idle keep-alive connection for up to 5 s and a half-sent request up to its 10 s read
  // timeout; requests being handled finish meanwhile (the models still serve them), new ones
  // get 503.
  std::thread rest_stop;
  if (rest_ != nullptr) {
    rest_->SetShuttingDown();
    rest_stop = std::thread([rest = rest_.get()] { rest->Stop(); });
  }
  if (grpc_server_ != nullptr) {
    UpdateHealth();  // NOT_SERVING
    if (auto* health = grpc_server_->GetHealthCheckService()) health->Shutdown();
    // Refuses new calls at once; accepted ones run to completion (the models still serve them)
    // until the grace period ends, when the remaining ones are cancelled.
    grpc_server_->Shutdown(absl::ToChronoTime(start + options_.shutdown_grace));
  }
  if (rest_stop.joinable()) rest_stop.join();
  if (manager_ != nullptr) {
    manager_->Shutdown(
        std::max(absl::ZeroDuration(), options_.shutdown_grace - (absl::Now() - start)));
  }
  if (http_ != nullptr) http_->Stop();
  if (grpc_server_ != nullptr) grpc_server_->Wait();
  shutdown_done_.Notify();
}

void VitServer::Wait() { shutdown_done_.WaitForNotification(); }

}  // namespace vitserve

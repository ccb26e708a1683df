// VitServer: the whole server in one object, so the binary (main.cc) and the integration tests
// run exactly the same wiring.
//
// It owns, in dependency order: the Prometheus registry and ServerMetrics, the ModelManager
// (models, their batchers and executors), the gRPC server (vitserve.v1.Vision,
// inference.GRPCInferenceService, grpc.health.v1.Health, server reflection), the REST server
// (KServe v2 REST and the plain /v1 endpoint, over the same task calls) and the HTTP server
// (/metrics, /v2/health/live, /v2/health/ready). A monitor thread keeps the gRPC health status
// in step with model readiness and, on CUDA, updates vitserve_gpu_memory_used_bytes.
//
// Start order: servers listen first (health NOT_SERVING, readiness 503), then models load, then
// health turns SERVING: Kubernetes probes see the pod as live but not ready while it loads.
// Shutdown (SIGTERM): health NOT_SERVING and readiness 503 at once; new RPCs are refused while
// accepted ones finish (gRPC server shutdown with the grace period as its deadline, REST
// requests being handled run to their end; the models keep serving meanwhile), then the models
// stop, then HTTP stops.
//
// Ownership: `registry` is borrowed and must outlive the server.
// Thread-safety: Shutdown and Wait may be called from any thread, more than once.
// Errors (Start): INVALID_ARGUMENT for bad options (both or a bad device/precision named),
// UNAVAILABLE when a port cannot be bound, and the ModelManager's errors for models that fail
// to load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "models/registry.h"
#include "server/api/security.h"
#include "server/api/shared_memory.h"
#include "server/image/decode.h"

namespace grpc {
class Server;
}  // namespace grpc
namespace prometheus {
class Registry;
}  // namespace prometheus

namespace vitserve {

class ModelManager;
class ServerMetrics;
class HttpServer;
class RestServer;
class VisionService;
class InferenceService;
class WorkPool;

// The model served when neither a model nor a repository is given.
inline constexpr char kDefaultQuickModel[] = "shvit_s1";

// The server version (the CMake project version).
const char* VitserveVersion();

struct ServerOptions {
  int grpc_port = 8001;          // 0: an ephemeral port (see VitServer::grpc_port()).
  // Plaintext HTTP port for /metrics and the health routes (never TLS or token: see
  // docs/reliability.md); 0: an ephemeral port; -1: off (scrape the REST port's /metrics).
  int http_port = 8002;
  // HTTP/REST (KServe v2 REST and the plain /v1 endpoint; server/rest/rest_server.h), on
  // `host`: 0 an ephemeral port, -1 none.
  int rest_port = 8000;
  int rest_threads = 64;  // REST connections served at once.
  std::string http_address = "0.0.0.0";  // /metrics and health listening address (IPv4).
  std::string host = "0.0.0.0";  // gRPC listening address.
  // Quick mode: one architecture from the registry, optionally with a .safetensors file (random
  // weights without one). Exclusive with model_repository; neither means kDefaultQuickModel.
  std::string model;
  std::string weights;
  std::string model_repository;  // Triton-style <dir>/<model>/config.pbtxt.
  // Defaults for what model configs leave unset.
  std::string device = "cpu";      // "cpu", "cuda", "cuda:N"
  std::string precision = "fp32";  // "fp32", "fp16", "bf16"
  int max_batch_size = 8;
  int64_t max_queue_delay_us = 1000;
  int max_queue_size = 256;
  // How long an idle executor polls its model's queue before it sleeps (BatchingOptions::
  // idle_spin), in 0..10,000 us; -1: kGpuIdleSpin for models on a GPU, 0 on CPU (ModelIdleSpin).
  int64_t executor_idle_spin_us = -1;
  // Model instances per model (ModelConfig.instance_count); 0: 2 on CUDA, 1 on CPU.
  int instance_count = 0;
  bool cuda_graphs = true;  // CUDA graphs per batch-size bucket (models on CUDA only).
  // Their batch sizes (--cuda-graph-batch-sizes); empty: powers of two and the max batch.
  std::vector<uint32_t> cuda_graph_batch_sizes;
  // Classify images resized and normalised on the GPU (models on CUDA only; see
  // ModelConfig.device_preprocessing).
  bool device_preprocessing = true;
  // Weights and input in NHWC memory (models on CUDA only; ModelConfig.channels_last).
  bool channels_last = true;
  // ViT-family MLPs' GELU in its tanh form inside their first product (models on CUDA in fp16 or
  // bf16; ModelConfig.approximate_gelu).
  bool approximate_gelu = true;
  // Classify JPEGs decoded on the GPU with nvJPEG (models on CUDA with device_preprocessing;
  // ModelConfig.gpu_jpeg_decoding). Ignored by builds without nvJPEG.
  bool gpu_jpeg_decoding = true;
  // cuDNN autotuning at warm-up, process-wide (ModelManagerOptions.cudnn_benchmark).
  bool cudnn_benchmark = false;
  // What KServe metadata declares for the input: "FP32" or "UINT8" (ModelConfig).
  std::string kserve_input_datatype = "FP32";
  // Triton's system shared-memory extension for KServe gRPC clients on this host
  // (server/api/shared_memory.h); off by default, as in Triton (--allow-client-shm).
  bool allow_client_shm = false;
  ImageLimits image_limits;
  absl::Duration shutdown_grace = absl::Seconds(30);
  int grpc_max_message_bytes = 64 << 20;
  // The longest any request may stay in the server (its deadline is capped to arrival + this),
  // over gRPC and REST alike.
  absl::Duration max_request_time = absl::Seconds(300);
  // Concurrent gRPC calls (HTTP/2 streams) one connection may have open; more wait in the client.
  int max_concurrent_streams = 1024;
  // SO_REUSEPORT on the gRPC and REST ports: several vitserve processes that all set it share
  // them (the kernel spreads connections). Off: a port another process listens on fails Start,
  // rather than letting that process silently take part of the traffic. The HTTP (metrics)
  // port is never shared: each process is scraped on its own.
  bool reuse_port = false;
  // Threads that decode and preprocess images and convert ModelInfer's tensors (0: one per
  // hardware thread).
  int preprocess_threads = 0;
  // TLS, mutual TLS and a bearer token for the gRPC port (server/api/security.h).
  SecurityOptions security;
};

class VitServer {
 public:
  static absl::StatusOr<std::unique_ptr<VitServer>> Start(ServerOptions options,
                                                          const ModelRegistry* registry);
  VitServer(const VitServer&) = delete;
  VitServer& operator=(const VitServer&) = delete;
  // Shuts down if that has not happened yet.
  ~VitServer();

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }  // -1 with the HTTP port off.
  int rest_port() const { return rest_port_; }  // -1 without REST.
  const ServerOptions& options() const { return options_; }
  // The models and their state (for the start-up banner and tests).
  ModelManager& model_manager() { return *manager_; }

  // See the file comment. Blocks until done (at most about shutdown_grace); idempotent.
  void Shutdown();
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  explicit VitServer(ServerOptions options);
  absl::Status StartServing(const ModelRegistry* registry);
  absl::Status StartHttpServer();
  void MonitorLoop();
  void UpdateHealth();
  bool Ready() const;

  const ServerOptions options_;
  std::unique_ptr<prometheus::Registry> prometheus_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<ModelManager> manager_;
  // Declared before the services and the gRPC server so they outlive every call they handle.
  std::unique_ptr<WorkPool> preprocess_pool_;
  SharedMemoryRegistry shared_memory_{options_.allow_client_shm};
  std::unique_ptr<VisionService> vision_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<RestServer> rest_;
  int grpc_port_ = 0;
  int http_port_ = -1;
  int rest_port_ = -1;

  std::thread monitor_;
  mutable absl::Mutex mu_;
  absl::CondVar monitor_cv_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex shutdown_mu_;  // Serialises Shutdown calls.
  absl::Notification shutdown_done_;
};

}  // namespace vitserve

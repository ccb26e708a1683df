// RestServer: vitserve over HTTP/1.1 (cpp-httplib, Debian's libcpp-httplib), beside gRPC:
//
//   KServe v2 REST, as Triton serves it (tritonclient.http, perf_analyzer -i http):
//     GET  /v2                                      server metadata
//     GET  /v2/health/live, /v2/health/ready        200, or 503 when not ready
//     GET  /v2/models/{m}[/versions/{v}]            model metadata
//     GET  /v2/models/{m}[/versions/{v}]/ready      200, or 503 when not ready
//     GET  /v2/models/{m}[/versions/{v}]/config     Triton's model configuration
//     GET  /v2/models[/{m}[/versions/{v}]]/stats    Triton's statistics
//     POST /v2/models/{m}[/versions/{v}]/infer      JSON tensors and the binary-data extension
//                                                   (server/rest/kserve_json.h)
//     POST /v2/repository/index                     [{"name","version","state","reason"}]
//     POST /v2/repository/models/{m}/load|unload
//   GET /metrics (with RestOptions::metrics_text): the Prometheus metrics, as on the HTTP port
//   A plain endpoint for curl:
//     POST /v1/models/{m}:classify|:detect|:segment  the image file as the body (Content-Type
//          image/jpeg, image/png, ...; application/octet-stream) or multipart/form-data parts
//          (one image each; the part's file name names it). Query: top_k; score_threshold,
//          max_detections; format=png|raw; timeout_ms. Answers
//          {"model": m, "results": [<one object per image, the fields of vitserve-client --json
//          (common/result_json.h)>]}; segment adds "mask_png_base64" (or "mask_raw_base64").
//
// Every inference runs through server/api/task_calls.h, as gRPC's does: same validation,
// limits, admission control, batching and metrics. Errors are {"error": "..."} with the
// status of HttpStatusFor (400, 404, 413 image or body too large, 429 overloaded, 503 not
// ready, 504 deadline); the server keeps serving.
//
// Threads: cpp-httplib serves each connection on one thread of a fixed pool (std::thread, so
// the default 8 MiB stack: no civetweb-style small stacks, see server/metrics/http_server.h) and
// a handler waits there for its batch. A keep-alive connection holds its thread while idle
// (up to keep_alive_timeout), so `threads` bounds the connections served at once; others wait
// in the accept queue. Slow clients: a request must arrive within read_timeout, a response be
// taken within write_timeout.
//
// Ownership: borrows the ModelManager and the WorkPool, which must outlive Stop().
// Thread-safety: SetShuttingDown, Stop and bound_port from any thread; Stop is idempotent.
// Errors (Start): INVALID_ARGUMENT for bad options, UNAVAILABLE when the port cannot be bound,
// the TLS/token file errors of server/api/security.h.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/api/security.h"
#include "server/api/work_pool.h"
#include "server/image/decode.h"
#include "server/model_manager.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace vitserve {

struct RestOptions {
  std::string address = "0.0.0.0";
  int port = 8000;  // 0: an ephemeral port (bound_port()).
  int threads = 64;  // Connections served at once.
  // SO_REUSEPORT: other listeners that also set it may bind the same port, and the kernel spreads
  // connections over them (several server processes on one host). Off: the port of another
  // listener is an error at Start.
  bool reuse_port = false;
  int64_t max_body_bytes = 64 << 20;  // Larger bodies: 413.
  absl::Duration read_timeout = absl::Seconds(10);
  absl::Duration write_timeout = absl::Seconds(10);
  absl::Duration keep_alive_timeout = absl::Seconds(5);
  ImageLimits image_limits;
  // The longest a request may stay in the server, whatever deadline it asks for (none: this).
  absl::Duration max_request_time = absl::InfiniteDuration();
  std::string server_version;
  // TLS (HTTPS) with the gRPC port's certificate, mutual TLS with its client CA, and the bearer
  // token (Authorization: Bearer <token>) on every route but, with token_exempt_health, the
  // health routes and, with token_exempt_metrics, /metrics.
  SecurityOptions security;
  // Set: GET /metrics answers what it returns (the Prometheus text exposition), behind TLS and,
  // unless security.token_exempt_metrics, the token: the way to scrape a secured server.
  std::function<std::string()> metrics_text;
};

class RestServer {
 public:
  // `ready`: whether the server as a whole is ready (/v2/health/ready).
  static absl::StatusOr<std::unique_ptr<RestServer>> Start(RestOptions options,
                                                           ModelManager* manager, WorkPool* pool,
                                                           std::function<bool()> ready);
  RestServer(const RestServer&) = delete;
  RestServer& operator=(const RestServer&) = delete;
  ~RestServer();  // Stop().

  int bound_port() const { return bound_port_; }

  // From now on readiness answers 503 and new inference requests UNAVAILABLE (503); requests
  // already running finish.
  void SetShuttingDown() { shutting_down_.store(true); }

  // Stops accepting, lets the requests being handled finish and joins every thread.
  void Stop();

 private:
  RestServer(RestOptions options, ModelManager* manager, WorkPool* pool,
             std::function<bool()> ready);
  void AddRoutes();
  bool Authorized(const std::string& authorization) const;

  const RestOptions options_;
  ModelManager* const manager_;
  WorkPool* const pool_;
  const std::function<bool()> ready_;
  std::string expected_authorization_;  // "Bearer <token>"; empty: no token asked for.
  std::unique_ptr<httplib::Server> server_;
  int bound_port_ = 0;
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> listen_returned_{false};  // The listening thread has finished.
  std::thread listen_thread_;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace vitserve

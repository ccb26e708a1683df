// HttpServer: a deliberately small HTTP/1.1 server for /metrics and the health endpoints.
//
// Why not prometheus-cpp's Exposer: it runs on Debian's civetweb, which creates its threads
// with a fixed 100 KiB stack. CUDA builds of LibTorch load libraries with large static TLS
// (cuBLASLt alone ~94 KiB), which is carved out of every new thread's stack, so civetweb's
// pthread_create fails on GPU hosts ("null context when constructing CivetServer"). This server
// uses std::thread (default 8 MiB stack) and plain POSIX sockets.
//
// Behaviour: binds address:port (IPv4; 0.0.0.0 by default); one accept thread and a few connection threads; one request per
// connection (Connection: close; responses carry Content-Length). GET and HEAD only: an unknown
// path is 404, another method on a known path is 405; the query string is ignored for routing.
// A request line plus headers over 16 KiB is 431; a client that does not send its headers within
// 10 s (or does not read the response within 10 s) is dropped. A handler that throws gets 500.
// Stop() wakes every thread at once (self-pipe), so it is prompt even with slow clients.
//
// Ownership: the server owns its sockets, threads and routes.
// Thread-safety: handlers run on connection threads, possibly concurrently; they must be
// thread-safe. Stop and bound_port may be called from any thread; Stop is idempotent.
// Errors: Start returns INVALID_ARGUMENT for a port outside [0, 65535] or an address that is not
// a dotted IPv4 address, and the errno-based
// status (e.g. UNAVAILABLE / ALREADY_EXISTS-like codes) when the socket cannot be bound.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace vitserve {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse()>;

class HttpServer {
 public:
  // `routes` maps exact paths ("/metrics") to handlers. Port 0 picks an ephemeral port;
  // `address` is the local IPv4 address to listen on ("127.0.0.1": this host only).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      int port, absl::flat_hash_map<std::string, HttpHandler> routes,
      const std::string& address = "0.0.0.0");

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // Stop().

  int bound_port() const { return bound_port_; }

  // Stops accepting, abandons connections in progress and joins every thread.
  void Stop();

 private:
  HttpServer(int listen_fd, int wake_read_fd, int wake_write_fd, int bound_port,
             absl::flat_hash_map<std::string, HttpHandler> routes);

  void AcceptLoop();
  void WorkerLoop();
  void HandleConnection(int fd);
  HttpResponse Route(const std::string& request_head, bool* is_head);
  // Waits until `fd` is ready for `events` or `timeout_ms` passes; false on timeout or Stop.
  bool WaitFor(int fd, short events, int timeout_ms);

  const int listen_fd_;
  const int wake_read_fd_;  // Becomes readable (forever) when Stop is called.
  const int wake_write_fd_;
  const int bound_port_;
  const absl::flat_hash_map<std::string, HttpHandler> routes_;

  std::atomic<bool> stopping_{false};
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<int> pending_ ABSL_GUARDED_BY(mu_);  // Accepted, not yet handled connections.

  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread accept_thread_;
  std::vector<std::thread> workers_;
};

}  // namespace vitserve

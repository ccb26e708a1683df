#include "server/metrics/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/thread_name.h"

namespace vitserve {
namespace {

constexpr int kNumWorkers = 8;  // Slow clients each hold one for up to 2 * kIoTimeout.
constexpr size_t kMaxPending = 64;
constexpr size_t kMaxRequestHead = 16 * 1024;
constexpr absl::Duration kIoTimeout = absl::Seconds(10);
constexpr absl::Duration kLinger = absl::Milliseconds(500);
constexpr size_t kMaxLingerBytes = 1 << 20;

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

HttpResponse TextResponse(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

absl::Status ErrnoStatus(int error, const std::string& what) {
  return absl::ErrnoToStatus(error, what);
}

int RemainingMs(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    int port, absl::flat_hash_map<std::string, HttpHandler> routes, const std::string& address) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP port must be in [0, 65535], got ", port));
  }
  in_addr listen_address{};
  if (::inet_pton(AF_INET, address.c_str(), &listen_address) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP address must be a dotted IPv4 address such as 0.0.0.0 or 127.0.0.1, got '",
        address, "'"));
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr = listen_address;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoStatus(error, absl::StrCat("cannot listen for HTTP on ", address, ":", port));
  }
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoStatus(error, "getsockname");
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoStatus(error, "pipe2");
  }
  std::unique_ptr<HttpServer> server(
      new HttpServer(fd, pipe_fds[0], pipe_fds[1], ntohs(addr.sin_port), std::move(routes)));
  server->accept_thread_ = std::thread([s = server.get()] {
    SetCurrentThreadName("http-accept");
    s->AcceptLoop();
  });
  for (int i = 0; i < kNumWorkers; ++i) {
    server->workers_.emplace_back([s = server.get()] {
      SetCurrentThreadName("http-worker");
      s->WorkerLoop();
    });
  }
  return server;
}

HttpServer::HttpServer(int listen_fd, int wake_read_fd, int wake_write_fd, int bound_port,
                       absl::flat_hash_map<std::string, HttpHandler> routes)
    : listen_fd_(listen_fd),
      wake_read_fd_(wake_read_fd),
      wake_write_fd_(wake_write_fd),
      bound_port_(bound_port),
      routes_(std::move(routes)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  if (stopped_) return;
  stopping_ = true;
  const char byte = 0;
  while (::write(wake_write_fd_, &byte, 1) < 0 && errno == EINTR) {
  }
  {
    absl::MutexLock lock(&mu_);
    cv_.SignalAll();
  }
  accept_thread_.join();
  for (std::thread& worker : workers_) worker.join();
  {
    absl::MutexLock lock(&mu_);
    for (int fd : pending_) ::close(fd);
    pending_.clear();
  }
  ::close(listen_fd_);
  ::close(wake_read_fd_);
  ::close(wake_write_fd_);
  stopped_ = true;
}

bool HttpServer::WaitFor(int fd, short events, int timeout_ms) {
  pollfd fds[2] = {{fd, events, 0}, {wake_read_fd_, POLLIN, 0}};
  while (true) {
    const int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;  // Rare; the timeout restarts, which is harmless.
    if (n <= 0 || fds[1].revents != 0 || stopping_) return false;
    return fds[0].revents != 0;  // Ready, or an error/hang-up the next call will report.
  }
}

void HttpServer::AcceptLoop() {
  while (!stopping_) {
    if (!WaitFor(listen_fd_, POLLIN, /*timeout_ms=*/1000)) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      // EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning on the ready socket.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        WaitFor(wake_read_fd_, POLLIN, /*timeout_ms=*/100);
      }
      continue;
    }
    absl::MutexLock lock(&mu_);
    if (pending_.size() >= kMaxPending) {
      ::close(fd);  // Overloaded: shed the connection rather than queue without bound.
      continue;
    }
    pending_.push_back(fd);
    cv_.Signal();
  }
}

void HttpServer::WorkerLoop() {
  while (true) {
    int fd;
    {
      absl::MutexLock lock(&mu_);
      while (pending_.empty() && !stopping_) cv_.Wait(&mu_);
      if (stopping_) return;
      fd = pending_.front();
      pending_.pop_front();
    }
    HandleConnection(fd);
    ::close(fd);
  }
}

void HttpServer::HandleConnection(int fd) {
  const absl::Time deadline = absl::Now() + kIoTimeout;
  std::string head;
  HttpResponse response;
  bool is_head = false;
  bool complete = false;
  char buffer[4096];
  while (!complete) {
    if (!WaitFor(fd, POLLIN, RemainingMs(deadline))) {
      if (stopping_) return;
      response = TextResponse(408, "timed out reading the request\n");
      break;
    }
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return;  // Closed or failed before a full request: nobody to answer.
    head.append(buffer, n);
    const size_t end = std::min(head.find("\r\n\r\n"), head.find("\n\n"));
    if (end == std::string::npos ? head.size() > kMaxRequestHead : end > kMaxRequestHead) {
      response = TextResponse(431, "request line and headers exceed 16 KiB\n");
      break;
    }
    complete = end != std::string::npos;
  }
  if (complete) response = Route(head, &is_head);

  std::string out =
      absl::StrCat("HTTP/1.1 ", response.status, " ", Reason(response.status),
                   "\r\nContent-Type: ", response.content_type,
                   "\r\nContent-Length: ", response.body.size(), "\r\nConnection: close\r\n");
  if (response.status == 405) out += "Allow: GET, HEAD\r\n";
  out += "\r\n";
  if (!is_head) out += response.body;

  size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!WaitFor(fd, POLLOUT, RemainingMs(deadline + kIoTimeout))) return;
    } else {
      return;
    }
  }
  // Lingering close: read what the client still sends (e.g. the rest of an oversized request)
  // until it closes, briefly, so that closing with unread data does not reset the connection
  // and destroy the response before the client has read it.
  ::shutdown(fd, SHUT_WR);
  const absl::Time linger_deadline = absl::Now() + kLinger;
  size_t drained = 0;
  while (drained < kMaxLingerBytes && WaitFor(fd, POLLIN, RemainingMs(linger_deadline))) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) break;
    drained += n;
  }
}

HttpResponse HttpServer::Route(const std::string& request_head, bool* is_head) {
  // Request line: METHOD SP request-target SP HTTP-version.
  const std::string line = request_head.substr(0, request_head.find_first_of("\r\n"));
  const size_t first_space = line.find(' ');
  const size_t second_space =
      first_space == std::string::npos ? std::string::npos : line.find(' ', first_space + 1);
  if (second_space == std::string::npos || line.compare(second_space + 1, 5, "HTTP/") != 0) {
    return TextResponse(400, "malformed request line\n");
  }
  const std::string method = line.substr(0, first_space);
  std::string path = line.substr(first_space + 1, second_space - first_space - 1);
  path = path.substr(0, path.find_first_of("?#"));

  const auto route = routes_.find(path);
  if (route == routes_.end()) return TextResponse(404, absl::StrCat("no route ", path, "\n"));
  if (method != "GET" && method != "HEAD") {
    return TextResponse(405, absl::StrCat("method ", method, " not allowed; use GET or HEAD\n"));
  }
  *is_head = method == "HEAD";
  try {
    return route->second();
  } catch (const std::exception& e) {
    return TextResponse(500, absl::StrCat("handler failed: ", e.what(), "\n"));
  } catch (...) {
    return TextResponse(500, "handler failed\n");
  }
}

}  // namespace vitserve

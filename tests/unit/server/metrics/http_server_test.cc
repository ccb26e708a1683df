#include "server/metrics/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A client socket connected to `ip` (host order), or -1 when the connection was refused.
int TryConnect(int port, uint32_t ip) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(ip);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A connected client socket (blocking, with a 30 s receive timeout as a safety net).
int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Sends `request` and returns everything the server sends until it closes the connection.
std::string Exchange(int port, const std::string& request) {
  const int fd = Connect(port);
  EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  ::close(fd);
  return response;
}

std::string Get(int port, const std::string& path, const std::string& method = "GET") {
  return Exchange(port, absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: localhost\r\n\r\n"));
}

absl::flat_hash_map<std::string, HttpHandler> TestRoutes() {
  absl::flat_hash_map<std::string, HttpHandler> routes;
  routes["/metrics"] = [] {
    HttpResponse response;
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = "vitserve_up 1\n";
    return response;
  };
  routes["/v2/health/ready"] = [] { return HttpResponse{503, "text/plain", "not ready\n"}; };
  routes["/throws"] = []() -> HttpResponse { throw std::runtime_error("boom"); };
  return routes;
}

TEST(HttpServerTest, ServesARouteOnAnEphemeralPort) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->bound_port();
  ASSERT_GT(port, 0);
  const std::string response = Get(port, "/metrics");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Length: 14\r\n"));
  EXPECT_THAT(response, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(response, EndsWith("\r\n\r\nvitserve_up 1\n"));
  EXPECT_THAT(Get(port, "/metrics?debug=1"), StartsWith("HTTP/1.1 200 OK\r\n"));
}

// --http-address: the server listens on the address given only (127.0.0.2 is loopback too, but
// not 127.0.0.1), and refuses one that is not an IPv4 address.
TEST(HttpServerTest, ListensOnTheGivenAddressOnly) {
  auto server = HttpServer::Start(0, TestRoutes(), "127.0.0.2");
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->bound_port();
  const int there = TryConnect(port, 0x7f000002);
  EXPECT_GE(there, 0);
  if (there >= 0) ::close(there);
  EXPECT_EQ(TryConnect(port, INADDR_LOOPBACK), -1);
  auto bad = HttpServer::Start(0, TestRoutes(), "localhost");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("IPv4"));
}

TEST(HttpServerTest, HeadSendsHeadersOnly) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok());
  const std::string response = Get((*server)->bound_port(), "/metrics", "HEAD");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Length: 14\r\n"));
  EXPECT_THAT(response, EndsWith("\r\n\r\n"));
}

TEST(HttpServerTest, UnknownPathIs404) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok());
  EXPECT_THAT(Get((*server)->bound_port(), "/nope"), StartsWith("HTTP/1.1 404 Not Found\r\n"));
}

TEST(HttpServerTest, OtherMethodsAre405) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok());
  for (const char* method : {"POST", "PUT", "DELETE"}) {
    const std::string response = Get((*server)->bound_port(), "/metrics", method);
    EXPECT_THAT(response, StartsWith("HTTP/1.1 405 Method Not Allowed\r\n")) << method;
    EXPECT_THAT(response, HasSubstr("Allow: GET, HEAD\r\n"));
  }
}

TEST(HttpServerTest, PassesHandlerStatusAndCatchesExceptions) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok());
  const int port = (*server)->bound_port();
  EXPECT_THAT(Get(port, "/v2/health/ready"), StartsWith("HTTP/1.1 503 Service Unavailable\r\n"));
  const std::string response = Get(port, "/throws");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 500 Internal Server Error\r\n"));
  EXPECT_THAT(response, HasSubstr("boom"));
}

TEST(HttpServerTest, RejectsMalformedAndOversizedRequests) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok());
  const int port = (*server)->bound_port();
  EXPECT_THAT(Exchange(port, "hello\r\n\r\n"), StartsWith("HTTP/1.1 400 Bad Request\r\n"));
  const std::string huge =
      absl::StrCat("GET /metrics HTTP/1.1\r\nX-Filler: ", std::string(20000, 'a'), "\r\n\r\n");
  EXPECT_THAT(Exchange(port, huge), StartsWith("HTTP/1.1 431 "));
}

TEST(HttpServerTest, ServesConcurrentClients) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok());
  const int port = (*server)->bound_port();
  // An idle client holds one connection thread; the others must still be served.
  const int idle = Connect(port);
  std::vector<std::thread> clients;
  std::vector<std::string> responses(16);
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&, i] { responses[i] = Get(port, "/metrics"); });
  }
  for (std::thread& t : clients) t.join();
  for (const std::string& r : responses) EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  ::close(idle);
}

TEST(HttpServerTest, StopIsPromptWithSlowClients) {
  auto server = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(server.ok());
  const int port = (*server)->bound_port();
  // Clients that connect and send part of a request, then nothing: the read timeout is 10 s.
  std::vector<int> slow;
  for (int i = 0; i < 6; ++i) {
    slow.push_back(Connect(port));
    ::send(slow.back(), "GET /met", 8, MSG_NOSIGNAL);
  }
  const absl::Time start = absl::Now();
  (*server)->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  (*server)->Stop();  // Idempotent.
  for (int fd : slow) ::close(fd);
  // The port is closed now.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_NE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
}

TEST(HttpServerTest, ReportsBindFailuresAndBadPorts) {
  auto first = HttpServer::Start(0, TestRoutes());
  ASSERT_TRUE(first.ok());
  auto second = HttpServer::Start((*first)->bound_port(), TestRoutes());
  EXPECT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr("cannot listen"));
  EXPECT_EQ(HttpServer::Start(70000, TestRoutes()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve

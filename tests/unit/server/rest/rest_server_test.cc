// RestServer's start and stop: ports held by another listener, and a stop that follows the start
// at once (as when a later port of the server fails to bind).
#include "server/rest/rest_server.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

// No requests reach these servers, so they need neither models nor a pool.
absl::StatusOr<std::unique_ptr<RestServer>> StartOn(int port, bool reuse_port = false) {
  RestOptions options;
  options.address = "127.0.0.1";
  options.port = port;
  options.threads = 2;
  options.reuse_port = reuse_port;
  return RestServer::Start(std::move(options), /*manager=*/nullptr, /*pool=*/nullptr,
                           [] { return true; });
}

TEST(RestServerTest, StopRightAfterStartReturns) {
  // cpp-httplib's stop() does nothing until its listening thread has started; a Stop() that came
  // first left that thread accepting and the join waiting for it forever. Many rounds, so that
  // some Stop() lands before the thread runs. A hang here fails the test by its CTest timeout.
  for (int round = 0; round < 300; ++round) {
    absl::StatusOr<std::unique_ptr<RestServer>> rest = StartOn(0);
    ASSERT_TRUE(rest.ok()) << rest.status();
    (*rest)->Stop();
  }
}

TEST(RestServerTest, PortOfAnotherListenerIsRefused) {
  absl::StatusOr<std::unique_ptr<RestServer>> first = StartOn(0);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<RestServer>> second = StartOn((*first)->bound_port());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("cannot listen"));
}

TEST(RestServerTest, PortIsSharedOnlyWhenBothListenersAskForIt) {
  absl::StatusOr<std::unique_ptr<RestServer>> first = StartOn(0, /*reuse_port=*/true);
  ASSERT_TRUE(first.ok()) << first.status();
  const int port = (*first)->bound_port();
  absl::StatusOr<std::unique_ptr<RestServer>> sharing = StartOn(port, /*reuse_port=*/true);
  EXPECT_TRUE(sharing.ok()) << sharing.status();
  EXPECT_FALSE(StartOn(port, /*reuse_port=*/false).ok());
}

TEST(RestServerTest, PortIsFreeAgainAfterStop) {
  absl::StatusOr<std::unique_ptr<RestServer>> first = StartOn(0);
  ASSERT_TRUE(first.ok()) << first.status();
  const int port = (*first)->bound_port();
  (*first)->Stop();
  absl::StatusOr<std::unique_ptr<RestServer>> again = StartOn(port);
  EXPECT_TRUE(again.ok()) << again.status();
}

}  // namespace
}  // namespace vitserve

#include "client/grpc_status.h"

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

TEST(GrpcStatusTest, KeepsCodeAndMessage) {
  absl::Status s = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "image 0: not a JPEG"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "image 0: not a JPEG");
  EXPECT_EQ(FormatStatus(s), "INVALID_ARGUMENT: image 0: not a JPEG");
}

TEST(GrpcStatusTest, MapsEveryCanonicalCode) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status s = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "m"));
    EXPECT_EQ(static_cast<int>(s.code()), code);
  }
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_EQ(StatusCodeName(absl::StatusCode::kResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(FormatStatus(absl::OkStatus()), "OK");
}

TEST(GrpcStatusTest, UnknownCodeBecomesUnknown) {
  absl::Status s = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "odd");
}

}  // namespace
}  // namespace vitserve::client

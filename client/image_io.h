// Builds v1::Image messages for requests: encoded files read from disk as bytes (the server
// decodes them; the client never decodes), and synthetic raw RGB8 images for load tests.
// Stateless and thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve::client {

// Largest image file read (the server refuses larger requests anyway).
inline constexpr int64_t kMaxImageFileBytes = 64 * 1024 * 1024;

// The file's bytes in Image.encoded. NOT_FOUND when it does not exist, INVALID_ARGUMENT when it
// is empty, a directory or larger than kMaxImageFileBytes, UNKNOWN on other read errors.
absl::StatusOr<v1::Image> ReadImageFile(const std::string& path);

// A width x height RGB8 image in Image.raw with a deterministic pattern (from `seed`), so load
// tests need no image file. INVALID_ARGUMENT for a zero or huge size.
absl::StatusOr<v1::Image> SyntheticRawImage(uint32_t width, uint32_t height, uint32_t seed = 0);

}  // namespace vitserve::client

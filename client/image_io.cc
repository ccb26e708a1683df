#include "client/image_io.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace vitserve::client {

absl::StatusOr<v1::Image> ReadImageFile(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat("cannot read image '", path, "': no such file"));
  }
  if (!fs::is_regular_file(st)) {
    return absl::InvalidArgumentError(absl::StrCat("image '", path, "' is not a regular file"));
  }
  const auto size = fs::file_size(path, ec);
  if (ec) {
    return absl::UnknownError(absl::StrCat("cannot stat image '", path, "': ", ec.message()));
  }
  if (size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("image '", path, "' is empty"));
  }
  if (static_cast<int64_t>(size) > kMaxImageFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("image '", path, "' has ", size,
                                                   " bytes; at most ", kMaxImageFileBytes,
                                                   " are allowed"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::UnknownError(
        absl::StrCat("cannot open image '", path, "': ", std::strerror(errno)));
  }
  v1::Image image;
  std::string* bytes = image.mutable_encoded();
  bytes->resize(size);
  in.read(bytes->data(), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(in.gcount()) != size) {
    return absl::UnknownError(absl::StrCat("short read of image '", path, "'"));
  }
  return image;
}

absl::StatusOr<v1::Image> SyntheticRawImage(uint32_t width, uint32_t height, uint32_t seed) {
  constexpr uint32_t kMaxSide = 16384;
  if (width == 0 || height == 0 || width > kMaxSide || height > kMaxSide) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic image size ", width, "x", height,
                                                   " must be within 1..", kMaxSide));
  }
  v1::Image image;
  v1::RawImage* raw = image.mutable_raw();
  raw->set_width(width);
  raw->set_height(height);
  std::string* rgb = raw->mutable_rgb8();
  rgb->resize(static_cast<size_t>(width) * height * 3);
  // Smooth gradients plus a seed-dependent offset: compressible like a photo, not constant.
  size_t i = 0;
  for (uint32_t y = 0; y < height; ++y) {
    for (uint32_t x = 0; x < width; ++x) {
      (*rgb)[i++] = static_cast<char>((x * 255 / width + seed) & 0xff);
      (*rgb)[i++] = static_cast<char>((y * 255 / height + 3 * seed) & 0xff);
      (*rgb)[i++] = static_cast<char>(((x + y) * 127 / (width + height) + 7 * seed) & 0xff);
    }
  }
  return image;
}

}  // namespace vitserve::client

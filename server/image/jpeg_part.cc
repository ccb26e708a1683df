#include "server/image/jpeg_part.h"


#include <algorithm>
#include <cstring>

namespace vitserve {

std::vector<int64_t> JpegPartSizes(const std::vector<EncodedJpeg>& jpegs) {
  size_t longest = 0;
  for (const EncodedJpeg& jpeg : jpegs) longest = std::max(longest, jpeg.bytes.size());
  return {static_cast<int64_t>(jpegs.size()),
          kJpegPartPrefixBytes + static_cast<int64_t>(std::max<size_t>(longest, 1))};
}

void FillJpegPart(const std::vector<EncodedJpeg>& jpegs, at::Tensor& part) {
  const int64_t row_bytes = part.size(1);
  uint8_t* row = part.data_ptr<uint8_t>();
  for (const EncodedJpeg& jpeg : jpegs) {
    const int32_t sizes[2] = {jpeg.width, jpeg.height};
    const int64_t length = static_cast<int64_t>(jpeg.bytes.size());
    std::memcpy(row, sizes, sizeof(sizes));
    std::memcpy(row + sizeof(sizes), &length, sizeof(length));
    std::memcpy(row + kJpegPartPrefixBytes, jpeg.bytes.data(), jpeg.bytes.size());
    std::memset(row + kJpegPartPrefixBytes + length, 0,
                static_cast<size_t>(row_bytes - kJpegPartPrefixBytes - length));
    row += row_bytes;
  }
}

bool IsJpegPart(const at::Tensor& part) {
  return part.defined() && part.dim() == 2 && part.size(0) >= 1 &&
         part.size(1) > kJpegPartPrefixBytes && part.device().is_cpu() &&
         part.scalar_type() == at::kByte && part.is_contiguous();
}

EncodedJpeg JpegInPart(const at::Tensor& part, int64_t row) {
  const int64_t row_bytes = part.size(1);
  const uint8_t* data = part.data_ptr<uint8_t>() + row * row_bytes;
  int32_t sizes[2];
  int64_t length = 0;
  std::memcpy(sizes, data, sizeof(sizes));
  std::memcpy(&length, data + sizeof(sizes), sizeof(length));
  EncodedJpeg jpeg;
  jpeg.width = sizes[0];
  jpeg.height = sizes[1];
  if (length > 0 && length <= row_bytes - kJpegPartPrefixBytes) {
    jpeg.bytes = std::string_view(reinterpret_cast<const char*>(data + kJpegPartPrefixBytes),
                                  static_cast<size_t>(length));
  }
  return jpeg;
}

}  // namespace vitserve

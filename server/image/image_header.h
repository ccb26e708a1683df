// Reads an encoded image's format and dimensions from its first bytes, without decoding, so that
// limits are enforced before any pixel buffer is allocated (decompression bombs fail cleanly).
//
// Supported: JPEG (any SOFn frame), PNG (IHDR), BMP (core and info headers), WebP (VP8, VP8L,
// VP8X). Thread-safety: pure functions.
// Errors: INVALID_ARGUMENT for unknown formats and truncated or malformed headers.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace vitserve {

enum class ImageFormat { kJpeg, kPng, kBmp, kWebp };

// "JPEG", "PNG", "BMP" or "WebP".
const char* ImageFormatName(ImageFormat format);

// The formats DecodeImage accepts, for error messages: "JPEG, PNG, BMP, WebP".
inline constexpr char kSupportedImageFormats[] = "JPEG, PNG, BMP, WebP";

struct ImageHeader {
  ImageFormat format = ImageFormat::kJpeg;
  int64_t width = 0;  // As stored, before any EXIF orientation.
  int64_t height = 0;
  // JPEG only (other formats keep these defaults); what a GPU decoder needs to know before it
  // takes an image (Classify's nvJPEG path):
  // the frame's colour components (1 grey, 3 YCbCr, 4 CMYK or YCCK), 0 when not a JPEG;
  int jpeg_components = 0;
  // a baseline frame (SOF0: sequential, Huffman, 8-bit), which hardware JPEG decoders take;
  bool jpeg_baseline = false;
  // the EXIF orientation (1..8) from an APP1 segment before the frame; 1 when there is none or
  // it cannot be read (decoders then also leave the image as stored).
  int exif_orientation = 1;
};

absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view encoded);

// Checks a JPEG's structure up to its first scan, as libjpeg does before it decodes (its fatal
// errors), for files that go to a GPU decoder which does not check it: nvJPEG decodes a file
// without a scan, or with a scan naming a component its frame lacks, without an error
// (measured on the H200, 2026-12-03). OK when a frame (SOFn) comes before the first scan
// (SOS), the scan's components are the frame's, every quantisation table a frame component
// uses and (in a sequential Huffman file: SOF0, SOF1) every Huffman table a scan component uses
// was defined before the scan (DQT, DHT), and the file ends with the end-of-image marker. INVALID_ARGUMENT naming what is wrong
// otherwise. Damage inside the compressed data is not found (libjpeg too decodes such files,
// with warnings).
absl::Status CheckJpegStructure(std::string_view encoded);

}  // namespace vitserve

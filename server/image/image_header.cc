#include "server/image/image_header.h"

#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace vitserve {
namespace {

uint32_t Byte(std::string_view d, size_t i) { return static_cast<uint8_t>(d[i]); }
uint32_t Be16(std::string_view d, size_t i) { return Byte(d, i) << 8 | Byte(d, i + 1); }
uint32_t Be32(std::string_view d, size_t i) { return Be16(d, i) << 16 | Be16(d, i + 2); }
uint32_t Le16(std::string_view d, size_t i) { return Byte(d, i) | Byte(d, i + 1) << 8; }
uint32_t Le24(std::string_view d, size_t i) { return Le16(d, i) | Byte(d, i + 2) << 16; }
uint32_t Le32(std::string_view d, size_t i) { return Le16(d, i) | Le16(d, i + 2) << 16; }

absl::Status Malformed(ImageFormat format, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed ", ImageFormatName(format), " image: ", what));
}

absl::StatusOr<ImageHeader> Finish(ImageFormat format, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0) {
    return Malformed(format, absl::StrCat("invalid dimensions ", width, "x", height));
  }
  return ImageHeader{format, width, height};
}

// The Orientation tag (0x0112) of an APP1 segment's payload ("Exif\0\0", then a TIFF header
// and its first IFD), or 0 when the payload is not EXIF or has no readable orientation. Every
// offset is checked against the payload, which comes from the request.
int ExifOrientation(std::string_view app1) {
  if (app1.size() < 14 || app1.substr(0, 6) != std::string_view("Exif\0\0", 6)) return 0;
  const std::string_view tiff = app1.substr(6);
  const bool little = tiff.substr(0, 2) == "II";
  if (!little && tiff.substr(0, 2) != "MM") return 0;
  auto u16 = [&](size_t i) { return little ? Le16(tiff, i) : Be16(tiff, i); };
  auto u32 = [&](size_t i) { return little ? Le32(tiff, i) : Be32(tiff, i); };
  if (u16(2) != 42) return 0;
  const size_t ifd = u32(4);
  if (ifd > tiff.size() || tiff.size() - ifd < 2) return 0;
  const size_t entries = u16(ifd);
  for (size_t e = 0; e < entries; ++e) {
    const size_t entry = ifd + 2 + 12 * e;
    if (entry > tiff.size() || tiff.size() - entry < 12) return 0;
    if (u16(entry) == 0x0112 && u16(entry + 2) == 3) {  // Orientation, SHORT.
      const uint32_t value = u16(entry + 8);
      return value >= 1 && value <= 8 ? static_cast<int>(value) : 0;
    }
  }
  return 0;
}

// A start-of-frame marker (SOF0-SOF15, which leave out DHT, JPG and DAC).
bool IsFrameHeader(uint32_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

// Walks a JPEG's markers from just after its start-of-image marker, for the header readers
// below: fill bytes are skipped; a standalone marker (TEM, RSTn, SOI, EOI) comes with an empty
// payload, any other with its segment's payload (after the length field). The entropy-coded
// data after a start-of-scan is not walked: callers stop at the first SOS. Every offset is
// checked against the data, which comes from the request.
class JpegMarkerWalker {
 public:
  explicit JpegMarkerWalker(std::string_view data) : data_(data) {}

  // The next marker and its payload; false at the end of the data; INVALID_ARGUMENT for a
  // byte that is not a marker where one must be, or a segment that runs past the data.
  absl::StatusOr<bool> Next(uint32_t* marker, std::string_view* payload) {
    while (pos_ + 2 <= data_.size()) {
      if (Byte(data_, pos_) != 0xFF) return Malformed(ImageFormat::kJpeg, "bad marker");
      *marker = Byte(data_, pos_ + 1);
      if (*marker == 0xFF) {  // Fill byte.
        ++pos_;
        continue;
      }
      pos_ += 2;
      *payload = {};
      if (*marker == 0x01 || (*marker >= 0xD0 && *marker <= 0xD9)) return true;
      const uint32_t length = pos_ + 2 <= data_.size() ? Be16(data_, pos_) : 0;
      if (length < 2 || pos_ + length > data_.size()) {
        return Malformed(ImageFormat::kJpeg, "a segment runs past the file");
      }
      *payload = data_.substr(pos_ + 2, length - 2);
      pos_ += length;
      return true;
    }
    return false;
  }

 private:
  const std::string_view data_;
  size_t pos_ = 2;
};

absl::StatusOr<ImageHeader> ReadJpeg(std::string_view d) {
  // The marker segments up to the first frame header (SOFn), noting an EXIF orientation.
  int orientation = 1;
  JpegMarkerWalker walker(d);
  uint32_t marker = 0;
  std::string_view segment;
  while (true) {
    VITSERVE_ASSIGN_OR_RETURN(const bool more, walker.Next(&marker, &segment));
    if (!more) return Malformed(ImageFormat::kJpeg, "truncated before the frame header");
    if (marker == 0xD9 || marker == 0xDA) {
      return Malformed(ImageFormat::kJpeg, "no frame header before the image data");
    }
    if (IsFrameHeader(marker)) {
      // Precision, height, width, components.
      if (segment.size() < 5) return Malformed(ImageFormat::kJpeg, "short frame header");
      VITSERVE_ASSIGN_OR_RETURN(ImageHeader header,
                                Finish(ImageFormat::kJpeg, Be16(segment, 3), Be16(segment, 1)));
      header.jpeg_components = segment.size() >= 6 ? static_cast<int>(Byte(segment, 5)) : 0;
      header.jpeg_baseline = marker == 0xC0 && Byte(segment, 0) == 8;
      header.exif_orientation = orientation;
      return header;
    }
    if (marker == 0xE1) {  // APP1: EXIF (or XMP, which ExifOrientation skips).
      const int found = ExifOrientation(segment);
      if (found != 0) orientation = found;
    }
  }
}

absl::StatusOr<ImageHeader> ReadPng(std::string_view d) {
  if (d.size() < 24 || d.substr(12, 4) != "IHDR") {
    return Malformed(ImageFormat::kPng, "missing IHDR chunk");
  }
  return Finish(ImageFormat::kPng, Be32(d, 16), Be32(d, 20));
}

absl::StatusOr<ImageHeader> ReadBmp(std::string_view d) {
  if (d.size() < 26) return Malformed(ImageFormat::kBmp, "truncated header");
  const uint32_t dib_size = Le32(d, 14);
  if (dib_size == 12) {  // BITMAPCOREHEADER: 16-bit unsigned sizes.
    return Finish(ImageFormat::kBmp, Le16(d, 18), Le16(d, 20));
  }
  if (dib_size < 40) return Malformed(ImageFormat::kBmp, "unknown DIB header");
  const int64_t width = static_cast<int32_t>(Le32(d, 18));
  const int64_t height = static_cast<int32_t>(Le32(d, 22));  // Negative: top-down rows.
  return Finish(ImageFormat::kBmp, width, std::llabs(height));
}

absl::StatusOr<ImageHeader> ReadWebp(std::string_view d) {
  if (d.size() < 30) return Malformed(ImageFormat::kWebp, "truncated header");
  const std::string_view chunk = d.substr(12, 4);
  if (chunk == "VP8X") {  // Extended: canvas size, 24-bit minus-one fields.
    return Finish(ImageFormat::kWebp, Le24(d, 24) + 1, Le24(d, 27) + 1);
  }
  if (chunk == "VP8 ") {  // Lossy: key frame start code, then 14-bit sizes.
    if (Byte(d, 23) != 0x9D || Byte(d, 24) != 0x01 || Byte(d, 25) != 0x2A) {
      return Malformed(ImageFormat::kWebp, "bad VP8 start code");
    }
    return Finish(ImageFormat::kWebp, Le16(d, 26) & 0x3FFF, Le16(d, 28) & 0x3FFF);
  }
  if (chunk == "VP8L") {  // Lossless: signature byte, then 14-bit minus-one sizes.
    if (Byte(d, 20) != 0x2F) return Malformed(ImageFormat::kWebp, "bad VP8L signature");
    const uint32_t bits = Le32(d, 21);
    return Finish(ImageFormat::kWebp, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
  }
  return Malformed(ImageFormat::kWebp, "unknown first chunk");
}

}  // namespace

absl::Status CheckJpegStructure(std::string_view d) {
  auto bad = [](const std::string& what) { return Malformed(ImageFormat::kJpeg, what); };
  if (d.size() < 4 || Byte(d, 0) != 0xFF || Byte(d, 1) != 0xD8) return bad("no start-of-image");
  if (Byte(d, d.size() - 2) != 0xFF || Byte(d, d.size() - 1) != 0xD9) {
    return bad("does not end with the end-of-image marker (truncated?)");
  }
  bool quantisation[4] = {};  // By table id.
  bool huffman[2][4] = {};    // [DC 0 / AC 1][table id].
  int frame_components = 0;
  bool huffman_sequential = false;  // SOF0/SOF1: every scan needs its DC and AC tables.
  int component_ids[4] = {};
  int component_quantisation[4] = {};
  JpegMarkerWalker walker(d);
  uint32_t marker = 0;
  std::string_view segment;
  while (true) {
    VITSERVE_ASSIGN_OR_RETURN(const bool more, walker.Next(&marker, &segment));
    if (!more) return bad("no scan");
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // TEM, RSTn.
    if (marker == 0xD8 || marker == 0xD9) return bad("no scan before the end of the image");
    if (marker == 0xDB) {  // DQT: tables of 64 entries, 8- or 16-bit (Pq), id Tq.
      size_t i = 0;
      while (i < segment.size()) {
        const uint32_t pq = Byte(segment, i) >> 4, tq = Byte(segment, i) & 15;
        const size_t table = 1 + 64 * (pq == 0 ? 1 : 2);
        if (pq > 1 || tq > 3 || segment.size() - i < table) return bad("bad quantisation table");
        quantisation[tq] = true;
        i += table;
      }
    } else if (marker == 0xC4) {  // DHT: class Tc, id Th, 16 counts, then the symbols.
      size_t i = 0;
      while (i < segment.size()) {
        if (segment.size() - i < 17) return bad("bad Huffman table");
        const uint32_t tc = Byte(segment, i) >> 4, th = Byte(segment, i) & 15;
        size_t symbols = 0;
        for (size_t k = 1; k <= 16; ++k) symbols += Byte(segment, i + k);
        if (tc > 1 || th > 3 || symbols > 256 || segment.size() - i - 17 < symbols) {
          return bad("bad Huffman table");
        }
        huffman[tc][th] = true;
        i += 17 + symbols;
      }
    } else if (IsFrameHeader(marker)) {
      if (frame_components != 0) return bad("a second frame header");
      if (segment.size() < 6) return bad("short frame header");
      frame_components = static_cast<int>(Byte(segment, 5));
      huffman_sequential = marker == 0xC0 || marker == 0xC1;
      if (frame_components < 1 || frame_components > 4 ||
          segment.size() != 6 + 3 * static_cast<size_t>(frame_components)) {
        return bad("bad frame components");
      }
      for (int c = 0; c < frame_components; ++c) {
        component_ids[c] = static_cast<int>(Byte(segment, 6 + 3 * c));
        component_quantisation[c] = static_cast<int>(Byte(segment, 8 + 3 * c));
        if (component_quantisation[c] > 3) return bad("bad frame components");
      }
    } else if (marker == 0xDA) {  // SOS: the first scan ends the headers.
      if (frame_components == 0) return bad("a scan before the frame header");
      if (segment.empty()) return bad("short scan header");
      const size_t scan_components = Byte(segment, 0);
      if (scan_components < 1 || scan_components > 4 || segment.size() != 4 + 2 * scan_components) {
        return bad("bad scan header");
      }
      for (int c = 0; c < frame_components; ++c) {
        if (!quantisation[component_quantisation[c]]) {
          return bad(absl::StrCat("quantisation table ", component_quantisation[c],
                                  " is used but not defined"));
        }
      }
      for (size_t k = 0; k < scan_components; ++k) {
        const int id = static_cast<int>(Byte(segment, 1 + 2 * k));
        const uint32_t tables = Byte(segment, 2 + 2 * k);
        bool in_frame = false;
        for (int c = 0; c < frame_components; ++c) in_frame |= component_ids[c] == id;
        if (!in_frame) return bad(absl::StrCat("the scan names component ", id, ", not in the frame"));
        if (huffman_sequential && ((tables >> 4) > 3 || (tables & 15) > 3 ||
                                   !huffman[0][tables >> 4] || !huffman[1][tables & 15])) {
          return bad("a Huffman table the scan uses is not defined");
        }
      }
      return absl::OkStatus();
    }
  }
}

const char* ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
  }
  return "unknown";
}

absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view d) {
  if (d.size() >= 3 && Byte(d, 0) == 0xFF && Byte(d, 1) == 0xD8 && Byte(d, 2) == 0xFF) {
    return ReadJpeg(d);
  }
  if (d.size() >= 8 && d.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8)) {
    return ReadPng(d);
  }
  if (d.size() >= 2 && d.substr(0, 2) == "BM") return ReadBmp(d);
  if (d.size() >= 16 && d.substr(0, 4) == "RIFF" && d.substr(8, 4) == "WEBP") {
    return ReadWebp(d);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported or unrecognised image format; supported encodings are ",
                   kSupportedImageFormats, " (or raw RGB8 pixels with width and height)"));
}

}  // namespace vitserve

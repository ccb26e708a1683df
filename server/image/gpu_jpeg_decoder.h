// GpuJpegDecoder: decodes a batch of JPEG files into RGB pixels in GPU memory with nvJPEG, for
// models whose instance preprocesses on the GPU (ModelInstance, image_preprocess.gpu_jpeg_decode).
// Baseline files go to the GPU's hardware JPEG engines in one batched call where the GPU has
// them (NVJPEG_BACKEND_HARDWARE: A100, H100, H200); the others (progressive files, 4:1:1, a GPU
// without the engines, or a batch the engines refused) are decoded one at a time by nvJPEG's
// default backend (Huffman decoding on this thread's CPU, the rest on the GPU).
//
// Built only when CMake found nvJPEG (VITSERVE_WITH_NVJPEG); Create fails otherwise.
// Ownership: owns its nvJPEG handles and states; the output buffers are the caller's.
// Thread-safety: NOT thread-safe: one per model instance, used by its executor thread.
// Errors: Create: UNAVAILABLE without nvJPEG, INTERNAL when nvJPEG cannot start. Decode reports
// the files it could not decode (their pixels are left undefined) rather than failing them all.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/image/jpeg_part.h"

typedef struct CUstream_st* cudaStream_t;

namespace vitserve {

// Whether this build can decode JPEGs on the GPU (found nvJPEG at build time).
bool GpuJpegDecodingBuilt();

class GpuJpegDecoder {
 public:
  // On the current CUDA device.
  static absl::StatusOr<std::unique_ptr<GpuJpegDecoder>> Create();
  ~GpuJpegDecoder();
  GpuJpegDecoder(const GpuJpegDecoder&) = delete;
  GpuJpegDecoder& operator=(const GpuJpegDecoder&) = delete;

  // Decodes jpegs[i] into outputs[i]: width * height * 3 bytes of device memory (interleaved RGB,
  // rows back to back, as the file stores them: no EXIF orientation), in `stream`'s order; the
  // files' bytes (host memory) must stay valid until `stream` has finished the work, and each
  // file's width and height must be its frame's (ReadImageHeader). Returns the indices of the
  // files that failed (empty when all decoded); their outputs are undefined.
  std::vector<size_t> Decode(const std::vector<EncodedJpeg>& jpegs,
                             const std::vector<uint8_t*>& outputs, cudaStream_t stream);

  // Whether the hardware engines are in use (false: every file takes the default backend).
  bool hardware() const;
  // Files decoded by each backend so far (for tests and logs).
  int64_t hardware_decoded() const { return hardware_decoded_; }
  int64_t default_decoded() const { return default_decoded_; }

 private:
  struct Handles;
  explicit GpuJpegDecoder(std::unique_ptr<Handles> handles);

  std::unique_ptr<Handles> handles_;
  int64_t hardware_decoded_ = 0;
  int64_t default_decoded_ = 0;
};

}  // namespace vitserve

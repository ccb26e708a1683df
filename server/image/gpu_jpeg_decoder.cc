#include "server/image/gpu_jpeg_decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"

#ifdef VITSERVE_WITH_NVJPEG
#include <cuda_runtime_api.h>
#include <nvjpeg.h>
#endif

namespace vitserve {

#ifdef VITSERVE_WITH_NVJPEG

namespace {

const char* NvjpegStatusName(nvjpegStatus_t status) {
  switch (status) {
    case NVJPEG_STATUS_SUCCESS: return "success";
    case NVJPEG_STATUS_NOT_INITIALIZED: return "not initialised";
    case NVJPEG_STATUS_INVALID_PARAMETER: return "invalid parameter";
    case NVJPEG_STATUS_BAD_JPEG: return "bad JPEG";
    case NVJPEG_STATUS_JPEG_NOT_SUPPORTED: return "JPEG not supported";
    case NVJPEG_STATUS_ALLOCATOR_FAILURE: return "allocator failure";
    case NVJPEG_STATUS_EXECUTION_FAILED: return "execution failed";
    case NVJPEG_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case NVJPEG_STATUS_INTERNAL_ERROR: return "internal error";
    case NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED: return "implementation not supported";
    case NVJPEG_STATUS_INCOMPLETE_BITSTREAM: return "incomplete bitstream";
  }
  return "unknown status";
}

}  // namespace

struct GpuJpegDecoder::Handles {
  // The default backend: every file the hardware path does not take.
  nvjpegHandle_t handle = nullptr;
  nvjpegJpegState_t state = nullptr;
  // The hardware engines (null where the GPU has none), a state for their batched decode and a
  // stream object to parse headers with (to ask whether the engines take a file).
  nvjpegHandle_t hardware = nullptr;
  nvjpegJpegState_t hardware_state = nullptr;
  nvjpegJpegStream_t hardware_stream = nullptr;

  ~Handles() {
    if (hardware_stream != nullptr) nvjpegJpegStreamDestroy(hardware_stream);
    if (hardware_state != nullptr) nvjpegJpegStateDestroy(hardware_state);
    if (hardware != nullptr) nvjpegDestroy(hardware);
    if (state != nullptr) nvjpegJpegStateDestroy(state);
    if (handle != nullptr) nvjpegDestroy(handle);
  }
};

bool GpuJpegDecodingBuilt() { return true; }

absl::StatusOr<std::unique_ptr<GpuJpegDecoder>> GpuJpegDecoder::Create() {
  auto handles = std::make_unique<Handles>();
  nvjpegStatus_t status =
      nvjpegCreateEx(NVJPEG_BACKEND_DEFAULT, nullptr, nullptr, 0, &handles->handle);
  if (status == NVJPEG_STATUS_SUCCESS) status = nvjpegJpegStateCreate(handles->handle, &handles->state);
  if (status != NVJPEG_STATUS_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("nvJPEG could not start: ", NvjpegStatusName(status)));
  }
  // The hardware backend is optional: GPUs without JPEG engines refuse to create it.
  if (nvjpegCreateEx(NVJPEG_BACKEND_HARDWARE, nullptr, nullptr, 0, &handles->hardware) ==
          NVJPEG_STATUS_SUCCESS &&
      nvjpegJpegStateCreate(handles->hardware, &handles->hardware_state) ==
          NVJPEG_STATUS_SUCCESS &&
      nvjpegJpegStreamCreate(handles->hardware, &handles->hardware_stream) ==
          NVJPEG_STATUS_SUCCESS) {
    return std::unique_ptr<GpuJpegDecoder>(new GpuJpegDecoder(std::move(handles)));
  }
  if (handles->hardware_stream != nullptr) nvjpegJpegStreamDestroy(handles->hardware_stream);
  if (handles->hardware_state != nullptr) nvjpegJpegStateDestroy(handles->hardware_state);
  if (handles->hardware != nullptr) nvjpegDestroy(handles->hardware);
  handles->hardware_stream = nullptr;
  handles->hardware_state = nullptr;
  handles->hardware = nullptr;
  return std::unique_ptr<GpuJpegDecoder>(new GpuJpegDecoder(std::move(handles)));
}

bool GpuJpegDecoder::hardware() const { return handles_->hardware != nullptr; }

std::vector<size_t> GpuJpegDecoder::Decode(const std::vector<EncodedJpeg>& jpegs,
                                           const std::vector<uint8_t*>& outputs,
                                           cudaStream_t stream) {
  auto data = [&](size_t i) {
    return reinterpret_cast<const unsigned char*>(jpegs[i].bytes.data());
  };
  auto destination = [&](size_t i) {
    nvjpegImage_t image{};
    image.channel[0] = outputs[i];
    image.pitch[0] = static_cast<size_t>(jpegs[i].width) * 3;
    return image;
  };
  std::vector<size_t> for_default;
  std::vector<size_t> for_hardware;
  Handles& h = *handles_;
  for (size_t i = 0; i < jpegs.size(); ++i) {
    int unsupported = 1;  // nvJPEG's convention: 0 means the engines take the file.
    if (h.hardware != nullptr &&
        nvjpegJpegStreamParseHeader(h.hardware, data(i), jpegs[i].bytes.size(), h.hardware_stream) ==
            NVJPEG_STATUS_SUCCESS &&
        nvjpegDecodeBatchedSupported(h.hardware, h.hardware_stream, &unsupported) ==
            NVJPEG_STATUS_SUCCESS &&
        unsupported == 0) {
      for_hardware.push_back(i);
    } else {
      for_default.push_back(i);
    }
  }
  if (!for_hardware.empty()) {
    std::vector<const unsigned char*> pointers;
    std::vector<size_t> lengths;
    std::vector<nvjpegImage_t> images;
    for (size_t i : for_hardware) {
      pointers.push_back(data(i));
      lengths.push_back(jpegs[i].bytes.size());
      images.push_back(destination(i));
    }
    // One batched call for all of them; if the engines refuse the batch (a file whose header
    // parsed but whose data is bad), each file gets its own chance below.
    const bool decoded =
        nvjpegDecodeBatchedInitialize(h.hardware, h.hardware_state,
                                      static_cast<int>(for_hardware.size()), 1,
                                      NVJPEG_OUTPUT_RGBI) == NVJPEG_STATUS_SUCCESS &&
        nvjpegDecodeBatched(h.hardware, h.hardware_state, pointers.data(), lengths.data(),
                            images.data(), stream) == NVJPEG_STATUS_SUCCESS;
    if (decoded) {
      hardware_decoded_ += static_cast<int64_t>(for_hardware.size());
    } else {
      for_default.insert(for_default.end(), for_hardware.begin(), for_hardware.end());
    }
  }
  std::vector<size_t> failed;
  for (size_t i : for_default) {
    nvjpegImage_t image = destination(i);
    if (nvjpegDecode(h.handle, h.state, data(i), jpegs[i].bytes.size(), NVJPEG_OUTPUT_RGBI, &image,
                     stream) == NVJPEG_STATUS_SUCCESS) {
      ++default_decoded_;
    } else {
      failed.push_back(i);
    }
  }
  return failed;
}

#else  // !VITSERVE_WITH_NVJPEG

struct GpuJpegDecoder::Handles {};

bool GpuJpegDecodingBuilt() { return false; }

absl::StatusOr<std::unique_ptr<GpuJpegDecoder>> GpuJpegDecoder::Create() {
  return absl::UnavailableError(
      "this build of vitserve has no nvJPEG (GPU JPEG decoding): CMake did not find nvjpeg.h "
      "and libnvjpeg (the CUDA toolkit's, or PyPI's nvidia-nvjpeg)");
}

bool GpuJpegDecoder::hardware() const { return false; }

std::vector<size_t> GpuJpegDecoder::Decode(const std::vector<EncodedJpeg>& jpegs,
                                           const std::vector<uint8_t*>&, cudaStream_t) {
  std::vector<size_t> failed(jpegs.size());
  for (size_t i = 0; i < failed.size(); ++i) failed[i] = i;
  return failed;
}

#endif  // VITSERVE_WITH_NVJPEG

GpuJpegDecoder::GpuJpegDecoder(std::unique_ptr<Handles> handles) : handles_(std::move(handles)) {}
GpuJpegDecoder::~GpuJpegDecoder() = default;

}  // namespace vitserve

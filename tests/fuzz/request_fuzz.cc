// libFuzzer target: request validation on its way into a batch, the steps every request takes
// before the batcher, fed serialised protobuf requests:
//   first byte % 3 == 0: a vitserve.v1.ClassifyRequest through ValidateClassifyRequest and
//     DecodeAndPreprocess (CPU rows, or uint8 pixels for device preprocessing), and the same
//     bytes through the raw Classify method's reader (ReadDeferredClassifyRequest), which must
//     agree with protobuf and DecodeAndPreprocess wherever it reads a request;
//   == 1: its images through DecodeAndPreprocessWhole (detection and segmentation), letterboxed
//     or stretched;
//   == 2: a KServe inference.ModelInferRequest through ParseInferInput and
//     ValidateRequestedOutputs, and the same bytes through the raw ModelInfer method's reader
//     (ReadDeferredInferRequest), which must agree with protobuf and ParseInferInput wherever it
//     reads a request.
// The second byte picks the options. Each must return a batch of the promised shape or an
// error, never crash, overrun or leak; small limits keep each input fast (and are under test).
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "inference/grpc_service.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/api/classify.h"
#include "server/api/deferred_classify.h"
#include "server/api/deferred_infer.h"
#include "server/api/image_input.h"
#include "server/api/kserve_tensor.h"
#include "server/image/image_header.h"
#include "server/image/jpeg_part.h"
#include "vitserve/v1/vision.pb.h"

namespace {

constexpr int64_t kInputSize = 16;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

vitserve::ImageLimits SmallLimits() {
  vitserve::ImageLimits limits;
  limits.max_encoded_bytes = 1 << 16;
  limits.max_pixels = 1 << 16;
  limits.max_side = 1024;
  limits.max_images_per_request = 8;
  return limits;
}

vitserve::PreprocessSpec Spec(uint8_t options) {
  vitserve::PreprocessSpec spec;
  spec.input_size = kInputSize;
  spec.on_device = (options & 1) != 0;
  spec.jpeg_dct_downscale = (options & 2) != 0;
  spec.gpu_jpeg_decode = (options & 16) != 0;  // JPEG parts (the GPU decodes them later).
  spec.interpolation =
      (options & 4) != 0 ? vitserve::Interpolation::kBilinear : vitserve::Interpolation::kBicubic;
  return spec;
}

// The raw Classify method's reader on the same bytes, in two slices cut where `options` says:
// whatever it reads protobuf parses (`parsed` says whether it did) to the same fields and
// pixels, and where it takes the pixels its input and errors are DecodeAndPreprocess's.
void DeferredClassify(const uint8_t* data, size_t size, uint8_t options, bool parsed,
                      const vitserve::v1::ClassifyRequest& request) {
  const size_t cut = size * options / 256;
  grpc::Slice slices[2] = {grpc::Slice(data, cut), grpc::Slice(data + cut, size - cut)};
  const grpc::ByteBuffer buffer(slices, 2);
  std::optional<vitserve::DeferredClassifyRequest> deferred =
      vitserve::ReadDeferredClassifyRequest(buffer);
  if (!deferred.has_value()) return;
  Check(parsed);
  const vitserve::v1::ClassifyRequest& fields = deferred->request;
  Check(fields.model() == request.model() && fields.top_k() == request.top_k() &&
        fields.request_id() == request.request_id() &&
        fields.images_size() == request.images_size() &&
        deferred->pixels.size() == static_cast<size_t>(request.images_size()));
  for (int i = 0; i < request.images_size(); ++i) {
    const vitserve::v1::Image& image = request.images(i);
    const vitserve::ByteRange& range = deferred->pixels[static_cast<size_t>(i)];
    Check(image.has_raw() && image.raw().width() == fields.images(i).raw().width() &&
          image.raw().height() == fields.images(i).raw().height() &&
          fields.images(i).raw().rgb8().empty() && range.offset + range.size <= size &&
          image.raw().rgb8().size() == range.size &&
          std::memcmp(image.raw().rgb8().data(), data + range.offset, range.size) == 0);
  }
  const vitserve::PreprocessSpec spec = Spec(options);
  if (!vitserve::TakesDeferredPixels(*deferred, spec)) return;
  absl::StatusOr<at::Tensor> ours =
      vitserve::DeferredPixelsInput(*deferred, buffer, SmallLimits(), spec);
  absl::StatusOr<at::Tensor> theirs =
      vitserve::DecodeAndPreprocess(request.images(), SmallLimits(), spec);
  Check(ours.status() == theirs.status());
  if (ours.ok()) Check(at::equal(*ours, *theirs));
}

void Classify(const uint8_t* data, size_t size, uint8_t options) {
  vitserve::v1::ClassifyRequest request;
  const bool parsed = request.ParseFromArray(data, static_cast<int>(size));
  DeferredClassify(data, size, options, parsed, request);
  if (!parsed) return;
  absl::StatusOr<int64_t> top_k = vitserve::ValidateClassifyRequest(
      request, "m", vitserve::ModelTask::kClassification, 10, 5);
  if (!top_k.ok()) return;
  Check(*top_k >= 1 && *top_k <= 10);
  absl::StatusOr<at::Tensor> batch =
      vitserve::DecodeAndPreprocess(request.images(), SmallLimits(), Spec(options));
  if (!batch.ok()) return;
  if (vitserve::IsJpegPart(*batch)) {  // Files for the GPU decoder, each well formed and whole.
    Check((options & 17) == 17 && batch->size(0) == request.images_size());
    for (int i = 0; i < request.images_size(); ++i) {
      const vitserve::EncodedJpeg jpeg = vitserve::JpegInPart(*batch, i);
      Check(jpeg.bytes == request.images(i).encoded());
      Check(vitserve::CheckJpegStructure(jpeg.bytes).ok());
    }
    return;
  }
  Check(batch->dim() == 4 && batch->size(0) == request.images_size());
  if (batch->scalar_type() == at::kByte) {  // Pixels for the device: [N,H,W,3].
    Check((options & 1) != 0 && batch->size(3) == 3);
  } else {
    Check(batch->scalar_type() == at::kFloat && batch->size(1) == 3 &&
          batch->size(2) == kInputSize && batch->size(3) == kInputSize);
    Check(at::isfinite(*batch).all().item<bool>());
  }
}

void Dense(const uint8_t* data, size_t size, uint8_t options) {
  vitserve::v1::DetectRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size)) || request.images().empty()) return;
  const vitserve::ResizeMode mode = (options & 8) != 0 ? vitserve::ResizeMode::kStretch
                                                       : vitserve::ResizeMode::kLetterbox;
  vitserve::PreprocessSpec spec = Spec(options);
  spec.on_device = false;
  absl::StatusOr<vitserve::WholeImageBatch> batch =
      vitserve::DecodeAndPreprocessWhole(request.images(), SmallLimits(), spec, mode);
  if (!batch.ok()) return;
  Check(batch->input.sizes() == at::IntArrayRef({request.images_size(), 3, kInputSize,
                                                 kInputSize}));
  Check(static_cast<int>(batch->geometries.size()) == request.images_size());
  Check(at::isfinite(batch->input).all().item<bool>());
}

// The raw ModelInfer method's reader on the same bytes, in two slices cut where `options` says:
// whatever it reads protobuf parses (`parsed` says whether it did), to the same message once the
// raw contents are copied back from the buffer, and ParseInferInput takes those contents from
// the buffer with the same result (input or error) as from the message.
void DeferredInfer(const uint8_t* data, size_t size, uint8_t options, bool parsed,
                   const inference::ModelInferRequest& request,
                   const vitserve::InferInputSpec& spec) {
  const size_t cut = size * options / 256;
  grpc::Slice slices[2] = {grpc::Slice(data, cut), grpc::Slice(data + cut, size - cut)};
  const grpc::ByteBuffer buffer(slices, 2);
  std::optional<vitserve::DeferredInferRequest> deferred =
      vitserve::ReadDeferredInferRequest(buffer);
  if (!deferred.has_value()) return;
  Check(parsed && deferred->request.raw_input_contents().empty());
  inference::ModelInferRequest rebuilt = deferred->request;
  const vitserve::ExternalRawInputs external = vitserve::RawInputsOf(*deferred, &buffer);
  Check(external.sizes.size() == deferred->raw_inputs.size());
  for (size_t i = 0; i < deferred->raw_inputs.size(); ++i) {
    const vitserve::ByteRange& range = deferred->raw_inputs[i];
    Check(range.offset + range.size <= size && external.sizes[i] == range.size);
    std::string bytes(range.size, '\0');
    Check(external.copy(i, reinterpret_cast<uint8_t*>(bytes.data())).ok());
    rebuilt.add_raw_input_contents(std::move(bytes));
  }
  Check(google::protobuf::util::MessageDifferencer::Equals(rebuilt, request));
  absl::StatusOr<vitserve::InferInput> ours =
      vitserve::ParseInferInput(deferred->request, spec, &external);
  absl::StatusOr<vitserve::InferInput> theirs = vitserve::ParseInferInput(request, spec);
  Check(ours.status() == theirs.status());
  if (ours.ok()) {
    Check(ours->batched == theirs->batched && ours->tensor.sizes() == theirs->tensor.sizes());
    // NaN payloads of FP32/FP16 inputs compare unequal to themselves: compare the bytes.
    Check(std::memcmp(ours->tensor.data_ptr(), theirs->tensor.data_ptr(),
                      ours->tensor.nbytes()) == 0);
  }
}

void ModelInfer(const uint8_t* data, size_t size, uint8_t options) {
  vitserve::InferInputSpec spec;
  spec.input_size = 1 + options % 4;
  spec.mean = {0.5f, 0.4f, 0.3f};
  spec.std = {0.2f, 0.25f, 0.3f};
  spec.max_batch_size = 4;
  inference::ModelInferRequest request;
  const bool parsed = request.ParseFromArray(data, static_cast<int>(size));
  DeferredInfer(data, size, options, parsed, request, spec);
  if (!parsed) return;
  for (vitserve::ModelTask task : {vitserve::ModelTask::kClassification,
                                   vitserve::ModelTask::kDetection,
                                   vitserve::ModelTask::kSegmentation}) {
    (void)vitserve::ValidateRequestedOutputs(request, task);
  }
  vitserve::v1::DetectionConfig defaults;
  defaults.set_score_threshold(0.3f);
  defaults.set_max_detections(100);
  absl::StatusOr<vitserve::DetectSettings> settings =
      vitserve::DetectSettingsFromParameters(request, defaults);
  if (settings.ok()) {
    Check(settings->score_threshold >= 0 && settings->score_threshold <= 1 &&
          settings->max_detections >= 1 && settings->max_detections <= 10000);
  }
  absl::StatusOr<vitserve::InferInput> input = vitserve::ParseInferInput(request, spec);
  if (!input.ok()) return;
  const at::Tensor& t = input->tensor;
  Check(t.dim() == 4 && t.size(0) >= 1 && t.size(0) <= spec.max_batch_size && t.size(1) == 3 &&
        t.size(2) == spec.input_size && t.size(3) == spec.input_size &&
        t.scalar_type() == at::kFloat);
  Check(input->batched || t.size(0) == 1);
}

}  // namespace

// libprotobuf logs every string field of invalid UTF-8 it parses: thousands of lines a second.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  switch (data[0] % 3) {
    case 0: Classify(data + 2, size - 2, data[1]); break;
    case 1: Dense(data + 2, size - 2, data[1]); break;
    default: ModelInfer(data + 2, size - 2, data[1]); break;
  }
  return 0;
}

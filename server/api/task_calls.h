// One inference request run on a model, whatever carried it: the gRPC services
// (vision_service.h, inference_service.h) and the HTTP/REST server (server/rest/) call these,
// so every transport has the same validation, admission control, preprocessing on the pool,
// batching, metrics and replies.
//
// Each Run* checks the request against the model, admits it (RESOURCE_EXHAUSTED at once when the
// model is overloaded), decodes or converts its input on `pool` (inline when null), queues its
// rows on the model's batcher and calls `finish` exactly once, after filling `*response`: on a
// pool or executor thread, or inline when the request fails before it is queued. It records the
// request's metrics (vitserve_requests_total{code}, durations, the in-flight gauge).
//
// Ownership: `model`, `limits`, `request` and `response` are borrowed and must stay alive until
// `finish` runs; the caller holds the model's handle at least as long (and never drops it on an
// executor thread: see ServableModel in server/model_manager.h).
// Thread-safety: any thread. `is_cancelled` (may be empty) is polled from pool threads.
// Errors (passed to `finish`): INVALID_ARGUMENT (wrong task, bad image/tensor/parameter),
// RESOURCE_EXHAUSTED (overloaded, queue full, image over the limits), DEADLINE_EXCEEDED,
// CANCELLED, UNAVAILABLE (model stopping), and the model runner's errors.
#pragma once

#include <functional>
#include <optional>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inference/grpc_service.pb.h"
#include "server/api/kserve_tensor.h"
#include "server/api/work_pool.h"
#include "server/image/decode.h"
#include "server/model_manager.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

// The model version every vitserve model has (KServe's model_version; "" means it too).
inline constexpr char kModelVersion[] = "1";
// top_k when a Classify request leaves it 0 (capped at the model's class count).
inline constexpr int kDefaultTopK = 5;
// The default top_k comes from the GPU's columns (ServableModel::output_layout).
static_assert(kDefaultTopK <= kDeviceTopK);

using FinishCallback = std::function<void(absl::Status)>;

// The model input of a request whose images are not in its message: called once, inline, where
// DecodeAndPreprocess would run (the Classify handler's deferred pixels: deferred_classify.h).
using ClassifyInputFn = std::function<absl::StatusOr<at::Tensor>()>;

// Top-k classes of every image (vitserve.v1.Vision/Classify). With `input`, the images come
// from it instead of from `request`, which then carries every other field.
void RunClassify(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
                 const v1::ClassifyRequest& request, absl::Time deadline,
                 std::function<bool()> is_cancelled, v1::ClassifyResponse* response,
                 FinishCallback finish, ClassifyInputFn input = nullptr);

// Boxes in each image's original pixels (vitserve.v1.Vision/Detect).
void RunDetect(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
               const v1::DetectRequest& request, absl::Time deadline,
               std::function<bool()> is_cancelled, v1::DetectResponse* response,
               FinishCallback finish);

// A label map at each image's original size (vitserve.v1.Vision/Segment).
void RunSegment(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
                const v1::SegmentRequest& request, absl::Time deadline,
                std::function<bool()> is_cancelled, v1::SegmentResponse* response,
                FinishCallback finish);

// KServe v2 ModelInfer (tensor conventions: kserve_tensor.h). `raw_inputs`: the request's
// raw_input_contents when they were left outside `request` (deferred_infer.h); their `copy`
// runs on the pool, before `finish`, so what it reads must stay valid until then.
// `place_outputs` (may be empty) runs on the filled response before `finish` and may move
// outputs elsewhere (shared memory: shared_memory.h); its error is the request's.
using PlaceOutputsFn = std::function<absl::Status(inference::ModelInferResponse*)>;
void RunModelInfer(const ServableModel& model, const inference::ModelInferRequest& request,
                   absl::Time deadline, std::function<bool()> is_cancelled, WorkPool* pool,
                   inference::ModelInferResponse* response, FinishCallback finish,
                   std::optional<ExternalRawInputs> raw_inputs = std::nullopt,
                   PlaceOutputsFn place_outputs = nullptr);

}  // namespace vitserve

#include "server/api/task_calls.h"

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/api/call_util.h"
#include "server/api/classify.h"
#include "server/api/detect.h"
#include "server/api/image_input.h"
#include "server/api/kserve_tensor.h"
#include "server/api/model_description.h"
#include "server/api/segment.h"
#include "server/metrics/server_metrics.h"

namespace vitserve {
namespace {

// Fills a Detect or Segment response from the model's rows for its images.
using WholeImageFill =
    std::function<absl::Status(const at::Tensor& rows, const std::vector<InputGeometry>&)>;

// Runs one Detect or Segment request (a task on whole images) on `model`, like RunClassify:
// `valid` is the request's validation, done by the caller; the images are decoded whole and
// stretched to the model's input on the pool; `fill` runs on the pool after the batch. `request`
// and the response `fill` writes must stay alive until `finish` runs.
template <typename Request>
void RunWholeImageTask(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
                       const Request& request, absl::Status valid, absl::Time deadline,
                       std::function<bool()> is_cancelled, WholeImageFill fill,
                       std::function<void(absl::Status)> finish) {
  const absl::Time start = absl::Now();
  ModelMetrics& metrics = model.metrics();
  std::function<void(absl::Status)> complete = TrackRequest(model, std::move(finish));
  if (!valid.ok()) return complete(std::move(valid));
  if (start >= deadline) {
    return complete(absl::DeadlineExceededError("the request's deadline passed on arrival"));
  }
  complete = AdmitRequest(model, std::move(complete));
  if (!complete) return;  // Overloaded: answered RESOURCE_EXHAUSTED, nothing decoded.
  model.AnnounceArrival();
  auto decode_and_schedule = [&model, &limits, &request, &metrics, deadline, pool,
                              is_cancelled = std::move(is_cancelled), fill = std::move(fill),
                              complete = std::move(complete)]() mutable {
    if (absl::Status wanted = CheckStillWanted(deadline, is_cancelled); !wanted.ok()) {
      model.WithdrawArrival();
      return complete(std::move(wanted));
    }
    const absl::Time preprocess_start = absl::Now();
    absl::StatusOr<WholeImageBatch> batch = DecodeAndPreprocessWhole(
        request.images(), limits, model.preprocess_spec(), kDenseResizeMode);
    metrics.ObservePreprocess(absl::Now() - preprocess_start);
    if (!batch.ok()) {
      model.WithdrawArrival();
      return complete(batch.status());
    }
    auto geometries = std::make_shared<std::vector<InputGeometry>>(std::move(batch->geometries));
    auto respond = [complete, geometries, fill](absl::StatusOr<at::Tensor> rows) {
      if (!rows.ok()) return complete(rows.status());
      complete(fill(*rows, *geometries));
    };
    ScheduleRows(model, std::move(batch->input), deadline, std::move(is_cancelled),
                 OnPool(pool, std::move(respond)), /*announced=*/true);
  };
  if (pool == nullptr) return decode_and_schedule();
  pool->Schedule(std::move(decode_and_schedule));
}

}  // namespace

// Runs one ClassifyRequest on `model` and calls `finish` exactly once (on an executor thread, or
// inline when the request fails before it is queued) after filling `*response`. Records the
// request's metrics. `request` and `response` must stay alive until `finish` runs.
void RunClassify(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
                 const v1::ClassifyRequest& request, absl::Time deadline,
                 std::function<bool()> is_cancelled, v1::ClassifyResponse* response,
                 FinishCallback finish, ClassifyInputFn input_fn) {
  const absl::Time start = absl::Now();
  ModelMetrics& metrics = model.metrics();
  std::function<void(absl::Status)> complete = TrackRequest(model, std::move(finish));

  response->set_model(model.name());
  response->set_request_id(request.request_id());
  absl::StatusOr<int64_t> top_k =
      ValidateClassifyRequest(request, model.name(), model.info().task, model.info().num_classes,
                              kDefaultTopK);
  if (!top_k.ok()) return complete(top_k.status());
  if (start >= deadline) {
    return complete(absl::DeadlineExceededError("the request's deadline passed on arrival"));
  }
  complete = AdmitRequest(model, std::move(complete));
  if (!complete) return;  // Overloaded: answered RESOURCE_EXHAUSTED, nothing decoded.
  // Decoding is the CPU-heavy part of a request: it runs on the pool, off gRPC's threads.
  // Announced meanwhile, so the batcher knows these rows are on their way.
  model.AnnounceArrival();
  // Run inline (below) when there is an input_fn, so its captures need not outlive this call.
  const bool inline_input = input_fn != nullptr;
  auto decode_and_schedule = [&model, &limits, &request, &metrics, start, deadline, response, pool,
                              is_cancelled = std::move(is_cancelled),
                              complete = std::move(complete), k = *top_k,
                              input_fn = std::move(input_fn)]() mutable {
    if (absl::Status wanted = CheckStillWanted(deadline, is_cancelled); !wanted.ok()) {
      model.WithdrawArrival();
      return complete(std::move(wanted));
    }
    const absl::Time preprocess_start = absl::Now();
    absl::StatusOr<at::Tensor> input =
        input_fn ? input_fn()
                 : DecodeAndPreprocess(request.images(), limits, model.preprocess_spec());
    metrics.ObservePreprocess(absl::Now() - preprocess_start);
    if (!input.ok()) {
      model.WithdrawArrival();
      return complete(input.status());
    }

    const std::vector<std::string>* labels = &model.labels();
    // The model's rows with the top-k columns its GPU computed, if it does (read when they
    // hold k places; the host's softmax of the logits otherwise).
    const ClassifierOutputLayout layout = model.output_layout();
    // Top-k and the reply: on the pool while requests wait for the executor, on the executor
    // when none does (OnPoolWhileQueued).
    auto fill = [complete, k, labels, layout, response](absl::StatusOr<at::Tensor> rows) {
      if (!rows.ok()) return complete(rows.status());
      complete(FillClassifications(*rows, k, layout, *labels, response));
    };
    ScheduleRows(model, *std::move(input), deadline, std::move(is_cancelled),
                 OnPoolWhileQueued(pool, model, std::move(fill)), /*announced=*/true,
                 layout.columns());
  };
  // Raw pixels the device preprocesses need only a check and a copy: done here, the hand-off
  // to the pool and its thread's wake-up would cost more. (An input_fn is such a copy too.)
  if (pool == nullptr || inline_input ||
      PreprocessingIsACopy(request.images(), model.preprocess_spec())) {
    return decode_and_schedule();
  }
  pool->Schedule(std::move(decode_and_schedule));
}

void RunDetect(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
               const v1::DetectRequest& request, absl::Time deadline,
               std::function<bool()> is_cancelled, v1::DetectResponse* response,
               FinishCallback finish) {
  response->set_model(model.name());
  response->set_request_id(request.request_id());
  absl::StatusOr<DetectSettings> settings = ValidateDetectRequest(
      request, model.name(), model.info().task, model.config().detection());
  const DetectSettings chosen = settings.ok() ? *settings : DetectSettings();
  WholeImageFill fill = [&model, chosen, response](const at::Tensor& rows,
                                                   const std::vector<InputGeometry>& geometries) {
    return FillDetections(rows, model.info().num_classes, model.info().input_size, geometries,
                          chosen, model.labels(), response);
  };
  RunWholeImageTask(model, limits, pool, request, settings.status(), deadline,
                    std::move(is_cancelled), std::move(fill), std::move(finish));
}

void RunSegment(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
                const v1::SegmentRequest& request, absl::Time deadline,
                std::function<bool()> is_cancelled, v1::SegmentResponse* response,
                FinishCallback finish) {
  response->set_model(model.name());
  response->set_request_id(request.request_id());
  WholeImageFill fill = [&model, format = request.format(), response](
                            const at::Tensor& rows, const std::vector<InputGeometry>& geometries) {
    return FillSegmentations(rows, geometries, format, model.labels(), response);
  };
  RunWholeImageTask(model, limits, pool, request,
                    ValidateSegmentRequest(request, model.name(), model.info().task), deadline,
                    std::move(is_cancelled), std::move(fill), std::move(finish));
}

// Runs one ModelInfer request on `model` and calls `finish` exactly once (on an executor or pool
// thread, or inline when the request fails before it is queued) after filling `*response`.
// Records the request's metrics. `request` and `response` must stay alive until `finish` runs.
void RunModelInfer(const ServableModel& model, const inference::ModelInferRequest& request,
                   absl::Time deadline, std::function<bool()> is_cancelled, WorkPool* pool,
                   inference::ModelInferResponse* response, FinishCallback finish,
                   std::optional<ExternalRawInputs> raw_inputs, PlaceOutputsFn place_outputs) {
  const absl::Time start = absl::Now();
  ModelMetrics& metrics = model.metrics();
  std::function<void(absl::Status)> complete = TrackRequest(model, std::move(finish));

  response->set_model_name(model.name());
  response->set_model_version(kModelVersion);
  response->set_id(request.id());
  const ModelTask task = model.info().task;
  DetectSettings detect_settings;
  if (task == ModelTask::kDetection) {
    absl::StatusOr<DetectSettings> settings =
        DetectSettingsFromParameters(request, model.config().detection());
    if (!settings.ok()) return complete(settings.status());
    detect_settings = *settings;
  }
  InferInputSpec spec;
  spec.input_size = ModelInputSize(model);
  spec.mean = ModelMean(model);
  spec.std = ModelStd(model);
  spec.max_batch_size = MaxRowsPerTask(model);
  spec.pin_memory = model.preprocess_spec().pin_memory;
  absl::Status outputs_ok = ValidateRequestedOutputs(request, task);
  if (!outputs_ok.ok()) return complete(outputs_ok);
  if (start >= deadline) {
    return complete(absl::DeadlineExceededError("the request's deadline passed on arrival"));
  }
  complete = AdmitRequest(model, std::move(complete));
  if (!complete) return;  // Overloaded: answered RESOURCE_EXHAUSTED, nothing converted.
  // Converting the input (a copy of the whole batch; for UINT8 also the normalisation) is the
  // CPU-heavy part of the call: it runs on the preprocessing pool, off gRPC's threads, as
  // Classify's decoding does.
  model.AnnounceArrival();  // Ended by ScheduleRows or, on failure, withdrawn below.
  auto convert_and_schedule = [&model, &metrics, &request, response, spec, deadline, pool, task,
                               detect_settings, raw_inputs = std::move(raw_inputs),
                               place_outputs = std::move(place_outputs),
                               is_cancelled = std::move(is_cancelled),
                               complete = std::move(complete)]() mutable {
    if (absl::Status wanted = CheckStillWanted(deadline, is_cancelled); !wanted.ok()) {
      model.WithdrawArrival();
      return complete(std::move(wanted));
    }
    const absl::Time preprocess_start = absl::Now();
    absl::StatusOr<InferInput> input =
        ParseInferInput(request, spec, raw_inputs.has_value() ? &*raw_inputs : nullptr);
    metrics.ObservePreprocess(absl::Now() - preprocess_start);
    if (!input.ok()) {
      model.WithdrawArrival();
      return complete(input.status());
    }
    // The reply is filled on the pool, off the model's executor thread (as Classify's).
    auto fill = [&model, &request, complete, response, task, detect_settings,
                 place_outputs = std::move(place_outputs), input_size = spec.input_size,
                 batched = input->batched](absl::StatusOr<at::Tensor> rows) {
      if (!rows.ok()) return complete(rows.status());
      absl::Status filled;
      if (task == ModelTask::kDetection) {
        filled = FillDetectionOutputs(*rows, model.info().num_classes, input_size,
                                      detect_settings, batched, response);
      } else if (task == ModelTask::kSegmentation) {
        filled = FillSegmentationOutputs(*rows, input_size, batched, response);
      } else {
        FillInferOutput(*rows, batched, response);
      }
      if (filled.ok()) KeepRequestedOutputs(request, response);
      if (filled.ok() && place_outputs) filled = place_outputs(response);
      complete(filled);
    };
    ScheduleRows(model, std::move(input->tensor), deadline, std::move(is_cancelled),
                 OnPool(pool, std::move(fill)), /*announced=*/true);
  };
  if (pool == nullptr) return convert_and_schedule();
  pool->Schedule(std::move(convert_and_schedule));
}


}  // namespace vitserve

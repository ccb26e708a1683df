// vitserve.v1.Vision: the task API (Classify, Detect, Segment, ClassifyStream) and the model
// catalogue (ListModels, GetModel), on gRPC's callback API: no thread ever blocks on a batch.
//
// Each inference RPC: take the call's deadline and cancellation from the context -> get the
// model from the ModelManager (NOT_FOUND / UNAVAILABLE) -> check the model's task -> validate the
// request -> decode and preprocess every image on the preprocessing pool, off gRPC's threads
// (errors name the image: "image 2: ...") -> queue the rows on the model's batcher (split into
// tasks of at most max_batch_size rows; RESOURCE_EXHAUSTED at once when its queue is full) ->
// postprocess on the executor thread (softmax top-k + labels) -> finish. Every request that
// reached a model records vitserve_requests_total{code}, its duration, its preprocessing time and
// the in-flight gauge.
//
// ClassifyStream: every request on the stream is processed independently and answered (with its
// request_id) as soon as it completes, so responses may arrive out of order. At most
// kMaxPendingPerStream requests of one stream are in the server at once (reads pause beyond
// that). The first failing request ends the stream with its status (message prefixed with its
// request_id); responses already completed are written first (server/api/stream_reactor.h).
//
// Detect and Segment answer UNIMPLEMENTED until a detection / segmentation model is registered.
//
// Ownership: borrows the ModelManager, which must outlive the grpc::Server the service is
// registered with. Model handles are held by each call's reactor and released in its OnDone
// (a gRPC thread), never on an executor thread.
// Thread-safety: called by gRPC from any number of threads.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/api/task_calls.h"
#include "server/api/work_pool.h"
#include "server/image/decode.h"
#include "server/model_manager.h"
#include "vitserve/v1/vision.grpc.pb.h"

namespace vitserve {

// Classify is the generated raw method (it takes gRPC's byte buffer): its requests of raw pixels
// are read with the pixels left in the buffer and copied from there straight into the model's
// input (deferred_classify.h); every other request is parsed whole, as before. A request that is
// not a valid ClassifyRequest is INVALID_ARGUMENT.
class VisionService final
    : public v1::Vision::WithRawCallbackMethod_Classify<v1::Vision::CallbackService> {
 public:
  // Requests of one ClassifyStream being processed at once, beyond which reads pause.
  static constexpr int kMaxPendingPerStream = 32;
  // top_k when a request leaves it 0 (capped at the model's class count).
  static constexpr int kDefaultTopK = vitserve::kDefaultTopK;

  // `preprocess_pool` (not owned; may be null: then decoding runs on gRPC's thread) must
  // outlive every call this service handles. `max_request_time` caps every request's deadline
  // (CappedDeadline).
  VisionService(ModelManager* manager, ImageLimits image_limits, WorkPool* preprocess_pool,
                absl::Duration max_request_time = absl::InfiniteDuration());

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detect(grpc::CallbackServerContext* context,
                                   const v1::DetectRequest* request,
                                   v1::DetectResponse* response) override;
  grpc::ServerUnaryReactor* Segment(grpc::CallbackServerContext* context,
                                    const v1::SegmentRequest* request,
                                    v1::SegmentResponse* response) override;
  grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse>* ClassifyStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::ModelDescription* response) override;

 private:
  class ModelCallReactor;
  // A reactor for a unary call on the model `name`, holding the model until the call is done
  // and pointing `*model` at it; when there is no such model, `*model` is null and the reactor
  // has already finished with the manager's status (NOT_FOUND, UNAVAILABLE).
  ModelCallReactor* StartModelCall(const std::string& name, const ServableModel** model);
  class ClassifyStreamReactor;

  ModelManager* const manager_;
  const ImageLimits image_limits_;
  const absl::Duration max_request_time_;
  WorkPool* const preprocess_pool_;
};

}  // namespace vitserve

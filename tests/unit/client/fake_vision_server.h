// An in-process fake vitserve server for client tests: implements vitserve.v1.Vision and the
// KServe liveness/readiness/metadata/infer RPCs on 127.0.0.1 with a port picked by the OS.
// It records the last requests and can be told to fail (every call or every n-th Classify).
// Thread-safe: handlers run on gRPC's sync-server threads.
#pragma once

#include <atomic>
#include <memory>
#include <set>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "vitserve/v1/vision.grpc.pb.h"

namespace vitserve::client::testing {

class FakeVisionService final : public v1::Vision::Service {
 public:
  grpc::Status Classify(grpc::ServerContext* context, const v1::ClassifyRequest* request,
                        v1::ClassifyResponse* response) override {
    const int64_t n = ++classify_calls;
    {
      absl::MutexLock lock(&mu);
      last_classify = *request;
      classify_peers.insert(context->peer());
    }
    if (fail_every > 0 && n % fail_every == 0) {
      ++classify_failures;
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full (fake)");
    }
    if (error_code != grpc::StatusCode::OK) return grpc::Status(error_code, error_message);
    response->set_model(request->model());
    response->set_request_id(request->request_id());
    const int k = request->top_k() == 0 ? 5 : static_cast<int>(request->top_k());
    for (int i = 0; i < request->images_size(); ++i) {
      auto* result = response->add_results();
      for (int j = 0; j < k; ++j) {
        auto* c = result->add_classes();
        c->set_index(j);
        c->set_label(j == 0 ? "tabby \"cat\"" : absl::StrCat("class_", j));
        c->set_score(0.5f / (j + 1));
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Detect(grpc::ServerContext*, const v1::DetectRequest* request,
                      v1::DetectResponse* response) override {
    if (error_code != grpc::StatusCode::OK) return grpc::Status(error_code, error_message);
    for (int i = 0; i < request->images_size(); ++i) {
      auto* box = response->add_results()->add_boxes();
      box->set_x1(1);
      box->set_y1(2);
      box->set_x2(30.5f);
      box->set_y2(40);
      box->set_score(0.75f);
      box->set_index(3);
      box->set_label("dog");
    }
    return grpc::Status::OK;
  }

  grpc::Status Segment(grpc::ServerContext*, const v1::SegmentRequest* request,
                       v1::SegmentResponse* response) override {
    if (error_code != grpc::StatusCode::OK) return grpc::Status(error_code, error_message);
    for (int i = 0; i < request->images_size(); ++i) {
      auto* map = response->add_results();
      map->set_width(4);
      map->set_height(2);
      map->set_mask("\x89PNG-fake");
    }
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    if (error_code != grpc::StatusCode::OK) return grpc::Status(error_code, error_message);
    auto* m = response->add_models();
    m->set_name("shvit_s1");
    m->set_architecture("shvit_s1");
    m->set_task(v1::CLASSIFICATION);
    m->set_input_size(32);
    m->set_parameter_count(6300000);
    m->set_precision("fp32");
    m->set_device("cpu");
    m->set_ready(true);
    m->set_state("READY");
    auto* s = response->add_models();
    s->set_name("loading_model");
    s->set_task(v1::SEGMENTATION);
    s->set_ready(false);
    s->set_state("LOADING");
    return grpc::Status::OK;
  }

  grpc::Status GetModel(grpc::ServerContext*, const v1::GetModelRequest* request,
                        v1::ModelDescription* response) override {
    if (request->name() != "shvit_s1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("model '", request->name(), "' is not loaded"));
    }
    response->set_name("shvit_s1");
    response->set_task(v1::CLASSIFICATION);
    response->set_input_size(32);
    response->set_ready(true);
    return grpc::Status::OK;
  }

  absl::Mutex mu;
  v1::ClassifyRequest last_classify ABSL_GUARDED_BY(mu);
  std::atomic<int64_t> classify_calls{0};
  std::set<std::string> classify_peers ABSL_GUARDED_BY(mu);  // "ipv4:127.0.0.1:PORT" per connection
  std::atomic<int64_t> classify_failures{0};
  // Classify fails with RESOURCE_EXHAUSTED on every fail_every-th call (0: never).
  std::atomic<int64_t> fail_every{0};
  // Every task/list call fails with this when not OK. Set before the calls.
  grpc::StatusCode error_code = grpc::StatusCode::OK;
  std::string error_message;
};

class FakeInferenceService final : public inference::GRPCInferenceService::Service {
 public:
  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    response->set_live(true);
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* response) override {
    response->set_ready(ready);
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext*, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override {
    if (request->name() != "shvit_s1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown model");
    }
    response->set_ready(ready);
    return grpc::Status::OK;
  }
  grpc::Status ModelMetadata(grpc::ServerContext*, const inference::ModelMetadataRequest*,
                             inference::ModelMetadataResponse* response) override {
    auto* input = response->add_inputs();
    input->set_name("pixel_values");
    input->set_datatype("FP32");
    for (int64_t d : {-1, 3, 8, 8}) input->add_shape(d);
    return grpc::Status::OK;
  }
  grpc::Status ModelInfer(grpc::ServerContext*, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    ++infer_calls;
    {
      absl::MutexLock lock(&mu);
      last_infer = *request;
    }
    response->set_model_name(request->model_name());
    return grpc::Status::OK;
  }

  std::atomic<bool> ready{true};
  std::atomic<int64_t> infer_calls{0};
  absl::Mutex mu;
  inference::ModelInferRequest last_infer ABSL_GUARDED_BY(mu);
};

// grpc.health.v1 with a settable answer for the whole server ("").
class FakeHealthService final : public grpc::health::v1::Health::Service {
 public:
  using Status = grpc::health::v1::HealthCheckResponse;
  grpc::Status Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override {
    if (!request->service().empty()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown");
    response->set_status(status.load());
    return grpc::Status::OK;
  }
  std::atomic<Status::ServingStatus> status{Status::SERVING};
};

// Starts the services on 127.0.0.1:<free port>; stops on destruction.
class FakeServer {
 public:
  FakeServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&vision);
    builder.RegisterService(&inference);
    builder.RegisterService(&health);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() { server_->Shutdown(); }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int port() const { return port_; }

  FakeVisionService vision;
  FakeInferenceService inference;
  FakeHealthService health;

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace vitserve::client::testing

#include "server/rest/rest_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/credential_file.h"
#include "common/result_json.h"
#include "common/thread_name.h"
#include "server/api/call_util.h"
#include "server/api/image_input.h"
#include "server/api/kserve_metadata.h"
#include "server/api/kserve_tensor.h"
#include "server/api/task_calls.h"
#include "server/rest/kserve_json.h"
#include "server/runtime/device.h"

namespace vitserve {
namespace {

constexpr char kJson[] = "application/json";
constexpr char kHeaderLength[] = "Inference-Header-Content-Length";
// The version path segment of a KServe route, optional: (?:/versions/([^/]+))?
constexpr char kModelPath[] = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";

void ReplyJson(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, kJson);
}

void ReplyError(httplib::Response& res, const absl::Status& status) {
  ReplyJson(res, HttpStatusFor(status), ErrorJson(status.message()));
}

void ReplyProto(httplib::Response& res, const google::protobuf::Message& message) {
  ReplyJson(res, 200, DumpJson(ProtoToJson(message)));
}

// The model name and version ("" when absent) of a kModelPath route.
std::pair<std::string, std::string> ModelAndVersion(const httplib::Request& req) {
  return {req.matches[1].str(), req.matches.size() > 2 ? req.matches[2].str() : std::string()};
}

// Runs `run(finish)` (one of task_calls.h's Run*, which calls finish exactly once, possibly on
// another thread) and waits for it: this connection's thread is the one that answers it.
absl::Status RunAndWait(const std::function<void(FinishCallback)>& run) {
  absl::Notification done;
  absl::Status result;
  run([&](absl::Status status) {
    result = std::move(status);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

// A query parameter as a number; nullopt when absent.
template <typename T>
absl::StatusOr<std::optional<T>> QueryNumber(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return std::optional<T>();
  const std::string text = req.get_param_value(name);
  T value{};
  bool ok;
  if constexpr (std::is_floating_point_v<T>) {
    ok = absl::SimpleAtod(text, &value);
  } else {
    ok = absl::SimpleAtoi(text, &value);
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("query parameter '", name, "' is not a number: '", text, "'"));
  }
  return std::optional<T>(value);
}

// The deadline a plain request sets with ?timeout_ms=N (none: the model's default timeout).
absl::StatusOr<absl::Time> QueryDeadline(const httplib::Request& req) {
  VITSERVE_ASSIGN_OR_RETURN(std::optional<int64_t> timeout_ms,
                            QueryNumber<int64_t>(req, "timeout_ms"));
  if (!timeout_ms) return absl::InfiniteFuture();
  if (*timeout_ms < 0) return absl::InvalidArgumentError("timeout_ms must be >= 0");
  return absl::Now() + absl::Milliseconds(*timeout_ms);
}

// The body of a request, read through cpp-httplib's content reader. Routes that take a body
// use one, for two reasons: (1) cpp-httplib parses an application/x-www-form-urlencoded body
// (what `curl -d` / `--data-binary` send unless told otherwise) as query parameters and refuses
// any over 8 KiB with 413, while here the body is a JSON request or an image; (2) tritonclient
// posts some requests with no body and no Content-Length, which cpp-httplib would read until the
// connection closes. Multipart parts are kept in the order they came.
struct RequestBody {
  std::string bytes;
  std::vector<httplib::MultipartFormData> parts;
};

// False when the body could not be read (too large: res.status is 413; cut short: 400).
bool ReadBody(const httplib::Request& req, const httplib::ContentReader& content,
              RequestBody* body) {
  const bool announced = (req.has_header("Content-Length") &&
                          req.get_header_value("Content-Length") != "0") ||
                         req.has_header("Transfer-Encoding");
  if (!announced) return true;
  if (req.is_multipart_form_data()) {
    return content(
        [body](const httplib::MultipartFormData& header) {
          body->parts.push_back(header);
          return true;
        },
        [body](const char* data, size_t length) {
          body->parts.back().content.append(data, length);
          return true;
        });
  }
  return content([body](const char* data, size_t length) {
    body->bytes.append(data, length);
    return true;
  });
}

struct PlainImages {
  google::protobuf::RepeatedPtrField<v1::Image> images;
  std::vector<std::string> names;
};

// The images of a plain request: each multipart part, or the whole body.
absl::StatusOr<PlainImages> ReadPlainImages(const httplib::Request& req, RequestBody& body) {
  PlainImages out;
  if (!body.parts.empty()) {
    for (httplib::MultipartFormData& part : body.parts) {
      if (part.content.empty()) continue;
      out.names.push_back(part.filename.empty() ? part.name : part.filename);
      out.images.Add()->set_encoded(std::move(part.content));
    }
    if (out.images.empty()) {
      return absl::InvalidArgumentError("the multipart body has no part with an image in it");
    }
    return out;
  }
  if (body.bytes.empty()) {
    return absl::InvalidArgumentError(
        "no image: send the image file as the body (e.g. curl --data-binary @cat.jpg -H "
        "'Content-Type: image/jpeg') or as multipart/form-data parts (curl -F image=@cat.jpg)");
  }
  out.images.Add()->set_encoded(std::move(body.bytes));
  out.names.push_back(req.has_param("name") ? req.get_param_value("name") : "");
  return out;
}

}  // namespace

RestServer::RestServer(RestOptions options, ModelManager* manager, WorkPool* pool,
                       std::function<bool()> ready)
    : options_(std::move(options)), manager_(manager), pool_(pool), ready_(std::move(ready)) {}

RestServer::~RestServer() { Stop(); }

absl::StatusOr<std::unique_ptr<RestServer>> RestServer::Start(RestOptions options,
                                                              ModelManager* manager,
                                                              WorkPool* pool,
                                                              std::function<bool()> ready) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("REST port must be in [0, 65535], got ", options.port));
  }
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("REST threads must be at least 1, got ", options.threads));
  }
  std::unique_ptr<RestServer> rest(
      new RestServer(std::move(options), manager, pool, std::move(ready)));
  const RestOptions& o = rest->options_;
  if (!o.security.token_file.empty()) {
    VITSERVE_ASSIGN_OR_RETURN(std::string token,
                              ReadTokenFile(o.security.token_file, "--auth-token-file"));
    rest->expected_authorization_ = absl::StrCat("Bearer ", token);
  }
  if (!o.security.cert_file.empty()) {
    if (o.security.key_file.empty()) {
      return absl::InvalidArgumentError("--tls-cert needs --tls-key");
    }
    auto tls = std::make_unique<httplib::SSLServer>(
        o.security.cert_file.c_str(), o.security.key_file.c_str(),
        o.security.client_ca_file.empty() ? nullptr : o.security.client_ca_file.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "REST: cannot serve TLS with --tls-cert '", o.security.cert_file, "', --tls-key '",
          o.security.key_file, "'",
          o.security.client_ca_file.empty() ? "" : absl::StrCat(" and --tls-client-ca '",
                                                                  o.security.client_ca_file, "'")));
    }
    rest->server_ = std::move(tls);
  } else {
    rest->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& server = *rest->server_;
  const int threads = o.threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  const int64_t read_us = absl::ToInt64Microseconds(o.read_timeout);
  const int64_t write_us = absl::ToInt64Microseconds(o.write_timeout);
  server.set_read_timeout(read_us / 1000000, read_us % 1000000);
  server.set_write_timeout(write_us / 1000000, write_us % 1000000);
  server.set_keep_alive_timeout(std::max<time_t>(1, absl::ToInt64Seconds(o.keep_alive_timeout)));
  // A keep-alive connection serves this many requests before it is closed (cpp-httplib's
  // default, 5, would make clients reconnect all the time).
  server.set_keep_alive_max_count(1000);
  server.set_payload_max_length(static_cast<size_t>(o.max_body_bytes));
  server.set_tcp_nodelay(true);
  // cpp-httplib's default sets SO_REUSEPORT, which lets a second server (another vitserve, an
  // old one not yet gone) bind the same port and silently take part of the traffic. Only
  // SO_REUSEADDR (restart while old connections linger in TIME_WAIT), unless asked.
  server.set_socket_options([reuse_port = o.reuse_port](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (reuse_port) ::setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof(yes));
  });
  rest->AddRoutes();

  const int port = o.port == 0 ? server.bind_to_any_port(o.address)
                               : (server.bind_to_port(o.address, o.port) ? o.port : -1);
  if (port < 0) {
    return absl::UnavailableError(absl::StrCat("REST: cannot listen on ", o.address, ":", o.port,
                                               " (in use, or not a local address)"));
  }
  rest->bound_port_ = port;
  rest->listen_thread_ = std::thread([server = rest->server_.get(), rest = rest.get()] {
    SetCurrentThreadName("vitserve-rest");
    server->listen_after_bind();
    rest->listen_returned_.store(true);
  });
  // cpp-httplib's stop() does nothing until the listening thread has marked the server running;
  // a Stop() before that (a later port of the server failing to bind) would leave the thread
  // accepting and Stop() joining it forever. So return only once it is running (or gone).
  while (!server.is_running() && !rest->listen_returned_.load()) {
    absl::SleepFor(absl::Microseconds(100));
  }
  return rest;
}

void RestServer::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  shutting_down_.store(true);
  if (server_ != nullptr) server_->stop();
  if (listen_thread_.joinable()) listen_thread_.join();
}

bool RestServer::Authorized(const std::string& authorization) const {
  return expected_authorization_.empty() ||
         ConstantTimeEquals(authorization, expected_authorization_);
}

void RestServer::AddRoutes() {
  httplib::Server& s = *server_;

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool open =
        (options_.security.token_exempt_health && absl::StartsWith(req.path, "/v2/health/")) ||
        (options_.security.token_exempt_metrics && req.path == "/metrics");
    if (open) return httplib::Server::HandlerResponse::Unhandled;
    if (Authorized(req.get_header_value("Authorization"))) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    ReplyError(res, absl::UnauthenticatedError(
                        "missing or wrong bearer token (header Authorization: Bearer <token>)"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // What cpp-httplib answers itself (no route, body too large, bad request line) gets a JSON
  // error body too.
  s.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message;
    switch (res.status) {
      case 404:
        message = absl::StrCat("no route for ", req.method, " ", req.path,
                               " (KServe v2 under /v2, plain endpoint /v1/models/{m}:classify)");
        break;
      case 413:
        message = absl::StrCat("the request body is larger than ", options_.max_body_bytes,
                               " bytes");
        break;
      default:
        message = absl::StrCat("HTTP ", res.status);
    }
    res.set_content(ErrorJson(message), kJson);
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        ReplyError(res, absl::InternalError(absl::StrCat("internal error: ", what)));
      });

  // --- health and metadata ---------------------------------------------------------------------
  s.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& res) {
    ReplyJson(res, 200, "{\"live\":true}");
  });
  s.Get("/v2/health/ready", [this](const httplib::Request&, httplib::Response& res) {
    const bool ready = !shutting_down_.load() && ready_();
    ReplyJson(res, ready ? 200 : 503, ready ? "{\"ready\":true}" : "{\"ready\":false}");
  });
  if (options_.metrics_text) {
    s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(options_.metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
    });
  }
  s.Get("/v2", [this](const httplib::Request&, httplib::Response& res) {
    inference::ServerMetadataResponse metadata;
    FillServerMetadata(options_.server_version, &metadata);
    ReplyProto(res, metadata);
  });
  s.Get("/v2/models/stats", [this](const httplib::Request&, httplib::Response& res) {
    inference::ModelStatisticsResponse stats;
    absl::Status status = FillStatisticsResponse(*manager_, "", "", &stats);
    status.ok() ? ReplyProto(res, stats) : ReplyError(res, status);
  });
  s.Get(kModelPath, [this](const httplib::Request& req, httplib::Response& res) {
    auto [name, version] = ModelAndVersion(req);
    auto model = GetVersionedModel(*manager_, name, version);
    if (!model.ok()) return ReplyError(res, model.status());
    inference::ModelMetadataResponse metadata;
    FillModelMetadata(**model, &metadata);
    ReplyProto(res, metadata);
  });
  s.Get(absl::StrCat(kModelPath, "/ready"),
        [this](const httplib::Request& req, httplib::Response& res) {
          auto [name, version] = ModelAndVersion(req);
          const bool ready = IsModelReady(*manager_, name, version);
          ReplyJson(res, ready ? 200 : 503, ready ? "{\"ready\":true}" : "{\"ready\":false}");
        });
  s.Get(absl::StrCat(kModelPath, "/config"),
        [this](const httplib::Request& req, httplib::Response& res) {
          auto [name, version] = ModelAndVersion(req);
          auto model = GetVersionedModel(*manager_, name, version);
          if (!model.ok()) return ReplyError(res, model.status());
          inference::ModelConfigResponse config;
          FillModelConfig(**model, &config);
          ReplyProto(res, config.config());  // Triton answers the config itself, unwrapped.
        });
  s.Get(absl::StrCat(kModelPath, "/stats"),
        [this](const httplib::Request& req, httplib::Response& res) {
          auto [name, version] = ModelAndVersion(req);
          inference::ModelStatisticsResponse stats;
          absl::Status status = FillStatisticsResponse(*manager_, name, version, &stats);
          status.ok() ? ReplyProto(res, stats) : ReplyError(res, status);
        });

  // --- repository ------------------------------------------------------------------------------
  // tritonclient.http posts these with an empty body and no Content-Length; cpp-httplib would
  // then read the body until the connection closes. With a content reader the body is read only
  // when one is announced.
  auto index = [this](const httplib::Request& req, httplib::Response& res,
                      const httplib::ContentReader& content) {
    RequestBody body;
    if (!ReadBody(req, content, &body)) return;
    bool ready_only = false;
    if (!body.bytes.empty()) {
      const nlohmann::json parsed = nlohmann::json::parse(body.bytes, nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object()) {
        return ReplyError(res, absl::InvalidArgumentError(
                                   "the body must be a JSON object, e.g. {\"ready\": true}"));
      }
      ready_only = parsed.value("ready", false);
    }
    inference::RepositoryIndexResponse response;
    FillRepositoryIndex(*manager_, ready_only, &response);
    nlohmann::json models = nlohmann::json::array();
    for (const auto& model : response.models()) models.push_back(ProtoToJson(model));
    ReplyJson(res, 200, DumpJson(models));
  };
  s.Post("/v2/repository/index", index);
  s.Get("/v2/repository/index", [index](const httplib::Request& req, httplib::Response& res) {
    index(req, res, httplib::ContentReader(nullptr, nullptr));  // GET: no body announced.
  });
  s.Post(R"(/v2/repository/models/([^/]+)/(load|unload))",
         [this](const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader& content) {
           RequestBody body;  // Parameters (a config to load with) are not taken.
           if (!ReadBody(req, content, &body)) return;
           const std::string name = req.matches[1].str();
           // Loading runs LibTorch on this long-lived connection thread: serially, so that it
           // keeps no OpenMP team beside the executors' (RunTorchSeriallyOnThisThread).
           RunTorchSeriallyOnThisThread();
           const absl::Status status =
               req.matches[2].str() == "load" ? manager_->Load(name) : manager_->Unload(name);
           status.ok() ? ReplyJson(res, 200, "{}") : ReplyError(res, status);
         });

  // --- inference -------------------------------------------------------------------------------
  s.Post(absl::StrCat(kModelPath, "/infer"),
         [this](const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader& content) {
           RequestBody body;
           if (!ReadBody(req, content, &body)) return;
           if (shutting_down_.load()) {
             return ReplyError(res, absl::UnavailableError("the server is shutting down"));
           }
           auto [name, version] = ModelAndVersion(req);
           auto model = GetVersionedModel(*manager_, name, version);
           if (!model.ok()) return ReplyError(res, model.status());
           std::optional<size_t> header_length;
           if (req.has_header(kHeaderLength)) {
             size_t length = 0;
             if (!absl::SimpleAtoi(req.get_header_value(kHeaderLength), &length)) {
               return ReplyError(res, absl::InvalidArgumentError(absl::StrCat(
                                          kHeaderLength, " is not a byte count")));
             }
             header_length = length;
           }
           absl::StatusOr<ParsedInferRequest> parsed =
               ParseInferRequest(body.bytes, header_length, name, version);
           if (!parsed.ok()) return ReplyError(res, parsed.status());
           const absl::Time deadline = CappedDeadline(
               parsed->timeout ? absl::Now() + *parsed->timeout : absl::InfiniteFuture(),
               options_.max_request_time);
           inference::ModelInferResponse response;
           const absl::Status status = RunAndWait([&](FinishCallback finish) {
             // Binary tensors are read from `body` (alive until RunAndWait returns).
             std::optional<ExternalRawInputs> raw_inputs;
             if (!parsed->binary_inputs.empty()) {
               raw_inputs = RawInputsOfViews(parsed->binary_inputs);
             }
             RunModelInfer(**model, parsed->request, deadline, nullptr, pool_, &response,
                           std::move(finish), std::move(raw_inputs));
           });
           if (!status.ok()) return ReplyError(res, status);
           absl::StatusOr<InferReply> reply = WriteInferResponse(response, parsed->binary);
           if (!reply.ok()) return ReplyError(res, reply.status());
           res.status = 200;
           if (reply->header_length) {
             res.set_header(kHeaderLength, std::to_string(*reply->header_length));
             res.set_content(std::move(reply->body), "application/octet-stream");
           } else {
             res.set_content(std::move(reply->body), kJson);
           }
         });

  s.Post(R"(/v1/models/([^/:]+):(classify|detect|segment))",
         [this](const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader& content) {
           RequestBody body;
           if (!ReadBody(req, content, &body)) return;
           if (shutting_down_.load()) {
             return ReplyError(res, absl::UnavailableError("the server is shutting down"));
           }
           const std::string name = req.matches[1].str();
           const std::string task = req.matches[2].str();
           auto model = manager_->Get(name);
           if (!model.ok()) return ReplyError(res, model.status());
           absl::StatusOr<PlainImages> images = ReadPlainImages(req, body);
           if (!images.ok()) return ReplyError(res, images.status());
           // Sized before anything runs, so that an image over the limits is a 413 (the
           // RESOURCE_EXHAUSTED of a full queue is a 429).
           if (auto inspected = InspectImages(images->images, options_.image_limits, 0);
               !inspected.ok()) {
             if (inspected.status().code() == absl::StatusCode::kResourceExhausted) {
               return ReplyJson(res, 413, ErrorJson(inspected.status().message()));
             }
             return ReplyError(res, inspected.status());
           }
           absl::StatusOr<absl::Time> deadline = QueryDeadline(req);
           if (!deadline.ok()) return ReplyError(res, deadline.status());
           *deadline = CappedDeadline(*deadline, options_.max_request_time);
           const ServableModel& served = **model;
           OrderedJson reply = {{"model", served.name()}};
           OrderedJson& results = reply["results"] = OrderedJson::array();

           if (task == "classify") {
             v1::ClassifyRequest request;
             request.set_model(name);
             *request.mutable_images() = images->images;
             auto top_k = QueryNumber<uint32_t>(req, "top_k");
             if (!top_k.ok()) return ReplyError(res, top_k.status());
             if (*top_k) request.set_top_k(**top_k);
             v1::ClassifyResponse response;
             absl::Status status = RunAndWait([&](FinishCallback finish) {
               RunClassify(served, options_.image_limits, pool_, request, *deadline, nullptr,
                           &response, std::move(finish));
             });
             if (!status.ok()) return ReplyError(res, status);
             for (int i = 0; i < response.results_size(); ++i) {
               results.push_back(
                   ClassificationToJson(images->names[i], served.name(), response.results(i)));
             }
           } else if (task == "detect") {
             v1::DetectRequest request;
             request.set_model(name);
             *request.mutable_images() = images->images;
             auto threshold = QueryNumber<double>(req, "score_threshold");
             if (!threshold.ok()) return ReplyError(res, threshold.status());
             if (*threshold) request.set_score_threshold(static_cast<float>(**threshold));
             auto max_detections = QueryNumber<uint32_t>(req, "max_detections");
             if (!max_detections.ok()) return ReplyError(res, max_detections.status());
             if (*max_detections) request.set_max_detections(**max_detections);
             v1::DetectResponse response;
             absl::Status status = RunAndWait([&](FinishCallback finish) {
               RunDetect(served, options_.image_limits, pool_, request, *deadline, nullptr,
                         &response, std::move(finish));
             });
             if (!status.ok()) return ReplyError(res, status);
             for (int i = 0; i < response.results_size(); ++i) {
               results.push_back(
                   DetectionsToJson(images->names[i], served.name(), response.results(i)));
             }
           } else {
             v1::SegmentRequest request;
             request.set_model(name);
             *request.mutable_images() = images->images;
             const std::string format = req.has_param("format") ? req.get_param_value("format")
                                                                : "png";
             if (format != "png" && format != "raw") {
               return ReplyError(res, absl::InvalidArgumentError(absl::StrCat(
                                          "format must be png or raw, got '", format, "'")));
             }
             request.set_format(format == "raw" ? v1::SegmentRequest::RAW
                                                : v1::SegmentRequest::PNG);
             v1::SegmentResponse response;
             absl::Status status = RunAndWait([&](FinishCallback finish) {
               RunSegment(served, options_.image_limits, pool_, request, *deadline, nullptr,
                          &response, std::move(finish));
             });
             if (!status.ok()) return ReplyError(res, status);
             for (int i = 0; i < response.results_size(); ++i) {
               OrderedJson result =
                   SegmentationToJson(images->names[i], served.name(), response.results(i), "");
               result[format == "raw" ? "mask_raw_base64" : "mask_png_base64"] =
                   absl::Base64Escape(response.results(i).mask());
               results.push_back(std::move(result));
             }
             reply["labels"] = std::vector<std::string>(response.labels().begin(),
                                                        response.labels().end());
           }
           ReplyJson(res, 200, DumpJson(reply));
         });
}

}  // namespace vitserve

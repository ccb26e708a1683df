// vitserve-bench-kserve-input: the server's CPU cost of turning one KServe ModelInferRequest,
// as gRPC hands it over (a byte buffer), into the model's input tensor. Google Benchmark; one
// case per input datatype and batch, at 224 px.
//
//   whole:    protobuf parses the request (raw_input_contents copied into the message), then
//             ParseInferInput converts it (the path of a request the deferred reader declines).
//   deferred: ReadDeferredInferRequest leaves raw_input_contents in the buffer, ParseInferInput
//             copies them from there (the path of every well-formed request).
//
// Single-threaded, no model and no gRPC server: what one request costs a core before it is
// queued. docs/performance.md ("KServe requests read from gRPC's buffer") has the numbers.
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "inference/grpc_service.pb.h"
#include "server/api/deferred_infer.h"
#include "server/api/kserve_tensor.h"

namespace vitserve {
namespace {

constexpr int64_t kSize = 224;
constexpr size_t kSliceBytes = 16 * 1024;

// A request of `batch` images of `datatype` in raw_input_contents, serialised, in a byte buffer
// of kSliceBytes slices: HTTP/2 DATA frames are at most 16 KiB unless the peers agree on more,
// and the server receives a message as the slices of its frames.
grpc::ByteBuffer SerializedRequest(const std::string& datatype, int64_t batch) {
  inference::ModelInferRequest request;
  request.set_model_name("shvit_s1");
  request.set_id("bench");
  auto* input = request.add_inputs();
  input->set_name(kKServeInputName);
  input->set_datatype(datatype);
  for (int64_t dim : {batch, int64_t{3}, kSize, kSize}) input->add_shape(dim);
  const int64_t element_bytes = datatype == "FP32" ? 4 : datatype == "FP16" ? 2 : 1;
  std::string bytes(static_cast<size_t>(batch * 3 * kSize * kSize * element_bytes), '\0');
  if (datatype == "UINT8") {
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 37 % 251);
  }
  request.add_raw_input_contents(std::move(bytes));
  const std::string serialised = request.SerializeAsString();
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < serialised.size(); at += kSliceBytes) {
    slices.emplace_back(serialised.data() + at, std::min(kSliceBytes, serialised.size() - at));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

InferInputSpec Spec(int64_t batch) {
  InferInputSpec spec;
  spec.input_size = kSize;
  spec.mean = {0.485f, 0.456f, 0.406f};
  spec.std = {0.229f, 0.224f, 0.225f};
  spec.max_batch_size = batch;
  return spec;
}

void Whole(benchmark::State& state, const std::string& datatype) {
  const int64_t batch = state.range(0);
  const grpc::ByteBuffer buffer = SerializedRequest(datatype, batch);
  const InferInputSpec spec = Spec(batch);
  for (auto _ : state) {
    inference::ModelInferRequest request;
    grpc::ByteBuffer view(buffer);
    grpc::ProtoBufferReader stream(&view);
    if (!request.ParseFromZeroCopyStream(&stream)) state.SkipWithError("parse failed");
    absl::StatusOr<InferInput> input = ParseInferInput(request, spec);
    if (!input.ok()) state.SkipWithError(std::string(input.status().message()).c_str());
    benchmark::DoNotOptimize(input->tensor.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * buffer.Length()));
}

void Deferred(benchmark::State& state, const std::string& datatype) {
  const int64_t batch = state.range(0);
  const grpc::ByteBuffer buffer = SerializedRequest(datatype, batch);
  const InferInputSpec spec = Spec(batch);
  for (auto _ : state) {
    std::optional<DeferredInferRequest> deferred = ReadDeferredInferRequest(buffer);
    if (!deferred.has_value()) state.SkipWithError("not read");
    const ExternalRawInputs raw = RawInputsOf(*deferred, &buffer);
    absl::StatusOr<InferInput> input = ParseInferInput(deferred->request, spec, &raw);
    if (!input.ok()) state.SkipWithError(std::string(input.status().message()).c_str());
    benchmark::DoNotOptimize(input->tensor.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * buffer.Length()));
}

// One image (a request as perf_analyzer sends it) and 16.
void Batches(benchmark::internal::Benchmark* bench) {
  bench->Arg(1)->Arg(16)->Unit(benchmark::kMicrosecond);
}
BENCHMARK_CAPTURE(Whole, FP32, std::string("FP32"))->Apply(Batches);
BENCHMARK_CAPTURE(Whole, UINT8, std::string("UINT8"))->Apply(Batches);
BENCHMARK_CAPTURE(Deferred, FP32, std::string("FP32"))->Apply(Batches);
BENCHMARK_CAPTURE(Deferred, UINT8, std::string("UINT8"))->Apply(Batches);

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  at::set_num_threads(1);  // A request's conversion runs on one pool thread.
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

#include "client/result_format.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/result_json.h"

namespace vitserve::client {
namespace {

std::string LabelOrIndex(absl::string_view label, int index) {
  return label.empty() ? absl::StrCat("class ", index) : std::string(label);
}

}  // namespace

std::string TaskName(v1::Task task) {
  switch (task) {
    case v1::CLASSIFICATION: return "classification";
    case v1::DETECTION: return "detection";
    case v1::SEGMENTATION: return "segmentation";
    default: return "unspecified";
  }
}

std::string ClassificationJson(absl::string_view image, absl::string_view model,
                               const v1::Classification& result) {
  return DumpJson(ClassificationToJson(image, model, result));
}

std::string ClassificationText(absl::string_view image, absl::string_view model,
                               const v1::Classification& result) {
  std::string out = absl::StrCat(image, " (", model, "):\n");
  int rank = 1;
  for (const v1::ClassScore& c : result.classes()) {
    absl::StrAppendFormat(&out, "  %2d. %6.2f%%  %s [%d]\n", rank++, 100.0 * c.score(),
                          LabelOrIndex(c.label(), c.index()), c.index());
  }
  if (result.classes().empty()) out += "  (no classes)\n";
  return out;
}

std::string DetectionsJson(absl::string_view image, absl::string_view model,
                           const v1::Detections& result) {
  return DumpJson(DetectionsToJson(image, model, result));
}

std::string DetectionsText(absl::string_view image, absl::string_view model,
                           const v1::Detections& result) {
  std::string out =
      absl::StrCat(image, " (", model, "): ", result.boxes_size(), " detections\n");
  for (const v1::Box& b : result.boxes()) {
    absl::StrAppendFormat(&out, "  %6.2f%%  %-20s [%d]  (%.1f, %.1f)-(%.1f, %.1f)\n",
                          100.0 * b.score(), LabelOrIndex(b.label(), b.index()), b.index(),
                          b.x1(), b.y1(), b.x2(), b.y2());
  }
  return out;
}

std::string SegmentationJson(absl::string_view image, absl::string_view model,
                             const v1::SegmentationMap& result, absl::string_view mask_file) {
  return DumpJson(SegmentationToJson(image, model, result, mask_file));
}

std::string SegmentationText(absl::string_view image, absl::string_view model,
                             const v1::SegmentationMap& result, absl::string_view mask_file) {
  std::string out = absl::StrFormat("%s (%s): %ux%u mask, %d PNG bytes", image, model,
                                    result.width(), result.height(), result.mask().size());
  if (!mask_file.empty()) absl::StrAppend(&out, " -> ", mask_file);
  out += "\n";
  return out;
}

std::string ModelJson(const v1::ModelDescription& m) {
  const OrderedJson out = {{"name", m.name()},
                           {"task", TaskName(m.task())},
                           {"input_size", m.input_size()},
                           {"ready", m.ready()},
                           {"state", m.state()},
                           {"architecture", m.architecture()},
                           {"parameter_count", m.parameter_count()},
                           {"precision", m.precision()},
                           {"device", m.device()},
                           {"num_classes", m.num_classes()},
                           {"instance_count", m.instance_count()},
                           {"random_weights", m.random_weights()}};
  return DumpJson(out);
}

std::string ModelsTable(const v1::ListModelsResponse& models) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "TASK", "INPUT", "READY", "STATE", "ARCHITECTURE", "PARAMS", "PRECISION",
       "DEVICE"}};
  for (const v1::ModelDescription& m : models.models()) {
    std::string params = m.parameter_count() >= 1000000
                             ? absl::StrFormat("%.1fM", m.parameter_count() / 1e6)
                             : absl::StrCat(m.parameter_count());
    rows.push_back({m.name(), TaskName(m.task()), absl::StrCat(m.input_size()),
                    m.ready() ? "yes" : "no", m.state(), m.architecture(), params,
                    m.precision(), m.device()});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string BenchJson(const BenchDescription& d, const BenchResult& r) {
  const bool closed = d.options.rate == 0;
  // Rates and durations with 10 significant digits, latencies with 6.
  auto number = [](double value, int digits) { return JsonNumber(value, digits); };
  OrderedJson errors_by_code = OrderedJson::object();
  for (const auto& [code, count] : r.errors_by_code) errors_by_code[code] = count;
  const OrderedJson out = {
      {"model", d.model},
      {"rpc", d.rpc},
      {"input", d.input},
      {"mode", closed ? "closed" : "open"},
      {"concurrency", closed ? d.options.concurrency : 0},
      {"rate", number(d.options.rate, 10)},
      {"batch", d.options.images_per_request},
      {"duration_s", number(absl::ToDoubleSeconds(d.options.duration), 10)},
      {"warmup_s", number(absl::ToDoubleSeconds(d.options.warmup), 10)},
      {"elapsed_s", number(r.elapsed_s, 10)},
      {"requests", r.requests},
      {"ok_requests", r.ok_requests},
      {"images", r.images},
      {"errors", r.errors},
      {"errors_by_code", std::move(errors_by_code)},
      {"throughput_img_s", number(r.throughput_img_s, 10)},
      {"throughput_req_s", number(r.throughput_req_s, 10)},
      {"mean_ms", number(r.latency.mean_ms, 6)},
      {"p50_ms", number(r.latency.p50_ms, 6)},
      {"p90_ms", number(r.latency.p90_ms, 6)},
      {"p95_ms", number(r.latency.p95_ms, 6)},
      {"p99_ms", number(r.latency.p99_ms, 6)},
      {"max_ms", number(r.latency.max_ms, 6)}};
  return DumpJson(out);
}

std::string BenchText(const BenchDescription& d, const BenchResult& r) {
  const bool closed = d.options.rate == 0;
  std::string out;
  absl::StrAppendFormat(&out, "Model: %s (%s, input %s, %d image(s) per request)\n", d.model,
                        d.rpc, d.input, d.options.images_per_request);
  if (closed) {
    absl::StrAppendFormat(&out, "Load: closed loop, concurrency %d, %.1f s measured",
                          d.options.concurrency, r.elapsed_s);
  } else {
    absl::StrAppendFormat(&out, "Load: open loop, %.1f req/s (%s), %.1f s measured",
                          d.options.rate,
                          d.options.arrival == BenchOptions::Arrival::kPoisson ? "poisson"
                                                                               : "constant",
                          r.elapsed_s);
  }
  absl::StrAppendFormat(&out, " after %.1f s warm-up\n", absl::ToDoubleSeconds(d.options.warmup));
  absl::StrAppendFormat(&out, "  Requests: %d (%d OK, %d failed), images: %d\n", r.requests,
                        r.ok_requests, r.errors, r.images);
  absl::StrAppendFormat(&out, "  Throughput: %.2f img/s, %.2f req/s\n", r.throughput_img_s,
                        r.throughput_req_s);
  absl::StrAppendFormat(&out,
                        "  Latency (ms): p50 %.3f  p90 %.3f  p95 %.3f  p99 %.3f  max %.3f  "
                        "mean %.3f\n",
                        r.latency.p50_ms, r.latency.p90_ms, r.latency.p95_ms, r.latency.p99_ms,
                        r.latency.max_ms, r.latency.mean_ms);
  if (r.errors_by_code.empty()) {
    out += "  Errors: none\n";
  } else {
    out += "  Errors:\n";
    for (const auto& [code, count] : r.errors_by_code) {
      auto it = r.first_error_by_code.find(code);
      absl::StrAppendFormat(&out, "    %s: %d (e.g. \"%s\")\n", code, count,
                            it == r.first_error_by_code.end() ? "" : it->second);
    }
  }
  return out;
}

}  // namespace vitserve::client

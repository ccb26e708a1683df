// vitserve-client: flags -> CliOptions -> RunCli (client/commands.h). Flags live here only.
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/flag_names.h"
#include "common/mutex_mode.h"
#include "client/commands.h"

ABSL_FLAG(std::string, server, vitserve::client::kDefaultServer, "server address HOST:PORT");
ABSL_FLAG(std::string, model, "", "model name");
ABSL_FLAG(double, timeout, 30, "deadline of each call in seconds");
ABSL_FLAG(bool, json, false, "one JSON object per line");
ABSL_FLAG(int, batch, 1, "images per request");
ABSL_FLAG(int, top_k, 0, "classify: classes per image (0: server default, 5)");
ABSL_FLAG(double, score_threshold, 0, "detect: minimum score (0: server default, 0.3)");
ABSL_FLAG(int, max_detections, 0, "detect: most boxes per image (0: server default, 100)");
ABSL_FLAG(std::string, output_dir, "", "segment: directory for <stem>.mask.png files");
ABSL_FLAG(std::string, annotate, "",
          "detect/segment: directory for <stem>.annotated.png (results drawn on the image)");
ABSL_FLAG(int, concurrency, 1, "bench: outstanding requests (closed loop)");
ABSL_FLAG(int, channels, 1,
          "bench: gRPC connections the requests are spread over (round robin), so one "
          "connection's thread is not the load generator's limit");
ABSL_FLAG(double, rate, 0, "bench: requests per second (open loop; 0: closed loop)");
ABSL_FLAG(std::string, arrival, "constant", "bench: open-loop schedule, constant or poisson");
ABSL_FLAG(double, duration, 10, "bench: measured seconds");
ABSL_FLAG(double, warmup, 0, "bench: warm-up seconds before measuring");
ABSL_FLAG(std::string, input, "", "bench: jpeg, raw or tensor (default: jpeg with --image, "
                                  "else raw)");
ABSL_FLAG(std::string, image, "", "bench: image file for --input jpeg");
ABSL_FLAG(std::string, shared_memory, "none",
          "bench --input tensor: none (tensors in the requests) or system (in POSIX shared "
          "memory registered with the server, as perf_analyzer --shared-memory system; the "
          "server needs --allow-client-shm and this host)");
ABSL_FLAG(std::string, tls_ca, "", "TLS: PEM CA certificates that signed the server's certificate");
ABSL_FLAG(std::string, tls_cert, "", "mutual TLS: this client's PEM certificate (with --tls-key)");
ABSL_FLAG(std::string, tls_key, "", "mutual TLS: this client's PEM private key");
ABSL_FLAG(std::string, token_file, "",
          "file whose first line is the bearer token sent with every call (needs --tls-ca)");

namespace {

// absl's own parser exits with status 1 on a bad flag; this CLI promises 2 for usage errors,
// so names and values are checked here first. Returns an error message, or "" when fine.
std::string CheckFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    absl::string_view name = arg, value;
    const size_t eq = arg.find('=');
    const bool has_value = eq != absl::string_view::npos;
    if (has_value) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    if (name == "helpfull" || name == "helpshort" || name == "version" || name == "flagfile" ||
        name == "fromenv" || name == "tryfromenv" || name == "undefok") {
      continue;  // absl's built-in flags
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>() && !has_value) continue;
      flag = nullptr;
    }
    if (flag == nullptr) {
      std::string shown(name);
      std::replace(shown.begin(), shown.end(), '_', '-');
      return absl::StrCat("unknown flag --", shown);
    }
    if (flag->IsOfType<bool>()) {
      if (has_value) {
        std::string error;
        if (!flag->ParseFrom(value, &error)) {
          return absl::StrCat("bad value for --", name, ": ", error);
        }
      }
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return absl::StrCat("flag --", name, " needs a value");
      value = argv[++i];
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::StrCat("bad value for --", name, ": ", error);
    }
  }
  return "";
}

}  // namespace

int main(int raw_argc, char** raw_argv) {
  vitserve::UseReleaseMutexes();
  namespace vc = vitserve::client;
  std::vector<std::string> normalized = vitserve::NormalizeFlagNames(raw_argc, raw_argv);
  std::vector<char*> argv_storage = vitserve::ArgvPointers(normalized);
  argv_storage.push_back(nullptr);
  const int argc = raw_argc;
  char** argv = argv_storage.data();
  absl::SetProgramUsageMessage("command-line client of a vitserve server; see "
                               "'vitserve-client help'");
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h") {
      std::cout << vc::UsageText();
      return vc::kExitOk;
    }
  }
  if (std::string error = CheckFlags(argc, argv); !error.empty()) {
    std::cerr << "error: " << error << "\nRun 'vitserve-client help' for usage.\n";
    return vc::kExitUsage;
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);

  vc::CliOptions options;
  if (positional.size() > 1) options.command = positional[1];
  for (size_t i = 2; i < positional.size(); ++i) options.args.emplace_back(positional[i]);
  options.server = absl::GetFlag(FLAGS_server);
  options.model = absl::GetFlag(FLAGS_model);
  const double timeout_s = absl::GetFlag(FLAGS_timeout);
  options.client.timeout = timeout_s > 0 ? absl::Seconds(timeout_s) : absl::ZeroDuration();
  options.client.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.client.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.client.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.client.token_file = absl::GetFlag(FLAGS_token_file);
  options.json = absl::GetFlag(FLAGS_json);
  options.batch = absl::GetFlag(FLAGS_batch);
  options.top_k = absl::GetFlag(FLAGS_top_k);
  options.score_threshold = absl::GetFlag(FLAGS_score_threshold);
  options.max_detections = absl::GetFlag(FLAGS_max_detections);
  options.output_dir = absl::GetFlag(FLAGS_output_dir);
  options.annotate_dir = absl::GetFlag(FLAGS_annotate);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.channels = absl::GetFlag(FLAGS_channels);
  options.rate = absl::GetFlag(FLAGS_rate);
  options.arrival = absl::GetFlag(FLAGS_arrival);
  options.duration_s = absl::GetFlag(FLAGS_duration);
  options.warmup_s = absl::GetFlag(FLAGS_warmup);
  options.input = absl::GetFlag(FLAGS_input);
  options.image = absl::GetFlag(FLAGS_image);
  options.shared_memory = absl::GetFlag(FLAGS_shared_memory);
  return vc::RunCli(options, std::cout, std::cerr);
}

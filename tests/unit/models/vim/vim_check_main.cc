// vitserve-vim-check: runs vitserve's Vim operators and models on tensors from a safetensors
// file and writes the results to another, so tests/e2e/test_vim_reference.py can compare them
// with mamba-ssm's selective_scan_ref and a Python reference of the official model.
//
//   vitserve-vim-check scan  IN OUT [DEVICE]   IN: u, delta, A, B, C, D, z, delta_bias in the
//                                              token-major layout of selective_scan.h;
//                                              OUT: out, out_reverse
//   vitserve-vim-check conv  IN OUT [DEVICE]   IN: x, weight, bias; OUT: out, out_reverse
//   vitserve-vim-check model ARCH WEIGHTS IN OUT [DEVICE]
//                                              every tensor T of IN ([N,3,H,W] images) gives
//                                              logits_T in OUT
// DEVICE: cpu (default) or cuda. Exit code 0 on success, 1 on any error (message on stderr).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "models/model_loader.h"
#include "models/registry.h"
#include "models/vim/selective_scan.h"
#include "models/vim/vim_models.h"
#include "models/weights/safetensors.h"

namespace vitserve {
namespace {

at::Tensor Get(const SafetensorsFile& file, const std::string& name, const at::Device& device) {
  return file.Tensor(name).value().clone().to(device);
}

int Run(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  c10::InferenceMode guard;
  if ((mode == "scan" || mode == "conv") && argc >= 4) {
    const at::Device device(argc > 4 ? argv[4] : "cpu");
    const SafetensorsFile in = SafetensorsFile::Open(argv[2]).value();
    std::map<std::string, at::Tensor> out;
    if (mode == "scan") {
      vim::SelectiveScanInputs scan;
      scan.u = Get(in, "u", device);
      scan.delta = Get(in, "delta", device);
      scan.A = Get(in, "A", device);
      scan.B = Get(in, "B", device);
      scan.C = Get(in, "C", device);
      scan.D = Get(in, "D", device);
      scan.z = Get(in, "z", device);
      scan.delta_bias = Get(in, "delta_bias", device);
      out["out"] = vim::SelectiveScan(scan).cpu();
      scan.reverse = true;
      out["out_reverse"] = vim::SelectiveScan(scan).cpu();
    } else {
      const at::Tensor x = Get(in, "x", device), w = Get(in, "weight", device);
      const at::Tensor b = Get(in, "bias", device);
      out["out"] = vim::CausalConv1dSilu(x, w, b, false).cpu();
      out["out_reverse"] = vim::CausalConv1dSilu(x, w, b, true).cpu();
    }
    const absl::Status status = WriteSafetensors(argv[3], out);
    if (!status.ok()) throw std::runtime_error(status.ToString());
    return 0;
  }
  if (mode == "model" && argc >= 6) {
    const at::Device device(argc > 6 ? argv[6] : "cpu");
    ModelRegistry registry;
    if (!RegisterVimModels(registry).ok()) throw std::runtime_error("registration failed");
    LoadOptions options;
    options.weights_path = argv[3];
    absl::StatusOr<LoadedModel> loaded = LoadModel(registry, argv[2], options);
    if (!loaded.ok()) throw std::runtime_error(loaded.status().ToString());
    loaded->module->to(device);
    const SafetensorsFile in = SafetensorsFile::Open(argv[4]).value();
    std::map<std::string, at::Tensor> out;
    for (const std::string& name : in.Names()) {
      out["logits_" + name] = loaded->module->forward(Get(in, name, device)).cpu();
    }
    const absl::Status status = WriteSafetensors(argv[5], out);
    if (!status.ok()) throw std::runtime_error(status.ToString());
    return 0;
  }
  std::fprintf(stderr,
               "usage: vitserve-vim-check scan|conv IN OUT [DEVICE]\n"
               "       vitserve-vim-check model ARCH WEIGHTS IN OUT [DEVICE]\n");
  return 2;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  try {
    return vitserve::Run(argc, argv);
  } catch (const std::exception& e) {  // c10::Error, bad_optional/StatusOr access, I/O
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

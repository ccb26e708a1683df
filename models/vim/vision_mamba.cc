#include "models/vim/vision_mamba.h"

#include <c10/core/GradMode.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <utility>
#include <vector>

#include "models/layers/init.h"
#include "models/vim/selective_scan.h"
#include "models/layers/linear.h"

namespace vitserve {
namespace {

namespace nn = torch::nn;

// RMSNorm as mamba_ssm's (weight only): computed in fp32, returned in `out_dtype`.
class RmsNormImpl : public nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps) : eps_(eps) {
    weight = register_parameter("weight", at::ones({dim}));
  }
  at::Tensor forward(const at::Tensor& x_fp32, at::ScalarType out_dtype) {
    const at::Tensor rstd = at::rsqrt(x_fp32.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return (x_fp32 * rstd * weight.to(at::kFloat)).to(out_dtype);
  }
  double eps() const { return eps_; }
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

class PatchEmbedImpl : public nn::Module {
 public:
  PatchEmbedImpl(int64_t patch, int64_t dim)
      : proj(register_module("proj", nn::Conv2d(nn::Conv2dOptions(3, dim, patch).stride(patch)))) {}
  nn::Conv2d proj;
};
TORCH_MODULE(PatchEmbed);

// The parameters of one scan direction of the mixer.
struct Direction {
  nn::Conv1d conv{nullptr};
  layers::Linear x_proj{nullptr};
  layers::Linear dt_proj{nullptr};
  at::Tensor a_log;
  at::Tensor d_skip;
};

// Mamba mixer with bimamba v2 (mamba_simple.py, Mamba with bimamba_type="v2").
class MixerImpl : public nn::Module {
 public:
  MixerImpl(const VimConfig& c, int64_t dt_rank)
      : inner_(c.expand * c.embed_dim), state_(c.d_state), dt_rank_(dt_rank) {
    in_proj_ = register_module("in_proj",
                               layers::Linear(nn::LinearOptions(c.embed_dim, 2 * inner_).bias(false)));
    forward_ = MakeDirection(c, "", "");
    backward_ = MakeDirection(c, "_b", "_b");
    out_proj_ =
        register_module("out_proj", layers::Linear(nn::LinearOptions(inner_, c.embed_dim).bias(false)));
  }

  at::Tensor forward(const at::Tensor& hidden) {
    const at::Tensor xz = in_proj_->forward(hidden);  // [B, L, 2·inner]
    const at::Tensor x = xz.narrow(2, 0, inner_);
    const at::Tensor z = xz.narrow(2, inner_, inner_);
    const at::Tensor y_forward = Scan(forward_, x, z, /*reverse=*/false, at::Tensor());
    // (y_f + y_b) / 2, averaged inside the backward scan.
    return out_proj_->forward(Scan(backward_, x, z, /*reverse=*/true, y_forward));
  }

  // Official initialisation of the mixer's own parameters (Mamba.__init__); Linear and Conv1d
  // weights keep PyTorch's default init, as there.
  void InitWeights(int64_t depth) {
    c10::NoGradGuard no_grad;
    const double dt_std = 1.0 / std::sqrt(static_cast<double>(dt_rank_));
    for (Direction* dir : {&forward_, &backward_}) {
      dir->dt_proj->weight.uniform_(-dt_std, dt_std);
      // Δ log-uniform in [1e-3, 1e-1], floored at 1e-4; bias = softplus⁻¹(Δ).
      at::Tensor dt =
          at::exp(at::rand({inner_}) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3))
              .clamp_min(1e-4);
      dir->dt_proj->bias.copy_(dt + at::log(-at::expm1(-dt)));
      // S4D-real: A[d, n] = n + 1.
      dir->a_log.copy_(at::log(at::arange(1, state_ + 1, at::kFloat)).expand({inner_, state_}));
      dir->d_skip.fill_(1.0);
    }
    // _init_weights with rescale_prenorm_residual: out_proj.weight /= sqrt(depth).
    nn::init::kaiming_uniform_(out_proj_->weight, std::sqrt(5.0));
    out_proj_->weight.div_(std::sqrt(static_cast<double>(depth)));
  }

 private:
  Direction MakeDirection(const VimConfig& c, const std::string& module_suffix,
                          const std::string& param_suffix) {
    Direction dir;
    dir.conv = register_module("conv1d" + module_suffix,
                               nn::Conv1d(nn::Conv1dOptions(inner_, inner_, c.d_conv)
                                              .groups(inner_)
                                              .padding(c.d_conv - 1)
                                              .bias(true)));
    dir.x_proj =
        register_module("x_proj" + module_suffix,
                        layers::Linear(nn::LinearOptions(inner_, dt_rank_ + 2 * state_).bias(false)));
    dir.dt_proj = register_module("dt_proj" + module_suffix, layers::Linear(dt_rank_, inner_));
    // A_log and A_b_log: the suffix goes before "_log".
    dir.a_log = register_parameter(param_suffix.empty() ? "A_log" : "A" + param_suffix + "_log",
                                   at::zeros({inner_, state_}));
    dir.d_skip = register_parameter("D" + param_suffix, at::ones({inner_}));
    return dir;
  }

  // One direction: conv → SiLU → x_proj → Δ, B, C → gated selective scan; [B, L, inner] out,
  // averaged with `average_with` when that is defined.
  at::Tensor Scan(const Direction& dir, const at::Tensor& x, const at::Tensor& z, bool reverse,
                  const at::Tensor& average_with) {
    const at::Tensor u = vim::CausalConv1dSilu(x, dir.conv->weight, dir.conv->bias, reverse);
    const at::Tensor x_dbl = at::linear(u, dir.x_proj->weight);  // [B, L, dt_rank + 2N]
    vim::SelectiveScanInputs in;
    in.u = u;
    in.delta = at::linear(x_dbl.narrow(2, 0, dt_rank_), dir.dt_proj->weight);
    // The parameters as stored: A = −exp(A_log) and the fp32 conversions happen inside the
    // kernel (on CPU in the reference), not as five small kernels per call.
    in.A_log = dir.a_log;
    in.B = x_dbl.narrow(2, dt_rank_, state_);
    in.C = x_dbl.narrow(2, dt_rank_ + state_, state_);
    in.D = dir.d_skip;
    in.z = z;
    in.delta_bias = dir.dt_proj->bias;
    in.delta_softplus = true;
    in.reverse = reverse;
    in.average_with = average_with;
    return vim::SelectiveScan(in);
  }

  int64_t inner_;
  int64_t state_;
  int64_t dt_rank_;
  layers::Linear in_proj_{nullptr};
  Direction forward_;
  Direction backward_;
  layers::Linear out_proj_{nullptr};
};
TORCH_MODULE(Mixer);

// Block with fused_add_norm and residual_in_fp32 (models_mamba.py, Block): returns the mixer
// output and updates the fp32 residual stream.
class BlockImpl : public nn::Module {
 public:
  BlockImpl(const VimConfig& c, int64_t dt_rank)
      : mixer(register_module("mixer", Mixer(c, dt_rank))),
        norm(register_module("norm", RmsNorm(c.embed_dim, c.norm_eps))) {}

  at::Tensor forward(const at::Tensor& hidden, at::Tensor& residual) {
    return mixer->forward(vim::AddRmsNorm(hidden, residual, norm->weight, norm->eps()));
  }

  Mixer mixer;
  RmsNorm norm;
};
TORCH_MODULE(Block);

class VisionMamba final : public VisionModel {
 public:
  explicit VisionMamba(const VimConfig& config) : config_(config) {
    TORCH_CHECK(config.img_size % config.patch_size == 0, "image size ", config.img_size,
                " is not a multiple of the patch size ", config.patch_size);
    TORCH_CHECK(config.embed_dim > 0 && config.depth > 0 && config.d_state > 0 &&
                    config.d_conv > 0 && config.expand > 0,
                "Vim: non-positive size in the config");
    const int64_t dim = config.embed_dim;
    const int64_t dt_rank = config.dt_rank > 0 ? config.dt_rank : (dim + 15) / 16;
    grid_ = config.img_size / config.patch_size;
    patch_embed_ = register_module("patch_embed", PatchEmbed(config.patch_size, dim));
    cls_token_ = register_parameter("cls_token", at::zeros({1, 1, dim}));
    pos_embed_ = register_parameter("pos_embed", at::zeros({1, grid_ * grid_ + 1, dim}));
    head_ = register_module("head", layers::Linear(dim, config.num_classes));
    layers_ = register_module("layers", nn::ModuleList());
    for (int64_t i = 0; i < config.depth; ++i) {
      Block block(config, dt_rank);
      layers_->push_back(block);
      layer_list_.push_back(block);
    }
    norm_f_ = register_module("norm_f", RmsNorm(dim, config.norm_eps));
    InitWeights();
  }

  torch::Tensor forward(torch::Tensor images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) >= config_.patch_size &&
                    images.size(3) >= config_.patch_size,
                "Vim expects images [N,3,H,W] with H, W >= ", config_.patch_size, ", got ",
                images.sizes());
    at::Tensor x = patch_embed_->proj->forward(images);  // [B, D, gh, gw]
    const int64_t grid_h = x.size(2), grid_w = x.size(3);
    x = x.flatten(2).transpose(1, 2);  // [B, M, D], row-major patches
    const int64_t batch = x.size(0), patches = x.size(1);
    const int64_t token = patches / 2;  // Middle class token.
    x = at::cat({x.narrow(1, 0, token), cls_token_.expand({batch, -1, -1}),
                 x.narrow(1, token, patches - token)},
                1);
    x = x + PositionEmbedding(grid_h, grid_w);

    at::Tensor residual;  // fp32, undefined before the first block
    at::Tensor hidden = x;
    for (Block& layer : layer_list_) hidden = layer->forward(hidden, residual);
    residual = residual + hidden.to(at::kFloat);
    hidden = norm_f_->forward(residual.select(1, token), hidden.scalar_type());
    return head_->forward(hidden);
  }

 private:
  // pos_embed for a grid_h × grid_w patch grid, class-token entry in the middle (N/2).
  at::Tensor PositionEmbedding(int64_t grid_h, int64_t grid_w) const {
    if (grid_h == grid_ && grid_w == grid_) return pos_embed_;
    const int64_t old_patches = grid_ * grid_, dim = pos_embed_.size(2);
    const int64_t old_token = old_patches / 2;
    const at::Tensor cls_pos = pos_embed_.narrow(1, old_token, 1);
    at::Tensor grid_pos = at::cat({pos_embed_.narrow(1, 0, old_token),
                                   pos_embed_.narrow(1, old_token + 1, old_patches - old_token)},
                                  1);
    grid_pos = grid_pos.to(at::kFloat).reshape({1, grid_, grid_, dim}).permute({0, 3, 1, 2});
    namespace F = torch::nn::functional;
    grid_pos = F::interpolate(grid_pos, F::InterpolateFuncOptions()
                                            .size(std::vector<int64_t>{grid_h, grid_w})
                                            .mode(torch::kBicubic)
                                            .align_corners(false)
                                            .antialias(true));
    grid_pos = grid_pos.permute({0, 2, 3, 1})
                   .reshape({1, grid_h * grid_w, dim})
                   .to(pos_embed_.scalar_type());
    const int64_t token = grid_h * grid_w / 2;
    return at::cat(
        {grid_pos.narrow(1, 0, token), cls_pos, grid_pos.narrow(1, token, grid_h * grid_w - token)},
        1);
  }

  // models_mamba.py: segm_init_weights on patch_embed and head, trunc_normal_(.02) on pos_embed
  // and cls_token, then _init_weights (Linear biases zeroed except dt_proj's, out_proj rescaled).
  void InitWeights() {
    c10::NoGradGuard no_grad;
    nn::Conv2d proj = patch_embed_->proj;
    // timm's lecun_normal_: truncated normal with std sqrt(1/fan_in), corrected for truncation.
    const double fan_in = static_cast<double>(proj->weight[0].numel());
    layers::TruncNormal_(proj->weight, std::sqrt(1.0 / fan_in) / 0.87962566103423978);
    proj->bias.zero_();
    layers::TruncNormal_(head_->weight, 0.02);
    head_->bias.zero_();
    layers::TruncNormal_(pos_embed_, 0.02);
    layers::TruncNormal_(cls_token_, 0.02);
    for (Block& layer : layer_list_) layer->mixer->InitWeights(config_.depth);
  }

  VimConfig config_;
  int64_t grid_ = 0;
  PatchEmbed patch_embed_{nullptr};
  at::Tensor cls_token_, pos_embed_;
  layers::Linear head_{nullptr};
  nn::ModuleList layers_{nullptr};
  std::vector<Block> layer_list_;  // The same modules as layers_, typed for the forward loop.
  RmsNorm norm_f_{nullptr};
};

}  // namespace

std::shared_ptr<VisionModel> MakeVisionMamba(const VimConfig& config) {
  return std::make_shared<VisionMamba>(config);
}

}  // namespace vitserve

#include "models/vittm/vittm.h"

#include <c10/core/GradMode.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <string>
#include <vector>

#include "models/layers/init.h"
#include "models/layers/vit_layers.h"
#include "models/layers/layer_norm.h"
#include "models/layers/linear.h"

namespace vitserve {
namespace {

namespace nn = torch::nn;
using vit_layers::MakeLayerNorm;

constexpr double kTorchLayerNormEps = 1e-5;  // nn.LayerNorm's default, used inside rw_heads.py.

// rw_heads.py LinearAttention (fast-transformers' linear attention, φ(x) = ELU(x) + 1):
//   out_l = Σ_s φ(q_l)·φ(k_s) v_s / (φ(q_l)·Σ_s φ(k_s) + ε), per head, in O((N+M)·d²).
// `proj` exists in the released checkpoint but forward() never applies it; neither do we.
class LinearAttentionHead final : public VittmRwHeadImpl {
 public:
  LinearAttentionHead(int64_t dim, int64_t latent, int64_t heads)
      : heads_(heads),
        q_(register_module("q", layers::Linear(dim, latent))),
        k_(register_module("k", layers::Linear(dim, latent))),
        v_(register_module("v", layers::Linear(dim, dim))),
        proj_(register_module("proj", layers::Linear(dim, dim))) {
    TORCH_CHECK(dim % heads == 0 && latent % heads == 0, "linear attention: dim ", dim,
                " and latent size ", latent, " must be divisible by ", heads, " heads");
  }
  at::Tensor forward(const at::Tensor& input, const at::Tensor& query) override {
    const int64_t batch = input.size(0), n = input.size(1), m = query.size(1), c = input.size(2);
    const at::Tensor q = at::elu(q_->forward(query).reshape({batch, m, heads_, -1})) + 1;
    const at::Tensor k = at::elu(k_->forward(input).reshape({batch, n, heads_, -1})) + 1;
    const at::Tensor v = v_->forward(input).reshape({batch, n, heads_, -1});
    const at::Tensor kv = at::einsum("nshd,nshm->nhmd", {k, v});
    const at::Tensor z = at::reciprocal(at::einsum("nlhd,nhd->nlh", {q, k.sum(1)}) + kEps);
    return at::einsum("nlhd,nhmd,nlh->nlhm", {q, kv, z}).reshape({batch, m, c});
  }

 private:
  static constexpr double kEps = 1e-6;
  int64_t heads_;
  layers::Linear q_, k_, v_, proj_;
};

// rw_heads.py TokenLearner: the target's tokens are learned from [input ++ query] (exact GELU,
// nn.LayerNorm ε = 1e-5, bottleneck = number of target tokens).
class TokenLearnerHead final : public VittmRwHeadImpl {
 public:
  TokenLearnerHead(int64_t dim, int64_t target_tokens)
      : mlp_(register_module("mlp", vit_layers::Mlp(dim, target_tokens, target_tokens))),
        norm_(register_module("norm", MakeLayerNorm(dim, kTorchLayerNormEps))) {}
  at::Tensor forward(const at::Tensor& input, const at::Tensor& query) override {
    const at::Tensor both = at::cat({input, query}, 1);
    const at::Tensor weights = at::softmax(mlp_->forward(norm_->forward(both)).transpose(1, 2), -1);
    return at::matmul(weights, both);
  }

 private:
  vit_layers::Mlp mlp_;
  layers::LayerNorm norm_;
};

// rw_heads.py CrossAttention: LayerNorm'd q/k/v projections, softmax attention, output proj.
class CrossAttentionHead final : public VittmRwHeadImpl {
 public:
  CrossAttentionHead(int64_t dim, int64_t heads)
      : heads_(heads),
        q_(register_module("q", layers::Linear(dim, dim))),
        q_norm_(register_module("q_norm", MakeLayerNorm(dim, kTorchLayerNormEps))),
        k_(register_module("k", layers::Linear(dim, dim))),
        k_norm_(register_module("k_norm", MakeLayerNorm(dim, kTorchLayerNormEps))),
        v_(register_module("v", layers::Linear(dim, dim))),
        v_norm_(register_module("v_norm", MakeLayerNorm(dim, kTorchLayerNormEps))),
        proj_(register_module("proj", layers::Linear(dim, dim))) {
    TORCH_CHECK(dim % heads == 0, "cross attention: dim ", dim, " not divisible by ", heads);
  }
  at::Tensor forward(const at::Tensor& input, const at::Tensor& query) override {
    const int64_t batch = input.size(0), n = input.size(1), m = query.size(1), c = input.size(2);
    auto split = [&](const at::Tensor& t, int64_t len) {
      return t.reshape({batch, len, heads_, c / heads_}).transpose(1, 2);
    };
    const at::Tensor q = split(q_norm_->forward(q_->forward(query)), m);
    const at::Tensor k = split(k_norm_->forward(k_->forward(input)), n);
    const at::Tensor v = split(v_norm_->forward(v_->forward(input)), n);
    const at::Tensor out = at::scaled_dot_product_attention(q, k, v);
    return proj_->forward(out.transpose(1, 2).reshape({batch, m, c}));
  }

 private:
  int64_t heads_;
  layers::Linear q_;
  layers::LayerNorm q_norm_;
  layers::Linear k_;
  layers::LayerNorm k_norm_;
  layers::Linear v_;
  layers::LayerNorm v_norm_;
  layers::Linear proj_;
};

// fusion.py AddEraseFusion's parameters: `linear` maps the mean rw token to one gate per target.
class AddEraseGate final : public nn::Module {
 public:
  AddEraseGate(int64_t dim, int64_t target_tokens)
      : linear_(register_module("linear", layers::Linear(dim, target_tokens))) {}
  layers::Linear& linear() { return linear_; }

 private:
  layers::Linear linear_;
};

class Vittm final : public VittmModel {
 public:
  explicit Vittm(const VittmConfig& config) : config_(config) {
    const int64_t dim = config.embed_dim, size = config.img_size;
    for (int64_t ps : {config.patch_size, config.memory_ps, config.process_ps}) {
      TORCH_CHECK(ps > 0 && size % ps == 0, "image size ", size, " is not a multiple of ", ps);
    }
    TORCH_CHECK(dim % config.num_heads == 0, "embed_dim ", dim, " not divisible by ",
                config.num_heads, " heads");
    TORCH_CHECK(config.latent_size_scale > 0 && dim % config.latent_size_scale == 0,
                "embed_dim must be divisible by latent_size_scale");
    const int64_t grid = size / config.patch_size;
    const int64_t memory_size = (size / config.memory_ps) * (size / config.memory_ps);
    const int64_t process_size = (size / config.process_ps) * (size / config.process_ps);
    // The timm parent's (unused) class token and position embedding, for strict loading.
    cls_token_ = register_parameter("cls_token", at::zeros({1, 1, dim}));
    pos_embed_ = register_parameter("pos_embed", at::zeros({1, grid * grid + 1, dim}));
    process_pos_embed_ = register_parameter("process_pos_embed", at::zeros({1, process_size, dim}));
    memory_pos_embed_ = register_parameter("memory_pos_embed", at::zeros({1, memory_size, dim}));
    auto patch_embed =
        register_module("patch_embed", vit_layers::PatchEmbed(config.patch_size, dim));
    auto blocks = register_module("blocks", nn::ModuleList());
    for (int64_t i = 0; i < config.depth; ++i) {
      vit_layers::Block block(dim, config.num_heads, dim * config.mlp_ratio);
      blocks->push_back(block);
      blocks_.push_back(block);
    }
    fc_norm_ = register_module("fc_norm", MakeLayerNorm(dim));
    head_ = register_module("head", layers::Linear(dim, config.num_classes));
    memory_embedder_ =
        config.memory_ps == config.patch_size
            ? register_module("memory_embedder", patch_embed)  // Same module.
            : register_module("memory_embedder", vit_layers::PatchEmbed(config.memory_ps, dim));
    process_embedder_ =
        register_module("process_embedder", vit_layers::PatchEmbed(config.process_ps, dim));
    auto read_norm = register_module("read_norm", nn::ModuleList());
    auto write_norm = register_module("write_norm", nn::ModuleList());
    for (int64_t i = 0; i < config.depth; ++i) {
      read_norm_.push_back(MakeLayerNorm(dim));
      write_norm_.push_back(MakeLayerNorm(dim));
      read_norm->push_back(read_norm_.back());
      write_norm->push_back(write_norm_.back());
    }
    process_norm_ = register_module("process_norm", MakeLayerNorm(dim));
    process_head_ = register_module("process_head", layers::Linear(dim, config.num_classes));
    fc_norm_process_ = register_module("fc_norm_process", MakeLayerNorm(dim));
    auto read_head = register_module("read_head", nn::ModuleList());
    auto write_head = register_module("write_head", nn::ModuleList());
    const int64_t latent = dim / config.latent_size_scale;
    for (int64_t i = 0; i < config.depth; ++i) {
      read_head_.push_back(
          MakeVittmRwHead(config.rw_head, dim, config.num_heads, latent, process_size));
      write_head_.push_back(
          MakeVittmRwHead(config.rw_head, dim, config.num_heads, latent, memory_size));
      read_head->push_back(read_head_.back());
      write_head->push_back(write_head_.back());
    }
    if (config.fusion == VittmFusion::kAddErase) {
      read_fusion_ =
          register_module("read_fusion", std::make_shared<AddEraseGate>(dim, process_size));
      write_fusion_ =
          register_module("write_fusion", std::make_shared<AddEraseGate>(dim, memory_size));
    }
    InitWeights();
  }

  std::pair<at::Tensor, at::Tensor> ForwardFeatures(const at::Tensor& images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == config_.img_size &&
                    images.size(3) == config_.img_size,
                "ViTTM expects images [N,3,", config_.img_size, ",", config_.img_size, "], got ",
                images.sizes());
    at::Tensor memory = memory_embedder_->forward(images) + memory_pos_embed_;
    at::Tensor process = process_embedder_->forward(images) + process_pos_embed_;
    for (int64_t i = 0; i < config_.depth; ++i) {
      memory = read_norm_[i]->forward(memory);
      process = read_norm_[i]->forward(process);
      process = VittmFuse(config_.fusion, read_head_[i]->forward(memory, process), process,
                          read_fusion_.get());
      process = blocks_[i]->forward(process);
      memory = write_norm_[i]->forward(memory);
      process = write_norm_[i]->forward(process);
      memory = VittmFuse(config_.fusion, write_head_[i]->forward(process, memory), memory,
                         write_fusion_.get());
    }
    return {memory, process_norm_->forward(process)};  // timm's `norm` is Identity here.
  }

  std::pair<at::Tensor, at::Tensor> ForwardHeads(const at::Tensor& images) override {
    auto [memory, process] = ForwardFeatures(images);
    return {head_->forward(fc_norm_->forward(memory.mean(1))),
            process_head_->forward(fc_norm_process_->forward(process.mean(1)))};
  }

  torch::Tensor forward(torch::Tensor images) override {
    switch (config_.output) {
      case VittmOutput::kMemoryHead:
      case VittmOutput::kProcessHead: {
        auto [memory, process] = ForwardFeatures(images);
        return config_.output == VittmOutput::kMemoryHead
                   ? head_->forward(fc_norm_->forward(memory.mean(1)))
                   : process_head_->forward(fc_norm_process_->forward(process.mean(1)));
      }
      case VittmOutput::kMeanOfHeads: {
        auto [memory_logits, process_logits] = ForwardHeads(images);
        return (memory_logits + process_logits) / 2;
      }
    }
    TORCH_CHECK(false, "unknown ViTTM output");
  }

 private:
  // timm's init (trunc-normal 0.02 linears, zero biases) and vittm.py's trunc-normal position
  // embeddings. vittm.py zero-initialises both classifier heads for training; random-weight
  // serving keeps them trunc-normal so outputs are not constant.
  void InitWeights() {
    c10::NoGradGuard no_grad;
    layers::TruncNormal_(pos_embed_, 0.02);
    layers::TruncNormal_(process_pos_embed_, 0.02);
    layers::TruncNormal_(memory_pos_embed_, 0.02);
    cls_token_.normal_(0.0, 1e-6);
    vit_layers::InitLinearsTimm(*this);
  }

  VittmConfig config_;
  at::Tensor cls_token_, pos_embed_, process_pos_embed_, memory_pos_embed_;
  std::vector<vit_layers::Block> blocks_;
  layers::LayerNorm fc_norm_{nullptr}, process_norm_{nullptr}, fc_norm_process_{nullptr};
  layers::Linear head_{nullptr}, process_head_{nullptr};
  vit_layers::PatchEmbed memory_embedder_{nullptr}, process_embedder_{nullptr};
  std::vector<layers::LayerNorm> read_norm_, write_norm_;
  std::vector<std::shared_ptr<VittmRwHeadImpl>> read_head_, write_head_;
  std::shared_ptr<AddEraseGate> read_fusion_, write_fusion_;
};

}  // namespace

std::shared_ptr<VittmRwHeadImpl> MakeVittmRwHead(VittmRwHead type, int64_t dim, int64_t heads,
                                                 int64_t latent_size, int64_t target_tokens) {
  switch (type) {
    case VittmRwHead::kLinear:
      return std::make_shared<LinearAttentionHead>(dim, latent_size, heads);
    case VittmRwHead::kTokenLearner:
      return std::make_shared<TokenLearnerHead>(dim, target_tokens);
    case VittmRwHead::kCrossAttention:
      return std::make_shared<CrossAttentionHead>(dim, heads);
  }
  TORCH_CHECK(false, "unknown ViTTM read/write head");
}

std::shared_ptr<torch::nn::Module> MakeVittmAddEraseGate(int64_t dim, int64_t target_tokens) {
  return std::make_shared<AddEraseGate>(dim, target_tokens);
}

at::Tensor VittmFuse(VittmFusion fusion, const at::Tensor& rw, const at::Tensor& target,
                     torch::nn::Module* gate) {
  switch (fusion) {
    case VittmFusion::kAdd:  // ResidualFusion.
      return target + rw;
    case VittmFusion::kErase:  // EraseFusion.
      return rw;
    case VittmFusion::kAddErase: {  // AddEraseFusion: per-target-token sigmoid gate.
      auto* add_erase = dynamic_cast<AddEraseGate*>(gate);
      TORCH_CHECK(add_erase != nullptr, "add-erase fusion needs its gate module");
      const at::Tensor g = at::sigmoid(add_erase->linear()->forward(rw.mean(1))).unsqueeze(-1);
      return target * (1 - g) + rw * g;
    }
  }
  TORCH_CHECK(false, "unknown ViTTM fusion");
}

std::shared_ptr<VittmModel> MakeVittm(const VittmConfig& config) {
  return std::make_shared<Vittm>(config);
}

}  // namespace vitserve

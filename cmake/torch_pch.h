// Precompiled header for targets that use LibTorch: the tensor, the ATen operators and
// nn::Module. Files still include what they use; this only makes those includes cheap.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/functional.h>

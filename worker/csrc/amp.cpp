// Mixed precision switches that tch does not expose: tch's `autocast` turns on CUDA autocast
// with its default dtype (float16, which needs a gradient scaler tch also lacks). bfloat16
// keeps float32's exponent range, so it trains without loss scaling.
#include <ATen/autocast_mode.h>

extern "C" {

// Enables (or disables) bfloat16 autocast for `cuda` (else CPU) tensors. Returns 0 on success,
// 1 if libtorch refused.
int sweep_set_bf16_autocast(int cuda, int enabled) {
  try {
    const auto device = cuda ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_dtype(device, at::kBFloat16);
    at::autocast::set_autocast_enabled(device, enabled != 0);
    if (!enabled) {
      at::autocast::clear_cache();
    }
    return 0;
  } catch (...) {
    return 1;
  }
}

// Forgets the bfloat16 copies autocast made of the weights. Autocast caches them until its
// outermost region ends, and here that region is the whole trial: without this, every
// forward pass after the first ran on the first step's weights (found on an H200 on
// 2026-12-04: `fast` reached 28% instead of training; only batch norm and biases learned).
void sweep_clear_autocast_cache() {
  try {
    at::autocast::clear_cache();
  } catch (...) {
  }
}

}

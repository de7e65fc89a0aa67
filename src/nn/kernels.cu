// alignbench's own CUDA kernels (issue 16): fused group norm (Wu & He 2018) and layer norm (Ba, Kiros &
// Hinton 2016), forward and input gradient, one launch each; the attention softmax's dS and SiLU's input gradient.
// Compiled to PTX by build.rs with the `cuda` feature; the host side and the reference of the tests are in
// src/nn/fused.rs.
//
// A tensor is `rows` rows of `len` contiguous values, normalised per row (biased variance, two passes in the
// accumulation type A: f32 for f32/f16/bf16 storage, f64 for f64). Value i of row r belongs to channel
// (r % groups) * (len / hw) + i / hw: group norm of [b, c, h, w] is rows = b·groups, len = (c / groups)·h·w,
// hw = h·w; layer norm of [..., c] is groups = hw = 1. One block per row; blockDim.x is a multiple of 32.
//
//   forward:        y = (x − μ)/σ · γ_c + β_c
//   input gradient: with x̂ = (x − μ)/σ and g = γ_c · ∂L/∂y,  ∂L/∂x = (g − mean(g) − x̂ · mean(g x̂)) / σ
#include <cuda_fp16.h>
#include <cuda_bf16.h>

template <typename A>
__device__ __forceinline__ A block_sum(A v, A *shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();  // the previous call's readers of shared[0] are done
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? shared[lane] : A(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  return shared[0];
}

// μ and 1/σ of one row.
template <typename T, typename A>
__device__ __forceinline__ void row_stats(const T *x, int len, A eps, A *shared, A &mean, A &inv) {
  A s = 0;
  for (int i = threadIdx.x; i < len; i += blockDim.x) s += static_cast<A>(x[i]);
  mean = block_sum(s, shared) / A(len);
  A q = 0;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const A d = static_cast<A>(x[i]) - mean;
    q += d * d;
  }
  inv = A(1) / sqrt(block_sum(q, shared) / A(len) + eps);
}

template <typename T, typename A>
__device__ void norm_fwd(const T *x, const T *w, const T *b, T *y, int len, int groups, int hw, double eps) {
  __shared__ A shared[32];
  const long long row = blockIdx.x;
  const T *xr = x + row * len;
  T *yr = y + row * len;
  A mean, inv;
  row_stats<T, A>(xr, len, A(eps), shared, mean, inv);
  const int c0 = static_cast<int>(row % groups) * (len / hw);
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const int c = c0 + i / hw;
    yr[i] = static_cast<T>((static_cast<A>(xr[i]) - mean) * inv * static_cast<A>(w[c]) + static_cast<A>(b[c]));
  }
}

template <typename T, typename A>
__device__ void norm_input_grad(const T *x, const T *dy, const T *w, T *dx, int len, int groups, int hw, double eps) {
  __shared__ A shared[32];
  const long long row = blockIdx.x;
  const T *xr = x + row * len;
  const T *gr = dy + row * len;
  T *dr = dx + row * len;
  A mean, inv;
  row_stats<T, A>(xr, len, A(eps), shared, mean, inv);
  const int c0 = static_cast<int>(row % groups) * (len / hw);
  A sg = 0, sgx = 0;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const A g = static_cast<A>(gr[i]) * static_cast<A>(w[c0 + i / hw]);
    sg += g;
    sgx += g * (static_cast<A>(xr[i]) - mean) * inv;
  }
  const A mg = block_sum(sg, shared) / A(len);
  const A mgx = block_sum(sgx, shared) / A(len);
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const A g = static_cast<A>(gr[i]) * static_cast<A>(w[c0 + i / hw]);
    const A xh = (static_cast<A>(xr[i]) - mean) * inv;
    dr[i] = static_cast<T>((g - mg - xh * mgx) * inv);
  }
}

#define NORM_KERNELS(T, A, SUFFIX)                                                                           \
  extern "C" __global__ void norm_fwd_##SUFFIX(const T *x, const T *w, const T *b, T *y, int len, int groups, \
                                               int hw, double eps) {                                         \
    norm_fwd<T, A>(x, w, b, y, len, groups, hw, eps);                                                        \
  }                                                                                                          \
  extern "C" __global__ void norm_input_grad_##SUFFIX(const T *x, const T *dy, const T *w, T *dx, int len,    \
                                                      int groups, int hw, double eps) {                      \
    norm_input_grad<T, A>(x, dy, w, dx, len, groups, hw, eps);                                               \
  }

NORM_KERNELS(float, float, f32)
NORM_KERNELS(double, double, f64)
NORM_KERNELS(__half, float, f16)
NORM_KERNELS(__nv_bfloat16, float, bf16)

// The softmax's backward inside attention (src/problems/sd15/attention.rs): with the probabilities P, their
// gradient dP and the per-row correction c = rowsum(dO ⊙ O), dS = P ⊙ (dP − c), computed in A and stored in T.
// `n` values in rows of `cols`; c holds one A per row. A grid-stride loop over the values.
template <typename T, typename A>
__device__ void softmax_grad(const T *p, const T *dp, const A *c, T *ds, int cols, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    ds[i] = static_cast<T>(static_cast<A>(p[i]) * (static_cast<A>(dp[i]) - c[i / cols]));
  }
}

#define SOFTMAX_GRAD_KERNEL(T, A, SUFFIX)                                                                     \
  extern "C" __global__ void softmax_grad_##SUFFIX(const T *p, const T *dp, const A *c, T *ds, int cols,      \
                                                   long long n) {                                            \
    softmax_grad<T, A>(p, dp, c, ds, cols, n);                                                               \
  }

SOFTMAX_GRAD_KERNEL(float, float, f32)
SOFTMAX_GRAD_KERNEL(double, double, f64)
SOFTMAX_GRAD_KERNEL(__half, float, f16)
SOFTMAX_GRAD_KERNEL(__nv_bfloat16, float, bf16)

// SiLU's input gradient (the UNet's and VAE's ResNet blocks): with s = σ(x), ∂L/∂x = g · s · (1 + x · (1 − s)),
// computed in A and stored in T; candle's backward forms it in nine passes. A grid-stride loop over the values.
template <typename T, typename A>
__device__ void silu_grad(const T *x, const T *g, T *dx, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const A xi = static_cast<A>(x[i]);
    const A s = A(1) / (A(1) + exp(-xi));
    dx[i] = static_cast<T>(static_cast<A>(g[i]) * s * (A(1) + xi * (A(1) - s)));
  }
}

#define SILU_GRAD_KERNEL(T, A, SUFFIX)                                                                        \
  extern "C" __global__ void silu_grad_##SUFFIX(const T *x, const T *g, T *dx, long long n) {                \
    silu_grad<T, A>(x, g, dx, n);                                                                            \
  }

SILU_GRAD_KERNEL(float, float, f32)
SILU_GRAD_KERNEL(double, double, f64)
SILU_GRAD_KERNEL(__half, float, f16)
SILU_GRAD_KERNEL(__nv_bfloat16, float, bf16)

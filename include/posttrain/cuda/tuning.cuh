#pragma once
// Launch shapes of posttrain's CUDA kernels, kept apart from the kernels (as CUB's tuning_*.cuh are).
// Group-relative kernels pick one of three shapes by group size, the split CUB uses for segmented
// reductions: a sub-warp (4..32 lanes) per group for tiny groups, a warp per group up to
// warp_group_max rows, and a block per group above that.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/tuning.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../core/view.hpp"

namespace posttrain::cuda_tuning {

// Threads per block of every group kernel (sub-warp and warp kernels pack 256/lanes groups per block).
inline constexpr int block_threads = 256;

// Groups of up to this many rows get a (sub-)warp; larger ones a whole block.
inline constexpr index_t warp_group_max = 1024;

// Blocks launched by grid-stride group kernels: enough to fill an H100 (132 SMs x 8 blocks of 256
// threads) several times over, few enough that a block-per-group pass over a million small groups
// only skims their offsets.
inline constexpr index_t max_grid_blocks = 132 * 8 * 4;

// Fixed number of partial sums in batch-wide reductions: fixed (not derived from the device) so that
// the result is the same on every GPU and every run.
inline constexpr int batch_partials = 512;

// Lanes per group for a group of (typical) size k: the next power of two >= k, at least 4, at most 32.
constexpr int lanes_for(index_t k) noexcept {
    return k <= 4 ? 4 : k <= 8 ? 8 : k <= 16 ? 16 : 32;
}

}  // namespace posttrain::cuda_tuning

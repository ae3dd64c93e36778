#pragma once
// Launch shapes of posttrain's CUDA kernels, kept apart from the kernels (as CUB's tuning_*.cuh are).
// The values were measured on an H100 (bench/cuda/outcome_bench.cu); see outcome.cuh for the shapes.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/tuning.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../core/view.hpp"

namespace posttrain::cuda_tuning {

// Threads per block of every group kernel.
inline constexpr int block_threads = 256;

// Uniform tiles: rows per thread held in registers by a register team (a tile holds
// block_threads * tile_values rows: 2048).
inline constexpr int tile_values = 8;

// Largest team of the tile kernels (a warp): larger groups go to the block kernel.
inline constexpr int tile_max_lanes = 32;

// Ragged tiles: bytes of one staged tile (two are in flight per block; 4096 float rows), and the
// room a tile gets, in multiples of its expected rows (teams are widened until it fits), so that
// a tile rarely overflows its buffer.
inline constexpr int ragged_tile_bytes = 16384;
inline constexpr int ragged_room = 2;

// Unrolling of the row loops of looping teams.
inline constexpr int loop_unroll = 4;

// Rows per thread held in registers by the block-per-group kernel; larger groups loop.
inline constexpr int block_values = 16;

// Resident blocks per SM the kernels are compiled for (__launch_bounds__), and the tile kernels'
// grid (one wave of blocks walking the tiles): 80 registers per thread for the register teams, 64
// for the looping ragged teams (which hide latency with more warps instead of more registers).
inline constexpr int tile_min_blocks = 3;
inline constexpr int ragged_min_blocks = 4;
inline constexpr int block_min_blocks = 3;

// Ragged tiles a block can leave for after its pipelined loop (invalid offsets, or more rows than
// the buffer), as a bitmask of this many words; the grid grows with the batch so that no block
// walks more tiles than that.
inline constexpr int tile_deferral_words = 32;

// Blocks launched by the grid-stride block-per-group kernel: enough to fill an H100 (132 SMs x 8
// blocks of 256 threads) several times over.
inline constexpr index_t max_grid_blocks = 132 * 8 * 4;

// Fixed number of partial sums in batch-wide reductions: fixed (not derived from the device) so that
// the result is the same on every GPU and every run.
inline constexpr int batch_partials = 512;

// Blocks of block_threads threads for a grid-stride kernel over `items` items: one item per thread,
// at most max_grid_blocks (the kernels' loops take the rest), at least one.
constexpr unsigned elementwise_blocks(index_t items) noexcept {
    const index_t b = (items + block_threads - 1) / block_threads;
    return static_cast<unsigned>(b < 1 ? 1 : b > max_grid_blocks ? max_grid_blocks : b);
}

// Team size of the uniform tile kernel for groups of `rows` rows: the smallest power of two whose
// team holds them in registers (rows <= lanes * tile_values), at most tile_max_lanes.
constexpr int lanes_for(index_t rows) noexcept {
    int lanes = 1;
    while (lanes < tile_max_lanes && index_t{lanes} * tile_values < rows) lanes *= 2;
    return lanes;
}

}  // namespace posttrain::cuda_tuning

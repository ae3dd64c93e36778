// GRPO / RLOO on exec::cuda, N = 2^14 .. 2^24, timed with CUDA events against a device-to-device
// cudaMemcpy of the same bytes (one read and one write of N elements, which is what the kernels
// must move at least). From unsorted ids (N = 2^20 .. 2^24, groups of 16 rows, shuffled; as the CPU
// bench's grpo_ids / grpo_ids_dense and the peers' "ids" / "ids_dense" layouts):
//   group_ids16            grouping::from_ids alone, 64-bit hash-like int64 ids (workspace given)
//   grpo_ids16_f32         from_ids + grpo over its device layout (what a caller holding ids pays)
//   group_ids_dense16      grouping::from_dense_ids alone, ids 0..G-1 (G = N / 16)
//   grpo_ids_dense16_f32   from_dense_ids + grpo
// whose copy reference moves the ids (8N bytes: read ids, write the permutation) for the grouping
// rows, and ids + rewards in / advantages out (a copy of 8N bytes, 16N moved) for the grpo rows.
// The rest of the family over uniform groups of 16 (N = 2^14 .. 2^24), against a copy of the bytes
// each must move at least:
//   grpo_uniform16_f32pass_f32  statistics::float32_one_pass (verl's vectorized form; a thread per group)
//   gpg_uniform16_f32           GPG with alpha from the batch (a counting pass, then GRPO's kernels)
//   passk_uniform16_f32         pass@k with the std (team per group)
//   opo_uniform16_f32           OPO (rewards and lengths in: the copy reference moves 1.5 N floats)
//   gdpo_uniform16_k3_f32       GDPO, three components (rewards [N, 3] in: a copy of 2 N floats)
// Prints one JSON object per line:
//     {"op":..., "size":N, "threads":0, "device":..., "posttrain_ms":..., "memcpy_ms":..., "memcpy_fraction":...}
// memcpy_fraction = memcpy_ms / posttrain_ms (1.0 = as fast as a copy).
// Usage: posttrain_cuda_bench [max_log2_n (default 24) [min_log2_n (default 14)]]

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <posttrain/advantage/gdpo.cuh>
#include <posttrain/advantage/gpg.cuh>
#include <posttrain/advantage/grpo.cuh>
#include <posttrain/advantage/opo.cuh>
#include <posttrain/advantage/passk.cuh>
#include <posttrain/advantage/rloo.cuh>
#include <posttrain/cuda/grouping.cuh>

#include "timing.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::bench::row;
using pt::bench::time_ms;

int main(int argc, char** argv) {
    const std::string device = pt::bench::device_name();
    if (device.empty()) {
        std::printf("posttrain CUDA bench: no CUDA device present, skipped\n");
        return 77;
    }
    const int max_log2 = argc > 1 ? std::atoi(argv[1]) : 24;
    const int min_log2 = argc > 2 ? std::atoi(argv[2]) : 14;

    const index_t max_n = index_t{1} << max_log2;
    std::mt19937_64 rng(42);
    std::vector<float> host_r(static_cast<std::size_t>(max_n));
    for (auto& v : host_r) v = static_cast<float>(rng() % 2);
    // Ragged offsets with sizes 1..31 (mean ~16) covering max_n rows.
    std::vector<std::int64_t> host_off{0};
    while (host_off.back() < max_n) host_off.push_back(std::min<std::int64_t>(max_n, host_off.back() + 1 + rng() % 31));

    // Lengths 1..1000 (OPO) and three reward components per row (GDPO).
    std::vector<float> host_len(static_cast<std::size_t>(max_n)), host_k3(static_cast<std::size_t>(3 * max_n));
    for (auto& v : host_len) v = static_cast<float>(1 + rng() % 1000);
    for (auto& v : host_k3) v = static_cast<float>(rng() % 2);

    float *r = nullptr, *a = nullptr, *len = nullptr, *k3 = nullptr, *scratch = nullptr;
    std::int64_t* off = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&r, sizeof(float) * max_n));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&a, sizeof(float) * max_n));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&len, sizeof(float) * max_n));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&k3, sizeof(float) * 3 * max_n));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&scratch, sizeof(float) * 4 * max_n));  // the copy references' destination
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(len, host_len.data(), sizeof(float) * max_n, cudaMemcpyHostToDevice));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(k3, host_k3.data(), sizeof(float) * 3 * max_n, cudaMemcpyHostToDevice));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&off, sizeof(std::int64_t) * host_off.size()));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(r, host_r.data(), sizeof(float) * max_n, cudaMemcpyHostToDevice));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(off, host_off.data(), sizeof(std::int64_t) * host_off.size(), cudaMemcpyHostToDevice));

    // Id layouts: ids, permutation [N], offsets [N + 1], count, and one workspace for both groupings.
    constexpr int ids_min_log2 = 20;
    constexpr index_t id_group = 16;
    std::int64_t* ids = nullptr;
    index_t *perm = nullptr, *id_off = nullptr, *count = nullptr;
    void* ws = nullptr;
    std::size_t ws_bytes = 0;
    if (max_log2 >= ids_min_log2) {
        ws_bytes = std::max(pt::grouping::from_ids_workspace_bytes(max_n),
                            pt::grouping::from_dense_ids_workspace_bytes(max_n, max_n / id_group));
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&ids, sizeof(std::int64_t) * max_n));
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&perm, sizeof(index_t) * max_n));
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&id_off, sizeof(index_t) * (max_n + 1)));
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&count, sizeof(index_t)));
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
    }
    // Shuffled ids, 16 rows each: 64-bit hash-like values, or 0..G-1.
    auto upload_ids = [&](index_t n, bool hashed) {
        std::vector<std::int64_t> h(static_cast<std::size_t>(n));
        std::vector<std::int64_t> uid(static_cast<std::size_t>(n / id_group));
        for (std::size_t g = 0; g < uid.size(); ++g) uid[g] = hashed ? static_cast<std::int64_t>(rng()) : static_cast<std::int64_t>(g);
        for (index_t i = 0; i < n; ++i) h[static_cast<std::size_t>(i)] = uid[static_cast<std::size_t>(i / id_group)];
        std::shuffle(h.begin(), h.end(), rng);
        POSTTRAIN_CUDA_CHECK(cudaMemcpy(ids, h.data(), sizeof(std::int64_t) * n, cudaMemcpyHostToDevice));
    };

    for (int lg = min_log2; lg <= max_log2; lg += 2) {
        const index_t n = index_t{1} << lg;
        const pt::device_view<const float, 1> rv(r, n);
        const pt::device_view<float, 1> av(a, n);
        const double copy = time_ms([&] { POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(a, r, sizeof(float) * n, cudaMemcpyDeviceToDevice)); });
        row("grpo_uniform16_f32", n, device, time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{16}, av); }), copy);
        row("rloo_uniform16_f32", n, device, time_ms([&] { adv::rloo(pt::exec::cuda, rv, pt::uniform_groups{16}, av); }), copy);
        row("grpo_uniform4_f32", n, device, time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{4}, av); }), copy);
        row("grpo_uniform4096_f32", n, device, time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{4096}, av); }), copy);
        // The ragged prefix whose last offset is <= n: cut n down to that many rows.
        std::size_t g = 0;
        while (g + 1 < host_off.size() && host_off[g + 1] <= n) ++g;
        const index_t rows = host_off[g];
        const pt::device_view<const std::int64_t, 1> ov(off, static_cast<index_t>(g + 1));
        row("grpo_ragged16_f32", rows, device,
            time_ms([&] { adv::grpo(pt::exec::cuda, pt::device_view<const float, 1>(r, rows), pt::ragged(ov),
                                    pt::device_view<float, 1>(a, rows)); }),
            copy * double(rows) / double(n));
        adv::grpo_options batch;
        batch.std_scale = adv::scale::batch;
        row("grpo_uniform16_batchstd_f32", n, device,
            time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{16}, av, batch); }), copy);

        // The rest of the family, each against a copy of the bytes it must move.
        auto copy_of = [&](index_t floats) {
            return time_ms([&] {
                POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(scratch, k3, sizeof(float) * floats, cudaMemcpyDeviceToDevice));
            });
        };
        row("grpo_uniform16_f32pass_f32", n, device,
            time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{16}, av, adv::grpo_options::verl_vectorized()); }),
            copy);
        row("gpg_uniform16_f32", n, device,
            time_ms([&] { adv::gpg(pt::exec::cuda, rv, pt::uniform_groups{16}, av, adv::gpg_options::verl()); }), copy);
        row("passk_uniform16_f32", n, device,
            time_ms([&] { adv::grpo_passk(pt::exec::cuda, rv, pt::uniform_groups{16}, av, adv::passk_options::verl()); }),
            copy);
        row("opo_uniform16_f32", n, device, time_ms([&] {
                adv::opo(pt::exec::cuda, rv, pt::device_view<const float, 1>(len, n), pt::uniform_groups{16}, av,
                         adv::opo_options::verl());
            }),
            copy_of(n + n / 2));
        row("gdpo_uniform16_k3_f32", n, device, time_ms([&] {
                adv::gdpo(pt::exec::cuda, pt::device_view<const float, 2>(k3, n, 3), pt::uniform_groups{16}, av,
                          adv::gdpo_options::gdpo());
            }),
            copy_of(2 * n));

        if (lg < ids_min_log2) continue;
        const auto with_ws = pt::exec::cuda.with(ws, ws_bytes);
        const pt::device_view<const std::int64_t, 1> idv(ids, n);
        const pt::device_view<index_t, 1> pv(perm, n), ov_ids(id_off, n + 1), cv(count, 1);
        const double copy_ids = time_ms([&] { POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(perm, ids, sizeof(std::int64_t) * n, cudaMemcpyDeviceToDevice)); });
        upload_ids(n, true);
        row("group_ids16", n, device, time_ms([&] { (void)pt::grouping::from_ids(with_ws, idv, pv, ov_ids, cv); }), copy_ids);
        row("grpo_ids16_f32", n, device, time_ms([&] {
                const auto groups = pt::grouping::from_ids(with_ws, idv, pv, ov_ids, cv);
                adv::grpo(with_ws, rv, groups, av);
            }),
            copy_ids);
        upload_ids(n, false);
        const index_t dense_groups = n / id_group;
        const pt::device_view<index_t, 1> ov_dense(id_off, dense_groups + 1);
        row("group_ids_dense16", n, device,
            time_ms([&] { (void)pt::grouping::from_dense_ids(with_ws, idv, dense_groups, pv, ov_dense); }), copy_ids);
        row("grpo_ids_dense16_f32", n, device, time_ms([&] {
                const auto groups = pt::grouping::from_dense_ids(with_ws, idv, dense_groups, pv, ov_dense);
                adv::grpo(with_ws, rv, groups, av);
            }),
            copy_ids);
    }
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(r);
    cudaFree(a);
    cudaFree(off);
    cudaFree(len);
    cudaFree(k3);
    cudaFree(scratch);
    cudaFree(ids);
    cudaFree(perm);
    cudaFree(id_off);
    cudaFree(count);
    cudaFree(ws);
    return 0;
}

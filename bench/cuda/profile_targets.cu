// The calls behind issue 9's missed speed targets, each run exactly once, for Nsight Compute
// (scripts/gpu-profile runs `ncu` on this program, one case per run): no timing loop, so every
// kernel ncu sees is the one to look at.
//
//   profile_targets CASE [log2_n (default 24)]
//     uniform4     GRPO over uniform groups of 4 rows (float)
//     uniform16    the same over groups of 16 (the reference that reaches ~0.85 of copy bandwidth)
//     ragged16     GRPO over ragged groups of 1..31 rows (mean 16)
//     ids16        grouping::from_ids over shuffled 64-bit ids (16 rows each), then GRPO over the
//                  permuted layout it returns
//     ids_dense16  the same from dense ids 0..G-1 (grouping::from_dense_ids)
//     gae1024      GAE with verl's whitening over [N / 1024, 1024] tokens
//
// Exits 77 without a GPU, 2 on an unknown case.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <posttrain/advantage/gae.cuh>
#include <posttrain/advantage/grpo.cuh>
#include <posttrain/cuda/grouping.cuh>

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;

namespace {

template <class T>
T* upload(const std::vector<T>& h) {
    T* d = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&d, sizeof(T) * (h.empty() ? 1 : h.size())));
    if (!h.empty()) POSTTRAIN_CUDA_CHECK(cudaMemcpy(d, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
    return d;
}

template <class T>
T* zeros(std::size_t n) {
    return upload(std::vector<T>(n, T(0)));
}

}  // namespace

int main(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("profile_targets: no CUDA device present, skipped\n");
        return 77;
    }
    const std::string which = argc > 1 ? argv[1] : "";
    const index_t n = index_t{1} << (argc > 2 ? std::atoi(argv[2]) : 24);
    std::mt19937_64 rng(42);
    std::vector<float> hr(static_cast<std::size_t>(n));
    for (auto& v : hr) v = static_cast<float>(rng() % 2);
    float* r = upload(hr);
    float* a = zeros<float>(static_cast<std::size_t>(n));
    const pt::device_view<const float, 1> rv(r, n);
    const pt::device_view<float, 1> av(a, n);

    if (which == "uniform4" || which == "uniform16") {
        adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{which == "uniform4" ? 4 : 16}, av);
    } else if (which == "ragged16") {
        std::vector<std::int64_t> off{0};
        while (off.back() < n) off.push_back(std::min<std::int64_t>(n, off.back() + 1 + std::int64_t(rng() % 31)));
        std::int64_t* d_off = upload(off);
        adv::grpo(pt::exec::cuda, rv, pt::ragged(pt::device_view<const std::int64_t, 1>(d_off, index_t(off.size()))), av);
        POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
        cudaFree(d_off);
    } else if (which == "ids16" || which == "ids_dense16") {
        const index_t groups = n / 16;
        std::vector<std::int64_t> uid(static_cast<std::size_t>(groups)), ids(static_cast<std::size_t>(n));
        for (index_t g = 0; g < groups; ++g) uid[std::size_t(g)] = which == "ids16" ? std::int64_t(rng()) : std::int64_t(g);
        for (index_t i = 0; i < n; ++i) ids[std::size_t(i)] = uid[std::size_t(i / 16)];
        std::shuffle(ids.begin(), ids.end(), rng);
        std::int64_t* d_ids = upload(ids);
        index_t* perm = zeros<index_t>(std::size_t(n));
        index_t* off = zeros<index_t>(std::size_t(n) + 1);
        index_t* count = zeros<index_t>(1);
        const pt::device_view<const std::int64_t, 1> idv(d_ids, n);
        const pt::device_view<index_t, 1> pv(perm, n);
        if (which == "ids16") {
            const auto layout = pt::grouping::from_ids(pt::exec::cuda, idv, pv, pt::device_view<index_t, 1>(off, n + 1),
                                                       pt::device_view<index_t, 1>(count, 1));
            adv::grpo(pt::exec::cuda, rv, layout, av);
        } else {
            const auto layout = pt::grouping::from_dense_ids(pt::exec::cuda, idv, groups, pv,
                                                             pt::device_view<index_t, 1>(off, groups + 1));
            adv::grpo(pt::exec::cuda, rv, layout, av);
        }
        POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
        cudaFree(d_ids);
        cudaFree(perm);
        cudaFree(off);
        cudaFree(count);
    } else if (which == "gae1024") {
        constexpr index_t T = 1024;
        const index_t B = n / T;
        std::vector<float> hv(static_cast<std::size_t>(n)), hm(static_cast<std::size_t>(n), 1.0f), tr(static_cast<std::size_t>(n), 0.0f);
        for (auto& v : hv) v = static_cast<float>(rng() % 1000) / 1000.0f;
        for (index_t b = 0; b < B; ++b) {
            const index_t len = T / 2 + index_t(rng() % std::uint64_t(T / 2 + 1));
            for (index_t t = len; t < T; ++t) hm[std::size_t(b * T + t)] = 0.0f;
            tr[std::size_t(b * T + len - 1)] = static_cast<float>(rng() % 2);
        }
        float* d_r = upload(tr);
        float* d_v = upload(hv);
        float* d_m = upload(hm);
        float* ret = zeros<float>(std::size_t(n));
        adv::gae(pt::exec::cuda, pt::device_view<const float, 2>(d_r, B, T), pt::device_view<const float, 2>(d_v, B, T),
                 pt::device_view<const float, 2>(d_m, B, T), pt::device_view<float, 2>(a, B, T),
                 pt::device_view<float, 2>(ret, B, T), adv::gae_options::verl(0.99, 0.95));
        POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
        cudaFree(d_r);
        cudaFree(d_v);
        cudaFree(d_m);
        cudaFree(ret);
    } else {
        std::fprintf(stderr, "profile_targets: unknown case '%s' (uniform4, uniform16, ragged16, ids16, ids_dense16, gae1024)\n",
                     which.c_str());
        return 2;
    }
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(r);
    cudaFree(a);
    std::printf("profile_targets %s: done (N = %lld)\n", which.c_str(), static_cast<long long>(n));
    return 0;
}

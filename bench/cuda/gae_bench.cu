// advantage::gae on exec::cuda with the CPU bench's operation (bench/returns_bench.cpp):
// gae_options::verl(0.99, 0.95), i.e. carry masking, returns = A + V, advantages whitened over the
// batch (masked_whiten, not re-masked), float32 [B, T] token rewards, values and a float mask,
// B = N / T, N = 2^18 .. 2^24 tokens, with the caller's workspace (gae_workspace_bytes) and a status
// word. Inputs follow the peer's layout "gae_t<T>" (bench/peers/torch_peers.py, gae_verl_loop: verl's
// per-timestep loop with masked_whiten, the same operation): row lengths uniform in [T/2, T] with
// right padding, ~5% interior mask holes, a terminal reward U[0,1) at each row's last position,
// values U[0,1). One JSON line per measurement (timing.cuh):
//     gae_t1024_f32   T = 1024 (rows packed into the scan's 2048-token tiles)
//     gae_t4096_f32   T = 4096 (rows longer than a tile: the two chunk passes run first)
// The copy reference moves what the call reads and writes through its arguments, as the CPU bench's
// byte counter: rewards, values and mask in (12N bytes), advantages and returns out (8N), i.e. a
// device-to-device copy of 10N bytes. The whitening's second pass over the advantages (8N more) and,
// for T > 2048, the chunk pass's extra read of the inputs are inherent to the algorithm but not
// counted, so memcpy_fraction stays below 1 even for an ideal implementation (~20/28 at T <= 2048).
// Before timing, each T is checked once at the smallest size against the host oracle (exec::seq) and
// the status word: timing a wrong configuration would be worse than no row (exit 1).
// Usage: posttrain_cuda_gae_bench [max_log2_n (default 24) [min_log2_n (default 18)]]

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <posttrain/advantage/gae.cuh>

#include "timing.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::bench::row;
using pt::bench::time_ms;
using pt::bench::upload;

namespace {

// The peer's "gae_t<T>" distribution over rows of T tokens (the same as returns_bench.cpp's batch).
struct token_batch {
    std::vector<double> r, v, m;  // float values held as double for timing.cuh's upload (exact)
};

token_batch make_batch(index_t n, index_t t, std::uint64_t seed) {
    token_batch x{std::vector<double>(std::size_t(n)), std::vector<double>(std::size_t(n)), std::vector<double>(std::size_t(n))};
    std::mt19937_64 gen(seed);
    std::uniform_int_distribution<index_t> len(t / 2, t);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (index_t i = 0; i < n / t; ++i) {
        const index_t l = len(gen);
        for (index_t j = 0; j < t; ++j) {
            const std::size_t k = std::size_t(i * t + j);
            x.m[k] = j < l && u(gen) > 0.05f ? 1.0 : 0.0;
            x.r[k] = j == l - 1 ? u(gen) : 0.0f;
            x.v[k] = u(gen);
        }
    }
    return x;
}

std::vector<float> to_float(const std::vector<double>& h, index_t n) {
    return std::vector<float>(h.begin(), h.begin() + n);
}

template <class T>
std::vector<T> download(const T* d, index_t n) {
    std::vector<T> h(static_cast<std::size_t>(n));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(h.data(), d, sizeof(T) * h.size(), cudaMemcpyDeviceToHost));
    return h;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string device = pt::bench::device_name();
    if (device.empty()) {
        std::printf("posttrain CUDA GAE bench: no CUDA device present, skipped\n");
        return 77;
    }
    const int max_log2 = argc > 1 ? std::atoi(argv[1]) : 24;
    const int min_log2 = argc > 2 ? std::atoi(argv[2]) : 18;
    if (max_log2 < min_log2) return 0;
    const index_t max_n = index_t{1} << max_log2;
    const auto o = adv::gae_options::verl(0.99, 0.95);

    // The copy reference's buffers: 10N bytes (20N moved, see the header).
    const std::size_t copy_bytes = static_cast<std::size_t>(max_n) * 10;
    void *c_src = nullptr, *c_dst = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&c_src, copy_bytes));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&c_dst, copy_bytes));
    POSTTRAIN_CUDA_CHECK(cudaMemset(c_src, 0, copy_bytes));
    std::uint32_t* status = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&status, sizeof(std::uint32_t)));
    POSTTRAIN_CUDA_CHECK(cudaMemset(status, 0, sizeof(std::uint32_t)));

    int rc = 0;
    for (const index_t T : {index_t{1024}, index_t{4096}}) {
        if (max_n < T) continue;
        const std::string op = "gae_t" + std::to_string(T) + "_f32";
        // One batch of max_n tokens per T; smaller sizes are its first N / T rows.
        const token_batch h = make_batch(max_n, T, 42);
        float *r = nullptr, *v = nullptr, *m = nullptr, *a = nullptr, *ret = nullptr;
        upload(r, h.r), upload(v, h.v), upload(m, h.m);
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&a, sizeof(float) * max_n));
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&ret, sizeof(float) * max_n));
        std::size_t ws_bytes = 0;
        for (int lg = min_log2; lg <= max_log2; lg += 2) {
            const std::size_t b = adv::gae_workspace_bytes((index_t{1} << lg) / T, T, o);
            ws_bytes = b > ws_bytes ? b : ws_bytes;
        }
        void* ws = nullptr;
        if (ws_bytes > 0) POSTTRAIN_CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
        const auto policy = pt::exec::cuda.with(ws, ws_bytes).with_status(status);

        bool checked = false;
        for (int lg = min_log2; lg <= max_log2 && rc == 0; lg += 2) {
            const index_t n = index_t{1} << lg, B = n / T;
            if (B == 0) continue;
            const pt::device_view<const float, 2> rv(r, B, T), vv(v, B, T), mv(m, B, T);
            const pt::device_view<float, 2> av(a, B, T), retv(ret, B, T);
            auto call = [&] { adv::gae(policy, rv, vv, mv, av, retv, o); };
            if (!checked) {  // the oracle check at the smallest size (see the header)
                checked = true;
                call();
                POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
                const std::vector<float> hr = to_float(h.r, n), hv = to_float(h.v, n), hm = to_float(h.m, n);
                std::vector<float> ha(static_cast<std::size_t>(n)), hret(ha.size());
                (void)adv::gae(pt::exec::seq, pt::tensor_view<const float, 2>(hr.data(), B, T), pt::tensor_view<const float, 2>(hv.data(), B, T),
                               pt::tensor_view<const float, 2>(hm.data(), B, T), pt::tensor_view<float, 2>(ha.data(), B, T),
                               pt::tensor_view<float, 2>(hret.data(), B, T), o);
                const std::vector<float> da = download(a, n), dret = download(ret, n);
                const std::vector<std::uint32_t> st = download(status, 1);
                // Device maths composes maps where the host steps: rounding differences only.
                double worst = 0;
                for (std::size_t k = 0; k < ha.size(); ++k) {
                    const double ea = std::fabs(double(da[k]) - ha[k]) / (1 + std::fabs(double(ha[k])));
                    const double er = std::fabs(double(dret[k]) - hret[k]) / (1 + std::fabs(double(hret[k])));
                    worst = ea > worst || std::isnan(ea) ? ea : worst;
                    worst = er > worst || std::isnan(er) ? er : worst;
                }
                if (!(worst <= 1e-4) || st[0] != 0) {
                    std::fprintf(stderr, "posttrain CUDA GAE bench: %s at %lld tokens disagrees with the host "
                                         "(worst relative error %g, status word %u); not timed\n",
                                 op.c_str(), static_cast<long long>(n), worst, st[0]);
                    rc = 1;
                    break;
                }
            }
            const double copy = time_ms([&] {
                POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(c_dst, c_src, static_cast<std::size_t>(n) * 10, cudaMemcpyDeviceToDevice));
            });
            row(op.c_str(), n, device, time_ms(call), copy);
        }
        POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
        // The timed calls see the same finite inputs: any status bit now is a bug, and the rows above wrong.
        if (const std::uint32_t st = download(status, 1)[0]; rc == 0 && st != 0) {
            std::fprintf(stderr, "posttrain CUDA GAE bench: %s: status word %u after the timed runs\n", op.c_str(), st);
            rc = 1;
        }
        for (void* p : {static_cast<void*>(r), static_cast<void*>(v), static_cast<void*>(m), static_cast<void*>(a),
                        static_cast<void*>(ret), ws})
            cudaFree(p);
        if (rc != 0) break;
    }
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(c_src);
    cudaFree(c_dst);
    cudaFree(status);
    return rc;
}

#pragma once
// Sequence log-probs on the GPU: the exec::cuda overloads of sequence_log_probs and
// sequence_log_probs_backward, and the device form of sequence_input / sequence_grad that the CUDA
// preference losses (dpo.cuh) take.
//
//     pt::preference::sequence_log_probs(pt::exec::cuda.on(stream), d_logp, d_mask, d_sums, d_lengths);
//     pt::preference::sequence_log_probs_backward(pt::exec::cuda.on(stream), d_grad_sums, d_mask, d_grad_logp);
//
// log_probs are [B, T] device_view<const float|double|__half|__nv_bfloat16, 2> (any strides) or
// DLPack tensors on a CUDA device; masks are bool or any arithmetic type (nonzero = valid: masks
// select, they do not multiply, as on the host); sums / lengths are [B] float or double device views
// (lengths may be posttrain::none); grad_sums is [B] float or double and grad_log_probs a [B, T]
// float, double, __half or __nv_bfloat16 device view.
//
// The reduction: the [B, T] batch is cut into segments exactly as the fused policy loss cuts it
// (policy_loss.cuh: a row, or a chunk of a long row; a team of 1..32 lanes of a warp per segment).
// Each lane sums its tokens in order in double (half and bfloat16 are widened on load), the team
// folds its lanes with a fixed xor butterfly, and chunked rows are folded chunk by chunk by a row
// kernel. A row's sum depends only on (B, T) and the data, never on the grid or the device: no
// atomics on floating-point values, the bits are the same run to run and GPU to GPU. They differ from
// the host's eight-lane order by rounding only (about 1e-16 relative per token in double).
//
// A non-finite log-prob at a valid position (where the host throws) and a row sum that overflows set
// status_nonfinite_input in the policy's status word (.with_status(d_status)); masked positions may
// hold anything. Nothing synchronizes the host: shapes, dtypes and aliasing are checked on the host
// before any launch, everything else is enqueued on the policy's stream.
//
// Scratch: only rows cut into chunks need any (the per-chunk sums, sequence_log_probs_workspace_bytes);
// from .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/preference/sequence.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <variant>

#include "../cuda/dtypes.cuh"  // the device views of 16-bit floats
#include "../cuda/exec.cuh"
#include "../policy_loss/policy_loss.cuh"  // the segment teams, block merges
#include "sequence.hpp"

namespace posttrain::preference {

namespace detail {

namespace pld = posttrain::policy_loss::detail;

// ---- device views of the sequence inputs -----------------------------------------------------------

using device_tokens_of = std::variant<std::monostate, device_view<const float, 2>, device_view<const double, 2>,
                                      device_view<const __half, 2>, device_view<const __nv_bfloat16, 2>>;
using device_mask_of =
    std::variant<std::monostate, device_view<const bool, 2>, device_view<const float, 2>, device_view<const double, 2>,
                 device_view<const std::int64_t, 2>, device_view<const std::int32_t, 2>,
                 device_view<const std::uint8_t, 2>, device_view<const std::int8_t, 2>>;
using device_sums_of = std::variant<std::monostate, device_view<const float, 1>, device_view<const double, 1>>;
using device_lengths_of =
    std::variant<std::monostate, device_view<const bool, 1>, device_view<const float, 1>, device_view<const double, 1>,
                 device_view<const std::int64_t, 1>, device_view<const std::int32_t, 1>,
                 device_view<const std::uint8_t, 1>, device_view<const std::int8_t, 1>>;
using device_grad_tokens_of = std::variant<std::monostate, device_view<float, 2>, device_view<double, 2>,
                                           device_view<__half, 2>, device_view<__nv_bfloat16, 2>>;
using device_grad_sums_of = std::variant<std::monostate, device_view<float, 1>, device_view<double, 1>>;

template <class V>
constexpr int static_rank_or_0() noexcept {
    if constexpr (static_viewable<V>) return static_view_t<V>::rank;
    else return 0;
}

template <class V>
inline constexpr bool is_monostate_v = std::is_same_v<std::remove_cvref_t<V>, std::monostate>;

// The extent of dimension r of whichever view a variant holds (0 for none).
template <class Variant>
index_t extent_of(const Variant& v, int r) noexcept {
    return std::visit(
        [r](const auto& x) -> index_t {
            if constexpr (is_monostate_v<decltype(x)>) return 0;
            else return x.extent(r);
        },
        v);
}

}  // namespace detail

// The device form of sequence_input: tokens(log_probs [B, T], mask [B, T]) or sums(sums [B]
// [, lengths [B]]), every view in device memory. Default-constructed: absent. Non-owning.
class device_sequence_input {
public:
    device_sequence_input() = default;

    template <class LogProbs, class Mask>
    static device_sequence_input tokens(const LogProbs& log_probs, const Mask& mask) {
        constexpr const char* fn = "posttrain::preference::device_sequence_input::tokens";
        device_sequence_input s;
        s.tokens_ = detail::widen<detail::device_tokens_of>(
            posttrain::detail::device_floats<true, 2>(log_probs, {fn, "log_probs"}));
        s.mask_ = detail::widen<detail::device_mask_of>(posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
        for (int r = 0; r < 2; ++r)
            posttrain::detail::require(detail::extent_of(s.mask_, r) == detail::extent_of(s.tokens_, r), {fn, "mask"},
                                       "shape must match 'log_probs': dimension " + detail::str(r) + " is " +
                                           detail::str(detail::extent_of(s.mask_, r)) + ", expected " +
                                           detail::str(detail::extent_of(s.tokens_, r)));
        return s;
    }

    template <class Sums>
    static device_sequence_input sums(const Sums& sums) {
        constexpr const char* fn = "posttrain::preference::device_sequence_input::sums";
        device_sequence_input s;
        s.sums_ = detail::widen<detail::device_sums_of>(posttrain::detail::floating_input<1, device_space>(sums, {fn, "sums"}));
        return s;
    }

    template <class Sums, class Lengths>
    static device_sequence_input sums(const Sums& sums, const Lengths& lengths) {
        constexpr const char* fn = "posttrain::preference::device_sequence_input::sums";
        device_sequence_input s = device_sequence_input::sums(sums);
        s.lengths_ = detail::widen<detail::device_lengths_of>(
            posttrain::detail::mask_input<1, device_space>(lengths, {fn, "lengths"}));
        posttrain::detail::require(detail::extent_of(s.lengths_, 0) == s.batch(), {fn, "lengths"},
                                   "must have one entry per sequence (the length of 'sums')");
        return s;
    }

    bool present() const noexcept { return per_token() || sums_.index() != 0; }
    bool per_token() const noexcept { return tokens_.index() != 0; }
    bool has_lengths() const noexcept { return per_token() || lengths_.index() != 0; }
    index_t batch() const noexcept { return per_token() ? detail::extent_of(tokens_, 0) : detail::extent_of(sums_, 0); }
    index_t tokens_per_row() const noexcept { return detail::extent_of(tokens_, 1); }

    const detail::device_tokens_of& token_view() const noexcept { return tokens_; }
    const detail::device_mask_of& mask_view() const noexcept { return mask_; }
    const detail::device_sums_of& sums_view() const noexcept { return sums_; }
    const detail::device_lengths_of& lengths_view() const noexcept { return lengths_; }

private:
    detail::device_tokens_of tokens_;
    detail::device_mask_of mask_;
    detail::device_sums_of sums_;
    detail::device_lengths_of lengths_;
};

// The device form of sequence_grad: a [B, T] device view (float, double, __half, __nv_bfloat16) for
// an input given as tokens, a [B] float or double device view for one given as sums, or nothing.
class device_sequence_grad {
public:
    device_sequence_grad() = default;
    device_sequence_grad(none_t) {}  // NOLINT: implicit, so that posttrain::none reads naturally
    template <class G>
        requires(!std::is_same_v<std::remove_cvref_t<G>, device_sequence_grad> &&
                 !std::is_same_v<std::remove_cvref_t<G>, none_t>)
    device_sequence_grad(G&& g) {  // NOLINT: implicit, like the views the other losses take
        constexpr const char* fn = "posttrain::preference::device_sequence_grad";
        using V = std::remove_cvref_t<G>;
        constexpr int R = detail::static_rank_or_0<V>();  // 0: a DLPack tensor, ranked at run time
        bool rank2 = R == 2;
        if constexpr (R == 0) rank2 = tensor_traits<V>::dlpack(g).ndim == 2;
        if constexpr (R != 1) {
            if (rank2) {
                tokens_ = detail::widen<detail::device_grad_tokens_of>(posttrain::detail::device_floats<false, 2>(g, {fn, "grad"}));
                return;
            }
        }
        if constexpr (R != 2)
            sums_ = detail::widen<detail::device_grad_sums_of>(posttrain::detail::floating_output<1, device_space>(g, {fn, "grad"}));
    }
    bool present() const noexcept { return tokens_.index() != 0 || sums_.index() != 0; }
    bool per_token() const noexcept { return tokens_.index() != 0; }
    const detail::device_grad_tokens_of& token_view() const noexcept { return tokens_; }
    const detail::device_grad_sums_of& sums_view() const noexcept { return sums_; }

private:
    detail::device_grad_tokens_of tokens_;
    detail::device_grad_sums_of sums_;
};

namespace detail {

// ---- [B] vectors of any element type, read and written by the per-row code ---------------------------
// The per-row values (sums, lengths, weights, coefficients) are touched once per row, so they are
// type-erased rather than multiplying the kernels' instantiations: a switch per row costs nothing
// next to the row's tokens.

enum class vec_dtype : std::uint8_t { f32, f64, b8, i64, i32, u8, i8 };

template <class E>
constexpr vec_dtype vec_dtype_of() noexcept {
    if constexpr (std::is_same_v<E, float>) return vec_dtype::f32;
    else if constexpr (std::is_same_v<E, double>) return vec_dtype::f64;
    else if constexpr (std::is_same_v<E, bool>) return vec_dtype::b8;
    else if constexpr (std::is_same_v<E, std::int64_t>) return vec_dtype::i64;
    else if constexpr (std::is_same_v<E, std::int32_t>) return vec_dtype::i32;
    else if constexpr (std::is_same_v<E, std::uint8_t>) return vec_dtype::u8;
    else {
        static_assert(std::is_same_v<E, std::int8_t>, "unsupported vector element type");
        return vec_dtype::i8;
    }
}

// A read-only [n] vector (absent when p is null).
struct vec_in {
    const void* p = nullptr;
    index_t stride = 1;
    vec_dtype code = vec_dtype::f64;

    POSTTRAIN_HD bool present() const noexcept { return p != nullptr; }
    POSTTRAIN_HD double operator()(index_t i) const noexcept {
        const index_t k = i * stride;
        switch (code) {
        case vec_dtype::f32: return double(static_cast<const float*>(p)[k]);
        case vec_dtype::f64: return static_cast<const double*>(p)[k];
        case vec_dtype::b8: return static_cast<const bool*>(p)[k] ? 1.0 : 0.0;
        case vec_dtype::i64: return double(static_cast<const std::int64_t*>(p)[k]);
        case vec_dtype::i32: return double(static_cast<const std::int32_t*>(p)[k]);
        case vec_dtype::u8: return double(static_cast<const std::uint8_t*>(p)[k]);
        case vec_dtype::i8: return double(static_cast<const std::int8_t*>(p)[k]);
        }
        return 0.0;
    }
};

template <class E>
vec_in make_vec_in(device_view<const E, 1> v) noexcept {
    return vec_in{v.data(), v.stride(0), vec_dtype_of<E>()};
}
inline vec_in make_vec_in(const double* p) noexcept { return vec_in{p, 1, vec_dtype::f64}; }

// The vec_in of whichever [n] view a variant holds (absent for none).
template <class Variant>
vec_in vec_in_of(const Variant& v) noexcept {
    return std::visit(
        [](const auto& x) -> vec_in {
            if constexpr (is_monostate_v<decltype(x)>) return {};
            else return make_vec_in(x);
        },
        v);
}

// A writable float or double [n] vector (nothing written when p is null).
struct vec_out {
    void* p = nullptr;
    index_t stride = 1;
    bool f64 = true;

    POSTTRAIN_HD bool present() const noexcept { return p != nullptr; }
    POSTTRAIN_HD void set(index_t i, double v) const noexcept {
        if (p == nullptr) return;
        if (f64) static_cast<double*>(p)[i * stride] = v;
        else static_cast<float*>(p)[i * stride] = static_cast<float>(v);
    }
};

template <class E>
vec_out make_vec_out(device_view<E, 1> v) noexcept {
    static_assert(std::is_same_v<E, float> || std::is_same_v<E, double>);
    return vec_out{v.data(), v.stride(0), std::is_same_v<E, double>};
}
inline vec_out make_vec_out(double* p) noexcept { return vec_out{p, 1, true}; }

// ---- the masked row reduction ---------------------------------------------------------------------

inline constexpr int seq_threads = pld::loss_threads;
inline constexpr int seq_unroll = pld::loss_unroll;  // loads in flight per lane
inline constexpr int max_token_sides = 4;            // chosen, rejected and their references (dpo.cuh)

// One [B, T] input of the reduction: its rows' sums and counts go to sum / len (absent: not
// written); rows cut into chunks leave per-chunk sums in chunk_sum / chunk_len (g.count entries).
template <class T, class M>
struct token_side {
    device_view<const T, 2> lp;
    device_view<const M, 2> mask;
    pld::seg_geometry g;
    vec_out sum, len;
    double* chunk_sum = nullptr;
    double* chunk_len = nullptr;
};

template <class T, class M>
struct reduce_args {
    token_side<T, M> side[max_token_sides];  // blockIdx.y picks the side
    std::uint32_t* status = nullptr;
};

// Per segment: each lane sums its tokens t = begin + lane, begin + lane + lanes, ... in order, the
// team folds the lanes (a fixed butterfly). The grid only decides which team walks which segment,
// never the order of a sum, so a side launched with a larger grid than its own gives the same bits.
template <class T, class M>
__global__ void __launch_bounds__(seq_threads) sequence_reduce_kernel(const reduce_args<T, M> a) {
    const token_side<T, M> sd = a.side[blockIdx.y];
    const pld::seg_geometry& g = sd.g;
    const pld::team_pos p = pld::team_of(g);
    bool bad = false;
    for (index_t base = p.first; base < g.count; base += p.step) {  // uniform over the warp
        const index_t s = base + p.team;
        const bool has = s < g.count;
        const pld::seg_span sp = pld::span_of(g, s, has);
        const T* x = sd.lp.data() + sp.row * sd.lp.stride(0);
        const M* m = sd.mask.data() + sp.row * sd.mask.stride(0);
        const index_t xs = sd.lp.stride(1), ms = sd.mask.stride(1);
        double sum = 0, count = 0;
        for (index_t t0 = sp.begin + p.lane; t0 < sp.end; t0 += index_t(p.lanes) * seq_unroll) {
            T v[seq_unroll];
            M k[seq_unroll];
#pragma unroll
            for (int u = 0; u < seq_unroll; ++u) {
                const index_t t = t0 + index_t(u) * p.lanes;
                const bool in = t < sp.end;
                k[u] = in ? m[t * ms] : M(0);
                v[u] = in ? x[t * xs] : T{};
            }
#pragma unroll
            for (int u = 0; u < seq_unroll; ++u) {
                const bool ok = is_valid(k[u]);
                const double d = ok ? posttrain::detail::to_double(v[u]) : 0.0;  // select: masked NaN / -inf padding is ignored
                bad |= ok && !numeric::is_finite(d);
                sum += d;
                count += ok ? 1.0 : 0.0;
            }
        }
        sum = pld::team_sum(sum, p.lanes);
        count = pld::team_sum(count, p.lanes);
        if (has && p.lane == 0) {
            if (g.chunks == 1) {
                bad |= !numeric::is_finite(sum);  // finite tokens whose sum overflows
                sd.sum.set(sp.row, sum);
                sd.len.set(sp.row, count);
            } else {
                sd.chunk_sum[s] = sum;
                sd.chunk_len[s] = count;
            }
        }
    }
    if (bad) posttrain::detail::report_status(a.status, status_nonfinite_input);
}

// Rows cut into chunks: each row's sum and count from its chunks, in chunk order.
struct fold_side {
    const double* chunk_sum = nullptr;
    const double* chunk_len = nullptr;
    index_t chunks = 1;  // 1: the side's rows were written by the reduce kernel
    vec_out sum, len;
};

struct fold_args {
    fold_side side[max_token_sides];
    index_t rows = 0;
    std::uint32_t* status = nullptr;
};

template <int Unused = 0>
__global__ void __launch_bounds__(seq_threads) sequence_fold_kernel(const fold_args a) {
    const fold_side sd = a.side[blockIdx.y];
    if (sd.chunks <= 1) return;
    bool bad = false;
    for (index_t i = index_t(blockIdx.x) * seq_threads + threadIdx.x; i < a.rows; i += index_t(gridDim.x) * seq_threads) {
        double sum = 0, count = 0;
        for (index_t c = 0; c < sd.chunks; ++c) {
            sum += sd.chunk_sum[i * sd.chunks + c];
            count += sd.chunk_len[i * sd.chunks + c];
        }
        bad |= !numeric::is_finite(sum);
        sd.sum.set(i, sum);
        sd.len.set(i, count);
    }
    if (bad) posttrain::detail::report_status(a.status, status_nonfinite_input);
}

// Upper bound of the chunk entries of a [rows, cols] side (chunks are never shorter than seg_min),
// so that a workspace sized for the longest T serves every shorter one.
constexpr index_t chunk_bound(index_t rows, index_t cols) noexcept {
    return cols > pld::seg_min ? rows * pld::ceil_div(cols, pld::seg_min) : 0;
}

// Sets a side's geometry and, when its rows are chunked, its chunk buffers (2 * chunk_bound doubles
// at chunk_base).
template <class T, class M>
void place_side(token_side<T, M>& sd, double* chunk_base) {
    sd.g = pld::make_geometry(sd.lp.extent(0), sd.lp.extent(1));
    if (sd.g.chunks > 1) {
        sd.chunk_sum = chunk_base;
        sd.chunk_len = chunk_base + chunk_bound(sd.lp.extent(0), sd.lp.extent(1));
    }
}

// Launches the reduction of `sides` token sides (their geometry placed) on the policy's stream.
template <class T, class M>
void launch_reduce(const exec::cuda_policy& pol, const reduce_args<T, M>& a, int sides, const char* fn) {
    if (sides == 0) return;
    unsigned blocks = 0;
    bool chunked = false;
    for (int k = 0; k < sides; ++k) {
        blocks = a.side[k].g.blocks > blocks ? a.side[k].g.blocks : blocks;
        chunked = chunked || a.side[k].g.chunks > 1;
    }
    if (blocks == 0) return;  // B = 0
    sequence_reduce_kernel<T, M><<<dim3(blocks, unsigned(sides)), seq_threads, 0, pol.stream>>>(a);
    posttrain::detail::check_launch(fn);
    if (!chunked) return;
    fold_args f;
    f.rows = a.side[0].lp.extent(0);
    f.status = a.status;
    for (int k = 0; k < sides; ++k) {
        const token_side<T, M>& sd = a.side[k];
        f.side[k] = fold_side{sd.chunk_sum, sd.chunk_len, sd.g.chunks, sd.sum, sd.len};
    }
    const index_t want = pld::ceil_div(f.rows, seq_threads);
    const unsigned fold_blocks = static_cast<unsigned>(want < pld::loss_max_blocks ? want : pld::loss_max_blocks);
    sequence_fold_kernel<<<dim3(fold_blocks, unsigned(sides)), seq_threads, 0, pol.stream>>>(f);
    posttrain::detail::check_launch(fn);
}

// ---- the broadcast backward ------------------------------------------------------------------------

// One [B, T] gradient: g[i, t] = coef(i) on the valid tokens of row i, 0 elsewhere.
template <class G, class M>
struct grad_side {
    device_view<G, 2> g;
    device_view<const M, 2> mask;
    vec_in coef;
    pld::seg_geometry geo;
};

template <class G, class M>
struct broadcast_args {
    grad_side<G, M> side[2];  // blockIdx.y picks the side
};

template <class G, class M>
__global__ void __launch_bounds__(seq_threads) sequence_broadcast_kernel(const broadcast_args<G, M> a) {
    const grad_side<G, M> sd = a.side[blockIdx.y];
    const pld::seg_geometry& g = sd.geo;
    const pld::team_pos p = pld::team_of(g);
    const G zero = posttrain::detail::from_double<G>(0.0);
    for (index_t base = p.first; base < g.count; base += p.step) {
        const index_t s = base + p.team;
        if (s >= g.count) break;  // no shuffles here: a team may leave early
        const pld::seg_span sp = pld::span_of(g, s, true);
        const G c = posttrain::detail::from_double<G>(sd.coef(sp.row));  // rounded once, as the host's static_cast
        const M* m = sd.mask.data() + sp.row * sd.mask.stride(0);
        G* out = sd.g.data() + sp.row * sd.g.stride(0);
        const index_t ms = sd.mask.stride(1), gs = sd.g.stride(1);
        for (index_t t0 = sp.begin + p.lane; t0 < sp.end; t0 += index_t(p.lanes) * seq_unroll) {
            M k[seq_unroll];
#pragma unroll
            for (int u = 0; u < seq_unroll; ++u) {
                const index_t t = t0 + index_t(u) * p.lanes;
                k[u] = t < sp.end ? m[t * ms] : M(0);
            }
#pragma unroll
            for (int u = 0; u < seq_unroll; ++u) {
                const index_t t = t0 + index_t(u) * p.lanes;
                if (t < sp.end) out[t * gs] = is_valid(k[u]) ? c : zero;
            }
        }
    }
}

template <class G, class M>
void launch_broadcast(const exec::cuda_policy& pol, broadcast_args<G, M> a, int sides, const char* fn) {
    unsigned blocks = 0;
    for (int k = 0; k < sides; ++k) {
        a.side[k].geo = pld::make_geometry(a.side[k].g.extent(0), a.side[k].g.extent(1));
        blocks = a.side[k].geo.blocks > blocks ? a.side[k].geo.blocks : blocks;
    }
    if (sides == 0 || blocks == 0) return;
    sequence_broadcast_kernel<G, M><<<dim3(blocks, unsigned(sides)), seq_threads, 0, pol.stream>>>(a);
    posttrain::detail::check_launch(fn);
}

// The writable [n] float / double device vector of an output argument, checked to hold n entries.
template <class X>
vec_out device_vector_output(X&& x, index_t n, where w, const char* what) {
    return std::visit(
        [&](auto v) {
            require(v.extent(0) == n, w, std::string("must have one entry per ") + what + ": found " + str(v.extent(0)) +
                                             ", expected " + str(n));
            return make_vec_out(v);
        },
        posttrain::detail::floating_output<1, device_space>(std::forward<X>(x), w));
}

}  // namespace detail

// Bytes of scratch sequence_log_probs needs on the CUDA path for a [rows, cols] batch (0 unless rows
// are long enough to be cut into chunks).
inline std::size_t sequence_log_probs_workspace_bytes(index_t rows, index_t cols) {
    return posttrain::detail::scratch_align(sizeof(double) * 2 * std::size_t(detail::chunk_bound(rows, cols)));
}

// sums[b] = sum_t [mask[b, t] != 0] log_probs[b, t] (in double, rounded once to the dtype of sums) and,
// unless posttrain::none, lengths[b] = the number of valid tokens of row b. Asynchronous.
template <class LogProbs, class Mask, class Sums, class Lengths = none_t>
void sequence_log_probs(const exec::cuda_policy& policy, const LogProbs& log_probs, const Mask& mask, Sums&& sums,
                        Lengths&& lengths = Lengths{0}) {
    constexpr const char* fn = "posttrain::preference::sequence_log_probs";
    std::visit(
        [&](auto lp, auto m) {
            using T = typename decltype(lp)::value_type;
            using M = typename decltype(m)::value_type;
            advantage::detail::check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            // The outputs are written while other blocks still read the inputs: apart from them (and
            // lengths from sums).
            auto apart_from_inputs = [&](const auto& out, const char* name) {
                std::visit(
                    [&](auto o) {
                        advantage::detail::check_no_alias(o, lp, {fn, name}, "log_probs");
                        advantage::detail::check_no_alias(o, m, {fn, name}, "mask");
                    },
                    posttrain::detail::floating_output<1, device_space>(out, {fn, name}));
            };
            apart_from_inputs(sums, "sums");
            if constexpr (!std::is_same_v<std::remove_cvref_t<Lengths>, none_t>) {
                apart_from_inputs(lengths, "lengths");
                std::visit([&](auto l, auto s) { advantage::detail::check_no_alias(l, s, {fn, "lengths"}, "sums"); },
                           posttrain::detail::floating_output<1, device_space>(lengths, {fn, "lengths"}),
                           posttrain::detail::floating_output<1, device_space>(sums, {fn, "sums"}));
            }
            std::visit(
                [&](auto s) {
                    auto apart = [&](const auto& l) {
                        posttrain::detail::check_policy_apart(policy, fn, std::pair{lp, "log_probs"}, std::pair{m, "mask"},
                                                              std::pair{s, "sums"}, std::pair{l, "lengths"});
                    };
                    if constexpr (std::is_same_v<std::remove_cvref_t<Lengths>, none_t>) apart(none);
                    else std::visit(apart, posttrain::detail::floating_output<1, device_space>(lengths, {fn, "lengths"}));
                },
                posttrain::detail::floating_output<1, device_space>(sums, {fn, "sums"}));
            const index_t B = lp.extent(0);
            detail::reduce_args<T, M> a;
            detail::token_side<T, M>& sd = a.side[0];
            sd.lp = lp;
            sd.mask = m;
            sd.sum = detail::device_vector_output(sums, B, {fn, "sums"}, "row of 'log_probs'");
            if constexpr (!std::is_same_v<std::remove_cvref_t<Lengths>, none_t>)
                sd.len = detail::device_vector_output(lengths, B, {fn, "lengths"}, "row of 'log_probs'");
            a.status = policy.status;
            const std::size_t bytes = sequence_log_probs_workspace_bytes(B, lp.extent(1));
            posttrain::detail::cuda_scratch scratch(policy, bytes, {fn, "policy"});
            detail::place_side(sd, scratch.as<double>());
            detail::launch_reduce(policy, a, 1, fn);
        },
        posttrain::detail::device_floats<true, 2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
}

// The backward of sequence_log_probs: grad_log_probs[b, t] = [mask[b, t] != 0] * grad_sums[b] (0 on
// masked tokens), rounded once to the dtype of grad_log_probs. Asynchronous; needs no scratch.
template <class GradSums, class Mask, class GradLogProbs>
void sequence_log_probs_backward(const exec::cuda_policy& policy, const GradSums& grad_sums, const Mask& mask,
                                 GradLogProbs&& grad_log_probs) {
    constexpr const char* fn = "posttrain::preference::sequence_log_probs_backward";
    std::visit(
        [&](auto gs, auto m, auto g) {
            using G = typename decltype(g)::value_type;
            using M = typename decltype(m)::value_type;
            posttrain::detail::require(gs.extent(0) == m.extent(0), {fn, "grad_sums"}, "must have one entry per row of 'mask'");
            advantage::detail::check_same_shape(g, m, {fn, "grad_log_probs"}, "mask");
            advantage::detail::check_no_alias(g, m, {fn, "grad_log_probs"}, "mask");
            advantage::detail::check_no_alias(g, gs, {fn, "grad_log_probs"}, "grad_sums");
            posttrain::detail::check_policy_apart(policy, fn, std::pair{gs, "grad_sums"}, std::pair{m, "mask"},
                                                  std::pair{g, "grad_log_probs"});
            detail::broadcast_args<G, M> a;
            a.side[0].g = g;
            a.side[0].mask = m;
            a.side[0].coef = detail::make_vec_in(gs);
            detail::launch_broadcast(policy, a, 1, fn);
        },
        posttrain::detail::floating_input<1, device_space>(grad_sums, {fn, "grad_sums"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        posttrain::detail::device_floats<false, 2>(grad_log_probs, {fn, "grad_log_probs"}));
}

}  // namespace posttrain::preference

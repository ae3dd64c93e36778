// policy_loss::compute on exec::cuda against the host oracle (exec::seq): every supported objective
// under every aggregation mode (global normalizers, multiplier, row_mean and empty_rows variants),
// every KL estimator with its clamps, straight-through and importance weighting, is_weights,
// entropies, grad_scale; rows in one segment (T <= 32 teams, warp rows) and chunked rows (T > 256
// cut when the batch has few rows); interior mask zeros, fully masked and fractional rows, T = 1,
// empty batches, log-ratios of +-30 beyond the clamp; float, double, __half and __nv_bfloat16;
// bool / uint8 / int64 / float masks; strided views; DLPack tensors; run-to-run determinism, a
// caller workspace, the asynchronous device result; the status word; host-detectable misuse.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <posttrain/policy_loss/policy_loss.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::index_t;
using pt::test::device_vec;

namespace {

// Inputs of one batch, in double (converted to the tested dtype on both sides).
struct batch {
    index_t B = 0, T = 0;
    std::vector<double> lp, old, adv, ref, isw, ent, m;
};

// Log-probs in (-5, 0), old and reference log-probs around them with 2% of the log-ratios at +-30
// (beyond the default clamp of 20), normal advantages, weights in (0.5, 1.5), entropies in (0, 3),
// a 0/1 mask with interior zeros; row 1 fully masked, row 2 right-padded from T/3, row 3 weighted 0.5.
batch make_batch(index_t B, index_t T, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    batch b;
    b.B = B, b.T = T;
    const std::size_t n = std::size_t(B * T);
    for (auto* v : {&b.lp, &b.old, &b.adv, &b.ref, &b.isw, &b.ent, &b.m}) v->resize(n);
    for (std::size_t k = 0; k < n; ++k) {
        b.lp[k] = -5 * u(rng) - 0.01;
        b.old[k] = b.lp[k] + 0.3 * normal(rng);
        b.adv[k] = normal(rng);
        b.ref[k] = b.lp[k] + 0.3 * normal(rng);
        b.isw[k] = 0.5 + u(rng);
        b.ent[k] = 3 * u(rng);
        b.m[k] = u(rng) < 0.8 ? 1.0 : 0.0;
        if (u(rng) < 0.02) b.old[k] = b.lp[k] + (u(rng) < 0.5 ? 30.0 : -30.0);
        if (u(rng) < 0.02) b.ref[k] = b.lp[k] + (u(rng) < 0.5 ? 30.0 : -30.0);
    }
    for (index_t t = 0; t < T; ++t) {
        if (B > 1) b.m[std::size_t(T + t)] = 0;
        if (B > 2 && t >= T / 3) b.m[std::size_t(2 * T + t)] = 0;
        if (B > 3) b.m[std::size_t(3 * T + t)] *= 0.5;
    }
    return b;
}

using pt::test::as_double;
using pt::test::as_type;

// A mask of element type M on the device (bool stored as bytes: std::vector<bool> has no data()).
// The host oracle reads a bool mask as uint8 (the same 0/1 weights): the host fast path cannot take
// bool masks yet (its row buffer is a std::vector<M>).
template <class M>
struct mask_of {
    using S = std::conditional_t<std::is_same_v<M, bool>, unsigned char, M>;
    index_t B, T;
    std::vector<S> host;
    device_vec<S> dev;
    static std::vector<S> convert(const std::vector<double>& m) {
        std::vector<S> out(m.size());
        for (std::size_t k = 0; k < m.size(); ++k) out[k] = std::is_same_v<M, bool> ? S(m[k] != 0) : static_cast<S>(m[k]);
        return out;
    }
    mask_of(const std::vector<double>& m, index_t b, index_t t) : B(b), T(t), host(convert(m)), dev(host) {}
    pt::tensor_view<const S, 2> h() const { return pt::tensor_view<const S, 2>(host.data(), B, T); }
    pt::device_view<const M, 2> d() const { return pt::device_view<const M, 2>(reinterpret_cast<const M*>(dev.data()), B, T); }
};

// Which extras a call passes.
struct uses {
    bool ref = false, isw = false, ent = false;
};

// The host oracle on the batch as the dtype T sees it (16-bit types: their values, in float).
template <class T, class M>
pl::loss_result host_run(const batch& b, pt::tensor_view<const M, 2> mask, const pl::options& o, uses u,
                         std::vector<double>& grad) {
    using H = std::conditional_t<pl::detail::is_half_type_v<T>, float, T>;
    auto cast = [](const std::vector<double>& v) { return as_type<H>(as_double(as_type<T>(v))); };
    const auto lp = cast(b.lp), old = cast(b.old), adv = cast(b.adv), ref = cast(b.ref), isw = cast(b.isw), ent = cast(b.ent);
    auto view = [&](const std::vector<H>& v) { return pt::tensor_view<const H, 2>(v.data(), b.B, b.T); };
    pl::extras ex;
    if (u.ref) ex.ref_log_probs = view(ref);
    if (u.isw) ex.is_weights = view(isw);
    if (u.ent) ex.entropies = view(ent);
    std::vector<H> g(lp.size());
    const pl::loss_result r = pl::compute(pt::exec::seq, view(lp), view(old), view(adv), mask,
                                          pt::tensor_view<H, 2>(g.data(), b.B, b.T), o, ex);
    // The host's gradient rounded to T, as the device writes it.
    grad = as_double(as_type<T>(as_double(g)));
    return r;
}

// The device inputs of a batch in dtype T.
template <class T>
struct device_batch {
    index_t B, T_;
    device_vec<T> lp, old, adv, ref, isw, ent;
    explicit device_batch(const batch& b)
        : B(b.B), T_(b.T), lp(as_type<T>(b.lp)), old(as_type<T>(b.old)), adv(as_type<T>(b.adv)), ref(as_type<T>(b.ref)),
          isw(as_type<T>(b.isw)), ent(as_type<T>(b.ent)) {}
    pt::device_view<const T, 2> view(const device_vec<T>& v) const { return pt::device_view<const T, 2>(v.data(), B, T_); }
    pl::device_extras extras(uses u) const {
        pl::device_extras ex;
        if (u.ref) ex.ref_log_probs = view(ref);
        if (u.isw) ex.is_weights = view(isw);
        if (u.ent) ex.entropies = view(ent);
        return ex;
    }
};

template <class T, class M>
pl::loss_result device_run(const device_batch<T>& d, pt::device_view<const M, 2> mask, const pl::options& o, uses u,
                           std::vector<double>& grad, const pt::exec::cuda_policy& policy = pt::exec::cuda) {
    device_vec<T> g(std::size_t(d.B * d.T_));
    const pl::loss_result r = pl::compute(policy, d.view(d.lp), d.view(d.old), d.view(d.adv), mask,
                                          pt::device_view<T, 2>(g.data(), d.B, d.T_), o, d.extras(u));
    grad = as_double(g.host());
    return r;
}

// Every field of the result; tol relative to max(1, |want|), NaN matches NaN.
bool same_result(const pl::loss_result& got, const pl::loss_result& want, double tol, const std::string& what) {
    bool ok = true;
    auto check = [&](double g, double w, const char* field) {
        const bool good = (std::isnan(g) && std::isnan(w)) || std::fabs(g - w) <= tol * std::fmax(1.0, std::fabs(w));
        ++pt::test::state().checks;
        if (!good) {
            char buf[320];
            std::snprintf(buf, sizeof buf, "%s: %s: got %.17g, want %.17g", what.c_str(), field, g, w);
            pt::test::report_failure(__FILE__, __LINE__, buf);
            ok = false;
        }
    };
#define PT_FIELD(f) check(got.f, want.f, #f)
    PT_FIELD(loss); PT_FIELD(policy_loss); PT_FIELD(kl_loss); PT_FIELD(entropy_loss);
    PT_FIELD(aggregation.loss); PT_FIELD(aggregation.tokens); PT_FIELD(aggregation.sequences); PT_FIELD(aggregation.divisor);
    PT_FIELD(sums.tokens); PT_FIELD(sums.clipped_low); PT_FIELD(sums.clipped_high); PT_FIELD(sums.clipped_high_positive);
    PT_FIELD(sums.dual_clipped); PT_FIELD(sums.selected); PT_FIELD(sums.neg_log_ratio); PT_FIELD(sums.neg_log_ratio_raw);
    PT_FIELD(sums.abs_log_ratio); PT_FIELD(sums.ratio); PT_FIELD(sums.kl); PT_FIELD(sums.entropy);
    PT_FIELD(sums.rollout_minus_old); PT_FIELD(sums.kept);
    PT_FIELD(ratio_min); PT_FIELD(ratio_max); PT_FIELD(seq_low_clip_min); PT_FIELD(seq_high_clip_max); PT_FIELD(phi_mean);
    PT_FIELD(sequences_clipped_low); PT_FIELD(sequences_clipped_high);
#undef PT_FIELD
    return ok;
}

// Gradients: |got - want| <= rel * (|want| + 1e-3 * typical) + floor, typical the median |want| over
// the valid tokens (a relative test with a floor for a token whose policy and KL terms cancel, not
// loosened by the +-30 log-ratio outliers; `floor` covers half's subnormal step); exact zeros where
// the mask is 0.
bool same_grad(const std::vector<double>& got, const std::vector<double>& want, const std::vector<double>& mask, double rel,
               const std::string& what, double floor = 0) {
    std::vector<double> mags;
    for (std::size_t k = 0; k < want.size(); ++k)
        if (mask[k] != 0) mags.push_back(std::fabs(want[k]));
    std::nth_element(mags.begin(), mags.begin() + std::ptrdiff_t(mags.size() / 2), mags.end());
    const double top = mags.empty() ? 0.0 : mags[mags.size() / 2];
    int bad = 0;
    for (std::size_t k = 0; k < got.size(); ++k) {
        const double allowed = rel * (std::fabs(want[k]) + 1e-3 * top) + floor;
        const bool good = mask[k] == 0 ? got[k] == 0 : std::fabs(got[k] - want[k]) <= allowed;
        if (!good && bad++ < 5) {
            char buf[320];
            std::snprintf(buf, sizeof buf, "%s: grad[%zu]: got %.17g, want %.17g", what.c_str(), k, got[k], want[k]);
            pt::test::report_failure(__FILE__, __LINE__, buf);
        }
    }
    ++pt::test::state().checks;
    return bad == 0;
}

using O = pl::objective;
using A = pl::aggregation;
const O objectives[] = {O::ppo_clip, O::cispo, O::sapo, O::policy_gradient, O::dro, O::dppo_tv, O::dppo_kl, O::topr};

// Variant v of the options for objective o: the five modes in turn, with the extras and the
// aggregation, KL and clip options that variant exercises.
pl::options variant_options(O obj, int v, uses& u) {
    pl::options o;
    o.loss = obj;
    const A modes[] = {A::token_mean, A::token_sum, A::seq_mean_token_mean, A::seq_mean_token_sum, A::seq_mean_token_sum_norm};
    o.aggregation.mode = modes[v % 5];
    u = uses{v % 2 == 0, v % 3 == 0, v % 4 == 1};
    switch (v) {
        case 3: o.kl = pl::kl_options::verl(pl::kl_estimator::k1); u.ref = true; break;
        case 5: o.aggregation.global_tokens = 1234, o.aggregation.global_sequences = 17, o.aggregation.multiplier = 4; break;
        case 6: o.aggregation.row_denominator = pl::row_mean::plus_epsilon, o.aggregation.empty = pl::empty_rows::counted; break;
        case 7:
            o.aggregation.mode = A::seq_mean_token_mean, o.aggregation.row_denominator = pl::row_mean::at_least_one;
            o.kl_importance_weighted = true, u.ref = true;
            break;
        case 8:
            o.aggregation.mode = A::seq_mean_token_sum_norm;
            o.aggregation.norm_constant = 77, o.aggregation.norm_per_sequence = true;
            o.dual_clip = 3, o.delta = 1.5;
            break;
        case 9:
            o.log_ratio_clamp = 0, o.cispo = pl::cispo_bounds::absolute, o.clip_high = 5;
            o.kl = pl::kl_options::verl(pl::kl_estimator::k3, true);
            break;
        case 10:
            o.kl = pl::kl_options::openrlhf(pl::kl_estimator::k2), o.entropy_mode = pl::entropy_aggregation::token_mean;
            o.entropy_coef = 0.01, u.ent = true;
            break;
        case 11: o.kl = pl::kl_options::nemo(pl::kl_estimator::abs), o.grad_scale = 0.37, o.dual_clip = 2; break;
        default: break;
    }
    if (u.ref) o.kl_coef = v == 7 ? 0.1 : 0.05;
    return o;
}
constexpr int variants = 12;

// Shapes: empty batches, T = 1 (single-lane teams), short rows (teams of 2..32 lanes), warp rows,
// rows chunked because the batch is small, and one long row per batch.
const index_t shapes[][2] = {{0, 5}, {3, 0}, {1, 1}, {300, 1}, {37, 29}, {33, 33}, {16, 1000}, {5, 5000}, {2, 70000}};

template <class T>
void objective_matrix(double grad_tol, const char* type) {
    std::uint64_t seed = 1;
    for (const auto& s : shapes) {
        const batch b = make_batch(s[0], s[1], seed++);
        const device_batch<T> d(b);
        const mask_of<double> mask(b.m, b.B, b.T);
        const std::string at = std::string(type) + " " + std::to_string(b.B) + "x" + std::to_string(b.T);
        for (O obj : objectives)
            for (int v = 0; v < variants; ++v) {
                uses u;
                const pl::options o = variant_options(obj, v, u);
                std::vector<double> hg, dg;
                const pl::loss_result want = host_run<T>(b, mask.h(), o, u, hg);
                const pl::loss_result got = device_run(d, mask.d(), o, u, dg);
                const std::string what = at + " objective " + pl::detail::objective_name(obj) + " variant " + std::to_string(v);
                same_result(got, want, 1e-10, what);
                same_grad(dg, hg, b.m, grad_tol, what);
            }
    }
}

template <class T, class M>
void mask_type_case(const batch& b, const char* name) {
    std::vector<double> m01(b.m.size());
    for (std::size_t k = 0; k < m01.size(); ++k) m01[k] = b.m[k] != 0 ? 1.0 : 0.0;
    const mask_of<M> mask(m01, b.B, b.T);
    const device_batch<T> d(b);
    for (O obj : {O::ppo_clip, O::cispo}) {
        const uses u{true, true, true};
        pl::options o = pl::options::verl(obj);
        o.kl_coef = 0.01;
        o.entropy_coef = 0.001;
        std::vector<double> hg, dg;
        const pl::loss_result want = host_run<T>(b, mask.h(), o, u, hg);
        const pl::loss_result got = device_run(d, mask.d(), o, u, dg);
        const std::string what = std::string("mask ") + name + " " + pl::detail::objective_name(obj);
        same_result(got, want, 1e-10, what);
        same_grad(dg, hg, m01, std::is_same_v<T, double> ? 1e-11 : 3e-7, what);
    }
}

// 16-bit log-probs: the host oracle runs in float on the same values; its gradient, rounded to float
// and then to T, may differ from the device's (rounded once) by one unit in T's last place.
template <class T>
void half_case(double grad_tol, const char* name) {
    for (const auto& s : {std::pair<index_t, index_t>{37, 29}, {16, 1000}, {3, 9000}}) {
        const batch b = make_batch(s.first, s.second, 40 + std::uint64_t(s.second));
        const mask_of<bool> mask(b.m, b.B, b.T);
        std::vector<double> m01(b.m.size());
        for (std::size_t k = 0; k < m01.size(); ++k) m01[k] = b.m[k] != 0 ? 1.0 : 0.0;
        const device_batch<T> d(b);
        for (O obj : {O::ppo_clip, O::sapo, O::topr}) {
            const uses u{true, true, false};
            pl::options o = pl::options::verl(obj);
            o.kl_coef = 0.01;
            std::vector<double> hg, dg;
            const pl::loss_result want = host_run<T>(b, mask.h(), o, u, hg);
            const pl::loss_result got = device_run(d, mask.d(), o, u, dg);
            const std::string what = std::string(name) + " " + std::to_string(b.B) + "x" + std::to_string(b.T) + " " +
                                     pl::detail::objective_name(obj);
            same_result(got, want, 1e-10, what);
            same_grad(dg, hg, m01, grad_tol, what, 6e-8);
        }
    }
}

// Runs f, expecting invalid_argument whose message names `argument`.
void expect_invalid(const std::function<void()>& f, const std::string& argument, const char* what) {
    ++pt::test::state().checks;
    try {
        f();
    } catch (const pt::invalid_argument& e) {
        if (e.argument() != argument)
            pt::test::report_failure(__FILE__, __LINE__,
                                     std::string(what) + ": expected argument '" + argument + "': " + e.what());
        return;
    } catch (const std::exception& e) {
        pt::test::report_failure(__FILE__, __LINE__, std::string(what) + ": wrong exception: " + e.what());
        return;
    }
    pt::test::report_failure(__FILE__, __LINE__, std::string(what) + ": no exception");
}

}  // namespace

PT_TEST("policy loss double: every objective and aggregation, segment and chunked rows") {
    objective_matrix<double>(1e-11, "double");
}
PT_TEST("policy loss float: every objective and aggregation (double inside, gradient rounded once)") {
    objective_matrix<float>(3e-7, "float");
}

PT_TEST("policy loss: bool, uint8, int64 and float masks") {
    const batch b = make_batch(24, 300, 77);
    mask_type_case<float, bool>(b, "bool");
    mask_type_case<float, std::uint8_t>(b, "uint8");
    mask_type_case<float, std::int64_t>(b, "int64");
    mask_type_case<float, float>(b, "float");
    mask_type_case<double, bool>(b, "bool/double");
}

PT_TEST("policy loss: __half and __nv_bfloat16 log-probs (widened to double)") {
    half_case<__half>(2.5e-3, "half");
    half_case<__nv_bfloat16>(2e-2, "bfloat16");
}

PT_TEST("policy loss: strided views (padded rows, every other column)") {
    const batch b = make_batch(19, 700, 5);
    const index_t B = b.B, T = b.T, ld = 2 * T + 3;  // element (i, t) at i * ld + 2 * t
    auto spread = [&](const std::vector<double>& v, double fill) {
        std::vector<double> out(std::size_t(B * ld), fill);
        for (index_t i = 0; i < B; ++i)
            for (index_t t = 0; t < T; ++t) out[std::size_t(i * ld + 2 * t)] = v[std::size_t(i * T + t)];
        return out;
    };
    const double nan = std::nan("");
    device_vec<double> lp(spread(b.lp, nan)), old(spread(b.old, nan)), adv(spread(b.adv, nan)), ref(spread(b.ref, nan)),
        m(spread(b.m, 0.0)), g(std::size_t(B * ld), -7.0);
    const index_t ext[2] = {B, T}, str[2] = {ld, 2};
    auto cv = [&](const device_vec<double>& v) { return pt::device_view<const double, 2>(v.data(), ext, str); };
    pl::options o = pl::options::verl(O::ppo_clip, A::seq_mean_token_mean);
    o.kl_coef = 0.02;
    pl::device_extras ex;
    ex.ref_log_probs = cv(ref);
    const pl::loss_result got =
        pl::compute(pt::exec::cuda, cv(lp), cv(old), cv(adv), cv(m), pt::device_view<double, 2>(g.data(), ext, str), o, ex);
    std::vector<double> hg;
    const mask_of<double> hm(b.m, B, T);
    const pl::loss_result want = host_run<double>(b, hm.h(), o, uses{true, false, false}, hg);
    same_result(got, want, 1e-10, "strided");
    const auto gh = g.host();
    std::vector<double> packed(b.m.size());
    bool gaps_untouched = true;
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < ld; ++t) {
            const double x = gh[std::size_t(i * ld + t)];
            if (t % 2 == 0 && t / 2 < T) packed[std::size_t(i * T + t / 2)] = x;
            else gaps_untouched &= x == -7.0;
        }
    PT_CHECK(gaps_untouched);
    same_grad(packed, hg, b.m, 1e-11, "strided");
}

PT_TEST("policy loss: DLPack tensors (float32 and float16) and posttrain::none") {
    const batch b = make_batch(12, 513, 8);
    const index_t B = b.B, T = b.T;
    std::int64_t shape[2] = {B, T};
    auto tensor = [&](void* p, std::uint8_t code, std::uint8_t bits) {
        DLTensor t{};
        t.data = p;
        t.device = DLDevice{kDLCUDA, 0};
        t.ndim = 2;
        t.dtype = DLDataType{code, bits, 1};
        t.shape = shape;
        return t;
    };
    std::vector<double> m01(b.m.size());
    for (std::size_t k = 0; k < m01.size(); ++k) m01[k] = b.m[k] != 0 ? 1.0 : 0.0;
    const mask_of<bool> bm(m01, B, T);
    const auto mask = bm.d();
    const pl::options o = pl::options::verl(O::ppo_clip);
    {
        const device_batch<float> d(b);
        device_vec<float> g(b.m.size());
        const DLTensor lp = tensor(d.lp.data(), kDLFloat, 32), old = tensor(d.old.data(), kDLFloat, 32),
                       adv = tensor(d.adv.data(), kDLFloat, 32), gt = tensor(g.data(), kDLFloat, 32);
        const pl::loss_result got = pl::compute(pt::exec::cuda, lp, old, adv, mask, gt, o);
        std::vector<double> hg;
        const pl::loss_result want = host_run<float>(b, bm.h(), o, uses{}, hg);
        same_result(got, want, 1e-10, "dlpack float32");
        same_grad(as_double(g.host()), hg, m01, 3e-7, "dlpack float32");
        // Without a gradient: the same result.
        same_result(pl::compute(pt::exec::cuda, lp, old, adv, mask, pt::none, o), want, 1e-10, "dlpack float32, none");
    }
    {
        const device_batch<__half> d(b);
        device_vec<__half> g(b.m.size());
        const DLTensor lp = tensor(d.lp.data(), kDLFloat, 16), old = tensor(d.old.data(), kDLFloat, 16),
                       adv = tensor(d.adv.data(), kDLFloat, 16), gt = tensor(g.data(), kDLFloat, 16);
        const pl::loss_result got = pl::compute(pt::exec::cuda, lp, old, adv, mask, gt, o);
        std::vector<double> hg;
        const pl::loss_result want = host_run<__half>(b, bm.h(), o, uses{}, hg);
        same_result(got, want, 1e-10, "dlpack float16");
        same_grad(as_double(g.host()), hg, m01, 2.5e-3, "dlpack float16", 6e-8);
        // A bfloat16 gradient for float16 log-probs is a dtype mismatch.
        device_vec<__nv_bfloat16> gb(b.m.size());
        const DLTensor gbt = tensor(gb.data(), kDLBfloat, 16);
        expect_invalid([&] { (void)pl::compute(pt::exec::cuda, lp, old, adv, mask, gbt, o); }, "grad_log_probs", "dlpack dtype");
        const DLTensor i16 = tensor(d.lp.data(), kDLInt, 16);
        expect_invalid([&] { (void)pl::compute(pt::exec::cuda, i16, old, adv, mask, gt, o); }, "log_probs", "dlpack int16");
    }
}

PT_TEST("policy loss: run-to-run determinism, caller workspace, asynchronous device result") {
    for (const auto& s : {std::pair<index_t, index_t>{4096, 100}, {40, 3000}, {3000, 7}}) {
        const batch b = make_batch(s.first, s.second, 99);
        const index_t B = b.B, T = b.T;
        const device_batch<float> d(b);
        const mask_of<double> mk(b.m, B, T);
        const auto dm = mk.d();
        pl::options o = pl::options::verl(O::ppo_clip, A::seq_mean_token_mean);
        o.kl_coef = 0.05;
        const uses u{true, true, true};
        std::vector<double> g1, g2, g3;
        const pl::loss_result r1 = device_run(d, dm, o, u, g1);
        const pl::loss_result r2 = device_run(d, dm, o, u, g2);
        const std::size_t bytes = pl::compute_workspace_bytes(B, T, o);
        PT_CHECK(bytes > 0);
        device_vec<unsigned char> ws(bytes);
        const pl::loss_result r3 = device_run(d, dm, o, u, g3, pt::exec::cuda.with(ws.data(), bytes));
        PT_CHECK(std::memcmp(&r1, &r2, sizeof r1) == 0);
        PT_CHECK(std::memcmp(&r1, &r3, sizeof r1) == 0);
        PT_CHECK(g1 == g2);
        PT_CHECK(g1 == g3);
        // The asynchronous overload on a stream, the result left in device memory.
        cudaStream_t stream;
        POSTTRAIN_CUDA_CHECK(cudaStreamCreate(&stream));
        device_vec<pl::loss_result> dres(1);
        device_vec<float> g4(b.m.size());
        pl::compute(pt::exec::cuda.on(stream), d.view(d.lp), d.view(d.old), d.view(d.adv), dm,
                    pt::device_view<float, 2>(g4.data(), B, T), o,
                    d.extras(u), pt::device_view<pl::loss_result, 0>(dres.data()));
        POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream));
        POSTTRAIN_CUDA_CHECK(cudaStreamDestroy(stream));
        const pl::loss_result r4 = dres.host()[0];
        PT_CHECK(std::memcmp(&r1, &r4, sizeof r1) == 0);
        PT_CHECK(as_double(g4.host()) == g1);
        PT_CHECK_THROWS(device_run(d, dm, o, u, g3, pt::exec::cuda.with(ws.data(), bytes - 1)), pt::invalid_argument);
        // The device result over the gradient or over an input is refused before launching.
        const auto result_at = [](const void* p) {
            return pt::device_view<pl::loss_result, 0>(static_cast<pl::loss_result*>(const_cast<void*>(p)));
        };
        PT_CHECK_THROWS(pl::compute(pt::exec::cuda, d.view(d.lp), d.view(d.old), d.view(d.adv), dm,
                                    pt::device_view<float, 2>(g4.data(), B, T), o, d.extras(u), result_at(g4.data() + 1)),
                        pt::invalid_argument);
        PT_CHECK_THROWS(pl::compute(pt::exec::cuda, d.view(d.lp), d.view(d.old), d.view(d.adv), dm, pt::none, o, d.extras(u),
                                    result_at(d.view(d.adv).data())),
                        pt::invalid_argument);
    }
}

PT_TEST("policy loss status word: non-finite at a valid position, garbage at masked ones") {
    batch b = make_batch(6, 40, 3);
    const double nan = std::nan("");
    b.lp[std::size_t(1 * 40 + 5)] = nan;  // row 1 is fully masked: garbage there is fine
    b.adv[std::size_t(1 * 40 + 9)] = INFINITY;
    for (std::size_t k = 0; k < b.m.size(); ++k)
        if (b.m[k] == 0) b.old[k] = nan;
    const pl::options o = pl::options::verl(O::ppo_clip);
    {
        const device_batch<double> d(b);
        const mask_of<double> mk(b.m, b.B, b.T);
        device_vec<std::uint32_t> status(1, 0u);
        std::vector<double> dg, hg;
        const pl::loss_result got = device_run(d, mk.d(), o, uses{}, dg, pt::exec::cuda.with_status(status.data()));
        PT_CHECK(status.host()[0] == 0u);
        const pl::loss_result want = host_run<double>(b, mk.h(), o, uses{}, hg);
        same_result(got, want, 1e-10, "masked garbage");
        same_grad(dg, hg, b.m, 1e-11, "masked garbage");
    }
    std::size_t valid = 0;
    while (b.m[valid] == 0) ++valid;
    b.adv[valid] = nan;
    const device_batch<double> d(b);
    const mask_of<double> mk(b.m, b.B, b.T);
    device_vec<std::uint32_t> status(1, 0u);
    std::vector<double> dg;
    (void)device_run(d, mk.d(), o, uses{}, dg, pt::exec::cuda.with_status(status.data()));
    PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    std::vector<double> hg;
    PT_CHECK_THROWS(host_run<double>(b, mk.h(), o, uses{}, hg), pt::invalid_argument);  // the host raises there
}

PT_TEST("policy loss: unsupported options and misuse throw before launching") {
    const batch b = make_batch(4, 16, 11);
    const device_batch<float> d(b);
    const device_vec<double> dm(b.m);
    device_vec<float> g(b.m.size());
    device_vec<double> gd(b.m.size());
    const auto mask = pt::device_view<const double, 2>(dm.data(), 4, 16);
    const auto gv = pt::device_view<float, 2>(g.data(), 4, 16);
    auto call = [&](const pl::options& o, const pl::device_extras& ex = {}) {
        return [&, o, ex] { (void)pl::compute(pt::exec::cuda, d.view(d.lp), d.view(d.old), d.view(d.adv), mask, gv, o, ex); };
    };
    for (O obj : {O::gmpo, O::clip_cov, O::kl_cov, O::vespo}) {
        pl::options o;
        o.loss = obj;
        expect_invalid(call(o), "options.loss", pl::detail::objective_name(obj));
    }
    pl::options o;
    o.level = pl::ratio_level::sequence;
    expect_invalid(call(o), "options.level", "sequence level");
    o = {};
    o.mismatch.mode = pl::correction::token_truncate;
    expect_invalid(call(o), "options.mismatch", "mismatch");
    o = {};
    o.off_policy_threshold = 1;
    expect_invalid(call(o), "options.off_policy_threshold", "opsm");
    o = {};
    o.top_entropy_quantile = 0.5;
    expect_invalid(call(o), "options.top_entropy_quantile", "top entropy");
    o = {};
    o.kl_coef = 0.1;
    expect_invalid(call(o), "extras.ref_log_probs", "kl without reference");
    o = {};
    o.entropy_coef = 0.1;
    expect_invalid(call(o), "extras.entropies", "entropy without entropies");
    o = {};
    o.clip_low = -1;
    expect_invalid(call(o), "options", "host option check");
    o = {};
    pl::device_extras wrong;
    wrong.ref_log_probs = pt::device_view<const double, 2>(gd.data(), 4, 16);
    expect_invalid(call(o, wrong), "extras.ref_log_probs", "reference dtype");
    wrong.ref_log_probs = pt::device_view<const float, 2>(d.ref.data(), 16, 4);
    expect_invalid(call(o, wrong), "extras.ref_log_probs", "reference shape");
    // Each argument replaced in turn: (old, mask, grad) against the good ones.
    const auto old = d.view(d.old);
    auto with = [&](auto old_v, auto mask_v, auto grad_v, const pl::device_extras& e = {}) {
        return [&, old_v, mask_v, grad_v, e] {
            (void)pl::compute(pt::exec::cuda, d.view(d.lp), old_v, d.view(d.adv), mask_v, grad_v, pl::options{}, e);
        };
    };
    expect_invalid(with(pt::device_view<const float, 2>(d.old.data(), 16, 4), mask, gv), "old_log_probs", "shape");
    expect_invalid(with(pt::device_view<const double, 2>(gd.data(), 4, 16), mask, gv), "old_log_probs", "dtype");
    expect_invalid(with(old, mask, pt::device_view<double, 2>(gd.data(), 4, 16)), "grad_log_probs", "gradient dtype");
    expect_invalid(with(old, pt::device_view<const double, 2>(dm.data(), 2, 32), gv), "mask", "mask shape");
    expect_invalid(with(old, mask, pt::device_view<float, 2>(d.lp.data(), 4, 16)), "grad_log_probs",
                   "gradient overlaps log_probs");
    pl::device_extras ex;
    ex.is_weights = d.view(d.isw);
    expect_invalid(with(old, mask, pt::device_view<float, 2>(d.isw.data(), 4, 16), ex), "grad_log_probs",
                   "gradient overlaps is_weights");
    // The policy's workspace over the gradient (or the device result), its status word over an input.
    using pt::test::refuses_policy;
    const std::size_t bytes = pl::compute_workspace_bytes(4, 16);
    device_vec<std::byte> ws(bytes + 256);
    auto with_policy = [&](const pt::exec::cuda_policy& p) {
        return [&, p] { (void)pl::compute(p, d.view(d.lp), old, d.view(d.adv), mask, gv, pl::options{}); };
    };
    PT_CHECK(refuses_policy(with_policy(pt::exec::cuda.with(g.data(), g.size() * sizeof(float))), "workspace", "grad_log_probs"));
    PT_CHECK(refuses_policy(with_policy(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(dm.data() + 3))), "status word",
                            "mask"));
    PT_CHECK(refuses_policy(with_policy(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(d.adv.data()))),
                            "status word", "advantages"));
    PT_CHECK(refuses_policy(
        [&] {
            pl::compute(pt::exec::cuda.with(ws.data(), bytes), d.view(d.lp), old, d.view(d.adv), mask, pt::none, pl::options{},
                        pl::device_extras{}, pt::device_view<pl::loss_result, 0>(reinterpret_cast<pl::loss_result*>(ws.data() + 256)));
        },
        "workspace", "result"));
}

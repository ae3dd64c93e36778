// Stress tests at scale (issue 9 item 4): the exec::cuda algorithms against the host oracle
// (exec::seq) on random layouts up to ~10^7 elements.
//   - GRPO and RLOO: uniform groups of 1..10^4 rows and ragged layouts (empty groups, singletons,
//     sizes up to 10^4, mostly-small layouts with rare huge groups that overflow a tile), totals
//     from 0 to 10^7; binary and continuous rewards; default, scale::batch, TRL (NaN ignored) and
//     verl (NaN propagated) options; the device counters against the host's group_stats_result.
//   - The rest of the family on the same layouts: GRPO under statistics::float32_one_pass (bit for
//     bit), GPG (alpha from the batch), pass@k, OPO (lengths) and GDPO (three components, both
//     aggregations).
//   - GAE and discounted returns: [rows, cols] up to 10^7 tokens (packed tiles, chunked rows of
//     2*10^6 tokens, T = 1), interior mask zeros and right padding, whitening presets.
//   - The fused PPO-clip + k3 loss at 2^20..2^23 tokens (short rows, 2048-token rows, chunked rows
//     of 2^21 tokens), float, double and bfloat16.
//   - sequence_log_probs and DPO / SimPO at 2^22 tokens per side, and with chunked rows.
//   - The status word: a NaN input sets status_nonfinite_input for every algorithm (and a NaN at a
//     masked position sets nothing where masks select).
// POSTTRAIN_TEST_QUICK=1 (or QUICK=1) shrinks every size to a few thousand elements for the
// compute-sanitizer runs (harness.hpp quick()).

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/gae.cuh>
#include <posttrain/advantage/gdpo.cuh>
#include <posttrain/advantage/gpg.cuh>
#include <posttrain/advantage/grpo.cuh>
#include <posttrain/advantage/opo.cuh>
#include <posttrain/advantage/passk.cuh>
#include <posttrain/advantage/rloo.cuh>
#include <posttrain/policy_loss/kl.cuh>
#include <posttrain/policy_loss/policy_loss.cuh>
#include <posttrain/preference/dpo.cuh>
#include <posttrain/preference/sequence.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
namespace pl = posttrain::policy_loss;
namespace pp = posttrain::preference;
using pt::index_t;
using pt::test::device_vec;

namespace {

std::uint32_t read_status(const device_vec<std::uint32_t>& s) { return s.host()[0]; }

// Gradients are ~1/N per token, so close_to's max(1, |want|) would accept anything: compare
// relatively, |got - want| <= rel * (|want| + 1e-3 * max |want|).
template <class G, class W>
bool close_rel(const std::vector<G>& got, const std::vector<W>& want, double rel, const std::string& what) {
    double top = 0;
    for (const W& w : want) top = std::fmax(top, std::fabs(double(w)));
    std::vector<double> g(got.begin(), got.end()), w(want.begin(), want.end()), slack(want.size());
    for (std::size_t k = 0; k < w.size(); ++k) slack[k] = rel * (std::fabs(w[k]) + 1e-3 * top);
    return pt::test::close_to(g, w, 0.0, what, slack);
}

// ---- outcome advantages ------------------------------------------------------------------------

struct layout {
    std::string name;
    index_t uniform = 0;             // > 0: uniform_groups{uniform}
    std::vector<std::int64_t> off;   // always filled (the host oracle and the reward generator use it)
};

layout uniform_layout(index_t k, index_t total) {
    layout l;
    l.uniform = k;
    const index_t groups = total / k;
    l.name = "uniform " + std::to_string(k) + " x " + std::to_string(groups);
    l.off.resize(std::size_t(groups) + 1);
    for (index_t g = 0; g <= groups; ++g) l.off[std::size_t(g)] = g * k;
    return l;
}

// Ragged sizes drawn from `size(rng)` until about `total` rows.
template <class Size>
layout ragged_layout(const std::string& name, index_t total, std::uint64_t seed, Size size) {
    layout l;
    l.name = "ragged " + name;
    std::mt19937_64 rng(seed);
    l.off.push_back(0);
    while (l.off.back() < total) l.off.push_back(l.off.back() + std::min<index_t>(size(rng), total - l.off.back()));
    l.name += " (" + std::to_string(l.off.size() - 1) + " groups, " + std::to_string(l.off.back()) + " rows)";
    return l;
}

std::vector<layout> outcome_layouts() {
    const index_t big = pt::test::quick_size(10'000'000, 20'000), mid = pt::test::quick_size(1'000'000, 6'000);
    std::vector<layout> v;
    for (index_t k : {index_t(1), index_t(16), index_t(10'000)}) v.push_back(uniform_layout(k, big));
    for (index_t k : {index_t(2), index_t(3), index_t(7), index_t(32), index_t(100), index_t(1024), index_t(4097)})
        v.push_back(uniform_layout(k, std::max(mid, k)));
    v.push_back(uniform_layout(16, 0));
    v.push_back(ragged_layout("sizes 0..2", mid, 1, [](std::mt19937_64& r) { return index_t(r() % 3); }));
    v.push_back(ragged_layout("sizes 1..31", big, 2, [](std::mt19937_64& r) { return index_t(1 + r() % 31); }));
    v.push_back(ragged_layout("sizes 0..300", mid, 3, [](std::mt19937_64& r) { return index_t(r() % 301); }));
    v.push_back(ragged_layout("sizes 1..10^4", big, 4, [](std::mt19937_64& r) { return index_t(1 + r() % 10'000); }));
    // Mostly small groups and a rare huge one: tiles overflow and take the deferred path.
    v.push_back(ragged_layout("mixed 0..16 and rare 10^3..10^4", big, 5, [](std::mt19937_64& r) {
        const auto u = r() % 1000;
        return u < 40 ? index_t(0) : u < 990 ? index_t(1 + r() % 16) : index_t(1000 + r() % 9001);
    }));
    layout empty;
    empty.name = "ragged 1000 empty groups";
    empty.off.assign(1001, 0);
    v.push_back(empty);
    layout none;
    none.name = "ragged no groups";
    none.off = {0};
    v.push_back(none);
    return v;
}

// Rewards per group: binary (pass/fail, often constant) or continuous, NaN with probability nan_rate.
template <class T>
std::vector<T> rewards_for(const std::vector<std::int64_t>& off, std::uint64_t seed, bool binary, double nan_rate) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.5, 2.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<T> r(std::size_t(off.back()));
    for (std::size_t g = 0; g + 1 < off.size(); ++g) {
        const bool bin = binary && (rng() & 1);
        for (auto i = off[g]; i < off[g + 1]; ++i) {
            double v = bin ? double(rng() & 1) : normal(rng);
            if (nan_rate > 0 && u(rng) < nan_rate) v = std::nan("");
            r[std::size_t(i)] = static_cast<T>(v);
        }
    }
    return r;
}

template <class Options>
constexpr bool is_grpo = std::is_same_v<Options, adv::grpo_options>;

template <class Options, class P, class R, class G, class A>
pt::group_stats_result host_outcome(const P& p, const R& r, const G& g, A& a, const Options& o) {
    if constexpr (is_grpo<Options>) return adv::grpo(p, r, g, a, o);
    else return adv::rloo(p, r, g, a, o);
}

template <class Options, class R, class G, class A>
void device_outcome(const pt::exec::cuda_policy& p, const R& r, const G& g, A&& a, const Options& o,
                    pt::device_view<index_t, 1> stats) {
    if constexpr (is_grpo<Options>) adv::grpo(p, r, g, a, o, stats);
    else adv::rloo(p, r, g, a, o, stats);
}

template <class T, class Options>
void outcome_case(const layout& l, const Options& o, bool binary, double nan_rate, const std::string& what) {
    const std::vector<T> r = rewards_for<T>(l.off, 17 + l.off.size(), binary, nan_rate);
    const index_t n = index_t(r.size());
    std::vector<T> want(r.size());
    pt::group_stats_result hs;
    if (l.uniform > 0) hs = host_outcome(pt::exec::seq, r, pt::uniform_groups{l.uniform}, want, o);
    else hs = host_outcome(pt::exec::seq, r, pt::ragged(l.off), want, o);

    const device_vec<T> dr(r);
    device_vec<T> da(r.size(), T(-12345));
    device_vec<index_t> stats(5, 0);
    device_vec<std::uint32_t> status(1, 0u);
    const device_vec<std::int64_t> doff(l.off);
    const auto pol = pt::exec::cuda.with_status(status.data());
    if (l.uniform > 0) device_outcome(pol, dr.cview(), pt::uniform_groups{l.uniform}, da.view(), o, stats.view());
    else device_outcome(pol, dr.cview(), pt::ragged(doff.cview()), da.view(), o, stats.view());
    const std::string at = what + " " + l.name + " (N=" + std::to_string(n) + ")";
    // double: summation-order rounding over groups (and, under scale::batch, batches) of up to 10^7 rows.
    pt::test::close_to(da.host(), want, sizeof(T) == 8 ? 1e-11 : 1e-6, at);
    const std::vector<index_t> s = stats.host();
    PT_CHECK_MSG(s[0] == hs.groups, at + " groups");
    PT_CHECK_MSG(s[1] == hs.empty_groups, at + " empty groups");
    PT_CHECK_MSG(s[2] == hs.singleton_groups, at + " singleton groups");
    PT_CHECK_MSG(s[3] == hs.zero_variance_groups, at + " zero-variance groups");
    PT_CHECK_MSG(s[4] == hs.ignored_rows, at + " ignored rows");
    PT_CHECK_MSG(read_status(status) == 0, at + ": status word set on valid input");
}

}  // namespace

PT_TEST("stress: grpo against the host on layouts up to 10^7 rows") {
    for (const layout& l : outcome_layouts()) {
        outcome_case<float>(l, adv::grpo_options{}, true, 0.0, "grpo float default");
        adv::grpo_options batch;
        batch.std_scale = adv::scale::batch;
        outcome_case<double>(l, batch, true, 0.0, "grpo double scale::batch");
        outcome_case<float>(l, adv::grpo_options::trl(), false, 0.01, "grpo float trl (NaN ignored)");
    }
}

namespace {

// One estimator of the family on one layout: host(groups, want) -> group_stats_result on the host
// layout, device(policy, groups, out, stats) on the device one; tol < 0 asks for equal bits.
template <class T, class Host, class Device>
void family_case(const layout& l, const std::string& what, double tol, Host&& host, Device&& device) {
    std::vector<T> want(std::size_t(l.off.back()));
    pt::group_stats_result hs;
    device_vec<T> da(want.size(), T(-12345));
    device_vec<index_t> stats(5, 0);
    device_vec<std::uint32_t> status(1, 0u);
    const device_vec<std::int64_t> doff(l.off);
    const auto pol = pt::exec::cuda.with_status(status.data());
    if (l.uniform > 0) {
        hs = host(pt::uniform_groups{l.uniform}, want);
        device(pol, pt::uniform_groups{l.uniform}, da.view(), stats.view());
    } else {
        hs = host(pt::ragged(l.off), want);
        device(pol, pt::ragged(doff.cview()), da.view(), stats.view());
    }
    const std::string at = what + " " + l.name + " (N=" + std::to_string(want.size()) + ")";
    const std::vector<T> got = da.host();
    if (tol < 0) {
        bool same = true;
        for (std::size_t i = 0; i < got.size(); ++i) same &= got[i] == want[i] || (got[i] != got[i] && want[i] != want[i]);
        PT_CHECK_MSG(same, at + ": not bit for bit");
        if (!same) pt::test::close_to(got, want, 0.0, at);
    } else {
        pt::test::close_to(got, want, tol, at);
    }
    const std::vector<index_t> s = stats.host();
    PT_CHECK_MSG(s[0] == hs.groups && s[1] == hs.empty_groups && s[2] == hs.singleton_groups &&
                     s[3] == hs.zero_variance_groups && s[4] == hs.ignored_rows,
                 at + " counters");
    PT_CHECK_MSG(read_status(status) == 0, at + ": status word set on valid input");
}

}  // namespace

PT_TEST("stress: float32_one_pass, gpg, passk, opo and gdpo against the host on layouts up to 10^7 rows") {
    for (const layout& l : outcome_layouts()) {
        const std::vector<float> r = rewards_for<float>(l.off, 29 + l.off.size(), true, 0.0);
        const device_vec<float> dr(r);
        const index_t n = index_t(r.size());
        family_case<float>(l, "grpo float32_one_pass", -1, [&](auto g, auto& a) {
            return adv::grpo(pt::exec::seq, r, g, a, adv::grpo_options::verl_vectorized());
        }, [&](auto p, auto g, auto a, auto s) { adv::grpo(p, dr.cview(), g, a, adv::grpo_options::verl_vectorized(), s); });
        family_case<float>(l, "gpg verl", 1e-6, [&](auto g, auto& a) {
            return adv::gpg(pt::exec::seq, r, g, a, adv::gpg_options::verl());
        }, [&](auto p, auto g, auto a, auto s) { adv::gpg(p, dr.cview(), g, a, adv::gpg_options::verl(), s); });
        family_case<float>(l, "passk", 1e-6, [&](auto g, auto& a) {
            return adv::grpo_passk(pt::exec::seq, r, g, a);
        }, [&](auto p, auto g, auto a, auto s) { adv::grpo_passk(p, dr.cview(), g, a, adv::passk_options{}, s); });
        std::vector<double> len(r.size());
        std::mt19937_64 rng(3);
        for (auto& x : len) x = double(rng() % 4096);
        const device_vec<double> dlen(len);
        family_case<float>(l, "opo", 1e-6, [&](auto g, auto& a) {
            return adv::opo(pt::exec::seq, r, len, g, a);
        }, [&](auto p, auto g, auto a, auto s) { adv::opo(p, dr.cview(), dlen.cview(), g, a, adv::opo_options{}, s); });
        // GDPO: three components, [N, 3] row-major.
        std::vector<double> m(std::size_t(3 * n));
        for (int k = 0; k < 3; ++k) {
            const std::vector<double> c = rewards_for<double>(l.off, 31 + std::uint64_t(k), k != 1, 0.0);
            for (index_t i = 0; i < n; ++i) m[std::size_t(3 * i + k)] = c[std::size_t(i)];
        }
        const device_vec<double> dm(m);
        const pt::tensor_view<const double, 2> hm(m.data(), n, 3);
        const pt::device_view<const double, 2> vm(dm.data(), n, 3);
        for (const auto& o : {adv::gdpo_options::gdpo({1.0, 0.5, 2.0}),
                              adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, adv::scale::group, {1.0, 0.5, 2.0})})
            family_case<double>(l, o.mode == adv::aggregation::normalize_then_sum ? "gdpo" : "gdpo sum_then_normalize", 1e-9,
                                [&](auto g, auto& a) { return adv::gdpo(pt::exec::seq, hm, g, a, o); },
                                [&](auto p, auto g, auto a, auto s) { adv::gdpo(p, vm, g, a, pt::none, o, s); });
    }
}

PT_TEST("stress: rloo against the host on layouts up to 10^7 rows") {
    for (const layout& l : outcome_layouts()) {
        outcome_case<float>(l, adv::rloo_options{}, true, 0.0, "rloo float default");
        outcome_case<double>(l, adv::rloo_options::verl(), false, 0.01, "rloo double verl (NaN propagated)");
    }
}

// ---- GAE and discounted returns ------------------------------------------------------------------

namespace {

// Normal rewards and values; a mask with 10% interior zeros and random right padding per row.
template <class T>
struct token_batch {
    index_t rows, cols;
    std::vector<T> r, v;
    std::vector<std::uint8_t> m;
};

template <class T>
token_batch<T> make_tokens(index_t rows, index_t cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    token_batch<T> b{rows, cols, {}, {}, {}};
    const std::size_t n = std::size_t(rows * cols);
    b.r.resize(n), b.v.resize(n), b.m.resize(n);
    for (index_t i = 0; i < rows; ++i) {
        const index_t len = cols - index_t(rng() % std::uint64_t(cols / 2 + 1));  // at least one token when cols > 0
        for (index_t t = 0; t < cols; ++t) {
            const std::size_t k = std::size_t(i * cols + t);
            b.r[k] = static_cast<T>(normal(rng));
            b.v[k] = static_cast<T>(normal(rng));
            b.m[k] = t < len && u(rng) > 0.1 ? 1 : 0;
        }
    }
    return b;
}

template <class T>
void gae_case(index_t rows, index_t cols, const adv::gae_options& o, double tol, const std::string& what) {
    const auto b = make_tokens<T>(rows, cols, std::uint64_t(rows * 31 + cols));
    const std::size_t n = b.r.size();
    std::vector<T> a(n), ret(n);
    (void)adv::gae(pt::exec::seq, pt::tensor_view<const T, 2>(b.r.data(), rows, cols), pt::tensor_view<const T, 2>(b.v.data(), rows, cols),
                   pt::tensor_view<const std::uint8_t, 2>(b.m.data(), rows, cols), pt::tensor_view<T, 2>(a.data(), rows, cols),
                   pt::tensor_view<T, 2>(ret.data(), rows, cols), o);
    const device_vec<T> dr(b.r), dv(b.v);
    const device_vec<std::uint8_t> dm(b.m);
    device_vec<T> da(n, T(-7)), dret(n, T(-7));
    device_vec<std::uint32_t> status(1, 0u);
    adv::gae(pt::exec::cuda.with_status(status.data()), pt::device_view<const T, 2>(dr.data(), rows, cols),
             pt::device_view<const T, 2>(dv.data(), rows, cols), pt::device_view<const std::uint8_t, 2>(dm.data(), rows, cols),
             pt::device_view<T, 2>(da.data(), rows, cols), pt::device_view<T, 2>(dret.data(), rows, cols), o);
    const std::string at = what + " [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
    pt::test::close_to(da.host(), a, tol, at + " advantages");
    pt::test::close_to(dret.host(), ret, tol, at + " returns");
    PT_CHECK_MSG(read_status(status) == 0, at + ": status word set on valid input");
}

template <class T>
void returns_case(index_t rows, index_t cols, double tol, const std::string& what) {
    const auto b = make_tokens<T>(rows, cols, std::uint64_t(rows * 17 + cols));
    std::vector<T> want(b.r.size());
    adv::returns_options o;
    o.gamma = 0.995;
    (void)adv::discounted_returns(pt::exec::seq, pt::tensor_view<const T, 2>(b.r.data(), rows, cols),
                                  pt::tensor_view<const std::uint8_t, 2>(b.m.data(), rows, cols),
                                  pt::tensor_view<T, 2>(want.data(), rows, cols), o);
    const device_vec<T> dr(b.r);
    const device_vec<std::uint8_t> dm(b.m);
    device_vec<T> out(b.r.size(), T(-7));
    adv::discounted_returns(pt::exec::cuda, pt::device_view<const T, 2>(dr.data(), rows, cols),
                            pt::device_view<const std::uint8_t, 2>(dm.data(), rows, cols), pt::device_view<T, 2>(out.data(), rows, cols), o);
    pt::test::close_to(out.host(), want, tol, what + " [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
}

adv::gae_options raw_gae(adv::gae_masking mode) {
    adv::gae_options o;
    o.gamma = 0.99;
    o.lambda = 0.95;
    o.masking = mode;
    o.whiten = false;
    o.mask_output = false;
    return o;
}

}  // namespace

PT_TEST("stress: gae and discounted returns against the host up to 10^7 tokens") {
    const bool q = pt::test::quick();
    // [rows, cols]: packed tiles (several rows per tile), whole-tile rows, chunked long rows, T = 1.
    const index_t shapes[][2] = {{q ? 37 : 1000, q ? 29 : 10'000},
                                 {q ? 3 : 4883, 2048},
                                 {q ? 2 : 5, q ? 5000 : 2'000'000},
                                 {q ? 3000 : 10'000'000, 1},
                                 {3, 0},
                                 {0, 7}};
    for (const auto& s : shapes) {
        if (s[0] * s[1] >= 4) {  // the presets whiten: an empty batch raises on the host
            gae_case<double>(s[0], s[1], adv::gae_options::verl(0.999, 0.95), 1e-9, "gae double verl");
            gae_case<float>(s[0], s[1], adv::gae_options::nemo(), 2e-5, "gae float nemo");
        }
        gae_case<float>(s[0], s[1], raw_gae(adv::gae_masking::zero), 2e-5, "gae float raw zero-masking");
        returns_case<double>(s[0], s[1], 1e-9, "discounted returns double");
    }
}

// ---- the fused policy loss ------------------------------------------------------------------------

namespace {

using pt::test::as_double;
using pt::test::as_type;

void same_result(const pl::loss_result& got, const pl::loss_result& want, double tol, const std::string& what) {
    const std::vector<double> g = {got.loss, got.policy_loss, got.kl_loss, got.sums.tokens, got.sums.clipped_low,
                                   got.sums.clipped_high, got.sums.dual_clipped, got.sums.kl, got.sums.ratio,
                                   got.ratio_min, got.ratio_max, got.sequences_clipped_low, got.sequences_clipped_high};
    const std::vector<double> w = {want.loss, want.policy_loss, want.kl_loss, want.sums.tokens, want.sums.clipped_low,
                                   want.sums.clipped_high, want.sums.dual_clipped, want.sums.kl, want.sums.ratio,
                                   want.ratio_min, want.ratio_max, want.sequences_clipped_low, want.sequences_clipped_high};
    pt::test::close_to(g, w, tol, what + " loss_result (loss, policy, kl, tokens, clips, kl sum, ratio sum, range, rows)");
}

// verl's PPO clip (dual clip 3) + k3 KL 0.001, token-mean, on [B, T] inputs of dtype T (the host
// oracle sees the same values, widened: float for 16-bit types).
template <class T>
void loss_case(index_t B, index_t T_, pl::aggregation mode, double grad_tol, const std::string& what) {
    using H = std::conditional_t<pl::detail::is_half_type_v<T>, float, T>;
    std::mt19937_64 rng(std::uint64_t(B * 7 + T_));
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    const std::size_t n = std::size_t(B * T_);
    std::vector<double> lp(n), old(n), ad(n), ref(n);
    std::vector<std::uint8_t> m(n);
    for (index_t i = 0; i < B; ++i) {
        const index_t len = T_ / 2 + index_t(rng() % std::uint64_t(T_ / 2 + 1));
        for (index_t t = 0; t < T_; ++t) {
            const std::size_t k = std::size_t(i * T_ + t);
            lp[k] = -5 * u(rng) - 0.01;
            old[k] = lp[k] + 0.2 * normal(rng);
            ref[k] = lp[k] + 0.2 * normal(rng);
            ad[k] = normal(rng);
            m[k] = t < len && u(rng) > 0.05;
        }
    }
    const auto t_lp = as_type<T>(lp), t_old = as_type<T>(old), t_ad = as_type<T>(ad), t_ref = as_type<T>(ref);
    pl::options o = pl::options::verl(pl::objective::ppo_clip, mode);
    o.kl_coef = 0.001;

    const auto h_lp = as_type<H>(as_double(t_lp)), h_old = as_type<H>(as_double(t_old)), h_ad = as_type<H>(as_double(t_ad)),
               h_ref = as_type<H>(as_double(t_ref));
    auto hv = [&](const std::vector<H>& v) { return pt::tensor_view<const H, 2>(v.data(), B, T_); };
    std::vector<H> hg(n);
    pl::extras hx;
    hx.ref_log_probs = hv(h_ref);
    const pl::loss_result want = pl::compute(pt::exec::seq, hv(h_lp), hv(h_old), hv(h_ad), pt::tensor_view<const std::uint8_t, 2>(m.data(), B, T_),
                                             pt::tensor_view<H, 2>(hg.data(), B, T_), o, hx);
    const std::vector<double> want_grad = as_double(as_type<T>(as_double(hg)));  // rounded to T as the device writes it

    const device_vec<T> d_lp(t_lp), d_old(t_old), d_ad(t_ad), d_ref(t_ref);
    const device_vec<std::uint8_t> dm(m);
    device_vec<T> dg(n);
    device_vec<pl::loss_result> dres(1);
    device_vec<std::uint32_t> status(1, 0u);
    auto dv = [&](const device_vec<T>& v) { return pt::device_view<const T, 2>(v.data(), B, T_); };
    pl::device_extras dx;
    dx.ref_log_probs = dv(d_ref);
    pl::compute(pt::exec::cuda.with_status(status.data()), dv(d_lp), dv(d_old), dv(d_ad),
                pt::device_view<const std::uint8_t, 2>(dm.data(), B, T_), pt::device_view<T, 2>(dg.data(), B, T_), o, dx,
                pt::device_view<pl::loss_result, 0>(dres.data()));
    const std::string at = what + " [" + std::to_string(B) + ", " + std::to_string(T_) + "]";
    same_result(dres.host()[0], want, 1e-9, at);
    close_rel(as_double(dg.host()), want_grad, grad_tol, at + " gradient");
    PT_CHECK_MSG(read_status(status) == 0, at + ": status word set on valid input");
}

}  // namespace

PT_TEST("stress: fused PPO + k3 loss against the host at 2^20..2^23 tokens") {
    const bool q = pt::test::quick();
    // Float gradients: one rounding of the double value on both sides (1 ulp apart at most).
    loss_case<float>(q ? 16 : 512, q ? 300 : 2048, pl::aggregation::token_mean, 3e-7, "ppo_k3 float 2^20");
    loss_case<double>(q ? 2 : 4, q ? 5000 : index_t(1) << 21, pl::aggregation::token_mean, 1e-11, "ppo_k3 double chunked 2^23");
    loss_case<float>(q ? 300 : index_t(1) << 17, 64, pl::aggregation::seq_mean_token_mean, 3e-7, "ppo_k3 float short rows 2^23");
    // bfloat16: the host oracle runs in float and rounds its float gradient to bf16, the device rounds
    // its double value once: the two may be one bf16 ulp (2^-8 relative) apart.
    loss_case<__nv_bfloat16>(q ? 8 : 2048, q ? 512 : 2048, pl::aggregation::token_mean, 8e-3, "ppo_k3 bf16 2^22");
}

// ---- sequence log-probs and DPO ---------------------------------------------------------------------

namespace {

struct pair_batch {
    index_t B, T;
    std::vector<float> lp[4];          // chosen, rejected, ref chosen, ref rejected
    std::vector<std::uint8_t> mask[2];  // the references share their side's mask
};

pair_batch make_pairs(index_t B, index_t T_, std::uint64_t seed) {
    pair_batch d{B, T_, {}, {}};
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-2.5, -0.01), noise(-0.05, 0.05);
    for (auto& v : d.lp) v.resize(std::size_t(B * T_));
    for (auto& m : d.mask) m.resize(std::size_t(B * T_));
    for (int s = 0; s < 2; ++s)
        for (index_t i = 0; i < B; ++i) {
            const index_t len = 1 + index_t(rng() % std::uint64_t(T_));
            for (index_t t = 0; t < T_; ++t) {
                const std::size_t k = std::size_t(i * T_ + t);
                d.mask[s][k] = t < len;
                d.lp[s][k] = t < len ? float(u(rng)) : std::nanf("");  // masks select: padding may hold NaN
                d.lp[s + 2][k] = t < len ? d.lp[s][k] + float(noise(rng)) : std::nanf("");
            }
        }
    return d;
}

void dpo_case(index_t B, index_t T_, const pp::dpo_options& o, bool ref, const std::string& what) {
    const pair_batch d = make_pairs(B, T_, std::uint64_t(B + T_));
    const std::size_t n = std::size_t(B * T_);
    const std::string at = what + " [" + std::to_string(B) + ", " + std::to_string(T_) + "]";
    // Host oracle.
    pp::sequence_input hin[4];
    for (int k = 0; k < 4; ++k)
        hin[k] = pp::sequence_input::tokens(pt::tensor_view<const float, 2>(d.lp[k].data(), B, T_),
                                            pt::tensor_view<const std::uint8_t, 2>(d.mask[k % 2].data(), B, T_));
    std::vector<float> hg[2] = {std::vector<float>(n), std::vector<float>(n)};
    pp::dpo_result want;
    (void)(want = pp::dpo(pt::exec::seq, hin[0], hin[1], ref ? hin[2] : pp::sequence_input{}, ref ? hin[3] : pp::sequence_input{},
                          pt::tensor_view<float, 2>(hg[0].data(), B, T_), pt::tensor_view<float, 2>(hg[1].data(), B, T_), o));
    // Device.
    const device_vec<float> dl[4] = {device_vec<float>(d.lp[0]), device_vec<float>(d.lp[1]), device_vec<float>(d.lp[2]),
                                     device_vec<float>(d.lp[3])};
    const device_vec<std::uint8_t> dm[2] = {device_vec<std::uint8_t>(d.mask[0]), device_vec<std::uint8_t>(d.mask[1])};
    device_vec<float> dg[2] = {device_vec<float>(n), device_vec<float>(n)};
    device_vec<std::uint32_t> status(1, 0u);
    pp::device_sequence_input din[4];
    for (int k = 0; k < 4; ++k)
        din[k] = pp::device_sequence_input::tokens(pt::device_view<const float, 2>(dl[k].data(), B, T_),
                                                   pt::device_view<const std::uint8_t, 2>(dm[k % 2].data(), B, T_));
    const pp::device_sequence_input none;
    pp::dpo_result got;
    (void)(got = pp::dpo(pt::exec::cuda.with_status(status.data()), din[0], din[1], ref ? din[2] : none, ref ? din[3] : none,
                         pt::device_view<float, 2>(dg[0].data(), B, T_), pt::device_view<float, 2>(dg[1].data(), B, T_), o));
    pt::test::close_to(std::vector<double>{got.loss, got.metrics.chosen, got.metrics.rejected, got.metrics.margin,
                                           got.metrics.accuracy, got.metrics.logps_chosen, got.metrics.logps_rejected},
                       std::vector<double>{want.loss, want.metrics.chosen, want.metrics.rejected, want.metrics.margin,
                                           want.metrics.accuracy, want.metrics.logps_chosen, want.metrics.logps_rejected},
                       1e-9, at + " loss and metrics");
    PT_CHECK_MSG(got.pairs == want.pairs, at + " pairs");
    for (int s = 0; s < 2; ++s) close_rel(dg[s].host(), hg[s], 3e-7, at + (s ? " grad rejected" : " grad chosen"));
    PT_CHECK_MSG(read_status(status) == 0, at + ": status word set on valid input (NaN only at masked positions)");

    // sequence_log_probs of the chosen side alone.
    std::vector<double> hs(static_cast<std::size_t>(B)), hl(static_cast<std::size_t>(B));
    pp::sequence_log_probs(pt::exec::seq, pt::tensor_view<const float, 2>(d.lp[0].data(), B, T_),
                           pt::tensor_view<const std::uint8_t, 2>(d.mask[0].data(), B, T_), pt::tensor_view<double, 1>(hs.data(), B),
                           pt::tensor_view<double, 1>(hl.data(), B));
    device_vec<double> ds(static_cast<std::size_t>(B)), dlen(static_cast<std::size_t>(B));
    pp::sequence_log_probs(pt::exec::cuda.with_status(status.data()), pt::device_view<const float, 2>(dl[0].data(), B, T_),
                           pt::device_view<const std::uint8_t, 2>(dm[0].data(), B, T_), ds.view(), dlen.view());
    pt::test::close_to(ds.host(), hs, 1e-10, at + " sequence_log_probs sums");  // rows of up to 5 * 10^5 tokens
    pt::test::close_to(dlen.host(), hl, 0.0, at + " sequence_log_probs lengths");
    PT_CHECK_MSG(read_status(status) == 0, at + ": sequence_log_probs status word set on valid input");
}

}  // namespace

PT_TEST("stress: dpo, simpo and sequence_log_probs against the host at 2^22 tokens per side") {
    const bool q = pt::test::quick();
    dpo_case(q ? 16 : 2048, q ? 300 : 2048, pp::dpo_options::trl(), true, "dpo sigmoid trl");
    dpo_case(q ? 2 : 8, q ? 9000 : 500'000, pp::dpo_options::trl(), true, "dpo sigmoid trl chunked rows");
    dpo_case(q ? 16 : 2048, q ? 300 : 2048, pp::dpo_options::simpo(), false, "simpo");
}

// ---- the status word -------------------------------------------------------------------------------

PT_TEST("stress: a NaN input sets status_nonfinite_input in every algorithm") {
    const std::uint32_t bit = pt::status_nonfinite_input;
    const index_t B = 8, T_ = 300, n = B * T_;
    std::vector<float> x(std::size_t(n), -1.0f);
    x[std::size_t(n / 2)] = std::nanf("");
    const device_vec<float> nan_in(x), ok_in(static_cast<std::size_t>(n), -0.5f);
    device_vec<float> out(static_cast<std::size_t>(n)), out2(static_cast<std::size_t>(n));
    const std::vector<std::uint8_t> ones(std::size_t(n), 1);
    std::vector<std::uint8_t> hole = ones;
    hole[std::size_t(n / 2)] = 0;  // the NaN's position masked out
    const device_vec<std::uint8_t> m1(ones), m0(hole);
    auto v2 = [&](const device_vec<float>& v) { return pt::device_view<const float, 2>(v.data(), B, T_); };
    auto o2 = [&](device_vec<float>& v) { return pt::device_view<float, 2>(v.data(), B, T_); };
    auto mk = [&](const device_vec<std::uint8_t>& m) { return pt::device_view<const std::uint8_t, 2>(m.data(), B, T_); };
    auto check = [&](const char* what, std::uint32_t expected, auto&& call) {
        device_vec<std::uint32_t> status(1, 0u);
        call(pt::exec::cuda.with_status(status.data()));
        const std::uint32_t s = read_status(status);
        PT_CHECK_MSG((s & bit) == expected, std::string(what) + ": status " + std::to_string(s));
    };

    check("grpo (raise)", bit, [&](auto p) { adv::grpo(p, nan_in.cview(), pt::uniform_groups{16}, out.view()); });
    check("grpo finite", 0, [&](auto p) { adv::grpo(p, ok_in.cview(), pt::uniform_groups{16}, out.view()); });
    check("grpo (propagate: no report)", 0,
          [&](auto p) { adv::grpo(p, nan_in.cview(), pt::uniform_groups{16}, out.view(), adv::grpo_options::verl()); });
    {
        const device_vec<std::int64_t> off(std::vector<std::int64_t>{0, 5, 5, n / 2 + 3, n});
        check("grpo ragged (raise)", bit, [&](auto p) { adv::grpo(p, nan_in.cview(), pt::ragged(off.cview()), out.view()); });
        adv::grpo_options batch;
        batch.std_scale = adv::scale::batch;
        check("grpo scale::batch (raise)", bit, [&](auto p) { adv::grpo(p, nan_in.cview(), pt::ragged(off.cview()), out.view(), batch); });
    }
    check("rloo (raise)", bit, [&](auto p) { adv::rloo(p, nan_in.cview(), pt::uniform_groups{4}, out.view()); });
    adv::gae_options g;
    g.whiten = false;
    check("gae (raise)", bit, [&](auto p) { adv::gae(p, v2(nan_in), v2(ok_in), mk(m1), o2(out), o2(out2), g); });
    check("gae finite", 0, [&](auto p) { adv::gae(p, v2(ok_in), v2(ok_in), mk(m1), o2(out), o2(out2), g); });
    check("kl_penalty (raise)", bit, [&](auto p) { pl::kl_penalty(p, v2(nan_in), v2(ok_in), o2(out), pt::none); });
    check("kl_penalty finite", 0, [&](auto p) { pl::kl_penalty(p, v2(ok_in), v2(ok_in), o2(out), pt::none); });
    auto loss = [&](auto p, const device_vec<float>& lp, const device_vec<std::uint8_t>& m) {
        pl::compute(p, v2(lp), v2(ok_in), v2(ok_in), mk(m), o2(out), pl::options{}, pl::device_extras{},
                    pt::device_view<pl::loss_result, 0>());
    };
    check("policy loss (valid NaN)", bit, [&](auto p) { loss(p, nan_in, m1); });
    check("policy loss (masked NaN)", 0, [&](auto p) { loss(p, nan_in, m0); });
    device_vec<double> sums(static_cast<std::size_t>(B));
    check("sequence_log_probs (valid NaN)", bit, [&](auto p) { pp::sequence_log_probs(p, v2(nan_in), mk(m1), sums.view()); });
    check("sequence_log_probs (masked NaN)", 0, [&](auto p) { pp::sequence_log_probs(p, v2(nan_in), mk(m0), sums.view()); });
    auto dpo = [&](auto p, const device_vec<std::uint8_t>& m) {
        const auto w = pp::device_sequence_input::tokens(v2(nan_in), mk(m));
        const auto l = pp::device_sequence_input::tokens(v2(ok_in), mk(m1));
        pp::dpo(p, w, l, l, l, o2(out), o2(out2), pp::dpo_options::trl(), {}, {}, pt::device_view<pp::device_dpo_result, 0>());
    };
    check("dpo (valid NaN)", bit, [&](auto p) { dpo(p, m1); });
    check("dpo (masked NaN)", 0, [&](auto p) { dpo(p, m0); });
}

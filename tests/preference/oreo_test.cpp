#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/oreo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pt::index_t;
using pt::test::matrix;
using pt::test::error_of;
using pt::test::mentions;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

// An OREO batch aligned on the log-prob positions: p, q, values [B, T], state / action masks, rewards and
// importance weights [B]. Positions that are neither a state nor an action hold NaN (padding that must
// never be read); values are NaN off the states.
struct batch {
    index_t B = 0, T = 0;
    std::vector<double> p, q, v, s, a, R, w;
};

batch make(index_t B, index_t T, std::uint64_t seed, bool step, bool right_pad = false) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-3.0, -0.1), d(-0.5, 0.5), u(-1.0, 1.0);
    std::normal_distribution<double> g(0.0, 0.5);
    std::bernoulli_distribution coin(0.5), boundary(0.3);
    batch b;
    b.B = B, b.T = T;
    const std::size_t n = std::size_t(B * T);
    b.p.assign(n, nan_v), b.q.assign(n, nan_v), b.v.assign(n, nan_v), b.s.assign(n, 0), b.a.assign(n, 0);
    for (index_t i = 0; i < B; ++i) {
        const index_t L = 2 + index_t(rng() % std::uint64_t(T - 2));  // response length in [2, T - 1]
        const index_t lo = right_pad ? 0 : T - L, hi = lo + L;
        for (index_t t = lo; t < hi; ++t) {
            const std::size_t k = std::size_t(i * T + t);
            b.a[k] = 1;
            b.p[k] = lp(rng);
            b.q[k] = b.p[k] + d(rng);
            b.s[k] = !step || t == lo || boundary(rng) ? 1.0 : 0.0;
            if (b.s[k] != 0) b.v[k] = g(rng);
        }
        b.R.push_back(coin(rng) ? 1.0 : 0.0);
        b.w.push_back(std::exp(u(rng)));
    }
    return b;
}

pt::tensor_view<const double, 1> vec(const std::vector<double>& x) { return pt::tensor_view<const double, 1>(x.data(), index_t(x.size())); }

// ---- the test's own reference: the spec's formulas written out plainly ----

// D_t = sum_{i >= t} [a_i] (p_i - q_i) of row i (D_T = 0).
std::vector<double> tails(const batch& b, const std::vector<double>& p, index_t i) {
    std::vector<double> D(std::size_t(b.T) + 1, 0.0);
    for (index_t t = b.T - 1; t >= 0; --t) {
        const std::size_t k = std::size_t(i * b.T + t);
        D[std::size_t(t)] = D[std::size_t(t) + 1] + (b.a[k] != 0 ? p[k] - b.q[k] : 0.0);
    }
    return D;
}
index_t next_state(const batch& b, index_t i, index_t t) {
    for (index_t j = t + 1; j < b.T; ++j)
        if (b.s[std::size_t(i * b.T + j)] != 0) return j;
    return -1;
}

// The policy (DRO) loss with the detached tails frozen at p0: its gradient at p = p0 is the loss's.
double dro_surrogate(const batch& b, const std::vector<double>& p, const std::vector<double>& p0, const pp::oreo_options& o,
                     bool weighted) {
    double total = 0, states = 0, kl = 0;
    for (index_t i = 0; i < b.B; ++i) {
        const auto D = tails(b, p, i), D0 = tails(b, p0, i);
        const double R = o.reward_scale * b.R[std::size_t(i)] + o.reward_shift, w = weighted ? b.w[std::size_t(i)] : 1.0;
        double sq = 0, n = 0, k3 = 0, na = 0;
        for (index_t t = 0; t < b.T; ++t) {
            const std::size_t k = std::size_t(i * b.T + t);
            if (b.a[k] != 0) {
                double d = b.q[k] - p[k];
                d = std::fmax(-o.kl.log_ratio_clamp, std::fmin(o.kl.log_ratio_clamp, d));
                k3 += std::exp(d) - d - 1, na += 1;
            }
            if (b.s[k] == 0) continue;
            double pol = 0;
            if (!o.step_level) {
                pol = (p[k] - b.q[k]) + D0[std::size_t(t) + 1];
            } else {
                const index_t m = next_state(b, i, t);
                const double Dn = m >= 0 ? D[std::size_t(m)] : 0.0, Dn0 = m >= 0 ? D0[std::size_t(m)] : 0.0;
                pol = D[std::size_t(t)] - Dn + Dn0;
            }
            const double e = o.beta * pol + b.v[k] - R;
            sq += e * e, n += 1;
        }
        total += o.reduction == pp::oreo_reduction::pooled ? w * sq : w * sq / n;
        states += n;
        kl += k3 / na;
    }
    const double loss = o.reduction == pp::oreo_reduction::pooled ? total / states : total / double(b.B);
    return loss + (o.unbiased_kl ? 0.0 : o.kl_coef * kl / double(b.B));
}

template <class Policy>
pp::oreo_actor_result policy_loss(const Policy& policy, const batch& b, const std::vector<double>& p, std::vector<double>* g,
                                  const pp::oreo_options& o, bool weighted) {
    const auto P = matrix(p, b.B, b.T), Q = matrix(b.q, b.B, b.T), A = matrix(b.a, b.B, b.T), V = matrix(b.v, b.B, b.T),
               S = matrix(b.s, b.B, b.T);
    if (weighted) {
        if (g) return pp::oreo_policy_loss(policy, P, Q, A, V, S, vec(b.R), vec(b.w), matrix(*g, b.B, b.T), o);
        return pp::oreo_policy_loss(policy, P, Q, A, V, S, vec(b.R), vec(b.w), pt::none, o);
    }
    if (g) return pp::oreo_policy_loss(policy, P, Q, A, V, S, vec(b.R), pt::none, matrix(*g, b.B, b.T), o);
    return pp::oreo_policy_loss(policy, P, Q, A, V, S, vec(b.R), pt::none, pt::none, o);
}

// Tail sums of the policy and the reference, for the value loss.
void tail_inputs(const batch& b, const std::vector<double>& p, std::vector<double>& A, std::vector<double>& Ar) {
    A.assign(p.size(), 0.0), Ar.assign(p.size(), 0.0);
    pp::oreo_tail_sums(pt::exec::seq, matrix(p, b.B, b.T), matrix(b.a, b.B, b.T), matrix(A, b.B, b.T));
    pp::oreo_tail_sums(pt::exec::seq, matrix(b.q, b.B, b.T), matrix(b.a, b.B, b.T), matrix(Ar, b.B, b.T));
}

template <class Policy>
pp::oreo_value_result value_loss(const Policy& policy, const batch& b, const std::vector<double>& A, const std::vector<double>& Ar,
                                 const std::vector<double>& v, std::vector<double>* gv, std::vector<double>* gt,
                                 const pp::oreo_options& o, bool weighted) {
    const auto M = [&](const std::vector<double>& x) { return matrix(x, b.B, b.T); };
    if (gv && gt) {
        if (weighted)
            return pp::oreo_value_loss(policy, M(A), M(Ar), M(v), M(b.s), vec(b.R), vec(b.w), matrix(*gv, b.B, b.T), matrix(*gt, b.B, b.T), o);
        return pp::oreo_value_loss(policy, M(A), M(Ar), M(v), M(b.s), vec(b.R), pt::none, matrix(*gv, b.B, b.T), matrix(*gt, b.B, b.T), o);
    }
    if (weighted) return pp::oreo_value_loss(policy, M(A), M(Ar), M(v), M(b.s), vec(b.R), vec(b.w), pt::none, pt::none, o);
    return pp::oreo_value_loss(policy, M(A), M(Ar), M(v), M(b.s), vec(b.R), pt::none, pt::none, pt::none, o);
}

template <class Policy>
pp::oreo_actor_result single_step(const Policy& policy, const batch& b, const std::vector<double>& p, const std::vector<double>& v,
                                  std::vector<double>* g, std::vector<double>* gv, const pp::oreo_options& o) {
    const auto M = [&](const std::vector<double>& x) { return matrix(x, b.B, b.T); };
    if (g) return pp::oreo_single_step_loss(policy, M(p), M(b.q), M(b.a), M(v), M(b.s), vec(b.R), matrix(*g, b.B, b.T), matrix(*gv, b.B, b.T), o);
    return pp::oreo_single_step_loss(policy, M(p), M(b.q), M(b.a), M(v), M(b.s), vec(b.R), pt::none, pt::none, o);
}

template <class Policy>
pp::oreo_trajectory_result trajectory(const Policy& policy, const batch& b, const std::vector<double>& p, const std::vector<double>& v,
                                      std::vector<double>* g, std::vector<double>* gv, const pp::oreo_options& o,
                                      std::vector<double>* v0 = nullptr) {
    const auto M = [&](const std::vector<double>& x) { return matrix(x, b.B, b.T); };
    const pp::batch_output out = v0 ? pp::batch_output(*v0) : pp::batch_output();
    if (g)
        return pp::oreo_trajectory_loss(policy, M(p), M(b.q), M(b.a), M(v), M(b.s), vec(b.R), matrix(*g, b.B, b.T), matrix(*gv, b.B, b.T),
                                        out, o);
    return pp::oreo_trajectory_loss(policy, M(p), M(b.q), M(b.a), M(v), M(b.s), vec(b.R), pt::none, pt::none, out, o);
}

// |x - y| <= tol * max(1, |y|).
bool close(double x, double y, double tol = 1e-6) { return std::fabs(x - y) <= tol * std::fmax(1.0, std::fabs(y)); }
}  // namespace

TEST_CASE("oreo_policy_loss: hand-computed token-level residuals and the stop-gradient") {
    // One row, T = 3, every position a state and an action. beta = 0.5, R = 1, V = 0.
    batch b;
    b.B = 1, b.T = 3;
    b.p = {-1.0, -2.0, -0.5};
    b.q = {-1.5, -1.0, -0.5};
    b.v = {0.0, 0.0, 0.0};
    b.s = {1, 1, 1};
    b.a = {1, 1, 1};
    b.R = {1.0};
    b.w = {1.0};
    pp::oreo_options o;
    o.beta = 0.5;
    o.kl_coef = 0;
    // l = (0.5, -1, 0); D_1 = -1, D_2 = 0, D_3 = 0: e_t = beta (l_t + D_{t+1}) - 1 = (-1.25, -1.5, -1).
    std::vector<double> g(3);
    const auto r = policy_loss(pt::exec::seq, b, b.p, &g, o, false);
    CHECK(r.actor_loss == doctest::Approx((1.5625 + 2.25 + 1.0) / 3));
    CHECK(r.loss == r.actor_loss);
    CHECK(r.kl == 0.0);
    CHECK(r.states == 3.0);
    // dL/dp_t = 2 beta e_t / 3: only the current token's residual (the future tails are detached).
    CHECK(g[0] == doctest::Approx(2 * 0.5 * -1.25 / 3));
    CHECK(g[1] == doctest::Approx(2 * 0.5 * -1.5 / 3));
    CHECK(g[2] == doctest::Approx(2 * 0.5 * -1.0 / 3));
    // Perturbing a future token changes the loss (through the detached tail) but not the formula:
    // the gradient at t = 0 is still 2 beta e_0 / T with the new e_0.
    auto p2 = b.p;
    p2[2] += 0.25;
    std::vector<double> g2(3);
    const auto r2 = policy_loss(pt::exec::seq, b, p2, &g2, o, false);
    CHECK(r2.actor_loss != r.actor_loss);
    const double e0 = 0.5 * ((p2[0] - b.q[0]) + (p2[1] - b.q[1]) + (p2[2] - b.q[2])) - 1.0;
    CHECK(g2[0] == doctest::Approx(2 * 0.5 * e0 / 3));
}

TEST_CASE("oreo_policy_loss: gradient = finite differences of the detached-tail surrogate (token and step level, weights, pooled, KL)") {
    const double h = 1e-6;
    for (bool step : {false, true})
        for (bool right : {false, true})
            for (int mode = 0; mode < 4; ++mode) {
                const auto b = make(4, 9, 11 + std::uint64_t(mode) + (step ? 100 : 0) + (right ? 7 : 0), step, right);
                pp::oreo_options o;
                o.step_level = step;
                o.beta = 0.3;
                o.kl_coef = mode >= 2 ? 0.2 : 0.0;
                o.reward_scale = 2, o.reward_shift = -1;
                o.grad_scale = -1.5;
                o.reduction = mode % 2 ? pp::oreo_reduction::pooled : pp::oreo_reduction::sequence_mean;
                const bool weighted = mode != 2;
                std::vector<double> g(b.p.size(), 7.0);
                const auto r = policy_loss(pt::exec::seq, b, b.p, &g, o, weighted);
                INFO("step " << step << " right " << right << " mode " << mode);
                CHECK(close(r.loss, dro_surrogate(b, b.p, b.p, o, weighted), 1e-12));
                for (std::size_t j = 0; j < b.p.size(); ++j) {
                    if (b.a[j] == 0) {
                        CHECK(g[j] == 0.0);  // padding: exactly 0, never NaN
                        continue;
                    }
                    auto pp_ = b.p, pm = b.p;
                    pp_[j] += h, pm[j] -= h;
                    const double fd = (dro_surrogate(b, pp_, b.p, o, weighted) - dro_surrogate(b, pm, b.p, o, weighted)) / (2 * h);
                    INFO("j " << j);
                    CHECK(close(g[j], o.grad_scale * fd));
                }
            }
}

TEST_CASE("oreo_policy_loss: step level gives each token the residual of its step") {
    // States at 0 and 2; tokens 0, 1 belong to step 0, tokens 2, 3 to step 2.
    batch b;
    b.B = 1, b.T = 4;
    b.p = {-1, -2, -3, -4};
    b.q = {-1.5, -1.5, -1.5, -1.5};
    b.v = {0.25, nan_v, -0.5, nan_v};
    b.s = {1, 0, 1, 0};
    b.a = {1, 1, 1, 1};
    b.R = {0};
    b.w = {1};
    pp::oreo_options o;
    o.step_level = true, o.beta = 0.1, o.kl_coef = 0;
    std::vector<double> g(4);
    (void)policy_loss(pt::exec::seq, b, b.p, &g, o, false);
    // D = (-4, -4.5, -4, -2.5): e_0 = 0.1 D_0 + 0.25 = -0.15, e_2 = 0.1 D_2 - 0.5 = -0.9.
    CHECK(g[0] == doctest::Approx(2 * 0.1 * -0.15 / 2));
    CHECK(g[1] == g[0]);
    CHECK(g[2] == doctest::Approx(2 * 0.1 * -0.9 / 2));
    CHECK(g[3] == g[2]);
}

TEST_CASE("oreo_value_loss: gradients w.r.t. values and tails, clip, weights, pooled, global counts") {
    const double h = 1e-6;
    for (int mode = 0; mode < 4; ++mode) {
        const auto b = make(5, 8, 40 + std::uint64_t(mode), mode == 3);
        std::vector<double> A, Ar;
        tail_inputs(b, b.p, A, Ar);
        pp::oreo_options o;
        o.beta = 0.7;
        o.clip_log = mode == 1 ? 0.6 : INFINITY;
        o.reduction = mode == 2 ? pp::oreo_reduction::pooled : pp::oreo_reduction::sequence_mean;
        o.grad_scale = 0.5;
        const bool weighted = mode >= 2;
        std::vector<double> gv(b.p.size(), 3.0), gt(b.p.size(), 3.0);
        const auto r = value_loss(pt::exec::seq, b, A, Ar, b.v, &gv, &gt, o, weighted);
        INFO("mode " << mode);
        if (mode == 1) CHECK(r.clip_ratio > 0);
        else CHECK(r.clip_ratio == 0);
        for (std::size_t j = 0; j < b.v.size(); ++j) {
            if (b.s[j] == 0) {
                CHECK(gv[j] == 0.0);
                CHECK(gt[j] == 0.0);
                continue;
            }
            auto vp = b.v, vm = b.v;
            vp[j] += h, vm[j] -= h;
            const double fdv = (value_loss(pt::exec::seq, b, A, Ar, vp, nullptr, nullptr, o, weighted).loss -
                                value_loss(pt::exec::seq, b, A, Ar, vm, nullptr, nullptr, o, weighted).loss) / (2 * h);
            CHECK(close(gv[j], 0.5 * fdv));
            auto Ap = A, Am = A;
            Ap[j] += h, Am[j] -= h;
            const double fdt = (value_loss(pt::exec::seq, b, Ap, Ar, b.v, nullptr, nullptr, o, weighted).loss -
                                value_loss(pt::exec::seq, b, Am, Ar, b.v, nullptr, nullptr, o, weighted).loss) / (2 * h);
            CHECK(close(gt[j], 0.5 * fdt));
        }
        // A global count twice this batch's halves the loss and the gradient.
        auto o2 = o;
        (o.reduction == pp::oreo_reduction::pooled ? o2.states : o2.sequences) =
            2 * (o.reduction == pp::oreo_reduction::pooled ? r.states : double(b.B));
        std::vector<double> gv2(b.p.size()), gt2(b.p.size());
        const auto r2 = value_loss(pt::exec::seq, b, A, Ar, b.v, &gv2, &gt2, o2, weighted);
        CHECK(r2.loss == doctest::Approx(r.loss / 2));
        for (std::size_t j = 0; j < gv.size(); ++j) CHECK(gv2[j] == doctest::Approx(gv[j] / 2));
    }
}

TEST_CASE("oreo_value_loss + oreo_tail_sums_backward = the PCL actor loss gradient w.r.t. per-token log-probs") {
    const double h = 1e-6;
    const auto b = make(3, 7, 5, false);
    pp::oreo_options o;
    auto loss_of = [&](const std::vector<double>& p, std::vector<double>* g) {
        std::vector<double> A, Ar, gt(p.size());
        tail_inputs(b, p, A, Ar);
        std::vector<double> gv(p.size());
        const auto r = g ? value_loss(pt::exec::seq, b, A, Ar, b.v, &gv, &gt, o, false) : value_loss(pt::exec::seq, b, A, Ar, b.v, nullptr, nullptr, o, false);
        if (g) pp::oreo_tail_sums_backward(pt::exec::seq, matrix(gt, b.B, b.T), matrix(b.a, b.B, b.T), matrix(*g, b.B, b.T));
        return r.loss;
    };
    std::vector<double> g(b.p.size(), 9.0);
    (void)loss_of(b.p, &g);
    for (std::size_t j = 0; j < b.p.size(); ++j) {
        if (b.a[j] == 0) {
            CHECK(g[j] == 0.0);
            continue;
        }
        auto pp_ = b.p, pm = b.p;
        pp_[j] += h, pm[j] -= h;
        CHECK(close(g[j], (loss_of(pp_, nullptr) - loss_of(pm, nullptr)) / (2 * h)));
    }
}

TEST_CASE("oreo_single_step_loss and oreo_trajectory_loss: finite differences w.r.t. log-probs and values") {
    const double h = 1e-6;
    for (bool step : {false, true})
        for (int kind = 0; kind < 2; ++kind) {
            auto b = make(4, 8, 70 + std::uint64_t(kind) + (step ? 10 : 0), step);
            b.R[0] = 1.0, b.R[1] = 1.0;
            pp::oreo_options o;
            o.step_level = step;
            o.beta = 0.4;
            o.kl_coef = 0.1;
            o.hinge_coef = 0.5;
            o.grad_scale = 2;
            auto run = [&](const std::vector<double>& p, const std::vector<double>& v, std::vector<double>* g, std::vector<double>* gv) {
                return kind == 0 ? single_step(pt::exec::seq, b, p, v, g, gv, o).loss : trajectory(pt::exec::seq, b, p, v, g, gv, o).loss;
            };
            std::vector<double> g(b.p.size(), 5.0), gv(b.p.size(), 5.0);
            (void)run(b.p, b.v, &g, &gv);
            INFO("step " << step << " kind " << kind);
            for (std::size_t j = 0; j < b.p.size(); ++j) {
                if (b.a[j] != 0) {
                    auto pp_ = b.p, pm = b.p;
                    pp_[j] += h, pm[j] -= h;
                    CHECK(close(g[j], 2 * (run(pp_, b.v, nullptr, nullptr) - run(pm, b.v, nullptr, nullptr)) / (2 * h)));
                } else {
                    CHECK(g[j] == 0.0);
                }
                if (b.s[j] != 0) {
                    auto vp = b.v, vm = b.v;
                    vp[j] += h, vm[j] -= h;
                    CHECK(close(gv[j], 2 * (run(b.p, vp, nullptr, nullptr) - run(b.p, vm, nullptr, nullptr)) / (2 * h)));
                } else {
                    CHECK(gv[j] == 0.0);
                }
            }
        }
}

TEST_CASE("oreo_trajectory_loss: first-state residual, hinge on R' == 1 rows, initial values") {
    batch b;
    b.B = 2, b.T = 3;
    b.p = {nan_v, -1.0, -1.0, -2.0, -2.0, -2.0};
    b.q = {nan_v, -0.5, -0.5, -1.0, -1.0, -1.0};
    b.v = {nan_v, 0.5, 0.25, 1.0, 0.0, 0.0};
    b.s = {0, 1, 1, 1, 1, 1};
    b.a = {0, 1, 1, 1, 1, 1};
    b.R = {1.0, 0.0};
    pp::oreo_options o;
    o.beta = 0.1, o.kl_coef = 0, o.hinge_coef = 2;
    std::vector<double> v0(2);
    const auto r = trajectory(pt::exec::seq, b, b.p, b.v, nullptr, nullptr, o, &v0);
    // Row 0: D_1 = -1, e = -0.1 + 0.5 - 1 = -0.6; row 1: D_0 = -3, e = -0.3 + 1 = 0.7.
    // Hinge on row 0 only: 2 * max(A'_1 - A_1, 0) = 2 * 1 = 2, over one positive row.
    CHECK(r.hinge == doctest::Approx(2.0));
    CHECK(r.actor_loss == doctest::Approx((0.36 + 0.49) / 2 + 2.0));
    CHECK(v0[0] == 0.5);
    CHECK(v0[1] == 1.0);
    CHECK(r.initial_value_min == 0.5);
    CHECK(r.initial_value_max == 1.0);
}

TEST_CASE("oreo_single_step_loss: the reward sits on the last state, the next value is 0 after it") {
    batch b;
    b.B = 1, b.T = 3;
    b.p = {-1.0, -1.0, -1.0};
    b.q = {-1.0, -1.0, -1.0};
    b.v = {0.5, 0.25, 0.125};
    b.s = {1, 1, 1};
    b.a = {1, 1, 1};
    b.R = {1.0};
    pp::oreo_options o;
    o.kl_coef = 0;
    const auto r = single_step(pt::exec::seq, b, b.p, b.v, nullptr, nullptr, o);
    // e = (0.5 - 0.25, 0.25 - 0.125, 0.125 - 1 - 0) = (0.25, 0.125, -0.875)
    CHECK(r.actor_loss == doctest::Approx((0.0625 + 0.015625 + 0.765625) / 3));
}

TEST_CASE("oreo_vocab_kl: value and logits gradient against finite differences, reverse and forward") {
    const index_t B = 2, T = 3, V = 5;
    std::mt19937_64 rng(3);
    std::normal_distribution<double> g(0.0, 1.5);
    std::vector<double> z(std::size_t(B * T * V)), zr(z.size());
    for (auto& x : z) x = g(rng);
    for (auto& x : zr) x = g(rng);
    std::vector<double> a = {0, 1, 1, 1, 1, 0};
    for (index_t v = 0; v < V; ++v) z[std::size_t(0 * T * V + 0 * V + v)] = nan_v;  // a masked position: never read
    auto view3 = [&](const std::vector<double>& x) { return pt::tensor_view<const double, 3>(x.data(), B, T, V); };
    for (bool forward : {false, true}) {
        pp::oreo_options o;
        o.kl_coef = 0.3;
        o.forward_kl = forward;
        o.grad_scale = 1.7;
        std::vector<double> gz(z.size(), 9.0);
        const auto r = pp::oreo_vocab_kl(pt::exec::seq, view3(z), view3(zr), matrix(a, B, T),
                                         pt::tensor_view<double, 3>(gz.data(), B, T, V), o);
        // Direct formula.
        double total = 0;
        for (index_t i = 0; i < B; ++i) {
            double s = 0, n = 0;
            for (index_t t = 0; t < T; ++t) {
                if (a[std::size_t(i * T + t)] == 0) continue;
                double lz = 0, lr = 0;
                for (index_t v = 0; v < V; ++v) lz += std::exp(z[std::size_t((i * T + t) * V + v)]), lr += std::exp(zr[std::size_t((i * T + t) * V + v)]);
                lz = std::log(lz), lr = std::log(lr);
                for (index_t v = 0; v < V; ++v) {
                    const double lp = z[std::size_t((i * T + t) * V + v)] - lz, lq = zr[std::size_t((i * T + t) * V + v)] - lr;
                    s += forward ? std::exp(lq) * (lq - lp) : std::exp(lp) * (lp - lq);
                }
                n += 1;
            }
            total += s / n;
        }
        CHECK(r.kl == doctest::Approx(total / B).epsilon(1e-12));
        CHECK(r.loss == doctest::Approx(0.3 * total / B).epsilon(1e-12));
        const double h = 1e-6;
        for (std::size_t j = 0; j < z.size(); ++j) {
            if (a[j / std::size_t(V)] == 0) {
                CHECK(gz[j] == 0.0);
                continue;
            }
            auto zp = z, zm = z;
            zp[j] += h, zm[j] -= h;
            const double fd = (pp::oreo_vocab_kl(pt::exec::seq, view3(zp), view3(zr), matrix(a, B, T), pt::none, o).loss -
                               pp::oreo_vocab_kl(pt::exec::seq, view3(zm), view3(zr), matrix(a, B, T), pt::none, o).loss) / (2 * h);
            CHECK(close(gz[j], 1.7 * fd));
        }
    }
}

TEST_CASE("oreo_kl_regularizer equals the KL part of oreo_policy_loss; oreo_importance_weights") {
    const auto b = make(3, 6, 9, false);
    pp::oreo_options o;
    o.kl_coef = 0.25;
    std::vector<double> g(b.p.size());
    const auto k = pp::oreo_kl_regularizer(pt::exec::seq, matrix(b.p, b.B, b.T), matrix(b.q, b.B, b.T), matrix(b.a, b.B, b.T),
                                           matrix(g, b.B, b.T), o);
    const auto r = policy_loss(pt::exec::seq, b, b.p, nullptr, o, false);
    CHECK(k.kl == r.kl);
    CHECK(k.loss == doctest::Approx(r.loss - r.actor_loss));
    for (std::size_t j = 0; j < g.size(); ++j)
        if (b.a[j] == 0) CHECK(g[j] == 0.0);
    std::vector<double> w(3), lw(3);
    pp::oreo_importance_weights(pt::exec::seq, matrix(b.p, b.B, b.T), matrix(b.q, b.B, b.T), matrix(b.a, b.B, b.T), w, lw);
    for (index_t i = 0; i < b.B; ++i) {
        double s = 0;
        for (index_t t = 0; t < b.T; ++t)
            if (b.a[std::size_t(i * b.T + t)] != 0) s += b.p[std::size_t(i * b.T + t)] - b.q[std::size_t(i * b.T + t)];
        CHECK(lw[std::size_t(i)] == doctest::Approx(s));
        CHECK(w[std::size_t(i)] == doctest::Approx(std::exp(std::fmin(s, 1.0))));
    }
}

TEST_CASE("oreo: extreme log-ratios give finite losses and gradients") {
    for (double m : {50.0, -50.0, 1e4, -1e4}) {
        auto b = make(3, 6, 21, false);
        for (std::size_t j = 0; j < b.p.size(); ++j)
            if (b.a[j] != 0) b.q[j] = b.p[j] - m;
        std::vector<double> g(b.p.size()), gv(b.p.size());
        const auto r = policy_loss(pt::exec::seq, b, b.p, &g, {}, true);
        const auto s = single_step(pt::exec::seq, b, b.p, b.v, &g, &gv, {});
        INFO("m " << m);
        CHECK(std::isfinite(r.loss));
        CHECK(std::isfinite(s.loss));
        for (double x : g) CHECK(std::isfinite(x));
    }
}

TEST_CASE_TEMPLATE("oreo: exec::par gives the bits of exec::seq", Backend, POSTTRAIN_HOST_BACKENDS) {
    for (bool step : {false, true}) {
        const auto b = make(97, 301, 5 + (step ? 1 : 0), step);
        pp::oreo_options o;
        o.step_level = step;
        o.hinge_coef = 0.3;
        std::vector<double> g1(b.p.size()), g2(b.p.size()), v1(b.p.size()), v2(b.p.size());
        const auto r1 = policy_loss(pt::exec::seq, b, b.p, &g1, o, true);
        const auto r2 = policy_loss(Backend::policy(), b, b.p, &g2, o, true);
        CHECK(r1.loss == r2.loss);
        CHECK(pt::test::bitwise_equal(g1, g2));
        const auto s1 = single_step(pt::exec::seq, b, b.p, b.v, &g1, &v1, o);
        const auto s2 = single_step(Backend::policy(), b, b.p, b.v, &g2, &v2, o);
        CHECK(s1.loss == s2.loss);
        CHECK(pt::test::bitwise_equal(g1, g2));
        CHECK(pt::test::bitwise_equal(v1, v2));
        const auto t1 = trajectory(pt::exec::seq, b, b.p, b.v, &g1, &v1, o);
        const auto t2 = trajectory(Backend::policy(), b, b.p, b.v, &g2, &v2, o);
        CHECK(t1.loss == t2.loss);
        CHECK(pt::test::bitwise_equal(g1, g2));
        CHECK(pt::test::bitwise_equal(v1, v2));
        std::vector<double> A, Ar;
        tail_inputs(b, b.p, A, Ar);
        const auto u1 = value_loss(pt::exec::seq, b, A, Ar, b.v, &v1, &g1, o, true);
        const auto u2 = value_loss(Backend::policy(), b, A, Ar, b.v, &v2, &g2, o, true);
        CHECK(u1.loss == u2.loss);
        CHECK(pt::test::bitwise_equal(g1, g2));
        CHECK(pt::test::bitwise_equal(v1, v2));
    }
}

TEST_CASE("oreo: bad input raises invalid_argument naming the function and the argument") {
    const auto b = make(3, 6, 2, false);
    const char* fn = "oreo_policy_loss";
    {  // NaN at a valid position
        auto c = b;
        for (std::size_t j = 0; j < c.p.size(); ++j)
            if (c.a[j] != 0) {
                c.p[j] = nan_v;
                break;
            }
        CHECK(mentions(error_of([&] { (void)policy_loss(pt::exec::seq, c, c.p, nullptr, {}, false); }), fn, "log_probs"));
    }
    {  // a value at a state that is not finite
        auto c = b;
        for (std::size_t j = 0; j < c.v.size(); ++j)
            if (c.s[j] != 0) {
                c.v[j] = INFINITY;
                break;
            }
        CHECK(mentions(error_of([&] { (void)policy_loss(pt::exec::seq, c, c.p, nullptr, {}, false); }), fn, "values"));
    }
    {  // a row without any state
        auto c = b;
        for (index_t t = 0; t < c.T; ++t) c.s[std::size_t(t)] = 0;
        CHECK(mentions(error_of([&] { (void)policy_loss(pt::exec::seq, c, c.p, nullptr, {}, false); }), fn, "state_mask"));
    }
    {  // negative weight
        auto c = b;
        c.w[1] = -1;
        CHECK(mentions(error_of([&] { (void)policy_loss(pt::exec::seq, c, c.p, nullptr, {}, true); }), fn, "weights"));
    }
    {  // bad options
        pp::oreo_options o;
        o.beta = 0;
        CHECK(mentions(error_of([&] { (void)policy_loss(pt::exec::seq, b, b.p, nullptr, o, false); }), fn, "options"));
        o = {};
        o.clip_log = nan_v;
        CHECK(mentions(error_of([&] { (void)policy_loss(pt::exec::seq, b, b.p, nullptr, o, false); }), fn, "options"));
    }
    {  // shape mismatch and aliasing
        std::vector<double> r2 = {0.0, 1.0};
        CHECK(mentions(error_of([&] {
                  (void)pp::oreo_policy_loss(pt::exec::seq, matrix(b.p, b.B, b.T), matrix(b.q, b.B, b.T), matrix(b.a, b.B, b.T),
                                             matrix(b.v, b.B, b.T), matrix(b.s, b.B, b.T), vec(r2), pt::none, pt::none);
              }),
              fn, "rewards"));
        auto c = b;
        CHECK(mentions(error_of([&] {
                  (void)pp::oreo_policy_loss(pt::exec::seq, matrix(c.p, c.B, c.T), matrix(c.q, c.B, c.T), matrix(c.a, c.B, c.T),
                                             matrix(c.v, c.B, c.T), matrix(c.s, c.B, c.T), vec(c.R), pt::none, matrix(c.p, c.B, c.T));
              }),
              fn, "grad_log_probs"));
        CHECK(mentions(error_of([&] {
                  (void)pp::oreo_policy_loss(pt::exec::seq, matrix(b.p, b.B, b.T), matrix(b.q, b.B, b.T - 1), matrix(b.a, b.B, b.T),
                                             matrix(b.v, b.B, b.T), matrix(b.s, b.B, b.T), vec(b.R), pt::none, pt::none);
              }),
              fn, "ref_log_probs"));
    }
    {  // the trajectory loss needs a first state; the value loss its tails
        auto c = b;
        for (index_t t = 0; t < c.T; ++t) c.s[std::size_t(t)] = 0;
        CHECK(mentions(error_of([&] { (void)trajectory(pt::exec::seq, c, c.p, c.v, nullptr, nullptr, {}); }), "oreo_trajectory_loss",
                       "state_mask"));
        std::vector<double> A, Ar;
        tail_inputs(b, b.p, A, Ar);
        for (std::size_t j = 0; j < A.size(); ++j)
            if (b.s[j] != 0) {
                A[j] = nan_v;
                break;
            }
        CHECK(mentions(error_of([&] { (void)value_loss(pt::exec::seq, b, A, Ar, b.v, nullptr, nullptr, {}, false); }), "oreo_value_loss",
                       "tails"));
    }
    {  // vocab KL: a non-finite logit at an action position
        std::vector<double> z(2 * 2 * 3, 0.0), a = {1, 1, 1, 1};
        z[4] = INFINITY;
        CHECK(mentions(error_of([&] {
                  (void)pp::oreo_vocab_kl(pt::exec::seq, pt::tensor_view<const double, 3>(z.data(), 2, 2, 3),
                                          pt::tensor_view<const double, 3>(z.data(), 2, 2, 3), matrix(a, 2, 2), pt::none);
              }),
              "oreo_vocab_kl", "policy_logits"));
    }
}

TEST_CASE("oreo: presets") {
    const auto o = pp::oreo_options::official();
    CHECK(o.beta == 0.03);
    CHECK(o.kl_coef == 0.01);
    CHECK(o.unbiased_kl);
    CHECK(o.reward_scale == 1.0);
    CHECK(o.reward_shift == 0.0);
    const auto d = pp::oreo_options::pcl_trainer();
    CHECK(d.beta == 0.01);
    CHECK(d.reward_scale == 2.0);
    CHECK(d.reward_shift == -1.0);
    CHECK(d.kl_coef == 0.0);
    // An empty batch is a zero loss, not an error.
    std::vector<double> e;
    const auto r = pp::oreo_policy_loss(pt::exec::seq, matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4),
                                        matrix(e, 0, 4), vec(e), pt::none, pt::none);
    CHECK(r.loss == 0.0);
}

TEST_CASE("oreo: the docs example (docs/algorithms/oreo.md)") {
    // One row, T = 3, every position a state and an action; beta = 0.5, R = 1, V = 0, no KL.
    std::vector<double> p = {-1.0, -2.0, -0.5}, q = {-1.5, -1.0, -0.5}, v = {0, 0, 0}, s = {1, 1, 1}, a = {1, 1, 1};
    std::vector<double> R = {1.0}, g(3);
    pp::oreo_options o;
    o.beta = 0.5;
    o.kl_coef = 0;
    const auto r = pp::oreo_policy_loss(pt::exec::seq, matrix(p, 1, 3), matrix(q, 1, 3), matrix(a, 1, 3), matrix(v, 1, 3),
                                        matrix(s, 1, 3), R, pt::none, matrix(g, 1, 3), o);
    CHECK(r.actor_loss == doctest::Approx(1.6041666667));
    CHECK(g[0] == doctest::Approx(-0.4166666667));
    CHECK(g[1] == doctest::Approx(-0.5));
    CHECK(g[2] == doctest::Approx(-0.3333333333));
}

TEST_CASE("oreo_value_loss: clip_ratio over the states or over every position; value range") {
    // One row, T = 4, left padding at 0; tails A = (5, 5, 1, 0.25), A' = 0: D = A.
    std::vector<double> A = {5.0, 5.0, 1.0, 0.25}, Ar = {0, 0, 0, 0}, v = {nan_v, 0.5, -0.25, 1.0}, s = {0, 1, 1, 1};
    std::vector<double> R = {0.0};
    pp::oreo_options o;
    o.clip_log = 0.5;
    auto run = [&](const pp::oreo_options& opt) {
        return pp::oreo_value_loss(pt::exec::seq, matrix(A, 1, 4), matrix(Ar, 1, 4), matrix(v, 1, 4), matrix(s, 1, 4), R, pt::none,
                                   pt::none, pt::none, opt);
    };
    const auto r = run(o);
    CHECK(r.clip_ratio == doctest::Approx(2.0 / 3));  // states 1, 2 clipped of 3
    CHECK(r.value_min == -0.25);
    CHECK(r.value_max == 1.0);
    // e = beta * clip(D) + V: (0.015 + 0.5, 0.015 - 0.25, 0.0075 + 1)
    CHECK(r.loss == doctest::Approx((0.515 * 0.515 + 0.235 * 0.235 + 1.0075 * 1.0075) / 3));
    o.clip_ratio_all_positions = true;  // OREO: the padding position counts too
    CHECK(run(o).clip_ratio == doctest::Approx(3.0 / 4));
}

TEST_CASE("oreo: initial_values over a gradient, and weights over log_weights, are refused before anything is written") {
    const auto b = make(2, 5, 11, false);
    std::vector<double> g(b.p.size(), 7.0), gv(b.p.size(), 7.0);
    std::vector<double> v = b.v;
    const pt::tensor_view<double, 1> over_gv(gv.data(), b.B);
    const auto M = [&](const std::vector<double>& x) { return matrix(x, b.B, b.T); };
    CHECK_THROWS_WITH_AS((void)pp::oreo_trajectory_loss(pt::exec::seq, M(b.p), M(b.q), M(b.a), M(v), M(b.s), vec(b.R), matrix(g, b.B, b.T),
                                                        matrix(gv, b.B, b.T), over_gv),
                         doctest::Contains("'initial_values': the output overlaps the input 'grad_values'"), pt::invalid_argument);
    std::vector<double> w(2, 7.0), short_out(1);
    CHECK_THROWS_WITH_AS(pp::oreo_importance_weights(pt::exec::seq, M(b.p), M(b.q), M(b.a), w, w),
                         doctest::Contains("'weights': the output overlaps the input 'log_weights'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pp::oreo_importance_weights(pt::exec::seq, M(b.p), M(b.q), M(b.a), w, short_out),
                         doctest::Contains("'log_weights': must have 2 entries, found 1"), pt::invalid_argument);
    CHECK(w == std::vector<double>(2, 7.0));  // nothing written
    CHECK(g == std::vector<double>(b.p.size(), 7.0));
}

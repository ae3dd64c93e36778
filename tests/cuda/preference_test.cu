// preference::dpo and sequence_log_probs on exec::cuda against the host oracle (exec::seq) on the
// same data: every pair_loss the device supports (all but aot / aot_unpaired), the presets, the score
// transforms, sft and the multi-loss combination, BCO's shifts, weights and margins, the reductions;
// inputs per token (masked positions hold NaN) and as [B] sums, float and double, rows long enough
// to be cut into chunks; the reduction also from __nv_bfloat16 and strided views. Losses, metrics,
// per-pair outputs and gradients to 1e-10 relative in double (device_double_tol; 1e-5 for float
// outputs), bitwise
// determinism run to run, the status word, and bad input.
//
// The "host emulation" test runs the kernels' per-pair code (evaluate_pair, pair_acc, finish_dpo) on
// the host against dpo(): it needs no device but runs under this harness, which needs one.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include <posttrain/preference/dpo.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pp::pair_loss;
using pt::index_t;
using pt::test::device_vec;

namespace {

constexpr int chosen = 0, rejected = 1, ref_chosen = 2, ref_rejected = 3;

// B pairs of [B, T] log-probs (policy in (-2.5, 0), references within ~0.05 per token), right-padded
// masks with NaN at the masked positions (masks select); rejected row 1 is empty.
struct pair_data {
    index_t B = 0, T = 0;
    std::vector<double> lp[4];
    std::vector<std::uint8_t> mask[2];  // the references share their policy side's mask
    std::vector<double> weights, margins;
    std::vector<double> sums[4], lengths[2];  // the host's sequence_log_probs of each side
};

pair_data make_data(index_t B, index_t T, std::uint64_t seed) {
    pair_data d;
    d.B = B, d.T = T;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-2.5, -0.01), noise(-0.08, 0.08), w(0.5, 1.5), mg(-0.3, 0.3);
    for (auto& v : d.lp) v.assign(std::size_t(B * T), 0.0);
    for (auto& m : d.mask) m.assign(std::size_t(B * T), 0);
    for (int s = 0; s < 2; ++s)
        for (index_t i = 0; i < B; ++i) {
            index_t len = 1 + index_t(rng() % std::uint64_t(T));
            if (s == rejected && i == 1) len = 0;
            for (index_t t = 0; t < T; ++t) {
                const std::size_t k = std::size_t(i * T + t);
                const bool ok = t < len;
                d.mask[s][k] = ok ? 1 : 0;
                d.lp[s][k] = ok ? u(rng) : std::nan("");
                d.lp[s + 2][k] = ok ? d.lp[s][k] + noise(rng) : std::nan("");
            }
        }
    for (index_t i = 0; i < B; ++i) {
        d.weights.push_back(w(rng));
        d.margins.push_back(mg(rng));
    }
    for (int k = 0; k < 4; ++k) {
        d.sums[k].assign(std::size_t(B), 0.0);
        std::vector<double> len(static_cast<std::size_t>(B));
        pp::sequence_log_probs(pt::exec::seq, pt::tensor_view<const double, 2>(d.lp[k].data(), B, T),
                               pt::tensor_view<const std::uint8_t, 2>(d.mask[k % 2].data(), B, T),
                               pt::tensor_view<double, 1>(d.sums[k].data(), B), pt::tensor_view<double, 1>(len.data(), B));
        if (k < 2) d.lengths[k] = len;
    }
    return d;
}

struct named_options {
    std::string name;
    pp::dpo_options o;
    bool ref = true;  // references given (reference-free losses still log rewards with them)
};

std::vector<named_options> option_cases() {
    std::vector<named_options> v;
    const pair_loss losses[] = {pair_loss::sigmoid,  pair_loss::robust,   pair_loss::ipo,      pair_loss::hinge,
                                pair_loss::exo_pair, pair_loss::nca_pair, pair_loss::bco_pair, pair_loss::sppo_hard,
                                pair_loss::apo_zero, pair_loss::apo_down, pair_loss::discopop, pair_loss::sigmoid_norm,
                                pair_loss::sft};
    for (pair_loss l : losses)
        v.push_back({std::string("trl ") + pp::detail::pair_loss_name(l), pp::dpo_options::trl(l, 0.1, 0.1)});
    v.push_back({"trl_v028 cDPO", pp::dpo_options::trl_v028(pair_loss::sigmoid, 0.1, 0.1)});
    v.push_back({"trl_v028 ipo on sums", pp::dpo_options::trl_v028(pair_loss::ipo, 0.5)});
    v.push_back({"trl_v028 bco batch mean", pp::dpo_options::trl_v028(pair_loss::bco_pair, 0.1)});
    v.push_back({"trl_v028 exo eps 1e-3", pp::dpo_options::trl_v028(pair_loss::exo_pair, 0.1)});
    v.push_back({"trl mpo sigmoid+bco+sft",
                 pp::dpo_options::trl({{pair_loss::sigmoid, 0.8}, {pair_loss::bco_pair, 0.2}, {pair_loss::sft, 1.0}})});
    v.push_back({"openrlhf cDPO", pp::dpo_options::openrlhf(0.1, 0.1)});
    v.push_back({"openrlhf ipo", pp::dpo_options::openrlhf(0.1, 0, true)});
    auto div = [&](const char* name, pp::score_transform f, double alpha) {
        auto o = pp::dpo_options::trl();
        o.divergence = f;
        o.alpha_coef = alpha;
        v.push_back({name, o});
    };
    div("forward_kl", pp::score_transform::forward_kl, 1.0);
    div("js_divergence", pp::score_transform::js_divergence, 1.0);
    div("alpha_divergence 0.5", pp::score_transform::alpha_divergence, 0.5);
    div("alpha_divergence 1 (reverse kl)", pp::score_transform::alpha_divergence, 1.0);
    div("alpha_divergence_v028 0.5", pp::score_transform::alpha_divergence_v028, 0.5);
    v.push_back({"simpo", pp::dpo_options::simpo()});
    v.push_back({"simpo hinge, no reference", pp::dpo_options::simpo(2.0, 0.25, 0, pair_loss::hinge), false});
    v.push_back({"cpo alphapo, no reference", pp::dpo_options::cpo(pair_loss::sigmoid, 0.1, 0, 0.25), false});
    v.push_back({"cpo_simpo, no reference", pp::dpo_options::cpo_simpo(0.1, 0.5, 0.1), false});
    v.push_back({"reward model, no reference", pp::dpo_options::reward_model(), false});
    v.push_back({"slic (hinge + per-pair NLL), no reference", pp::dpo_options::slic(1.5, 0.1), false});
    {
        auto o = pp::dpo_options::trl(pair_loss::bco_pair);
        o.bco = pp::bco_shift::batch_mean;
        v.push_back({"bco batch mean (double)", o});
    }
    {
        auto o = pp::dpo_options::trl(pair_loss::bco_pair);
        o.bco = pp::bco_shift::value;
        o.bco_delta = 0.3;
        v.push_back({"bco value", o});
    }
    {
        auto o = pp::dpo_options::trl();
        o.reduce = pp::reduction::sum;
        o.grad_scale = 0.5;
        v.push_back({"sum, grad_scale 0.5", o});
    }
    {
        auto o = pp::dpo_options::trl(pair_loss::robust, 0.2, 0.2);
        o.normalizer = 100;
        o.gamma = 0.1;
        v.push_back({"robust normalizer 100 gamma", o});
    }
    {
        auto o = pp::dpo_options::trl(pair_loss::ipo);
        o.average_log_prob = true;
        v.push_back({"ipo average_log_prob", o});
    }
    {
        auto o = pp::dpo_options::trl({{pair_loss::sigmoid, 1.0}, {pair_loss::sft, 0.5}});
        o.average_log_prob = true;
        v.push_back({"sigmoid + sft, average_log_prob (sft on raw sums)", o});
    }
    return v;
}

// |got - want| <= tol * (|want| + floor), floor = 1e-3 of the largest |want| (gradients of tiny
// pairs are compared against the batch's scale, not their own).
template <class A, class B>
bool close_rel(const std::vector<A>& got, const std::vector<B>& want, double tol, const std::string& what) {
    ++pt::test::state().checks;
    if (got.size() != want.size()) {
        pt::test::report_failure(__FILE__, __LINE__, what + ": size mismatch");
        return false;
    }
    double scale = 0;
    for (const auto& w : want) scale = std::fmax(scale, std::fabs(double(w)));
    int bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = double(got[i]), w = double(want[i]);
        const bool ok = g == w || std::fabs(g - w) <= tol * (std::fabs(w) + 1e-3 * scale + 1e-300);
        if (!ok && bad++ < 5) {
            char buf[320];
            std::snprintf(buf, sizeof buf, "%s: index %zu: got %.17g, want %.17g", what.c_str(), i, g, w);
            pt::test::report_failure(__FILE__, __LINE__, buf);
        }
    }
    return bad == 0;
}

bool close_scalar(double got, double want, double tol, const std::string& what) {
    return close_rel(std::vector<double>{got}, std::vector<double>{want}, tol, what);
}

void compare_results(const pp::dpo_result& got, const pp::dpo_result& want, double tol, const std::string& what) {
    close_scalar(got.loss, want.loss, tol, what + " loss");
    close_scalar(got.metrics.chosen, want.metrics.chosen, tol, what + " rewards/chosen");
    close_scalar(got.metrics.rejected, want.metrics.rejected, tol, what + " rewards/rejected");
    close_scalar(got.metrics.margin, want.metrics.margin, tol, what + " rewards/margins");
    close_scalar(got.metrics.accuracy, want.metrics.accuracy, tol, what + " rewards/accuracies");
    close_scalar(got.metrics.tie_fraction, want.metrics.tie_fraction, tol, what + " tie_fraction");
    close_scalar(got.metrics.logps_chosen, want.metrics.logps_chosen, tol, what + " logps/chosen");
    close_scalar(got.metrics.logps_rejected, want.metrics.logps_rejected, tol, what + " logps/rejected");
    close_scalar(got.bco_batch_reward_mean, want.bco_batch_reward_mean, tol, what + " bco_batch_reward_mean");
    PT_CHECK_MSG(got.pairs == want.pairs, what);
    PT_CHECK_MSG(got.term_losses.size() == want.term_losses.size(), what);
    if (got.term_losses.size() == want.term_losses.size()) close_rel(got.term_losses, want.term_losses, tol, what + " term_losses");
}

// The host oracle on the data (as T), per token or as sums.
template <class T>
struct host_run {
    std::vector<T> grad[2];
    std::vector<double> losses, rew_w, rew_l, logps_w, logps_l;
    pp::dpo_result result;
};

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
    return std::vector<T>(v.begin(), v.end());
}

// Margins shift z = beta h - margin: given only where every term takes one (dpo() refuses the others).
bool margins_apply(const pp::dpo_options& o) {
    for (const auto& t : pp::detail::terms_of(o))
        if (!pp::detail::takes_margin(t.loss)) return false;
    return true;
}

template <class T>
host_run<T> run_host(const pair_data& d, const pp::dpo_options& o, bool ref, bool tokens, bool extras) {
    host_run<T> h;
    const index_t B = d.B, T_ = d.T;
    std::vector<T> lp[4];
    for (int k = 0; k < 4; ++k) lp[k] = cast<T>(d.lp[k]);
    std::vector<T> sums[4];
    for (int k = 0; k < 4; ++k) sums[k] = cast<T>(d.sums[k]);
    pp::sequence_input in[4];
    for (int k = 0; k < 4; ++k)
        in[k] = tokens ? pp::sequence_input::tokens(pt::tensor_view<const T, 2>(lp[k].data(), B, T_),
                                                    pt::tensor_view<const std::uint8_t, 2>(d.mask[k % 2].data(), B, T_))
                       : pp::sequence_input::sums(pt::tensor_view<const T, 1>(sums[k].data(), B),
                                                  pt::tensor_view<const double, 1>(d.lengths[k % 2].data(), B));
    for (int s = 0; s < 2; ++s) h.grad[s].assign(std::size_t(tokens ? B * T_ : B), T(-7));
    auto grad = [&](int s) -> pp::sequence_grad {
        if (tokens) return pt::tensor_view<T, 2>(h.grad[s].data(), B, T_);
        return pt::tensor_view<T, 1>(h.grad[s].data(), B);
    };
    h.losses.assign(std::size_t(B), 0.0);
    h.rew_w.assign(std::size_t(B), 0.0);
    h.rew_l.assign(std::size_t(B), 0.0);
    h.logps_w.assign(std::size_t(B), 0.0);
    h.logps_l.assign(std::size_t(B), 0.0);
    pp::pair_outputs out;
    out.losses = pt::tensor_view<double, 1>(h.losses.data(), B);
    out.chosen_rewards = pt::tensor_view<double, 1>(h.rew_w.data(), B);
    out.rejected_rewards = pt::tensor_view<double, 1>(h.rew_l.data(), B);
    out.chosen_logps = pt::tensor_view<double, 1>(h.logps_w.data(), B);
    out.rejected_logps = pt::tensor_view<double, 1>(h.logps_l.data(), B);
    pp::pair_extras ex;
    if (extras) {
        ex.weights = pp::sequence_input::sums(pt::tensor_view<const double, 1>(d.weights.data(), B));
        if (margins_apply(o)) ex.margins = pp::sequence_input::sums(pt::tensor_view<const double, 1>(d.margins.data(), B));
    }
    // (void): the [[nodiscard]] of dpo_result reaches its assignment operator under nvcc
    (void)(h.result = pp::dpo(pt::exec::seq, in[chosen], in[rejected], ref ? in[ref_chosen] : pp::sequence_input{},
                              ref ? in[ref_rejected] : pp::sequence_input{}, grad(0), grad(1), o, out, ex));
    return h;
}

// The same call on the device. ref_as_sums: the references as [B] sums while the policy is per token.
template <class T>
host_run<T> run_device(const pair_data& d, const pp::dpo_options& o, bool ref, bool tokens, bool extras, bool ref_as_sums = false,
                       bool async = false, std::uint32_t* status = nullptr) {
    const pt::exec::cuda_policy policy = status != nullptr ? pt::exec::cuda.with_status(status) : pt::exec::cuda;
    host_run<T> h;
    const index_t B = d.B, T_ = d.T;
    const device_vec<T> lp[4] = {device_vec<T>(cast<T>(d.lp[0])), device_vec<T>(cast<T>(d.lp[1])),
                                 device_vec<T>(cast<T>(d.lp[2])), device_vec<T>(cast<T>(d.lp[3]))};
    const device_vec<T> sums[4] = {device_vec<T>(cast<T>(d.sums[0])), device_vec<T>(cast<T>(d.sums[1])),
                                   device_vec<T>(cast<T>(d.sums[2])), device_vec<T>(cast<T>(d.sums[3]))};
    const device_vec<std::uint8_t> mask[2] = {device_vec<std::uint8_t>(d.mask[0]), device_vec<std::uint8_t>(d.mask[1])};
    const device_vec<double> len[2] = {device_vec<double>(d.lengths[0]), device_vec<double>(d.lengths[1])};
    const device_vec<double> w(d.weights), m(d.margins);
    pp::device_sequence_input in[4];
    for (int k = 0; k < 4; ++k) {
        const bool per_token = tokens && !(ref_as_sums && k >= 2);
        in[k] = per_token ? pp::device_sequence_input::tokens(pt::device_view<const T, 2>(lp[k].data(), B, T_),
                                                             pt::device_view<const std::uint8_t, 2>(mask[k % 2].data(), B, T_))
                          : pp::device_sequence_input::sums(pt::device_view<const T, 1>(sums[k].data(), B),
                                                            pt::device_view<const double, 1>(len[k % 2].data(), B));
    }
    device_vec<T> grad[2] = {device_vec<T>(std::size_t(tokens ? B * T_ : B), T(-7)),
                             device_vec<T>(std::size_t(tokens ? B * T_ : B), T(-7))};
    auto g = [&](int s) -> pp::device_sequence_grad {
        if (tokens) return pt::device_view<T, 2>(grad[s].data(), B, T_);
        return pt::device_view<T, 1>(grad[s].data(), B);
    };
    device_vec<double> losses(static_cast<std::size_t>(B)), rw(static_cast<std::size_t>(B)), rl(static_cast<std::size_t>(B));
    device_vec<float> pw(static_cast<std::size_t>(B)), pl(static_cast<std::size_t>(B));  // float outputs too
    pp::device_pair_outputs out;
    out.losses = losses.view();
    out.chosen_rewards = rw.view();
    out.rejected_rewards = rl.view();
    out.chosen_logps = pw.view();
    out.rejected_logps = pl.view();
    pp::device_pair_extras ex;
    if (extras) {
        ex.weights = w.cview();
        if (margins_apply(o)) ex.margins = m.cview();
    }
    const pp::device_sequence_input none;
    if (async) {
        device_vec<pp::device_dpo_result> r(1);
        pp::dpo(policy, in[chosen], in[rejected], ref ? in[ref_chosen] : none, ref ? in[ref_rejected] : none, g(0),
                g(1), o, out, ex, pt::device_view<pp::device_dpo_result, 0>(r.data()));
        (void)(h.result = r.host()[0].to_host());
    } else {
        (void)(h.result = pp::dpo(policy, in[chosen], in[rejected], ref ? in[ref_chosen] : none,
                                  ref ? in[ref_rejected] : none, g(0), g(1), o, out, ex));
    }
    for (int s = 0; s < 2; ++s) h.grad[s] = grad[s].host();
    h.losses = losses.host();
    h.rew_w = rw.host();
    h.rew_l = rl.host();
    const auto hpw = pw.host(), hpl = pl.host();
    h.logps_w.assign(hpw.begin(), hpw.end());
    h.logps_l.assign(hpl.begin(), hpl.end());
    return h;
}

template <class T>
void compare_runs(const host_run<T>& got, const host_run<T>& want, double tol, double out_tol, const std::string& what) {
    compare_results(got.result, want.result, tol, what);
    close_rel(got.grad[0], want.grad[0], out_tol, what + " grad_chosen");
    close_rel(got.grad[1], want.grad[1], out_tol, what + " grad_rejected");
    close_rel(got.losses, want.losses, tol, what + " outputs.losses");
    close_rel(got.rew_w, want.rew_w, tol, what + " outputs.chosen_rewards");
    close_rel(got.rew_l, want.rew_l, tol, what + " outputs.rejected_rewards");
    // float outputs: the host's double values rounded once
    std::vector<double> lw(want.logps_w.size()), ll(want.logps_l.size());
    for (std::size_t i = 0; i < lw.size(); ++i) lw[i] = float(want.logps_w[i]), ll[i] = float(want.logps_l[i]);
    close_rel(got.logps_w, lw, 1e-6, what + " outputs.chosen_logps (float)");
    close_rel(got.logps_l, ll, 1e-6, what + " outputs.rejected_logps (float)");
}

// Every option case against the host, per token and as sums.
template <class T>
void every_case(index_t B, index_t T_, std::uint64_t seed, double tol, double out_tol) {
    const pair_data d = make_data(B, T_, seed);
    for (const auto& c : option_cases())
        for (int tokens = 0; tokens < 2; ++tokens) {
            const std::string what = c.name + (tokens ? " [tokens]" : " [sums]") + " B=" + std::to_string(B) +
                                     " T=" + std::to_string(T_);
            host_run<T> want;
            try {
                want = run_host<T>(d, c.o, c.ref, tokens, false);
            } catch (const pt::invalid_argument&) {
                // The host refuses a pair whose divergence score overflows (rows of thousands of
                // tokens without a reference: exp of a sum of their log-probs); the device says so
                // through the status word instead.
                device_vec<std::uint32_t> status(1, 0u);
                (void)run_device<T>(d, c.o, c.ref, tokens, false, false, false, status.data());
                PT_CHECK_MSG((status.host()[0] & pt::status_nonfinite_input) != 0, what + ": overflow not reported");
                continue;
            }
            compare_runs(run_device<T>(d, c.o, c.ref, tokens, false), want, tol, out_tol, what);
        }
}

}  // namespace

PT_TEST("dpo host emulation: the kernels' per-pair code equals dpo() on the host") {
    const pair_data d = make_data(29, 40, 11);
    for (const auto& c : option_cases())
        for (int extras = 0; extras < 2; ++extras) {
            const pp::dpo_options& o = c.o;
            const bool ref = c.ref;
            const index_t B = d.B;
            pp::detail::pair_config cfg = pp::detail::make_pair_config(o, pp::detail::terms_of(o), B, ref);
            cfg.has_weights = extras != 0;
            cfg.has_margins = extras != 0 && margins_apply(o);
            auto sums_of = [&](index_t i) {
                pp::detail::pair_sums s;
                s.pw = d.sums[chosen][std::size_t(i)], s.pl = d.sums[rejected][std::size_t(i)];
                s.rw = ref ? d.sums[ref_chosen][std::size_t(i)] : 0.0, s.rl = ref ? d.sums[ref_rejected][std::size_t(i)] : 0.0;
                s.nw = d.lengths[0][std::size_t(i)], s.nl = d.lengths[1][std::size_t(i)];
                return s;
            };
            pp::detail::batch_stats st;
            for (index_t i = 0; i < B; ++i) {
                const auto s = sums_of(i);
                const auto r = pp::detail::ratios_of(cfg, s);
                st.sum_nw += s.nw, st.sum_pw += s.pw, st.reward += cfg.beta * r.lw + cfg.beta * r.ll;
                st.sum_w += extras ? d.weights[std::size_t(i)] : 0.0;
            }
            pp::detail::pair_acc acc;
            std::vector<double> cw(static_cast<std::size_t>(B)), cl(static_cast<std::size_t>(B));
            for (index_t i = 0; i < B; ++i) {
                const auto e = pp::detail::evaluate_pair(cfg, sums_of(i), d.weights[std::size_t(i)], d.margins[std::size_t(i)], st);
                acc.add(e);
                cw[std::size_t(i)] = e.cw, cl[std::size_t(i)] = e.cl;
            }
            const pp::dpo_result got = pp::detail::finish_dpo(acc, cfg).to_host();
            const host_run<double> want = run_host<double>(d, o, ref, false, extras != 0);
            const std::string what = "emulation " + c.name + (extras ? " +extras" : "");
            compare_results(got, want.result, 1e-12, what);
            close_rel(cw, want.grad[0], 1e-12, what + " grad_chosen");
            close_rel(cl, want.grad[1], 1e-12, what + " grad_rejected");
        }
}

// The device and the host agree to rounding, not bits: nvcc contracts a * b + c into FMAs, libdevice's
// exp/log1p differ from glibc's by an ulp, and the token sums run in another order. Measured on an
// H100: up to 3e-11 relative (the rewards of T = 5000 rows, sums of ~1e4 whose difference is ~0.1;
// APO's gradient, a difference of two sigmoid terms, 6e-12 from [B] sums alone).
constexpr double device_double_tol = 1e-10;

PT_TEST("dpo: device equals the host oracle, double, every loss, tokens and sums") {
    every_case<double>(37, 67, 1, device_double_tol, device_double_tol);
}

PT_TEST("dpo: device equals the host oracle, double, long rows cut into chunks") {
    every_case<double>(3, 5000, 2, device_double_tol, device_double_tol);
}

PT_TEST("dpo: device equals the host oracle, float (double inside, rounded once)") {
    every_case<float>(64, 300, 3, 1e-11, 1e-5);
}

PT_TEST("dpo: extras, references given as sums with per-token policy log-probs, async result") {
    const pair_data d = make_data(41, 90, 4);
    for (const auto& c : option_cases()) {
        compare_runs(run_device<double>(d, c.o, c.ref, true, true), run_host<double>(d, c.o, c.ref, true, true), device_double_tol, device_double_tol,
                     c.name + " +extras [tokens]");
        compare_runs(run_device<double>(d, c.o, c.ref, false, true), run_host<double>(d, c.o, c.ref, false, true), device_double_tol,
                     device_double_tol, c.name + " +extras [sums]");
        compare_runs(run_device<double>(d, c.o, c.ref, true, false, true), run_host<double>(d, c.o, c.ref, true, false), device_double_tol,
                     device_double_tol, c.name + " [tokens, ref sums]");
        compare_runs(run_device<double>(d, c.o, c.ref, true, false, false, true), run_host<double>(d, c.o, c.ref, true, false),
                     device_double_tol, device_double_tol, c.name + " [tokens, async]");
    }
}

PT_TEST("dpo: bitwise deterministic run to run") {
    const pair_data d = make_data(300, 700, 5);
    for (const auto& o : {pp::dpo_options::trl(), pp::dpo_options::simpo(),
                          pp::dpo_options::trl({{pair_loss::sigmoid, 0.8}, {pair_loss::bco_pair, 0.2}, {pair_loss::sft, 1.0}})}) {
        const host_run<double> a = run_device<double>(d, o, true, true, true), b = run_device<double>(d, o, true, true, true);
        PT_CHECK(std::memcmp(&a.result.loss, &b.result.loss, sizeof(double)) == 0);
        PT_CHECK(std::memcmp(&a.result.metrics, &b.result.metrics, sizeof(pp::reward_metrics)) == 0);
        PT_CHECK(a.result.term_losses == b.result.term_losses);
        for (int s = 0; s < 2; ++s)
            PT_CHECK(std::memcmp(a.grad[s].data(), b.grad[s].data(), a.grad[s].size() * sizeof(double)) == 0);
        PT_CHECK(std::memcmp(a.losses.data(), b.losses.data(), a.losses.size() * sizeof(double)) == 0);
    }
}

PT_TEST("dpo: simpo overload and caller workspace") {
    const pair_data d = make_data(16, 128, 6);
    const index_t B = d.B, T_ = d.T;
    const device_vec<double> lw(d.lp[0]), ll(d.lp[1]);
    const device_vec<std::uint8_t> mw(d.mask[0]), ml(d.mask[1]);
    const auto cw = pp::device_sequence_input::tokens(pt::device_view<const double, 2>(lw.data(), B, T_),
                                                      pt::device_view<const std::uint8_t, 2>(mw.data(), B, T_));
    const auto cl = pp::device_sequence_input::tokens(pt::device_view<const double, 2>(ll.data(), B, T_),
                                                      pt::device_view<const std::uint8_t, 2>(ml.data(), B, T_));
    const std::size_t bytes = pp::dpo_workspace_bytes(B, T_);
    device_vec<unsigned char> ws(bytes);
    device_vec<double> gw(std::size_t(B * T_)), gl(std::size_t(B * T_));
    const pp::dpo_result r = pp::simpo(pt::exec::cuda.with(ws.data(), bytes), cw, cl, pt::device_view<double, 2>(gw.data(), B, T_),
                                       pt::device_view<double, 2>(gl.data(), B, T_));
    const host_run<double> want = run_host<double>(d, pp::dpo_options::simpo(), false, true, false);
    compare_results(r, want.result, 1e-12, "simpo overload");
    close_rel(gw.host(), want.grad[0], 1e-12, "simpo grad_chosen");
    // Too small a workspace is an invalid_argument naming the policy.
    PT_CHECK_THROWS(pp::simpo(pt::exec::cuda.with(ws.data(), bytes - 1), cw, cl, pt::none, pt::none), pt::invalid_argument);
}

PT_TEST("sequence_log_probs: device equals the host, float, double, bfloat16, masks of several types, chunked rows") {
    for (const auto& shape : std::vector<std::pair<index_t, index_t>>{{37, 67}, {3, 5000}, {5, 0}, {200, 1}}) {
        const index_t B = shape.first, T_ = shape.second;
        const pair_data d = make_data(B, T_ > 0 ? T_ : 1, 7);
        std::vector<double> lp = d.lp[0];
        lp.resize(std::size_t(B * T_));
        std::vector<std::uint8_t> mask = d.mask[0];
        mask.resize(std::size_t(B * T_));
        std::vector<double> hs(static_cast<std::size_t>(B)), hn(static_cast<std::size_t>(B));
        pp::sequence_log_probs(pt::exec::seq, pt::tensor_view<const double, 2>(lp.data(), B, T_),
                               pt::tensor_view<const std::uint8_t, 2>(mask.data(), B, T_), pt::tensor_view<double, 1>(hs.data(), B),
                               pt::tensor_view<double, 1>(hn.data(), B));
        const std::string what = "B=" + std::to_string(B) + " T=" + std::to_string(T_);
        // double log-probs, int64 mask
        {
            const device_vec<double> dl(lp);
            const device_vec<std::int64_t> dm(std::vector<std::int64_t>(mask.begin(), mask.end()));
            device_vec<double> s(static_cast<std::size_t>(B)), n(static_cast<std::size_t>(B));
            pp::sequence_log_probs(pt::exec::cuda, pt::device_view<const double, 2>(dl.data(), B, T_),
                                   pt::device_view<const std::int64_t, 2>(dm.data(), B, T_), s.view(), n.view());
            close_rel(s.host(), hs, 1e-13, what + " double sums");
            PT_CHECK(n.host() == hn);
        }
        // float log-probs, float mask, float sums, no lengths
        {
            const std::vector<float> lf(lp.begin(), lp.end());
            std::vector<double> hsf(static_cast<std::size_t>(B));
            pp::sequence_log_probs(pt::exec::seq, pt::tensor_view<const float, 2>(lf.data(), B, T_),
                                   pt::tensor_view<const std::uint8_t, 2>(mask.data(), B, T_), pt::tensor_view<double, 1>(hsf.data(), B));
            const device_vec<float> dl(lf);
            const device_vec<float> dm(std::vector<float>(mask.begin(), mask.end()));
            device_vec<float> s(static_cast<std::size_t>(B));
            pp::sequence_log_probs(pt::exec::cuda, pt::device_view<const float, 2>(dl.data(), B, T_),
                                   pt::device_view<const float, 2>(dm.data(), B, T_), s.view());
            close_rel(s.host(), cast<float>(hsf), 1e-6, what + " float sums");
        }
        // bfloat16 log-probs (the host reference reads the same values widened to float), bool mask
        {
            std::vector<__nv_bfloat16> lb(lp.size());
            std::vector<float> lbf(lp.size());
            for (std::size_t k = 0; k < lp.size(); ++k) {
                lb[k] = __double2bfloat16(lp[k]);
                lbf[k] = __bfloat162float(lb[k]);
            }
            std::vector<double> hsb(static_cast<std::size_t>(B));
            pp::sequence_log_probs(pt::exec::seq, pt::tensor_view<const float, 2>(lbf.data(), B, T_),
                                   pt::tensor_view<const std::uint8_t, 2>(mask.data(), B, T_), pt::tensor_view<double, 1>(hsb.data(), B));
            const device_vec<__nv_bfloat16> dl(lb);
            std::vector<unsigned char> mb(mask.begin(), mask.end());
            const device_vec<unsigned char> dm(mb);
            device_vec<double> s(static_cast<std::size_t>(B));
            pp::sequence_log_probs(pt::exec::cuda, pt::device_view<const __nv_bfloat16, 2>(dl.data(), B, T_),
                                   pt::device_view<const bool, 2>(reinterpret_cast<const bool*>(dm.data()), B, T_), s.view());
            close_rel(s.host(), hsb, 1e-13, what + " bfloat16 sums");
        }
    }
}

PT_TEST("sequence_log_probs: strided (transposed) views, determinism, status word") {
    const pair_data d = make_data(50, 33, 8);
    const index_t B = d.B, T_ = d.T;
    std::vector<double> lpt(d.lp[0].size());
    std::vector<std::uint8_t> mt(d.mask[0].size());
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < T_; ++t) {
            lpt[std::size_t(t * B + i)] = d.lp[0][std::size_t(i * T_ + t)];
            mt[std::size_t(t * B + i)] = d.mask[0][std::size_t(i * T_ + t)];
        }
    const device_vec<double> dl(lpt);
    const device_vec<std::uint8_t> dm(mt);
    const index_t ext[2] = {B, T_}, tr[2] = {1, B};
    device_vec<double> s(static_cast<std::size_t>(B)), s2(static_cast<std::size_t>(B));
    device_vec<std::uint32_t> status(1, 0u);
    pp::sequence_log_probs(pt::exec::cuda.with_status(status.data()), pt::device_view<const double, 2>(dl.data(), ext, tr),
                           pt::device_view<const std::uint8_t, 2>(dm.data(), ext, tr), s.view());
    pp::sequence_log_probs(pt::exec::cuda, pt::device_view<const double, 2>(dl.data(), ext, tr),
                           pt::device_view<const std::uint8_t, 2>(dm.data(), ext, tr), s2.view());
    close_rel(s.host(), d.sums[0], 1e-13, "strided sums");
    PT_CHECK(std::memcmp(s.host().data(), s2.host().data(), std::size_t(B) * sizeof(double)) == 0);
    PT_CHECK(status.host()[0] == 0u);  // NaN only at masked positions
    // A NaN at a valid position sets the status bit.
    std::vector<double> bad = d.lp[0];
    bad[0] = std::nan("");  // row 0 has at least one valid token
    const device_vec<double> db(bad);
    const device_vec<std::uint8_t> dm0(d.mask[0]);
    pp::sequence_log_probs(pt::exec::cuda.with_status(status.data()), pt::device_view<const double, 2>(db.data(), B, T_),
                           pt::device_view<const std::uint8_t, 2>(dm0.data(), B, T_), s.view());
    PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    // Outputs over an input or over each other are refused before launching (blocks write them while
    // others still read the inputs).
    device_vec<double> lp_copy(d.lp[0]), mask_d(std::vector<double>(d.mask[0].begin(), d.mask[0].end()));
    const pt::device_view<const double, 2> lpv(lp_copy.data(), B, T_), mv(mask_d.data(), B, T_);
    PT_CHECK_THROWS(pp::sequence_log_probs(pt::exec::cuda, lpv, mv, pt::device_view<double, 1>(lp_copy.data() + 3, B)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pp::sequence_log_probs(pt::exec::cuda, lpv, mv, s.view(), pt::device_view<double, 1>(mask_d.data(), B)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pp::sequence_log_probs(pt::exec::cuda, lpv, mv, s.view(), pt::device_view<double, 1>(s.data(), B)),
                    pt::invalid_argument);
}

PT_TEST("sequence_log_probs_backward: device equals the host, float / double / bfloat16 gradients") {
    const pair_data d = make_data(40, 300, 9);
    const index_t B = d.B, T_ = d.T;
    const std::vector<double> gs = d.weights;
    std::vector<double> want(std::size_t(B * T_));
    pp::sequence_log_probs_backward(pt::exec::seq, pt::tensor_view<const double, 1>(gs.data(), B),
                                    pt::tensor_view<const std::uint8_t, 2>(d.mask[0].data(), B, T_),
                                    pt::tensor_view<double, 2>(want.data(), B, T_));
    const device_vec<double> dgs(gs);
    const device_vec<std::uint8_t> dm(d.mask[0]);
    device_vec<double> g(want.size(), -1.0);
    pp::sequence_log_probs_backward(pt::exec::cuda, dgs.cview(), pt::device_view<const std::uint8_t, 2>(dm.data(), B, T_),
                                    pt::device_view<double, 2>(g.data(), B, T_));
    PT_CHECK(g.host() == want);
    device_vec<float> gf(want.size(), -1.f);
    pp::sequence_log_probs_backward(pt::exec::cuda, dgs.cview(), pt::device_view<const std::uint8_t, 2>(dm.data(), B, T_),
                                    pt::device_view<float, 2>(gf.data(), B, T_));
    PT_CHECK(gf.host() == cast<float>(want));
    device_vec<__nv_bfloat16> gb(want.size());
    pp::sequence_log_probs_backward(pt::exec::cuda, dgs.cview(), pt::device_view<const std::uint8_t, 2>(dm.data(), B, T_),
                                    pt::device_view<__nv_bfloat16, 2>(gb.data(), B, T_));
    const auto hb = gb.host();
    int bad = 0;
    for (std::size_t k = 0; k < want.size(); ++k) bad += __bfloat162float(hb[k]) != __bfloat162float(__double2bfloat16(want[k]));
    PT_CHECK(bad == 0);
}

PT_TEST("dpo: bad input throws invalid_argument naming the argument, before launching") {
    const pair_data d = make_data(4, 8, 10);
    const index_t B = d.B, T_ = d.T;
    const device_vec<double> l0(d.lp[0]), l1(d.lp[1]), l2(d.lp[2]), l3(d.lp[3]), s0(d.sums[0]);
    const device_vec<float> lf(cast<float>(d.lp[1]));
    const device_vec<std::uint8_t> m0(d.mask[0]), m1(d.mask[1]);
    const device_vec<std::int64_t> mi(std::vector<std::int64_t>(d.mask[1].begin(), d.mask[1].end()));
    auto tok = [&](const device_vec<double>& l, const device_vec<std::uint8_t>& m, index_t b = 4) {
        return pp::device_sequence_input::tokens(pt::device_view<const double, 2>(l.data(), b, T_),
                                                 pt::device_view<const std::uint8_t, 2>(m.data(), b, T_));
    };
    const auto w = tok(l0, m0), l = tok(l1, m1), rw = tok(l2, m0), rl = tok(l3, m1);
    device_vec<double> g(std::size_t(B * T_)), gs(static_cast<std::size_t>(B));
    auto names = [](const std::function<void()>& f, const std::string& arg) {
        ++pt::test::state().checks;
        try {
            f();
        } catch (const pt::invalid_argument& e) {
            if (std::string(e.what()).find(arg) == std::string::npos)
                pt::test::report_failure(__FILE__, __LINE__, "message does not name " + arg + ": " + e.what());
            return;
        } catch (...) {
        }
        pt::test::report_failure(__FILE__, __LINE__, "expected invalid_argument naming " + arg);
    };
    auto run = [&](const pp::device_sequence_input& a, const pp::device_sequence_input& b, const pp::device_sequence_input& c,
                   const pp::device_sequence_input& e, const pp::device_sequence_grad& ga, const pp::dpo_options& o,
                   const pp::device_pair_extras& ex = {}) {
        (void)pp::dpo(pt::exec::cuda, a, b, c, e, ga, pt::none, o, {}, ex);
    };
    names([&] { run(w, l, rw, rl, pt::none, pp::dpo_options::trl(pair_loss::aot)); }, "options.loss");
    names([&] { run(w, l, rw, rl, pt::none, pp::dpo_options::trl({{pair_loss::sigmoid, 1}, {pair_loss::aot_unpaired, 1}})); },
          "options.losses");
    {
        auto o = pp::dpo_options::trl();
        o.ld_alpha = 0.5;
        names([&] { run(w, l, rw, rl, pt::none, o); }, "options.ld_alpha");
        std::vector<pp::loss_term> many(9, {pair_loss::sigmoid, 0.1});
        names([&] { run(w, l, rw, rl, pt::none, pp::dpo_options::trl(many)); }, "options.losses");
        o = pp::dpo_options::trl();
        o.beta = -1;
        names([&] { run(w, l, rw, rl, pt::none, o); }, "options");
    }
    names([&] { run(w, l, {}, {}, pt::none, pp::dpo_options::trl()); }, "ref_chosen");
    names([&] { run({}, l, rw, rl, pt::none, pp::dpo_options::trl()); }, "chosen");
    names([&] { run(w, tok(l1, m1, 3), rw, rl, pt::none, pp::dpo_options::trl()); }, "rejected");
    names([&] { run(w, l, rw, {}, pt::none, pp::dpo_options::trl()); }, "ref_rejected");
    // dtype mismatches between the per-token sides
    names([&] {
        run(w, pp::device_sequence_input::tokens(pt::device_view<const float, 2>(lf.data(), B, T_),
                                                 pt::device_view<const std::uint8_t, 2>(m1.data(), B, T_)),
            rw, rl, pt::none, pp::dpo_options::trl());
    }, "rejected");
    names([&] {
        run(w, pp::device_sequence_input::tokens(pt::device_view<const double, 2>(l1.data(), B, T_),
                                                 pt::device_view<const std::int64_t, 2>(mi.data(), B, T_)),
            rw, rl, pt::none, pp::dpo_options::trl());
    }, "rejected");
    // gradients: wrong form, wrong dtype, wrong shape, aliasing the input
    names([&] { run(w, l, rw, rl, gs.view(), pp::dpo_options::trl()); }, "grad_chosen");
    {
        device_vec<float> gf(std::size_t(B * T_));
        names([&] { run(w, l, rw, rl, pt::device_view<float, 2>(gf.data(), B, T_), pp::dpo_options::trl()); }, "grad_chosen");
    }
    names([&] { run(w, l, rw, rl, pt::device_view<double, 2>(g.data(), B, T_ - 1), pp::dpo_options::trl()); }, "grad_chosen");
    names([&] { run(w, l, rw, rl, pt::device_view<double, 2>(const_cast<double*>(l0.data()), B, T_), pp::dpo_options::trl()); },
          "grad_chosen");
    // outputs over another side's input, over the extras, over one another or under the result (the
    // kernels write them while other blocks still read the inputs): refused before launching
    names([&] { run(w, l, rw, rl, pt::device_view<double, 2>(const_cast<double*>(l3.data()), B, T_), pp::dpo_options::trl()); },
          "grad_chosen");
    {
        auto outs = [&](const pp::device_pair_outputs& o, const pp::device_sequence_grad& ga = pt::none,
                        const pp::device_sequence_grad& gb = pt::none, const pp::device_pair_extras& ex = {}) {
            (void)pp::dpo(pt::exec::cuda, w, l, rw, rl, ga, gb, pp::dpo_options::trl(), o, ex);
        };
        device_vec<double> o1(static_cast<std::size_t>(B)), o2(static_cast<std::size_t>(B));
        pp::device_pair_outputs over_weights;
        over_weights.losses = pt::device_view<double, 1>(const_cast<double*>(s0.data()), B);
        pp::device_pair_extras ex;
        ex.weights = s0.cview();
        names([&] { outs(over_weights, pt::none, pt::none, ex); }, "outputs.losses");
        pp::device_pair_outputs twice;
        twice.chosen_rewards = o1.view();
        twice.rejected_rewards = o1.view();
        names([&] { outs(twice); }, "outputs.rejected_rewards");
        pp::device_pair_outputs over_grad;
        over_grad.losses = pt::device_view<double, 1>(g.data() + 2, B);
        names([&] { outs(over_grad, pt::device_view<double, 2>(g.data(), B, T_)); }, "outputs.losses");
        names([&] {
            outs({}, pt::device_view<double, 2>(g.data(), B, T_), pt::device_view<double, 2>(g.data(), B, T_));
        }, "grad_rejected");
        names([&] {
            pp::device_pair_outputs o;
            o.losses = o2.view();
            (void)pp::dpo(pt::exec::cuda, w, l, rw, rl, pt::none, pt::none, pp::dpo_options::trl(), o, {},
                          pt::device_view<pp::device_dpo_result, 0>(reinterpret_cast<pp::device_dpo_result*>(o2.data())));
        }, "result");
    }
    // lengths needed but not given; extras of the wrong size
    names([&] {
        run(pp::device_sequence_input::sums(s0.cview()), pp::device_sequence_input::sums(s0.cview()), {}, {}, pt::none,
            pp::dpo_options::simpo());
    }, "chosen");
    {
        pp::device_pair_extras ex;
        ex.weights = pt::device_view<const double, 1>(s0.data(), B - 1);
        names([&] { run(w, l, rw, rl, pt::none, pp::dpo_options::trl(), ex); }, "extras.weights");
        pp::device_pair_extras em;
        em.margins = s0.cview();
        names([&] { run(w, l, rw, rl, pt::none, pp::dpo_options::trl(pair_loss::ipo), em); }, "extras.margins");
    }
    // the reduction
    names([&] {
        pp::sequence_log_probs(pt::exec::cuda, pt::device_view<const double, 2>(l0.data(), B, T_),
                               pt::device_view<const std::uint8_t, 2>(m0.data(), B, T_ - 1), gs.view());
    }, "mask");
    names([&] {
        pp::sequence_log_probs(pt::exec::cuda, pt::device_view<const double, 2>(l0.data(), B, T_),
                               pt::device_view<const std::uint8_t, 2>(m0.data(), B, T_), pt::device_view<double, 1>(gs.data(), B - 1));
    }, "sums");
    names([&] {
        pp::sequence_log_probs_backward(pt::exec::cuda, pt::device_view<const double, 1>(s0.data(), B - 1),
                                        pt::device_view<const std::uint8_t, 2>(m0.data(), B, T_), pt::device_view<double, 2>(g.data(), B, T_));
    }, "grad_sums");
    // The policy's workspace over an output (the gradient), its status word over an input (a mask, the
    // reference's log-probs); the same for sequence_log_probs.
    using pt::test::refuses_policy;
    const pp::device_sequence_grad gw = pt::device_view<double, 2>(g.data(), B, T_);
    PT_CHECK(refuses_policy([&] { (void)pp::dpo(pt::exec::cuda.with(g.data(), g.size() * sizeof(double)), w, l, rw, rl, gw, pt::none,
                                                pp::dpo_options::trl()); },
                            "workspace", "grad_chosen"));
    PT_CHECK(refuses_policy([&] { (void)pp::dpo(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(m1.data() + 4)), w, l, rw,
                                                rl, pt::none, pt::none, pp::dpo_options::trl()); },
                            "status word", "rejected"));
    PT_CHECK(refuses_policy([&] { (void)pp::dpo(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(l2.data())), w, l, rw, rl,
                                                pt::none, pt::none, pp::dpo_options::trl()); },
                            "status word", "ref_chosen"));
    PT_CHECK(refuses_policy([&] {
        pp::sequence_log_probs(pt::exec::cuda.with(gs.data(), gs.size() * sizeof(double)),
                               pt::device_view<const double, 2>(l0.data(), B, T_),
                               pt::device_view<const std::uint8_t, 2>(m0.data(), B, T_), gs.view());
    }, "workspace", "sums"));
}

PT_TEST("dpo: status word for non-finite log-probs at valid positions and non-finite sums") {
    pair_data d = make_data(8, 16, 12);
    const index_t B = d.B, T_ = d.T;
    d.lp[0][0] = std::numeric_limits<double>::infinity();  // row 0 always has a valid first token
    const device_vec<double> l0(d.lp[0]), l1(d.lp[1]), l2(d.lp[2]), l3(d.lp[3]);
    const device_vec<std::uint8_t> m0(d.mask[0]), m1(d.mask[1]);
    auto tok = [&](const device_vec<double>& l, const device_vec<std::uint8_t>& m) {
        return pp::device_sequence_input::tokens(pt::device_view<const double, 2>(l.data(), B, T_),
                                                 pt::device_view<const std::uint8_t, 2>(m.data(), B, T_));
    };
    device_vec<std::uint32_t> status(1, 0u);
    (void)pp::dpo(pt::exec::cuda.with_status(status.data()), tok(l0, m0), tok(l1, m1), tok(l2, m0), tok(l3, m1), pt::none,
                  pt::none, pp::dpo_options::trl());
    PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    std::vector<double> s = d.sums[1];
    s[3] = std::nan("");
    const device_vec<double> ds(s), dr(d.sums[3]), dw(d.sums[0]), dq(d.sums[2]);
    device_vec<std::uint32_t> status2(1, 0u);
    (void)pp::dpo(pt::exec::cuda.with_status(status2.data()), pp::device_sequence_input::sums(dw.cview()),
                  pp::device_sequence_input::sums(ds.cview()), pp::device_sequence_input::sums(dq.cview()),
                  pp::device_sequence_input::sums(dr.cview()), pt::none, pt::none, pp::dpo_options::trl());
    PT_CHECK((status2.host()[0] & pt::status_nonfinite_input) != 0);
    // A negative weight (the host raises) sets the bit too.
    std::vector<double> wv(static_cast<std::size_t>(B), 1.0);
    wv[2] = -0.5;
    const device_vec<double> dwv(wv);
    pp::device_pair_extras ex;
    ex.weights = dwv.cview();
    device_vec<std::uint32_t> status3(1, 0u);
    (void)pp::dpo(pt::exec::cuda.with_status(status3.data()), pp::device_sequence_input::sums(dw.cview()),
                  pp::device_sequence_input::sums(dr.cview()), pp::device_sequence_input::sums(dq.cview()),
                  pp::device_sequence_input::sums(dr.cview()), pt::none, pt::none, pp::dpo_options::trl(), {}, ex);
    PT_CHECK((status3.host()[0] & pt::status_nonfinite_input) != 0);
}

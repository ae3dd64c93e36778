// CUDA-graph capture of every exec::cuda algorithm (issue 9 item 3): each call runs eagerly with a
// caller workspace of exactly <algo>_workspace_bytes(...), is then captured into a CUDA graph in
// cudaStreamCaptureModeGlobal on a blocking stream, instantiated and replayed twice, with other
// input values loaded between the replays. Capture fails when the call synchronizes, allocates
// outside the stream, or launches onto the legacy default stream (which would also make the graph
// miss work); a graph that re-read nothing would replay stale bits, and a workspace_bytes that is too
// small makes the call throw (the workspace is then the only scratch the call may take). Outputs
// and the status word are compared bitwise with eager runs on the same inputs (every kernel is
// documented as deterministic run to run). Calls whose scratch would otherwise come from
// cudaMallocAsync are also captured without a workspace (the allocation becomes a graph node).
//
// Cases (name filter "graph"): grpo uniform (register teams and block kernel), ragged, scale::batch
// (scratch) with the counters overload; rloo uniform and ragged; gae and gae_per_row_lambda
// (whitening, packed and chunked rows, decoupled lambda, statistics overload); discounted_returns (packed and chunked); the fused
// policy loss with its device loss_result (segment and chunked rows, bf16); kl_penalty;
// sequence_log_probs and its backward; dpo (per token, device result) and simpo.

#include <cuda_bf16.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <posttrain/advantage/gae.cuh>
#include <posttrain/advantage/grpo.cuh>
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
using pt::test::graph_case;
using pt::test::input_sets;
using pt::test::out_of;

namespace {

// n normal values from `seed` (normal_sets draws input set 1 from seed + 1000: the sets differ everywhere).
template <class T>
std::vector<T> normal_values(std::size_t n, std::uint64_t seed, double mean = 0.0, double sd = 1.0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(mean, sd);
    std::vector<T> v(n);
    for (auto& x : v) x = pl::detail::from_double<T>(normal(rng));
    return v;
}

std::vector<std::uint8_t> mask_values(std::size_t n, std::uint64_t seed, double keep = 0.85) {
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution b(keep);
    std::vector<std::uint8_t> v(n);
    for (auto& x : v) x = b(rng) ? 1 : 0;
    return v;
}

template <class T>
input_sets<T> normal_sets(std::size_t n, std::uint64_t seed, double mean = 0.0, double sd = 1.0) {
    return input_sets<T>(normal_values<T>(n, seed, mean, sd), normal_values<T>(n, seed + 1000, mean, sd));
}
inline input_sets<std::uint8_t> mask_sets(std::size_t n, std::uint64_t seed) {
    return input_sets<std::uint8_t>(mask_values(n, seed), mask_values(n, seed + 1000));
}

// ---- outcome advantages ------------------------------------------------------------------------

template <class T, class Options, class Groups, class Call>
void outcome_case(const std::string& name, index_t n, const Groups& groups, const Options& o, std::size_t ws, Call algo,
                  bool counters = false) {
    auto r = normal_sets<T>(std::size_t(n), 11, 0.5, 2.0);
    device_vec<T> a(static_cast<std::size_t>(n));
    device_vec<index_t> stats(5, 0);
    graph_case c;
    c.name = name;
    c.workspace = ws;
    c.outputs = {out_of(a)};
    if (counters) c.outputs.push_back(out_of(stats, 0));  // counters are added to: start at 0
    c.load = [&](int k) { r.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        if (counters) algo(p, r.dev.cview(), groups, a.view(), o, stats.view());
        else algo(p, r.dev.cview(), groups, a.view(), o);
    };
    pt::test::graph_replay_both(c);
}

struct grpo_fn {
    template <class... A>
    void operator()(A&&... a) const { adv::grpo(std::forward<A>(a)...); }
};
struct rloo_fn {
    template <class... A>
    void operator()(A&&... a) const { adv::rloo(std::forward<A>(a)...); }
};

std::vector<std::int64_t> ragged_offsets(index_t groups, index_t max_size, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> off{0};
    for (index_t g = 0; g < groups; ++g) off.push_back(off.back() + index_t(rng() % std::uint64_t(max_size + 1)));  // empty groups too
    return off;
}

}  // namespace

PT_TEST("graph: grpo uniform groups (register teams and block kernel)") {
    const adv::grpo_options o;
    outcome_case<float>("grpo uniform 16 float", 16 * 1000, pt::uniform_groups{16}, o, adv::grpo_workspace_bytes(16 * 1000, o), grpo_fn{});
    outcome_case<double>("grpo uniform 3000 double", 3000 * 7, pt::uniform_groups{3000}, o, adv::grpo_workspace_bytes(3000 * 7, o),
                         grpo_fn{});
}

PT_TEST("graph: grpo ragged groups and the counters overload") {
    const auto off = ragged_offsets(2000, 40, 5);
    const device_vec<std::int64_t> d_off(off);
    const index_t n = off.back();
    const adv::grpo_options o = adv::grpo_options::verl();
    outcome_case<float>("grpo ragged float", n, pt::ragged(d_off.cview()), o, adv::grpo_workspace_bytes(n, o), grpo_fn{}, true);
    const auto big = ragged_offsets(6, 5000, 6);  // block kernel, looping
    const device_vec<std::int64_t> d_big(big);
    outcome_case<double>("grpo ragged large groups double", big.back(), pt::ragged(d_big.cview()), o,
                         adv::grpo_workspace_bytes(big.back(), o), grpo_fn{});
}

PT_TEST("graph: grpo scale::batch (workspace)") {
    adv::grpo_options o;
    o.std_scale = adv::scale::batch;
    const index_t n = 16 * 4096;
    PT_CHECK(adv::grpo_workspace_bytes(n, o) > 0);
    outcome_case<float>("grpo batch std uniform", n, pt::uniform_groups{16}, o, adv::grpo_workspace_bytes(n, o), grpo_fn{}, true);
    const auto off = ragged_offsets(3000, 30, 7);
    const device_vec<std::int64_t> d_off(off);
    outcome_case<double>("grpo batch std ragged", off.back(), pt::ragged(d_off.cview()), o, adv::grpo_workspace_bytes(off.back(), o),
                         grpo_fn{});
}

PT_TEST("graph: rloo uniform and ragged") {
    const adv::rloo_options o;
    outcome_case<float>("rloo uniform 8", 8 * 5000, pt::uniform_groups{8}, o, adv::rloo_workspace_bytes(8 * 5000, o), rloo_fn{});
    const auto off = ragged_offsets(1500, 64, 8);
    const device_vec<std::int64_t> d_off(off);
    outcome_case<double>("rloo ragged", off.back(), pt::ragged(d_off.cview()), o, adv::rloo_workspace_bytes(off.back(), o), rloo_fn{},
                         true);
}

// ---- GAE and discounted returns ------------------------------------------------------------------

namespace {

void gae_case(const std::string& name, index_t rows, index_t cols, const adv::gae_options& o, bool with_stats) {
    const std::size_t n = std::size_t(rows * cols);
    auto r = normal_sets<float>(n, 21), v = normal_sets<float>(n, 22);
    auto m = mask_sets(n, 23);
    device_vec<float> a(n), ret(n);
    device_vec<double> st(3);
    graph_case c;
    c.name = name;
    c.workspace = adv::gae_workspace_bytes(rows, cols, o);
    c.outputs = {out_of(a), out_of(ret)};
    if (with_stats) c.outputs.push_back(out_of(st));
    c.load = [&](int k) { r.load(k), v.load(k), m.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        const pt::device_view<const float, 2> rv(r.dev.data(), rows, cols), vv(v.dev.data(), rows, cols);
        const pt::device_view<const std::uint8_t, 2> mv(m.dev.data(), rows, cols);
        const pt::device_view<float, 2> av(a.data(), rows, cols), retv(ret.data(), rows, cols);
        if (with_stats) adv::gae(p, rv, vv, mv, av, retv, o, st.view());
        else adv::gae(p, rv, vv, mv, av, retv, o);
    };
    pt::test::graph_replay_both(c);
}

void returns_case(const std::string& name, index_t rows, index_t cols) {
    const std::size_t n = std::size_t(rows * cols);
    auto r = normal_sets<double>(n, 31);
    auto m = mask_sets(n, 32);
    device_vec<double> out(n);
    graph_case c;
    c.name = name;
    c.workspace = adv::discounted_returns_workspace_bytes(rows, cols);
    c.outputs = {out_of(out)};
    c.load = [&](int k) { r.load(k), m.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        adv::returns_options o;
        o.gamma = 0.99;
        adv::discounted_returns(p, pt::device_view<const double, 2>(r.dev.data(), rows, cols),
                                pt::device_view<const std::uint8_t, 2>(m.dev.data(), rows, cols),
                                pt::device_view<double, 2>(out.data(), rows, cols), o);
    };
    pt::test::graph_replay_both(c);
}

}  // namespace

PT_TEST("graph: gae (whitening, packed and chunked rows, statistics)") {
    gae_case("gae verl packed", 64, 500, adv::gae_options::verl(0.99, 0.95), true);
    gae_case("gae verl chunked", 3, 5000, adv::gae_options::verl(0.99, 0.95), false);
    auto o = adv::gae_options::nemo();
    o.lambda_value = 1.0;
    o.length_adaptive_alpha = 0.05;
    gae_case("gae decoupled length-adaptive chunked", 4, 4500, o, false);
    adv::gae_options raw;
    raw.whiten = false;
    raw.gamma = 0.99;
    raw.lambda = 0.95;
    gae_case("gae no whitening packed", 100, 100, raw, false);
}

PT_TEST("graph: gae_per_row_lambda (packed and chunked rows)") {
    for (const auto& [rows, cols] : {std::pair<index_t, index_t>{64, 500}, {3, 5000}}) {
        const std::size_t n = std::size_t(rows * cols);
        auto r = normal_sets<float>(n, 24), v = normal_sets<float>(n, 25);
        auto m = mask_sets(n, 26);
        std::vector<double> ramp(static_cast<std::size_t>(rows));  // a different lambda per row
        for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = 0.5 + 0.5 * double(i) / double(ramp.size());
        const device_vec<double> lambdas(ramp);
        device_vec<float> a(n), ret(n);
        const auto o = adv::gae_options::verl(0.99, 0.95);
        graph_case c;
        c.name = "gae_per_row_lambda " + std::to_string(rows) + "x" + std::to_string(cols);
        c.workspace = adv::gae_per_row_lambda_workspace_bytes(rows, cols, o);
        c.outputs = {out_of(a), out_of(ret)};
        c.load = [&](int k) { r.load(k), v.load(k), m.load(k); };
        c.call = [&](const pt::exec::cuda_policy& p) {
            adv::gae_per_row_lambda(p, pt::device_view<const float, 2>(r.dev.data(), rows, cols),
                                    pt::device_view<const float, 2>(v.dev.data(), rows, cols),
                                    pt::device_view<const std::uint8_t, 2>(m.dev.data(), rows, cols), lambdas.cview(),
                                    pt::device_view<float, 2>(a.data(), rows, cols), pt::device_view<float, 2>(ret.data(), rows, cols), o);
        };
        pt::test::graph_replay_both(c);
    }
}

PT_TEST("graph: discounted_returns (packed and chunked)") {
    returns_case("returns packed", 50, 300);
    returns_case("returns chunked", 3, 7000);
}

// ---- policy loss and KL ------------------------------------------------------------------------

namespace {

template <class T>
void loss_case(const std::string& name, index_t B, index_t T_) {
    const std::size_t n = std::size_t(B * T_);
    auto lp = normal_sets<T>(n, 41, -2.0, 0.5), old = normal_sets<T>(n, 42, -2.0, 0.5), adv_ = normal_sets<T>(n, 43);
    auto ref = normal_sets<T>(n, 44, -2.0, 0.5);
    auto m = mask_sets(n, 45);
    device_vec<T> g(n);
    device_vec<pl::loss_result> res(1);
    pl::options o = pl::options::verl(pl::objective::ppo_clip);
    o.kl_coef = 0.001;
    graph_case c;
    c.name = name;
    c.workspace = pl::compute_workspace_bytes(B, T_, o);
    c.outputs = {out_of(g), out_of(res, 0)};
    c.load = [&](int k) { lp.load(k), old.load(k), adv_.load(k), ref.load(k), m.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        auto view = [&](const input_sets<T>& x) { return pt::device_view<const T, 2>(x.dev.data(), B, T_); };
        pl::device_extras ex;
        ex.ref_log_probs = view(ref);
        pl::compute(p, view(lp), view(old), view(adv_), pt::device_view<const std::uint8_t, 2>(m.dev.data(), B, T_),
                    pt::device_view<T, 2>(g.data(), B, T_), o, ex, pt::device_view<pl::loss_result, 0>(res.data()));
    };
    pt::test::graph_replay_both(c);
}

}  // namespace

PT_TEST("graph: fused policy loss with a device loss_result") {
    loss_case<float>("ppo_k3 float segment rows", 64, 200);
    loss_case<double>("ppo_k3 double chunked rows", 3, 6000);
    loss_case<__nv_bfloat16>("ppo_k3 bf16", 16, 1000);
}

PT_TEST("graph: kl_penalty") {
    const index_t B = 16, T_ = 300;
    const std::size_t n = std::size_t(B * T_);
    auto lp = normal_sets<float>(n, 51, -2.0, 0.5), ref = normal_sets<float>(n, 52, -2.0, 0.5);
    device_vec<float> kl(n), g(n);
    pl::kl_options o;
    o.log_ratio_clamp = 20;
    graph_case c;
    c.name = "kl_penalty k3";
    c.workspace = 0;  // elementwise: no scratch, no workspace function
    c.outputs = {out_of(kl), out_of(g)};
    c.load = [&](int k) { lp.load(k), ref.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        pl::kl_penalty(p, pt::device_view<const float, 2>(lp.dev.data(), B, T_), pt::device_view<const float, 2>(ref.dev.data(), B, T_),
                       pt::device_view<float, 2>(kl.data(), B, T_), pt::device_view<float, 2>(g.data(), B, T_), o);
    };
    pt::test::graph_replay_both(c);
}

// ---- sequence log-probs and the DPO family ----------------------------------------------------------

namespace {

void sequence_case(const std::string& name, index_t B, index_t T_) {
    const std::size_t n = std::size_t(B * T_);
    auto lp = normal_sets<float>(n, 61, -2.0, 0.5);
    auto m = mask_sets(n, 62);
    auto gs = normal_sets<double>(std::size_t(B), 63);
    device_vec<double> sums(static_cast<std::size_t>(B)), lens(static_cast<std::size_t>(B));
    device_vec<float> g(n);
    graph_case c;
    c.name = name;
    c.workspace = pp::sequence_log_probs_workspace_bytes(B, T_);  // the backward needs none
    c.outputs = {out_of(sums), out_of(lens), out_of(g)};
    c.load = [&](int k) { lp.load(k), m.load(k), gs.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        const pt::device_view<const std::uint8_t, 2> mv(m.dev.data(), B, T_);
        pp::sequence_log_probs(p, pt::device_view<const float, 2>(lp.dev.data(), B, T_), mv, sums.view(), lens.view());
        pp::sequence_log_probs_backward(p, gs.dev.cview(), mv, pt::device_view<float, 2>(g.data(), B, T_));
    };
    pt::test::graph_replay_both(c);
}

void dpo_case(const std::string& name, index_t B, index_t T_, const pp::dpo_options& o, bool ref) {
    const std::size_t n = std::size_t(B * T_);
    auto w = normal_sets<float>(n, 71, -1.5, 0.5), l = normal_sets<float>(n, 72, -1.5, 0.5);
    auto rw = normal_sets<float>(n, 73, -1.5, 0.5), rl = normal_sets<float>(n, 74, -1.5, 0.5);
    auto mw = mask_sets(n, 75), ml = mask_sets(n, 76);
    device_vec<float> gw(n), gl(n);
    device_vec<double> losses(static_cast<std::size_t>(B));
    device_vec<pp::device_dpo_result> res(1);
    graph_case c;
    c.name = name;
    c.workspace = pp::dpo_workspace_bytes(B, T_, o);
    c.outputs = {out_of(gw), out_of(gl), out_of(losses), out_of(res, 0)};
    c.load = [&](int k) { w.load(k), l.load(k), rw.load(k), rl.load(k), mw.load(k), ml.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        auto side = [&](const input_sets<float>& x, const input_sets<std::uint8_t>& m) {
            return pp::device_sequence_input::tokens(pt::device_view<const float, 2>(x.dev.data(), B, T_),
                                                     pt::device_view<const std::uint8_t, 2>(m.dev.data(), B, T_));
        };
        pp::device_pair_outputs out;
        out.losses = losses.view();
        const pp::device_sequence_input none;
        pp::dpo(p, side(w, mw), side(l, ml), ref ? side(rw, mw) : none, ref ? side(rl, ml) : none,
                pt::device_view<float, 2>(gw.data(), B, T_), pt::device_view<float, 2>(gl.data(), B, T_), o, out, {},
                pt::device_view<pp::device_dpo_result, 0>(res.data()));
    };
    pt::test::graph_replay_both(c);
}

}  // namespace

PT_TEST("graph: sequence_log_probs and its backward") {
    sequence_case("sequence_log_probs segment rows", 64, 300);
    sequence_case("sequence_log_probs chunked rows", 2, 9000);
}

PT_TEST("graph: dpo and simpo with a device result") {
    dpo_case("dpo sigmoid trl", 32, 700, pp::dpo_options::trl(), true);
    dpo_case("dpo sigmoid trl chunked", 2, 9000, pp::dpo_options::trl(), true);
    auto mpo = pp::dpo_options::trl({{pp::pair_loss::sigmoid, 0.8}, {pp::pair_loss::bco_pair, 0.2}, {pp::pair_loss::sft, 1.0}});
    dpo_case("dpo multi-loss sigmoid+bco+sft", 16, 500, mpo, true);
    dpo_case("simpo", 32, 700, pp::dpo_options::simpo(), false);
}

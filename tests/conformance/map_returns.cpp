// GAE and returns: verl compute_gae_advantage_return (core_algos.py, b178a3c) and OpenRLHF
// RemoteExperienceMaker.get_advantages_and_returns (experience_maker.py, 3c3be62). OpenRLHF
// get_cumulative_returns is mapped in map_openrlhf.cpp, and the gae estimator of
// compute_advantages_and_returns there too.

#include <posttrain/advantage/gae.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace adv = posttrain::advantage;
using posttrain::exec::seq;

// compute_gae_advantage_return(token_level_rewards, values, response_mask, gamma, lam): carry
// masking, returns = A + V, advantages whitened by masked_whiten over the batch (not re-masked).
void verl_gae(const case_context& c, produced& out) {
    const tensor r = c.input("token_level_rewards"), v = c.input("values"), m = c.input("response_mask");
    const index_t n = r.rows(), t = r.cols();
    tensor a = zeros({n, t}), ret = zeros({n, t});
    (void)adv::gae(seq, r.view2(), v.view2(), m.view2(), view2(a.data, n, t), view2(ret.data, n, t),
                   adv::gae_options::verl(c.param("gamma"), c.param("lam")));
    out.set("advantages", a);
    out.set("returns", ret);
}

// get_advantages_and_returns(values, rewards, action_mask, gamma, lambd): rewards and values times
// the mask, no carry, returns = A + V * mask, no whitening (compute_advantages_and_returns whitens).
void openrlhf_gae(const case_context& c, produced& out) {
    const tensor v = c.input("values"), r = c.input("rewards"), m = c.input("action_mask");
    const index_t n = r.rows(), t = r.cols();
    auto o = adv::gae_options::openrlhf(c.param("gamma"), c.param("lambd"));
    o.whiten = false;
    tensor a = zeros({n, t}), ret = zeros({n, t});
    (void)adv::gae(seq, r.view2(), v.view2(), m.view2(), view2(a.data, n, t), view2(ret.data, n, t), o);
    out.set("advantages", a);
    out.set("returns", ret);
}

}  // namespace

void register_returns(registry& r) {
    r.add("verl/compute_gae_advantage_return", {verl_gae, float64_path, "gae(gae_options::verl(gamma, lam))"});
    r.add("openrlhf/get_advantages_and_returns",
          {openrlhf_gae, float64_path, "gae(gae_options::openrlhf(gamma, lambd) with whiten = false)"});
}

}  // namespace conformance

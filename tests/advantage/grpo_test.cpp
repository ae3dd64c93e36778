#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::bitwise_equal;

namespace {
// The textbook formula, written independently of the library, for comparisons.
std::vector<double> reference_grpo(const std::vector<double>& r, const std::vector<std::int64_t>& off, double eps, bool scale) {
    std::vector<double> a(r.size());
    for (std::size_t g = 0; g + 1 < off.size(); ++g) {
        const auto lo = std::size_t(off[g]), hi = std::size_t(off[g + 1]);
        const double n = double(hi - lo);
        if (hi - lo < 2) {
            for (auto i = lo; i < hi; ++i) a[i] = 0;
            continue;
        }
        double mean = 0;
        for (auto i = lo; i < hi; ++i) mean += r[i] / n;
        double var = 0;
        for (auto i = lo; i < hi; ++i) var += (r[i] - mean) * (r[i] - mean) / (n - 1);
        bool constant = true;
        for (auto i = lo; i < hi; ++i) constant &= r[i] == r[lo];
        for (auto i = lo; i < hi; ++i) a[i] = constant ? 0.0 : (scale ? (r[i] - mean) / (std::sqrt(var) + eps) : r[i] - mean);
    }
    return a;
}
}  // namespace

TEST_CASE("grpo: hand-computed group of four and a zero-variance group") {
    std::vector<double> r{1, 0, 1, 1, 2, 2, 2, 2};
    std::vector<double> a(8);
    const auto res = adv::grpo(pt::exec::seq, r, pt::uniform_groups{4}, a, {.epsilon = 0.0});
    // mean 0.75, unbiased std = sqrt(0.25) = 0.5
    CHECK(a[0] == doctest::Approx(0.5));
    CHECK(a[1] == doctest::Approx(-1.5));
    for (int i = 4; i < 8; ++i) CHECK(a[i] == 0.0);
    CHECK(res.groups == 2);
    CHECK(res.zero_variance_groups == 1);
}

TEST_CASE_TEMPLATE("grpo: matches an independent formula and seq bitwise on ragged groups", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(3000, 20, 7);
    const auto r = pt::test::random_rewards(std::size_t(off.back()), 11);
    for (bool scale : {true, false}) {
        adv::grpo_options o;
        o.std_scale = scale ? adv::scale::group : adv::scale::none;
        std::vector<double> got(r.size()), oracle(r.size());
        (void)adv::grpo(B::policy(), r, pt::ragged(off), got, o);
        (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), oracle, o);
        CHECK(bitwise_equal(got, oracle));
        const auto want = reference_grpo(r, off, o.epsilon, scale);
        for (std::size_t i = 0; i < r.size(); ++i) REQUIRE(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
    }
}

TEST_CASE_TEMPLATE("grpo: every layout gives the same answer", B, POSTTRAIN_HOST_BACKENDS) {
    // 64 prompts x 16 rows, rows shuffled; uniform, ragged and id layouts must agree.
    const std::size_t P = 64, G = 16, N = P * G;
    const auto r = pt::test::random_rewards(N, 3, true);
    std::vector<double> uniform(N), ragged(N), by_id(N);
    std::vector<std::int64_t> off;
    for (std::size_t p = 0; p <= P; ++p) off.push_back(std::int64_t(p * G));
    (void)adv::grpo(B::policy(), r, pt::uniform_groups{G}, uniform);
    (void)adv::grpo(B::policy(), r, pt::ragged(off), ragged);
    CHECK(bitwise_equal(uniform, ragged));
    // Shuffle rows with their ids; per-row results must follow the rows.
    std::vector<std::size_t> perm(N);
    for (std::size_t i = 0; i < N; ++i) perm[i] = (i * 389) % N;  // 389 is coprime with 1024
    std::vector<double> rs(N);
    std::vector<std::int64_t> ids(N);
    for (std::size_t i = 0; i < N; ++i) {
        rs[i] = r[perm[i]];
        ids[i] = std::int64_t(perm[i] / G) * 1000003 - 5;  // sparse, negative ids
    }
    const auto grouping = pt::grouping::from_ids(B::policy(), ids);
    (void)adv::grpo(B::policy(), rs, grouping, by_id);
    for (std::size_t i = 0; i < N; ++i) CHECK(by_id[i] == doctest::Approx(uniform[perm[i]]).epsilon(1e-14));
}

TEST_CASE("grpo: invariant under shift and positive scale of the rewards") {
    const auto off = pt::test::random_offsets(200, 12, 5);
    const auto r = pt::test::random_rewards(std::size_t(off.back()), 9);
    std::vector<double> shifted(r.size()), a(r.size()), b(r.size());
    for (std::size_t i = 0; i < r.size(); ++i) shifted[i] = 3.5 * r[i] - 7.0;
    (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, {.epsilon = 0.0});
    (void)adv::grpo(pt::exec::seq, shifted, pt::ragged(off), b, {.epsilon = 0.0});
    for (std::size_t i = 0; i < r.size(); ++i) CHECK(b[i] == doctest::Approx(a[i]).epsilon(1e-9));
    // Dr. GRPO is shift invariant and scales linearly.
    (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, adv::grpo_options::dr_grpo());
    (void)adv::grpo(pt::exec::seq, shifted, pt::ragged(off), b, adv::grpo_options::dr_grpo());
    for (std::size_t i = 0; i < r.size(); ++i) CHECK(b[i] == doctest::Approx(3.5 * a[i]).epsilon(1e-9));
}

TEST_CASE("grpo: edge cases - N = 0, empty groups, singletons, zero variance with non-dyadic values") {
    std::vector<double> none_r, none_a;
    CHECK(adv::grpo(pt::exec::seq, none_r, pt::uniform_groups{4}, none_a).groups == 0);
    std::vector<std::int64_t> empty_off{0};
    CHECK(adv::grpo(pt::exec::seq, none_r, pt::ragged(empty_off), none_a).groups == 0);

    // groups: [] [0.35 x7] [] [4.2] [1, 2]
    std::vector<double> r{0.35, 0.35, 0.35, 0.35, 0.35, 0.35, 0.35, 4.2, 1, 2};
    std::vector<std::int64_t> off{0, 0, 7, 7, 8, 10};
    std::vector<double> a(r.size(), 99.0);
    const auto res = adv::grpo(pt::exec::seq, r, pt::ragged(off), a);
    CHECK(res.empty_groups == 2);
    CHECK(res.singleton_groups == 1);
    CHECK(res.zero_variance_groups == 1);
    for (int i = 0; i < 8; ++i) CHECK(a[i] == 0.0);  // exact zeros: max == min, whatever the rounding of the mean
    CHECK(a[8] == doctest::Approx(-0.5 / (std::sqrt(0.5) + 1e-6)));  // mean 1.5, std sqrt(0.5)

    SUBCASE("singleton policies") {
        adv::grpo_options o;
        o.singleton_groups = adv::singleton::raw;
        (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, o);
        CHECK(a[7] == doctest::Approx(4.2 / (1 + 1e-6)));
        o = adv::grpo_options::verl();
        (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, o);
        CHECK(a[7] == 4.2 / double(1.0f + 1e-6f));  // verl's float32 std tensor
        o.singleton_groups = adv::singleton::nan;
        (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, o);
        CHECK(std::isnan(a[7]));
        o.singleton_groups = adv::singleton::error;
        CHECK_THROWS_AS((void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, o), pt::invalid_argument);
    }
    SUBCASE("arithmetic zero variance keeps the frameworks' residue") {
        adv::grpo_options o;
        o.zero_variance_groups = adv::zero_variance::arithmetic;
        (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, o);
        for (int i = 0; i < 7; ++i) CHECK(std::abs(a[i]) < 1e-6);
    }
}

TEST_CASE("grpo: 64-bit offsets and sizes") {
    std::vector<double> r{1, 2, 3, 4};
    std::vector<double> a(4);
    std::vector<std::int64_t> off64{0, 2, 4};
    std::vector<std::int32_t> off32{0, 2, 4};
    std::vector<double> b(4);
    (void)adv::grpo(pt::exec::seq, r, pt::ragged(off64), a);
    (void)adv::grpo(pt::exec::seq, r, pt::ragged(off32), b);
    CHECK(bitwise_equal(a, b));
    // Offsets beyond 2^31 are representable and rejected only because they do not match N.
    std::vector<std::int64_t> big{0, std::int64_t(1) << 33};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pt::ragged(big), a),
                         doctest::Contains("offsets[G] must equal the number of rows 4, found 8589934592"), pt::invalid_argument);
}

TEST_CASE("grpo: batch scale, leave-one-out, NaN handling") {
    std::vector<double> r{1, 0, 0, 0, 1, 1};
    std::vector<double> a(6);
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{3}, a, {.std_scale = adv::scale::batch, .epsilon = 0.0});
    const double batch_std = std::sqrt((3 * 0.25) / 5.0 * 2);  // mean 0.5, unbiased over 6 values
    CHECK(a[0] == doctest::Approx((1 - 1.0 / 3) / batch_std));

    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{3}, a, {.std_scale = adv::scale::none, .leave_one_out = true});
    CHECK(a[0] == doctest::Approx(1.0));   // 1 - mean(0, 0)
    CHECK(a[1] == doctest::Approx(-0.5));  // 0 - mean(1, 0)

    std::vector<double> rn{1, std::nan(""), 0, 3};
    std::vector<double> an(4);
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, rn, pt::uniform_groups{4}, an),
                         doctest::Contains("non-finite value nan at index 1"), pt::invalid_argument);
    adv::grpo_options ignore;
    ignore.nonfinite_rewards = adv::nonfinite::ignore;
    const auto res = adv::grpo(pt::exec::seq, rn, pt::uniform_groups{4}, an, ignore);
    CHECK(res.ignored_rows == 1);
    CHECK(an[1] == 0.0);
    CHECK(an[0] == doctest::Approx((1 - 4.0 / 3) / (std::sqrt(((1 - 4.0 / 3) * (1 - 4.0 / 3) + (16.0 / 9) + (3 - 4.0 / 3) * (3 - 4.0 / 3)) / 2) + 1e-6)));
    adv::grpo_options prop;
    prop.nonfinite_rewards = adv::nonfinite::propagate;
    (void)adv::grpo(pt::exec::seq, rn, pt::uniform_groups{4}, an, prop);
    CHECK(std::isnan(an[0]));
}

TEST_CASE("grpo: float and double in any combination") {
    std::vector<float> rf{1, 0, 1, 1};
    std::vector<double> ad(4);
    std::vector<float> af(4);
    (void)adv::grpo(pt::exec::seq, rf, pt::uniform_groups{4}, ad);
    (void)adv::grpo(pt::exec::seq, rf, pt::uniform_groups{4}, af);
    for (int i = 0; i < 4; ++i) CHECK(af[i] == float(ad[i]));
}

TEST_CASE("grpo: bad input names the function and the argument") {
    std::vector<double> r{1, 2, 3, 4}, a(3), ok(4);
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{2}, a),
                         "posttrain::advantage::grpo: argument 'advantages': expected length (one advantage per reward) 4, found 3",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{3}, ok),
                         doctest::Contains("argument 'groups': the number of rows 4 is not a multiple of the uniform group size 3"),
                         pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{0}, ok), pt::invalid_argument);
    std::vector<std::int64_t> decreasing{0, 3, 2, 4}, bad_first{1, 4}, bad_last{0, 5}, empty{};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pt::ragged(decreasing), ok),
                         doctest::Contains("offsets must be non-decreasing"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pt::ragged(bad_first), ok), doctest::Contains("offsets[0] must be 0"),
                         pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::grpo(pt::exec::seq, r, pt::ragged(bad_last), ok), pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::grpo(pt::exec::seq, r, pt::ragged(empty), ok), pt::invalid_argument);
    std::vector<double> inf{1, std::numeric_limits<double>::infinity(), 0, 0};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, inf, pt::uniform_groups{2}, ok),
                         doctest::Contains("argument 'rewards': non-finite value inf at index 1"), pt::invalid_argument);
    // In place (output aliasing the input) is refused: outputs are written while inputs are read.
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{2}, r),
                         doctest::Contains("the output overlaps the input 'rewards'"), pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{2}, ok, {.epsilon = -1.0}), pt::invalid_argument);
    // Permuted layouts are validated too.
    std::vector<std::int64_t> perm{0, 1, 1, 3}, off{0, 2, 4};
    pt::permuted_groups pg{pt::tensor_view<const std::int64_t, 1>(perm.data(), 4), pt::tensor_view<const std::int64_t, 1>(off.data(), 3)};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pg, ok), doctest::Contains("permutation repeats row 1"), pt::invalid_argument);
    perm = {0, 1, 2, 9};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, pg, ok), doctest::Contains("out of range"), pt::invalid_argument);
}

TEST_CASE("grpo: DLPack tensors are checked at run time") {
    std::vector<double> r{1, 0, 1, 1};
    std::vector<float> a(4);
    std::int64_t shape[1] = {4};
    DLTensor rt{r.data(), {kDLCPU, 0}, 1, {kDLFloat, 64, 1}, shape, nullptr, 0};
    DLTensor at{a.data(), {kDLCPU, 0}, 1, {kDLFloat, 32, 1}, shape, nullptr, 0};
    (void)adv::grpo(pt::exec::seq, rt, pt::uniform_groups{4}, at);
    CHECK(a[1] == doctest::Approx(-0.75 / (0.5 + 1e-6)));
    DLTensor wrong_dtype = rt;
    wrong_dtype.dtype = {kDLInt, 64, 1};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, wrong_dtype, pt::uniform_groups{4}, at),
                         "posttrain::advantage::grpo: argument 'rewards': expected dtype one of {float32, float64}, found int64",
                         pt::invalid_argument);
    DLTensor on_gpu = rt;
    on_gpu.device = {kDLCUDA, 0};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, on_gpu, pt::uniform_groups{4}, at),
                         doctest::Contains("expected a tensor on the host (cpu), found device 'cuda'"), pt::invalid_argument);
    DLTensor rank2 = rt;
    std::int64_t shape2[2] = {2, 2};
    rank2.ndim = 2;
    rank2.shape = shape2;
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, rank2, pt::uniform_groups{4}, at),
                         doctest::Contains("expected rank 1, found rank 2"), pt::invalid_argument);
}

TEST_CASE("group_mean_std: float64 and verl float32 forms") {
    std::vector<double> r{0, 1, 1, 1, 5, 7};
    std::vector<std::int64_t> off{0, 4, 5, 6, 6};
    std::vector<double> mean(4), sd(4), count(4);
    adv::group_mean_std(pt::exec::seq, r, pt::ragged(off), mean, sd, count);
    CHECK(mean[0] == doctest::Approx(0.75));
    CHECK(sd[0] == doctest::Approx(0.5));
    CHECK(mean[1] == 0.0);  // singleton_unit
    CHECK(sd[1] == 1.0);
    CHECK(count[3] == 0.0);
    std::vector<float> mf(4), sf(4), cf(4);
    adv::group_mean_std(pt::exec::seq, r, pt::ragged(off), mf, sf, cf, adv::group_mean_std_options::verl());
    CHECK(mf[0] == 0.75f);
    CHECK(sf[0] == doctest::Approx(0.5f));
}

TEST_CASE("group_mean_std: outputs overlapping the rewards or one another are refused") {
    std::vector<double> buf{0, 1, 2, 3, 4, 5, 9, 9}, sd(2), count(2), ms(3);
    const pt::tensor_view<const double, 1> r(buf.data(), 6);
    CHECK_THROWS_WITH_AS(adv::group_mean_std(pt::exec::seq, r, pt::uniform_groups{3}, pt::make_view(buf.data() + 5, 2), sd, count),
                         doctest::Contains("overlaps the input 'rewards'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::group_mean_std(pt::exec::seq, r, pt::uniform_groups{3}, pt::make_view(ms.data(), 2),
                                             pt::make_view(ms.data() + 1, 2), count),
                         doctest::Contains("overlaps the input 'mean'"), pt::invalid_argument);
    CHECK(buf[5] == 5.0);  // nothing written
}

TEST_CASE("grpo: an error raised inside exec::par reaches the caller") {
    std::vector<double> r(1 << 16, 1.0), a(1 << 16);
    adv::grpo_options o;
    o.singleton_groups = adv::singleton::error;
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::par.with_threads(4), r, pt::uniform_groups{1}, a, o),
                         doctest::Contains("has a single row (singleton::error)"), pt::invalid_argument);
}

TEST_CASE("grpo: every code path gives the same bits (contiguous, strided, permuted)") {
    // Ragged groups with singletons, under verl's preset and under batch scaling: the contiguous
    // fast path, the strided general kernel and the id layout must agree bit for bit.
    const auto off = pt::test::random_offsets(1500, 5, 17);
    const auto r = pt::test::random_rewards(std::size_t(off.back()), 18);
    const auto n = pt::index_t(r.size());
    std::vector<double> strided_storage(2 * r.size());
    for (std::size_t i = 0; i < r.size(); ++i) strided_storage[2 * i] = r[i];
    const pt::index_t ext[1] = {n}, str[1] = {2};
    const pt::tensor_view<const double, 1> strided(strided_storage.data(), ext, str);
    std::vector<std::int64_t> perm(r.size());
    for (std::size_t i = 0; i < r.size(); ++i) perm[i] = std::int64_t(i);
    const pt::permuted_groups identity{pt::tensor_view<const std::int64_t, 1>(perm.data(), n),
                                       pt::tensor_view<const std::int64_t, 1>(off.data(), pt::index_t(off.size()))};
    adv::grpo_options batch_raw;
    batch_raw.std_scale = adv::scale::batch;
    batch_raw.singleton_groups = adv::singleton::raw;
    for (const auto& o : {adv::grpo_options::verl(), batch_raw, adv::grpo_options{}}) {
        std::vector<double> a(r.size()), b(r.size()), c(r.size());
        (void)adv::grpo(pt::exec::seq, r, pt::ragged(off), a, o);
        (void)adv::grpo(pt::exec::seq, strided, pt::ragged(off), b, o);
        (void)adv::grpo(pt::exec::seq, r, identity, c, o);
        CHECK(bitwise_equal(a, b));
        CHECK(bitwise_equal(a, c));
    }
}

TEST_CASE("grpo: float groups of 16 give the same bits on the vectorized and the general paths") {
    // Contiguous float groups of 16 take the blocked kernel (with AVX-512 when the build targets it);
    // a strided view of the same values takes the general kernel. Constant, singleton-free groups
    // and groups with ties are included; 1000 groups leave a partial block at the end.
    const std::size_t groups = 1000, n = 16 * groups;
    auto r64 = pt::test::random_rewards(n, 23);
    std::vector<float> r(n);
    for (std::size_t i = 0; i < n; ++i) r[i] = float(r64[i]);
    for (std::size_t i = 0; i < 16; ++i) r[16 * 7 + i] = 0.35f;        // a constant group
    for (std::size_t i = 0; i < 16; i += 2) r[16 * 9 + i] = r[16 * 9];  // ties
    std::vector<float> strided_storage(3 * n);
    for (std::size_t i = 0; i < n; ++i) strided_storage[3 * i] = r[i];
    const pt::index_t ext[1] = {pt::index_t(n)}, str[1] = {3};
    const pt::tensor_view<const float, 1> strided(strided_storage.data(), ext, str);
    for (const auto& o : {adv::grpo_options{}, adv::grpo_options::verl(), adv::grpo_options::trl(),
                          adv::grpo_options::dr_grpo()}) {
        std::vector<float> a(n), b(n);
        const auto ra = adv::grpo(pt::exec::seq, r, pt::uniform_groups{16}, a, o);
        const auto rb = adv::grpo(pt::exec::seq, strided, pt::uniform_groups{16}, b, o);
        CHECK(bitwise_equal(a, b));
        CHECK(ra.zero_variance_groups == rb.zero_variance_groups);
    }
}

TEST_CASE("grpo and group_mean_std: an output over the layout's buffers is refused before anything is written") {
    static_assert(sizeof(double) == sizeof(std::int64_t));
    const std::vector<double> r{1, 2, 3, 5};
    // Ragged: advantages over the offsets would turn them into the advantages' bits mid-call.
    std::vector<std::int64_t> off{0, 2, 4, 0};
    const auto off_before = off;
    const pt::ragged_groups<std::int64_t> ragged{pt::tensor_view<const std::int64_t, 1>(off.data(), 3)};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, ragged, pt::tensor_view<double, 1>(reinterpret_cast<double*>(off.data()), 4)),
                         "posttrain::advantage::grpo: argument 'advantages': overlaps the layout's 'offsets'; pass a separate buffer",
                         pt::invalid_argument);
    CHECK(off == off_before);
    // Permuted: advantages over the permutation (group 0 is rows 2, 0; group 1 rows 3, 1).
    std::vector<pt::index_t> perm{2, 0, 3, 1}, poff{0, 2, 4};
    const auto perm_before = perm;
    const pt::permuted_groups permuted{pt::tensor_view<const pt::index_t, 1>(perm.data(), 4),
                                       pt::tensor_view<const pt::index_t, 1>(poff.data(), 3)};
    CHECK_THROWS_WITH_AS((void)adv::grpo(pt::exec::seq, r, permuted, pt::tensor_view<double, 1>(reinterpret_cast<double*>(perm.data()), 4)),
                         "posttrain::advantage::grpo: argument 'advantages': overlaps the layout's 'permutation'; pass a separate buffer",
                         pt::invalid_argument);
    CHECK(perm == perm_before);
    // A grouping_result: its permutation is the layout's buffer.
    auto g = pt::grouping::from_ids(pt::exec::seq, std::vector<std::int64_t>{7, 3, 7, 3});
    const auto g_before = g.permutation;
    CHECK_THROWS_WITH_AS(
        (void)adv::grpo(pt::exec::seq, r, g, pt::tensor_view<double, 1>(reinterpret_cast<double*>(g.permutation.data()), 4)),
        doctest::Contains("overlaps the layout's 'permutation'"), pt::invalid_argument);
    CHECK(g.permutation == g_before);
    // group_mean_std: every output, the second and third ones too (count over the offsets' last two).
    std::vector<double> mean(2, -1), sd(2, -1), count(2, -1);
    CHECK_THROWS_WITH_AS(adv::group_mean_std(pt::exec::seq, r, ragged, mean, sd,
                                             pt::tensor_view<double, 1>(reinterpret_cast<double*>(off.data() + 1), 2)),
                         "posttrain::advantage::group_mean_std: argument 'count': overlaps the layout's 'offsets'; pass a separate buffer",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::group_mean_std(pt::exec::seq, r, permuted, mean,
                                             pt::tensor_view<double, 1>(reinterpret_cast<double*>(poff.data()), 2), count),
                         doctest::Contains("argument 'std': overlaps the layout's 'offsets'"), pt::invalid_argument);
    CHECK(off == off_before);
    CHECK(mean == std::vector<double>(2, -1));
    CHECK(count == std::vector<double>(2, -1));
    // Separate buffers (the layout untouched) still work; uniform layouts have no buffer.
    std::vector<double> a(4);
    (void)adv::grpo(pt::exec::seq, r, ragged, a);
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{2}, a);
}

// libtorch adapter: torch tensors go through the DLPack form and are checked at the call.

#include <posttrain/adapt/torch.hpp>  // first: libtorch's dlpack.h must win over posttrain's declaration

#include <doctest/doctest.h>

#include <ATen/Functions.h>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>

namespace pt = posttrain;

namespace {
std::vector<float> reference(const std::vector<float>& r) {
    std::vector<float> a(r.size());
    (void)pt::advantage::grpo(pt::exec::seq, r, pt::uniform_groups{2}, a);
    return a;
}
}  // namespace

TEST_CASE("adapt torch: grpo on contiguous and strided tensors") {
    const std::vector<float> r{1, 2, 3, 5};
    const auto want = reference(r);
    SUBCASE("contiguous float32") {
        at::Tensor in = at::tensor(at::ArrayRef<float>(r));
        at::Tensor out = at::empty({4});
        auto res = pt::advantage::grpo(pt::exec::seq, in, pt::uniform_groups{2}, out);
        CHECK(res.groups == 2);
        for (int i = 0; i < 4; ++i) CHECK(out[i].item<float>() == want[std::size_t(i)]);
    }
    SUBCASE("a column of a matrix in, a strided slice out") {
        at::Tensor m = at::zeros({4, 3});
        m.select(1, 1).copy_(at::tensor(at::ArrayRef<float>(r)));
        at::Tensor out = at::full({8}, -9.0f);
        (void)pt::advantage::grpo(pt::exec::seq, m.select(1, 1), pt::uniform_groups{2}, out.slice(0, 1, 8, 2));
        for (int i = 0; i < 4; ++i) CHECK(out[1 + 2 * i].item<float>() == want[std::size_t(i)]);
        CHECK(out[0].item<float>() == -9.0f);
    }
    SUBCASE("float64 with a storage offset") {
        at::Tensor big = at::arange(10, at::kDouble);
        at::Tensor out = at::empty({4}, at::kDouble);
        (void)pt::advantage::grpo(pt::exec::seq, big.slice(0, 2, 6), pt::uniform_groups{2}, out);
        CHECK(out[0].item<double>() < 0);
        CHECK(out[0].item<double>() == -out[1].item<double>());
    }
}

TEST_CASE("adapt torch: bad tensors are rejected naming function and argument") {
    at::Tensor out = at::empty({4});
    CHECK_THROWS_WITH_AS((void)pt::advantage::grpo(pt::exec::seq, at::arange(4, at::kInt), pt::uniform_groups{2}, out),
                         "posttrain::advantage::grpo: argument 'rewards': expected dtype one of {float32, float64}, found int32",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pt::advantage::grpo(pt::exec::seq, at::zeros({2, 2}), pt::uniform_groups{2}, out),
                         "posttrain::advantage::grpo: argument 'rewards': expected rank 1, found rank 2", pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pt::advantage::grpo(pt::exec::seq, at::Tensor(), pt::uniform_groups{2}, out),
                         doctest::Contains("the tensor is undefined"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pt::advantage::grpo(pt::exec::seq, at::zeros({4}), pt::uniform_groups{2}, at::empty({4}, at::kHalf)),
                         doctest::Contains("argument 'advantages': expected dtype one of {float32, float64}, found float16"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pt::advantage::grpo(pt::exec::seq, at::_neg_view(at::ones({4})), pt::uniform_groups{2}, out),
                         doctest::Contains("lazy negation"), pt::invalid_argument);
}

TEST_CASE("adapt torch: bool and integer tensors") {
    const DLTensor b = pt::tensor_traits<at::Tensor>::dlpack(at::ones({3}, at::kBool));
    CHECK(b.dtype.code == 6);
    CHECK(b.dtype.bits == 8);
    const at::Tensor ids = at::tensor({3, 1, 3}, at::kLong);
    const auto g = pt::grouping::from_ids(pt::exec::seq, ids);
    CHECK(g.num_groups() == 2);
}

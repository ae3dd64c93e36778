// An Eigen expression without direct access (a + b): posttrain never evaluates into a hidden temporary.
#include <Eigen/Core>

#include <posttrain/adapt/eigen.hpp>
#include <posttrain/advantage/grpo.hpp>

int main() {
    Eigen::VectorXf a = Eigen::VectorXf::Ones(4), b = Eigen::VectorXf::LinSpaced(4, 0, 3);
    Eigen::VectorXf advantages(4);
#if defined(POSTTRAIN_SHOULD_FAIL)
    auto r = posttrain::advantage::grpo(posttrain::exec::seq, a + b, posttrain::uniform_groups{2}, advantages);
#else
    const Eigen::VectorXf sum = a + b;
    auto r = posttrain::advantage::grpo(posttrain::exec::seq, sum, posttrain::uniform_groups{2}, advantages);
#endif
    return static_cast<int>(r.groups) - 2;
}

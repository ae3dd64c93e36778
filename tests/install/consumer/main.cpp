// What a user writes: GRPO advantages of rewards held in std and Eigen containers.
#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <vector>

#include <posttrain/adapt/eigen.hpp>
#include <posttrain/posttrain.hpp>

namespace pt = posttrain;

int main() {
    const std::vector<float> rewards{0, 1, 1, 1, 0, 0, 1, 0};
    std::vector<float> advantages(rewards.size());
    const auto stats = pt::advantage::grpo(pt::exec::seq, rewards, pt::uniform_groups{4}, advantages);

    Eigen::VectorXf r = Eigen::Map<const Eigen::VectorXf>(rewards.data(), 8);
    Eigen::MatrixXf out(2, 8);  // write into the second row of a column-major matrix
    (void)pt::advantage::grpo(pt::exec::seq, r, pt::uniform_groups{4}, out.row(1));

    int bad = stats.groups == 2 ? 0 : 1;
    for (int i = 0; i < 8; ++i) bad += std::fabs(out(1, i) - advantages[std::size_t(i)]) > 0.0f;
    bad += !(advantages[0] < 0 && advantages[1] > 0);
    std::printf("posttrain %d.%d consumer: %s\n", pt::version_major, pt::version_minor, bad ? "FAILED" : "ok");
    return bad;
}

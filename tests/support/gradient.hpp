#pragma once
// Central finite differences against an analytic gradient: one check for every loss test.

#include <cmath>
#include <functional>
#include <vector>

#include <doctest/doctest.h>

namespace posttrain::test {

// How close a finite difference fd must be to the analytic gradient g: |fd - g| <= rel * |g| + abs.
// Tests whose losses are less smooth (or scaled) pass their own.
struct fd_tolerance {
    double rel = 1e-6;
    double abs = 1e-9;
};

// Checks grad against central differences (f(x + h) - f(x - h)) / 2h, h = 1e-6, of the scalar f at every
// coordinate of x (x is perturbed in place and restored; f reads it). Where a mask is given, its zero
// positions are not differenced: their gradient must be exactly 0 instead (padding never gets any).
inline void check_gradient(std::vector<double>& x, const std::vector<double>& grad, const std::function<double()>& f,
                           const std::vector<double>* mask = nullptr, fd_tolerance tol = {}) {
    for (std::size_t j = 0; j < x.size(); ++j) {
        if (mask && (*mask)[j] == 0) {
            CHECK(grad[j] == 0.0);
            continue;
        }
        const double h = 1e-6, x0 = x[j];
        x[j] = x0 + h;
        const double up = f();
        x[j] = x0 - h;
        const double down = f();
        x[j] = x0;
        const double fd = (up - down) / (2 * h);
        CHECK_MESSAGE(std::fabs(fd - grad[j]) <= tol.rel * std::fabs(grad[j]) + tol.abs,
                      "coordinate " << j << ": fd " << fd << " analytic " << grad[j]);
    }
}

}  // namespace posttrain::test

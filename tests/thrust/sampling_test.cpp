// exec::thrust(thrust::omp::par) against exec::seq for the sampling module. Placeholder until the
// Thrust sampling path lands.

// exec::thrust(thrust::omp::par) against exec::seq for the credit module. Placeholder until the
// Thrust credit path lands.

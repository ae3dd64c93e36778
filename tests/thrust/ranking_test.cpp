// exec::thrust(thrust::omp::par) against exec::seq for the ranking module (rating fits, rank
// transforms). Placeholder until the Thrust ranking path lands.

// The main() of multi-rank tests. Run directly (as `bazel test` does), the binary starts
// itself again under `mpirun --oversubscribe -np R` (R from --ranks=R, default 4) and
// returns mpirun's exit status; under mpirun each rank runs every test with TestWorld()
// as its world. Only rank 0 prints results and writes the test XML; a test that fails
// on any rank fails the run. Tests must call collectives in the same order on every
// rank (so they use EXPECT_*, not ASSERT_*, around collectives).
#ifndef PMOL_TESTS_DIST_MPI_TEST_MAIN_H_
#define PMOL_TESTS_DIST_MPI_TEST_MAIN_H_

#include "dist/comm.h"

namespace pmol::dist {

Comm& TestWorld();

}  // namespace pmol::dist

#endif  // PMOL_TESTS_DIST_MPI_TEST_MAIN_H_

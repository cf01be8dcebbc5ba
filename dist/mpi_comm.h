// The MPI backend of Comm (CPU buffers), and the MPI session of a process launched by
// `mpirun` or `srun` (PMIx / PMI2). Collectives are MPI's non-blocking ones, waited on
// with a deadline: when a peer dies, a rank does not hang in a collective for ever but
// reports which collective of which group stalled and aborts the job (MPI_Abort), after
// `timeout_seconds` at most (the launcher usually stops the job sooner, naming the rank
// that died).
#ifndef DIST_MPI_COMM_H_
#define DIST_MPI_COMM_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "dist/comm.h"

namespace pmol::dist {

// Whether this process was started by an MPI launcher (mpirun's OMPI_COMM_WORLD_SIZE,
// PMIx's PMIX_RANK, PMI2's PMI_RANK): then the world comes from MPI.
bool LaunchedByMpiLauncher();

// Initialises MPI once per process (threads: funneled) and finalises it at exit.
// `timeout_seconds` bounds every collective's wait (> 0).
struct MpiWorld {
  std::unique_ptr<Comm> world;
  int local_rank = 0;  // rank among the processes of this node (MPI's shared-memory split)
  int local_size = 1;
};
absl::StatusOr<MpiWorld> InitMpiWorld(double timeout_seconds);

}  // namespace pmol::dist

#endif  // DIST_MPI_COMM_H_

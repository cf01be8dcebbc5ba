// A probe for MPI launchers (srun --mpi=pmix, mpirun): every rank initialises MPI, sums
// 1 over all ranks with MPI_Allreduce, finds its local rank from MPI_Comm_split_type
// (ranks sharing a node) and prints one line of key=value pairs: what MPI says (rank,
// size, local_rank, local_size, sum) and the launcher's environment variables.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0, one = 1, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  int local_rank = 0, local_size = 0;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  std::string line = "rank=" + std::to_string(rank) + " size=" + std::to_string(size) +
                     " local_rank=" + std::to_string(local_rank) +
                     " local_size=" + std::to_string(local_size) + " sum=" + std::to_string(sum);
  for (const char* var : {"PMIX_RANK", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NODEID",
                          "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"}) {
    const char* value = std::getenv(var);
    line += std::string(" ") + var + "=" + (value != nullptr ? value : "-");
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  MPI_Finalize();
  return 0;
}

// `pmol train --config=run.textproto [--set=field.path=value ...] [--resume|--noresume]`:
// trains as the run config says (pmol/train/trainer.h): progress lines on stdout,
// metrics in OUTPUT_DIR/metrics.jsonl and OUTPUT_DIR/tensorboard, checkpoints, and at
// the end the adapter / PEFT / merged-weights folders and eval.json.
// --set overrides one config field (repeatable; proto/run_config_io.h ApplyOverride).
// --resume / --noresume override checkpoint.resume (default: resume when a valid
// checkpoint exists). SIGTERM or SIGINT stops after the current step with a checkpoint
// (a second SIGINT stops at once); running the same command again resumes.
// Started by mpirun or srun (several ranks), the world comes from MPI; only rank 0
// prints. With model.threads: 0, the cores of a node are shared out between its ranks;
// with model.device: "cuda", each rank of a node takes its own GPU (dist/local_device.h)
// and GPU buffers are reduced over NCCL (dist/nccl_comm.h).
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <thread>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gflags/gflags.h"
#include "dist/local_device.h"
#include "dist/mpi_comm.h"
#include "dist/nccl_comm.h"
#include "kernels/backend.h"
#include "launch/command.h"
#include "pmol/core/status.h"
#include "pmol/train/trainer.h"
#include "proto/run_config_io.h"

DECLARE_string(config);
DEFINE_string(set, "",
              "train: override a config field, field.path=value (repeat the flag for several; "
              "e.g. --set=optimizer.lr=1e-4 --set=output_dir=runs/a)");
DEFINE_bool(resume, true,
            "train: continue from the newest valid checkpoint (overrides checkpoint.resume when "
            "given; --noresume starts afresh)");

namespace pmol {
namespace {

volatile std::sig_atomic_t g_stop_requested = 0;

void OnStopSignal(int signal) {
  if (signal == SIGINT && g_stop_requested) std::_Exit(130);  // second Ctrl-C: now
  g_stop_requested = 1;
}

absl::Status RunTrain() {
  if (FLAGS_config.empty()) return absl::InvalidArgumentError("--config (a run config, text proto) is required");
  PMOL_ASSIGN_OR_RETURN(config::RunConfig config, config::ReadRunConfig(FLAGS_config));
  if (!FLAGS_set.empty()) {
    // pmol_main joins the values of a repeated --set with '\x1f'.
    for (absl::string_view assignment : absl::StrSplit(FLAGS_set, '\x1f')) {
      PMOL_RETURN_IF_ERROR(config::ApplyOverride(std::string(assignment), &config));
    }
  }
  gflags::CommandLineFlagInfo resume;
  if (gflags::GetCommandLineFlagInfo("resume", &resume) && !resume.is_default) {
    config.mutable_checkpoint()->set_resume(FLAGS_resume);
  }
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGINT, OnStopSignal);
  TrainerOptions options;
  options.out = &std::cout;
  options.stop_requested = &g_stop_requested;
  std::unique_ptr<dist::Comm> world;
  if (dist::LaunchedByMpiLauncher()) {
    PMOL_ASSIGN_OR_RETURN(dist::MpiWorld mpi, dist::InitMpiWorld(config.parallel().collective_timeout_s()));
    world = std::move(mpi.world);
    options.world = world.get();
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    if (config.model().threads() == 0 && mpi.local_size > 1) {
      config.mutable_model()->set_threads(std::max(1, cores / mpi.local_size));
    }
    if (config.model().device() == "cuda") {  // before the CUDA runtime starts
      absl::StatusOr<std::string> devices =
          dist::LocalRankVisibleDevices(std::getenv("CUDA_VISIBLE_DEVICES"), mpi.local_rank, mpi.local_size);
      absl::Status bound = dist::AgreeOnStatus(*world, devices.status());
      if (!bound.ok()) {
        if (world->rank() != 0) std::exit(1);
        return bound;
      }
      setenv("CUDA_VISIBLE_DEVICES", devices->c_str(), 1);
      if (world->size() > 1) {
        // GPU buffers travel over NCCL; host ones (status, metrics) stay on MPI.
        absl::StatusOr<Backend*> gpu = GetBackend(DeviceType::kCuda);
        bound = dist::AgreeOnStatus(*world, gpu.status());
        if (!bound.ok()) {
          if (world->rank() != 0) std::exit(1);
          return bound;
        }
        dist::NcclOptions nccl;
        nccl.timeout_seconds = config.parallel().collective_timeout_s();
        PMOL_ASSIGN_OR_RETURN(world, dist::CreateNcclComm(std::move(world), *gpu, nccl));
        options.world = world.get();
      }
    }
    if (world->rank() == 0 && world->size() > 1) {
      std::cout << world->size() << " ranks (" << mpi.local_size << " on this node, "
                << config.model().threads() << " threads each)" << std::endl;
    }
  }
  absl::StatusOr<TrainerResult> result = RunTraining(config, options);
  if (!result.ok()) {
    // The ranks agree on errors (the trainer returns the same one everywhere): rank 0 reports.
    if (world != nullptr && world->rank() != 0) std::exit(1);
    return absl::Status(result.status().code(), absl::StrCat(FLAGS_config, ": ", result.status().message()));
  }
  if (world != nullptr && world->rank() != 0) return absl::OkStatus();
  std::cout << "done: " << result->steps << " steps";
  if (result->skipped_steps > 0) std::cout << " (" << result->skipped_steps << " skipped)";
  std::cout << "; outputs in " << result->output_dir << std::endl;
  return absl::OkStatus();
}

}  // namespace

extern const Command kTrainCommand = {
    "train", "train (SFT, reward model, DPO with LoRA / full / PMoL) from a run config", &RunTrain};

}  // namespace pmol

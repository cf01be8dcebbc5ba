#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for trying pmol_train.sbatch and for the Slurm
# test: munged, slurmctld and slurmd run as root daemons with every file (config, munge
# key and socket, state, spool, pid files, logs) under one private state folder (seen
# through a short link in /tmp when its path is long), on their own ports, so nothing
# else on the machine (a system Slurm or munge included) is touched.
#
#   local_cluster.sh start STATE_DIR   writes the config, starts the daemons, waits until
#                                      the node is idle, prints `export SLURM_CONF=...`
#   local_cluster.sh stop STATE_DIR    cancels this cluster's jobs, stops its daemons and
#                                      any process left from its jobs
#   local_cluster.sh env STATE_DIR     prints `export SLURM_CONF=...` (eval it to use
#                                      sbatch/srun/squeue/scontrol against this cluster)
#
# Ports: PMOL_SLURMCTLD_PORT and PMOL_SLURMD_PORT, or a free pair in 16817-17000 (tried
# from a random pair on). Job ids start at a random number. So clusters in different
# folders (tests running side by side) do not meet: not on ports, not in PMIx or Open MPI
# names, which carry the job id.
# MPI: MpiDefault=none; `srun --mpi=pmix` gives ranks (Debian 12's Open MPI has no PMI-2
# client: with --mpi=pmi2 or none its ranks fail in MPI_Init). No cgroups (containers):
# processes are tracked by process group, tasks are not bound. Needs Debian's slurm-wlm
# and munge (launch/setup.sh) and root. Stop, then start again on the same folder, works.
set -euo pipefail

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: local_cluster.sh start|stop|env STATE_DIR"
action=$1
# The daemons and mungekey live in sbin, which a test's or a user's PATH may lack.
export PATH=$PATH:/usr/sbin:/sbin
if [ "$action" = start ]; then mkdir -p "$2"; fi
if [ ! -d "$2" ]; then
  [ "$action" = stop ] && exit 0  # nothing was started there
  die "$2: no such folder"
fi
state=$(cd "$2" && pwd -P)
# Unix sockets (munge's, slurmstepd's and PMIx's, all under the state folder) have paths
# of at most 107 bytes, which a deep folder (a Bazel test's TEST_TMPDIR) exceeds: the
# daemons then see the folder through a short link in /tmp, named after its real path
# (so start, stop and env agree), removed by stop.
link=""
if [ ${#state} -gt 40 ]; then
  link=/tmp/pmol-slurm-$(printf '%s' "$state" | md5sum | cut -c1-12)
  if [ -e "$link" ] && [ ! -L "$link" ]; then die "$link is in the way (not a link): remove it"; fi
  ln -sfn "$state" "$link" || die "cannot make the short link $link to $state"
  state=$link
fi
conf=$state/slurm.conf
node=$(hostname -s)

port_free() { ! ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":$1\$"; }

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

print_env() { echo "export SLURM_CONF=$conf"; }

# Stops the daemons whose pid files are given: SIGTERM to all at once (each takes about
# 2 s to exit), then SIGKILL to those left after 10 s.
stop_daemons() {
  local pidfile pids=() pid alive
  for pidfile in "$@"; do
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      pids+=("$pid")
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -f "$@"
}

# The daemons are started with PMOL_LOCAL_CLUSTER_STATE=<state dir> in their environment,
# which slurmstepd inherits. Whatever carries it, and every descendant (the jobs' tasks),
# is killed; this script and its callers are spared.
kill_leftovers() {
  local marked=() pid
  for env_file in /proc/[0-9]*/environ; do
    pid=${env_file#/proc/}; pid=${pid%/environ}
    if { tr '\0' '\n' < "$env_file"; } 2>/dev/null | grep -qxF "PMOL_LOCAL_CLUSTER_STATE=$state"; then
      marked+=("$pid")
    fi
  done
  [ ${#marked[@]} -gt 0 ] || return 0
  local spared=" " p=$$
  while [ -n "$p" ] && [ "$p" != 0 ]; do
    spared+="$p "
    p=$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')
  done
  ps -e -o pid=,ppid= | awk -v roots="${marked[*]}" -v spared="$spared" '
    { parent[$1] = $2; order[NR] = $1 }
    END {
      n = split(roots, r, " "); for (i = 1; i <= n; i++) doomed[r[i]] = 1
      do {  # add descendants until nothing changes
        changed = 0
        for (i = 1; i <= NR; i++) { c = order[i]
          if (!(c in doomed) && (parent[c] in doomed)) { doomed[c] = 1; changed = 1 } }
      } while (changed)
      for (c in doomed) if (index(spared, " " c " ") == 0) print c
    }' | while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done
}

stop_cluster() {
  if pid_alive "$state/slurmctld.pid"; then
    local jobs
    jobs=$(SLURM_CONF=$conf squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      SLURM_CONF=$conf scancel --quiet $jobs 2>/dev/null || true
      for _ in $(seq 100); do
        [ -z "$(SLURM_CONF=$conf squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  stop_daemons "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munge/munged.pid"
  kill_leftovers
  rm -f "$state/munge/munge.socket" "$state/munge/munge.socket.lock"
}

write_config() {
  local ctld_port=${PMOL_SLURMCTLD_PORT:-} slurmd_port=${PMOL_SLURMD_PORT:-} p
  if [ -z "$ctld_port" ] || [ -z "$slurmd_port" ]; then
    # From a random pair on, so that clusters started at the same moment (tests run side
    # by side) are unlikely to pick the same pair between the check and the daemons' bind.
    local first=$((RANDOM % 92)) i
    for i in $(seq 0 91); do
      p=$((16817 + 2 * ((first + i) % 92)))
      if port_free "$p" && port_free $((p + 1)); then ctld_port=$p slurmd_port=$((p + 1)); break; fi
    done
    [ -n "$ctld_port" ] || die "no free pair of ports in 16817-17000 (set PMOL_SLURMCTLD_PORT and PMOL_SLURMD_PORT)"
  fi
  port_free "$ctld_port" || die "port $ctld_port (PMOL_SLURMCTLD_PORT) is in use"
  port_free "$slurmd_port" || die "port $slurmd_port (PMOL_SLURMD_PORT) is in use"
  # The node's CPUs, sockets, cores and memory as slurmd sees them.
  local hw
  hw=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
  # Job ids from a random start: two clusters on one machine then give their jobs
  # different ids, and so different PMIx namespaces (slurm.pmix.JOBID.STEP) and Open MPI
  # session and shared-memory names, which are keyed by the job id, not by the cluster.
  local first_job_id=$(( (RANDOM * 32768 + RANDOM) % 60000000 + 1000 ))
  mkdir -p "$state/tmp"
  cat > "$conf" <<EOF
# One-node Slurm cluster on localhost, written by launch/slurm/local_cluster.sh.
ClusterName=pmol-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again.
AuthInfo=socket=$state/munge/munge.socket,cred_expire=5
StateSaveLocation=$state/slurmctld
SlurmdSpoolDir=$state/slurmd
# The PMIx plugin's per-step client folders (spmix_appdir_UID_JOBID.STEP) go under TmpFS.
TmpFS=$state/tmp
FirstJobId=$first_job_id
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Containers have no usable cgroups: track processes by group, do not bind tasks.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
# Schedule every second, so a requeued job starts soon after cred_expire.
SchedulerParameters=bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

start_cluster() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root)"
  for tool in munged mungekey slurmctld slurmd sinfo ss; do
    command -v "$tool" >/dev/null || die "$tool not found: install Debian's slurm-wlm and munge (launch/setup.sh)"
  done
  if pid_alive "$state/slurmctld.pid" && pid_alive "$state/slurmd.pid" && pid_alive "$state/munge/munged.pid"; then
    echo "local_cluster.sh: already running in $state" >&2
    print_env
    return 0
  fi
  stop_cluster  # whatever is left from a partial start
  mkdir -p "$state/munge" "$state/slurmctld" "$state/slurmd" "$state/log"
  chmod 0700 "$state/munge"
  write_config

  [ -s "$state/munge/munge.key" ] || mungekey --create --keyfile="$state/munge/munge.key" \
    || die "mungekey could not write $state/munge/munge.key"
  chmod 0600 "$state/munge/munge.key"
  # --force: the state folder may sit under a group-writable parent (a test's tmp dir).
  export PMOL_LOCAL_CLUSTER_STATE=$state
  munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/munge/munged.pid" --log-file="$state/log/munged.log" \
    --seed-file="$state/munge/munged.seed" \
    || die "munged did not start; see $state/log/munged.log"

  SLURM_CONF=$conf slurmctld -f "$conf" || die "slurmctld did not start; see $state/log/slurmctld.log"
  SLURM_CONF=$conf slurmd -f "$conf" || die "slurmd did not start; see $state/log/slurmd.log"

  local node_state=""
  for _ in $(seq 300); do
    node_state=$(SLURM_CONF=$conf sinfo -h -n "$node" -o %t 2>/dev/null || true)
    [ "$node_state" = "idle" ] && break
    pid_alive "$state/slurmctld.pid" || die "slurmctld exited; see $state/log/slurmctld.log"
    pid_alive "$state/slurmd.pid" || die "slurmd exited; see $state/log/slurmd.log"
    sleep 0.2
  done
  [ "$node_state" = "idle" ] || die "node $node is '${node_state:-unknown}', not idle, after 60 s; see $state/log/"
  echo "local_cluster.sh: node $node idle (slurmctld port $(grep -oP '^SlurmctldPort=\K.*' "$conf"), state in $state)" >&2
  print_env
}

case "$action" in
  start) start_cluster ;;
  stop)
    stop_cluster
    if [ -n "$link" ] && [ -L "$link" ]; then rm -f "$link"; fi
    echo "local_cluster.sh: stopped ($state)" >&2
    ;;
  env) print_env ;;
  *) die "unknown action '$action' (start, stop or env)" ;;
esac

#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for the tests that submit with sbatch (tests/test_slurm_*.py)
# and for trying the data stages and the pretrain script on Slurm before taking them to a cluster.
#
# Why a script: Debian's slurm-wlm (22.05) and munge are ordinary packages, but a cluster needs a config,
# a munge key and two daemons. Everything lives in one state directory (no /etc edits, no systemd, no
# cgroups: proctrack/linuxproc, task/none), the daemons run as root (as CI does), and clients find the
# cluster through SLURM_CONF, which `up` prints.
#
#   scripts/slurm_cluster.sh up      # start munged + slurmctld + slurmd; prints `export SLURM_CONF=...`
#   eval "$(scripts/slurm_cluster.sh env)"   # point this shell's sbatch/squeue at it
#   scripts/slurm_cluster.sh status  # sinfo
#   scripts/slurm_cluster.sh down    # stop the daemons (state directory removed)
#
# LUCIE_SLURM_DIR (default /tmp/lucie-slurm) is the state directory; LUCIE_SLURM_PORT (default 6817) the
# controller's port (slurmd uses the next one). Needs: apt-get install slurm-wlm munge (.ci/run does it).
set -euo pipefail

DIR=${LUCIE_SLURM_DIR:-/tmp/lucie-slurm}
PORT=${LUCIE_SLURM_PORT:-6817}
NODE=$(hostname -s)  # resolvable (torchrun's rendezvous meets on the allocation's first host name)
CONF=$DIR/slurm.conf

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

need() {
  for exe in munged mungekey slurmctld slurmd sbatch squeue scontrol; do
    command -v "$exe" >/dev/null || die "$exe not found: install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)"
  done
  [ "$(id -u)" = 0 ] || die "run as root (the daemons run as root here, with no cgroups)"
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
  cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh: one node on localhost, no cgroups, no accounting.
ClusterName=lucie
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# quick scheduling and quick kills: the tests cancel jobs and wait for them
SchedulerParameters=sched_interval=2
KillWait=2
MinJobAge=600
MaxArraySize=1001
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

up() {
  need
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    echo "export SLURM_CONF=$CONF"
    return
  fi
  rm -rf "$DIR" && mkdir -p "$DIR/state" "$DIR/spool" && chmod 700 "$DIR"
  write_conf
  mungekey --create --keyfile="$DIR/munge.key" >/dev/null
  chmod 600 "$DIR/munge.key"
  munged --force --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" --pid-file="$DIR/munged.pid" \
    --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed" || die "munged did not start (see $DIR/munged.log)"
  export SLURM_CONF=$CONF
  slurmctld -f "$CONF" -i || die "slurmctld did not start (see $DIR/slurmctld.log)"
  slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start (see $DIR/slurmd.log)"
  for _ in $(seq 60); do  # the node registers within a few seconds
    state=$(timeout 2 sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
    case "$state" in idle*|mixed*|allocated*) echo "export SLURM_CONF=$CONF"; return ;; esac
    sleep 0.5
  done
  tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
  die "node $NODE did not become idle (state: ${state:-none}); logs above"
}

stop_pid() {  # stop_pid FILE: TERM the daemon it names, wait for it
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  [ -d "$DIR" ] || return 0
  if [ -f "$CONF" ] && command -v scancel >/dev/null; then
    SLURM_CONF=$CONF scancel --full --quiet --user=root 2>/dev/null || true
  fi
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
  stop_pid "$DIR/munged.pid"
  rm -rf "$DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  status) SLURM_CONF=$CONF sinfo -N -l ;;
  *) die "usage: $0 up|down|env|status" ;;
esac

#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the sweep tests and for trying `strnas sweep submit
# --executor slurm` without a cluster (Debian's slurm-wlm + munge; no systemd needed; root only).
#   scripts/slurm-local.sh install   apt-get install slurm-wlm munge when missing (idempotent)
#   scripts/slurm-local.sh start     write the config into $SLURM_DIR and start munged, slurmctld, slurmd
#   scripts/slurm-local.sh stop      cancel every job, stop the daemons
#   scripts/slurm-local.sh env       print `export SLURM_CONF=...` for sbatch/squeue/scancel/scontrol
# SLURM_DIR: the cluster's scratch directory (default $STRNAS_CACHE/slurm, outside any clone).
# Settings (Slurm 22.05 on Debian 12, checked on a 2-core VM): SlurmctldHost and NodeName are `hostname -s`;
# proctrack/linuxproc and task/none (no cgroup plugins: cgroup autodetection is the usual failure in VMs and
# containers); select/cons_tres with CR_CPU; no accounting; cred_expire=10 and a 2 s scheduler interval so a
# requeued job starts again within ~12 s rather than ~3 minutes; KillWait=5 (SIGTERM, then SIGKILL 5 s later).
set -euo pipefail
CACHE="${STRNAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strnas}"
DIR="${SLURM_DIR:-$CACHE/slurm}"
CONF="$DIR/slurm.conf"
log() { printf 'slurm-local: %s\n' "$*" >&2; }

need_root() {
  [[ $(id -u) == 0 ]] || { log "needs root (the daemons run as root; munged as the munge user)"; exit 2; }
}

alive() { # process name -> 0 when a live (not zombie) process of that name exists
  local pid
  for pid in $(pgrep -x "$1" 2>/dev/null); do
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] && return 0
  done
  return 1
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  need_root
  command -v apt-get >/dev/null || { log "slurm-wlm and munge are not installed and there is no apt-get"; exit 2; }
  log "installing slurm-wlm and munge (first time only)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
}

start() {
  need_root
  install
  mkdir -p "$DIR"/{state,spool,log}
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))
  cat > "$CONF.tmp" <<CONF
ClusterName=strnas-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=2,bf_interval=2
NodeName=$host CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  mv "$CONF.tmp" "$CONF"
  export SLURM_CONF="$CONF"
  if ! alive munged; then
    [[ -f /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged --force
  fi
  alive slurmctld || slurmctld
  alive slurmd || slurmd
  local i
  for i in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      log "up: $(sinfo -h -o '%P %D %T %c CPUs')"
      return 0
    fi
    sleep 0.5
  done
  log "slurmd did not register within 30 s; see $DIR/log/"
  tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
  exit 1
}

stop() {
  export SLURM_CONF="$CONF"
  if [[ -f $CONF ]] && alive slurmctld; then
    scancel --quiet --user root 2>/dev/null || true
    scontrol shutdown 2>/dev/null || true
  fi
  local i
  for i in $(seq 1 40); do
    alive slurmctld || alive slurmd || return 0
    sleep 0.25
  done
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac

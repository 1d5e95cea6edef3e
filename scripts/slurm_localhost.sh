#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for testing profiles/slurm (tests/test_slurm.py).
#
#   scripts/slurm_localhost.sh install   # apt-get install slurmctld slurmd slurm-client munge (root)
#   scripts/slurm_localhost.sh up        # write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   scripts/slurm_localhost.sh status    # the daemons' PIDs and `sinfo`
#   scripts/slurm_localhost.sh down      # stop the three daemons by PID, remove our slurm.conf
#
# Made for containers without systemd (CI): the daemons are started directly and their PIDs
# are recorded under $EXOFLOW_SLURM_STATE (default /var/tmp/exoflow-slurm); `down` kills
# exactly those PIDs. No accounting database (slurmdbd): `sacct` does not work, so Snakemake's
# SLURM executor must query job states with `squeue` (--slurm-status-command squeue).
# The node offers $EXOFLOW_SLURM_CPUS CPUs (default: nproc), the machine's real memory and
# $EXOFLOW_SLURM_FAKE_GPUS fake GPUs (default 4; gres/gpu on copies of /dev/null, so that
# `--gpus=N` requests are scheduled and get CUDA_VISIBLE_DEVICES; there is no CUDA behind them).
# Must run as root (slurmd launches jobs as the submitting user; slurm.conf lives in /etc).
set -euo pipefail

STATE=${EXOFLOW_SLURM_STATE:-/var/tmp/exoflow-slurm}
CONF=/etc/slurm/slurm.conf   # fixed: the executor plugin's job steps drop SLURM_CONF
GRES_CONF=/etc/slurm/gres.conf
MARKER="# written by exoflow scripts/slurm_localhost.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "slurm_localhost: $*" >&2; exit 1; }
say() { echo "slurm_localhost: $*" >&2; }

# running PID: the process exists and has not exited (without an init that reaps, a daemon
# that exited stays a zombie)
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

# alive PIDFILE: the recorded process runs, and is the daemon the file is named after (a stale
# file's PID may belong to another process by now)
alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(cat "$1")
    running "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]
}

have_binaries() {
    command -v munged >/dev/null && command -v slurmctld >/dev/null \
        && command -v slurmd >/dev/null && command -v sbatch >/dev/null
}

install() {
    if have_binaries; then
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "not root: cannot apt-get install ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "no apt-get: install ${PACKAGES[*]} by hand"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null \
        || die "apt-get install ${PACKAGES[*]} failed"
    have_binaries || die "installed ${PACKAGES[*]} but the daemons are not on PATH"
}

fake_gpus() {  # fake_gpus N: N character devices (copies of /dev/null) for gres/gpu
    local i n=$1
    rm -rf "${STATE:?}/dev"
    mkdir -p "$STATE/dev"
    for ((i = 0; i < n; i++)); do
        mknod "$STATE/dev/gpu$i" c 1 3 2>/dev/null || return 1
    done
}

write_conf() {
    local host cpus mem gpus node_gres=""
    host=$(hostname -s)
    cpus=${EXOFLOW_SLURM_CPUS:-$(nproc)}
    gpus=${EXOFLOW_SLURM_FAKE_GPUS:-4}
    mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    local f
    for f in "$CONF" "$GRES_CONF"; do
        if [[ -e $f ]] && ! grep -qF "$MARKER" "$f"; then
            die "$f exists and was not written by this script; not touching a real cluster"
        fi
    done
    mkdir -p "$(dirname "$CONF")"
    rm -f "$GRES_CONF"
    # Fake GPUs: jobs that ask for --gpus=N get N of them and CUDA_VISIBLE_DEVICES, as on a
    # real GPU node (there is no CUDA behind them: for testing resource requests only).
    if ((gpus > 0)) && fake_gpus "$gpus"; then
        printf '%s\nName=gpu File=%s/dev/gpu[0-%d]\n' "$MARKER" "$STATE" $((gpus - 1)) >"$GRES_CONF"
        node_gres=" Gres=gpu:$gpus"
    elif ((gpus > 0)); then
        say "cannot make device files for fake GPUs (mknod): the node has no GPUs"
    fi
    cat >"$CONF" <<EOF
$MARKER
ClusterName=exoflow
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups, no systemd in a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# use the node as configured here even where it differs from the hardware
SlurmdParameters=config_overrides
ReturnToService=2
# keep finished jobs visible to squeue (the executor's status command) for 10 minutes
MinJobAge=600
SchedulerType=sched/backfill
# a job that names no memory gets 1 GB per CPU, not the whole node
DefMemPerCPU=1000
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$node_gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if alive "$STATE/munged.pid"; then
        return 0
    fi
    [[ -s /etc/munge/munge.key ]] || {
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid \
        --log-file=/var/log/munge/munged.log
    for _ in $(seq 50); do
        [[ -s /run/munge/munged.pid ]] && break
        sleep 0.1
    done
    cp /run/munge/munged.pid "$STATE/munged.pid"
    munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
}

up() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    have_binaries || die "SLURM is not installed: run '$0 install' (as root)"
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid"; then
        say "already up"
        return 0
    fi
    local t0=$SECONDS
    mkdir -p "$STATE"
    rm -rf "$STATE/ctld" "$STATE/spool"
    mkdir -p "$STATE/ctld" "$STATE/spool"
    write_conf
    start_munge
    # -c: start from a clean job state
    slurmctld -c
    slurmd
    # wait for the controller, then for the node to be idle
    local state=""
    for _ in $(seq 150); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -n1 || true)
        case $state in
        idle*) break ;;
        down* | drain*) scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    [[ $state == idle* ]] || {
        tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
        die "node did not become idle (state: '${state:-no answer}')"
    }
    say "up in $((SECONDS - t0))s: munged $(cat "$STATE/munged.pid"), slurmctld $(cat "$STATE/slurmctld.pid"), slurmd $(cat "$STATE/slurmd.pid")"
}

stop_pid() {  # stop_pid NAME: TERM the recorded PID, wait, then KILL
    local f="$STATE/$1.pid" pid
    [[ -s $f ]] || return 0
    pid=$(cat "$f")
    if alive "$f"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        say "stopped $1 ($pid)"
    fi
    rm -f "$f"
}

down() {
    # munged's pid file is written by munged itself; slurmctld/slurmd's under $STATE
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
    local f
    for f in "$CONF" "$GRES_CONF"; do
        if [[ -e $f ]] && grep -qF "$MARKER" "$f"; then
            rm -f "$f"
        fi
    done
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if alive "$STATE/$name.pid"; then echo "$name: $(cat "$STATE/$name.pid")"
        else echo "$name: not running"; fi
    done
    sinfo 2>/dev/null || true
}

case ${1:-} in
install) install ;;
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 install|up|down|status" ;;
esac

#!/usr/bin/env bash
# Bring up / tear down a real one-node Slurm cluster on localhost (for tests and CI; no mocking).
#
#   scripts/local-slurm.sh install       apt-get install slurm-wlm + munge if the daemons/clients are missing
#   scripts/local-slurm.sh up DIR        start munged + slurmctld + slurmd with all state in DIR; wait until the node is idle
#   scripts/local-slurm.sh down DIR      cancel jobs, stop exactly the daemons recorded in DIR (idempotent)
#   scripts/local-slurm.sh status DIR    show the daemons and sinfo
#
# After `up`, `source DIR/env` sets SLURM_CONF so sbatch/squeue/scontrol/scancel talk to this cluster.
# Nothing is exported globally; the system's /etc/slurm and /run/munge are never used or touched.
# Everything (munge key/socket, slurm.conf, state, spool, logs, pid files) lives in DIR.
# Ports: the first free pair at or above LOCAL_SLURM_PORT (default 16817).
# Waiting for the node: at most LOCAL_SLURM_UP_TIMEOUT seconds (default 60).
# slurmd 22.05 always loads a cgroup plugin: LOCAL_SLURM_CGROUP_PLUGIN (default autodetect; or cgroup/v1, cgroup/v2).
# Works as root and as an ordinary user (then SlurmUser/SlurmdUser are that user and jobs run as that user).
set -euo pipefail

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Locate an executable in PATH or the sbin directories (non-root PATHs often lack /usr/sbin).
find_bin() {
  local name=$1 d
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  for d in /usr/sbin /sbin /usr/local/sbin /usr/bin /usr/local/bin; do
    if [[ -x $d/$name ]]; then
      echo "$d/$name"
      return 0
    fi
  done
  return 1
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  else
    sudo "$@"
  fi
}

log() { echo "local-slurm: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------------------------

have_all() {
  local b
  for b in slurmctld slurmd munged sbatch squeue scontrol sinfo scancel munge; do
    find_bin "$b" >/dev/null || return 1
  done
}

# pids of any munge/slurm daemons (pgrep patterns are matched against the 15-char comm, so one name per call).
daemon_pids() {
  local n
  for n in munged slurmctld slurmd slurmdbd slurmstepd; do
    pgrep -x "$n" || true
  done
}

cmd_install() {
  if have_all; then
    log "slurm and munge already installed ($(find_bin slurmctld) $("$(find_bin slurmctld)" -V 2>/dev/null || true))"
    return 0
  fi
  local before policy_created=0
  # Daemons that were running before we installed anything are not ours to stop.
  before=$(daemon_pids)
  # Keep postinst scripts from starting the system services (invoke-rc.d and deb-systemd-invoke honour this).
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    policy_created=1
  fi
  local rc=0
  local -a apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold install --no-install-recommends slurm-wlm munge)
  if ! as_root "${apt[@]}"; then
    log "apt-get install failed; running apt-get update and retrying"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update && as_root "${apt[@]}" || rc=$?
  fi
  if [[ $policy_created -eq 1 ]]; then
    as_root rm -f /usr/sbin/policy-rc.d
  fi
  [[ $rc -eq 0 ]] || die "apt-get install slurm-wlm munge failed (rc=$rc)"
  # If a postinst managed to start a daemon anyway (policy-rc.d already present but permissive), stop it:
  # it would not conflict with ours (own socket, ports, config) but must not linger.
  local pid after
  after=$(daemon_pids)
  for pid in $after; do
    if ! grep -qx "$pid" <<<"$before"; then
      log "stopping daemon started by the package: $(ps -o pid=,comm= -p "$pid" || true)"
      if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        as_root systemctl stop munge slurmctld slurmd 2>/dev/null || true
      fi
      as_root kill "$pid" 2>/dev/null || true
    fi
  done
  have_all || die "installed, but some of slurmctld slurmd munged sbatch squeue scontrol sinfo scancel munge are still missing"
  log "installed $("$(find_bin slurmctld)" -V 2>/dev/null || true)"
}

# ---------------------------------------------------------------------------------------------------------------
# helpers for up/down
# ---------------------------------------------------------------------------------------------------------------

port_in_use() {
  # A successful connect means something listens there.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_ports() {
  local p=${LOCAL_SLURM_PORT:-16817} limit
  limit=$((p + 400))
  while ((p < limit)); do
    if ! port_in_use "$p" && ! port_in_use "$((p + 1))"; then
      echo "$p"
      return 0
    fi
    p=$((p + 2))
  done
  return 1
}

# True if the pid exists and is not a zombie (an exited daemon stays a zombie until init reaps it, and some
# container inits reap slowly).
alive() {
  [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [[ -n $st && $st != Z* ]]
}

# Start a daemon in the foreground mode in its own session (so it outlives this script and holds none of the
# caller's file descriptors); record its pid in DIR/NAME.pid.
start_daemon() {
  local dir=$1 name=$2
  shift 2
  setsid "$@" </dev/null >"$dir/log/$name.stdout" 2>&1 &
  echo $! >"$dir/$name.pid"
}

show_logs() {
  local dir=$1 f
  for f in "$dir"/log/*; do
    [[ -s $f ]] || continue
    echo "----- tail $f" >&2
    tail -n 25 "$f" >&2
  done
}

# ---------------------------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------------------------

cmd_up() {
  local dir=${1:-}
  [[ -n $dir ]] || usage
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if [[ -e $dir/slurm.conf ]]; then
    if alive "$(cat "$dir/slurmctld.pid" 2>/dev/null || true)"; then
      die "$dir already hosts a running cluster; run '$0 down $dir' first"
    fi
  fi
  local munged slurmctld slurmd sinfo scontrol munge unmunge
  munged=$(find_bin munged) || die "munged not found; run '$0 install'"
  munge=$(find_bin munge) || die "munge not found; run '$0 install'"
  unmunge=$(find_bin unmunge) || die "unmunge not found; run '$0 install'"
  slurmctld=$(find_bin slurmctld) || die "slurmctld not found; run '$0 install'"
  slurmd=$(find_bin slurmd) || die "slurmd not found; run '$0 install'"
  sinfo=$(find_bin sinfo) || die "sinfo not found; run '$0 install'"
  scontrol=$(find_bin scontrol) || die "scontrol not found; run '$0 install'"

  local user uid node t0
  t0=$(date +%s.%N)
  user=$(id -un)
  uid=$(id -u)
  node=$(hostname -s)
  # munged refuses group/other-writable directories on the key/socket paths, and warns unless every
  # directory above its socket is searchable by all (0711: others may traverse, not list or write).
  chmod 0711 "$dir"
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log" "$dir/run"
  chmod 0711 "$dir/munge"
  chmod 0700 "$dir/state" "$dir/spool" "$dir/log" "$dir/run"
  rm -f "$dir"/*.pid "$dir"/log/* "$dir/munge/munge.socket" "$dir/munge/munge.socket.lock"

  # If anything below fails, take down whatever we started and show the logs.
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "up failed (rc=$rc)"; show_logs "'"$dir"'"; cmd_down "'"$dir"'" >&2 || true; fi' EXIT

  # --- munge ---
  local key=$dir/munge/munge.key
  if [[ ! -s $key ]]; then
    rm -f "$key"
    (
      umask 077
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    )
  fi
  chmod 0400 "$key"
  local sock=$dir/munge/munge.socket
  local -a mopts=(--foreground --socket="$sock" --key-file="$key" --pid-file="$dir/run/munged.pid"
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" --num-threads=2)
  # As root munged wants --force (it also warns about running as root); --force also tolerates
  # loose permissions further up DIR's path.
  mopts+=(--force)
  start_daemon "$dir" munged "$munged" "${mopts[@]}"
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S $sock ]] && break
    alive "$(cat "$dir/munged.pid")" || die "munged exited"
    sleep 0.1
  done
  [[ -S $sock ]] || die "munged did not create $sock"
  "$munge" -n -S "$sock" | "$unmunge" -S "$sock" >/dev/null || die "munge round trip through $sock failed"

  # --- slurm.conf ---
  local port ctld_port slurmd_port
  port=$(pick_ports) || die "no free port pair found"
  ctld_port=$port
  slurmd_port=$((port + 1))
  # Node hardware as slurmd sees it ("NodeName=x CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=..
  # ThreadsPerCore=.. RealMemory=.."); fall back to nproc and /proc/meminfo.
  local hw
  hw=$("$slurmd" -C 2>/dev/null | head -n 1 | sed -e 's/^NodeName=[^ ]* *//') || true
  if [[ $hw != *CPUs=* ]]; then
    hw="CPUs=$(nproc) RealMemory=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))"
  fi
  cat >"$dir/slurm.conf" <<EOF
# Generated by scripts/local-slurm.sh: a throwaway one-node cluster, everything under $dir.
ClusterName=localslurm
SlurmctldHost=$node(127.0.0.1)
SlurmUser=$user
SlurmdUser=$user
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
ReturnToService=2
# Reject at submit time what can never run here (e.g. --cpus-per-task above the node's CPUs) instead of
# leaving it pending forever with Reason=PartitionConfig.
EnforcePartLimits=ALL
MailProg=/bin/true
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
MinJobAge=600
MaxJobCount=100000
MaxArraySize=100001
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node $hw State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # slurmd 22.05 initialises a cgroup plugin even when no cgroup-based plugin is configured (there is no
  # CgroupPlugin=disabled before 23.02); it reads cgroup.conf next to slurm.conf. Autodetect works here.
  cat >"$dir/cgroup.conf" <<EOF
CgroupPlugin=${LOCAL_SLURM_CGROUP_PLUGIN:-autodetect}
EOF
  echo "export SLURM_CONF=$dir/slurm.conf" >"$dir/env"

  # --- daemons ---
  export SLURM_CONF=$dir/slurm.conf
  # -i: ignore (nonexistent) saved state; -D: foreground (start_daemon backgrounds it in its own session).
  start_daemon "$dir" slurmctld "$slurmctld" -D -i -f "$dir/slurm.conf"
  # (scontrol ping rather than a bare TCP probe, which slurmctld would log as a zero-byte message error.)
  for ((i = 0; i < 150; i++)); do
    alive "$(cat "$dir/slurmctld.pid")" || die "slurmctld exited"
    "$scontrol" ping 2>/dev/null | grep -q 'is UP' && break
    sleep 0.1
  done
  "$scontrol" ping 2>/dev/null | grep -q 'is UP' || die "slurmctld does not answer on port $ctld_port"
  start_daemon "$dir" slurmd "$slurmd" -D -f "$dir/slurm.conf" -N "$node"

  local deadline state=""
  deadline=$(($(date +%s) + ${LOCAL_SLURM_UP_TIMEOUT:-60}))
  while :; do
    alive "$(cat "$dir/slurmctld.pid")" || die "slurmctld exited"
    alive "$(cat "$dir/slurmd.pid")" || die "slurmd exited"
    state=$("$sinfo" -h -n "$node" -o %t 2>/dev/null || true)
    [[ $state == idle ]] && break
    (($(date +%s) < deadline)) || die "node $node not idle after ${LOCAL_SLURM_UP_TIMEOUT:-60}s (state: '${state}')"
    sleep 0.2
  done
  trap - EXIT
  local took
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  echo "local-slurm up: node $node idle ($hw), slurmctld :$ctld_port slurmd :$slurmd_port, user $user ($uid)," \
    "in ${took}s; source $dir/env"
}

# ---------------------------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------------------------

# SIGTERM the recorded daemons ("pid:name" pairs) together, wait up to 5 s, then SIGKILL what is left.
# Each takes 1-2 s to exit on SIGTERM, so signalling them together keeps `down` at about 2 s.
stop_pids() {
  local pair pid name comm i
  local -a live=()
  for pair in "$@"; do
    pid=${pair%%:*}
    name=${pair#*:}
    alive "$pid" || continue
    # Only signal what is still the process we started (pids get reused).
    comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
    if [[ $comm != "$name"* ]]; then
      log "pid $pid is '$comm', not $name; leaving it alone"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    live+=("$pair")
  done
  for ((i = 0; i < 50; i++)); do
    local -a still=()
    for pair in "${live[@]}"; do
      alive "${pair%%:*}" && still+=("$pair")
    done
    live=("${still[@]}")
    ((${#live[@]} == 0)) && return 0
    sleep 0.1
  done
  for pair in "${live[@]}"; do
    log "${pair#*:} (${pair%%:*}) ignored SIGTERM for 5 s; sending SIGKILL"
    kill -KILL "${pair%%:*}" 2>/dev/null || true
  done
  for ((i = 0; i < 20; i++)); do
    local -a still=()
    for pair in "${live[@]}"; do
      alive "${pair%%:*}" && still+=("$pair")
    done
    live=("${still[@]}")
    ((${#live[@]} == 0)) && return 0
    sleep 0.1
  done
  log "still alive after SIGKILL: ${live[*]}"
}

# True if process $1 has file $2 open.
has_open() {
  local fd
  for fd in /proc/"$1"/fd/*; do
    [[ $(readlink "$fd" 2>/dev/null || true) == "$2" ]] && return 0
  done
  return 1
}

cmd_down() {
  local dir=${1:-}
  [[ -n $dir ]] || usage
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd -P)
  local ctld="" sd="" mu="" pid i
  ctld=$(cat "$dir/slurmctld.pid" 2>/dev/null || true)
  sd=$(cat "$dir/slurmd.pid" 2>/dev/null || true)
  mu=$(cat "$dir/munged.pid" 2>/dev/null || true)
  # Cancel jobs first so slurmd/slurmstepd clean up their tasks (slurmstepd outlives slurmd otherwise).
  if alive "$ctld" && alive "$sd" && [[ -f $dir/slurm.conf ]]; then
    local scancel squeue
    if scancel=$(find_bin scancel) && squeue=$(find_bin squeue); then
      if [[ -n $(SLURM_CONF=$dir/slurm.conf timeout 10 "$squeue" -h -o %i 2>/dev/null || true) ]]; then
        SLURM_CONF=$dir/slurm.conf timeout 10 "$scancel" --full -u "$(id -un)" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
          [[ -z $(SLURM_CONF=$dir/slurm.conf timeout 5 "$squeue" -h -o %i 2>/dev/null || true) ]] && break
          sleep 0.2
        done
      fi
    fi
  fi
  stop_pids "$sd:slurmd" "$ctld:slurmctld" "$mu:munged"
  # Jobs that could not be cancelled (slurmctld already dead): slurmstepd setsid()s and is reparented to init,
  # so it survives slurmd. Kill this cluster's slurmstepds (recognised by their open DIR/log/slurmd.log; their
  # environment is clobbered by setproctitle) and everything in their sessions (the job's tasks).
  local sid member
  for pid in $(pgrep -x slurmstepd || true); do
    if has_open "$pid" "$dir/log/slurmd.log"; then
      sid=$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
      log "killing stray slurmstepd $pid (session $sid)"
      kill -KILL "$pid" 2>/dev/null || true
      if [[ -n $sid && $sid != 0 && $sid != 1 ]]; then
        for member in $(pgrep -s "$sid" || true); do
          kill -KILL "$member" 2>/dev/null || true
        done
      fi
    fi
  done
  # Give init up to 2 s to reap the exited daemons, so a `pgrep slurm` right after `down` comes back empty.
  local left
  for ((i = 0; i < 20; i++)); do
    left=0
    for pid in $sd $ctld $mu; do
      kill -0 "$pid" 2>/dev/null && left=1
    done
    ((left)) || break
    sleep 0.1
  done
  rm -f "$dir/slurmctld.pid" "$dir/slurmd.pid" "$dir/munged.pid"
  log "down: $dir"
}

# ---------------------------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------------------------

cmd_status() {
  local dir=${1:-} name pid rc=0
  [[ -n $dir ]] || usage
  dir=$(cd "$dir" && pwd -P)
  for name in munged slurmctld slurmd; do
    pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
    if alive "$pid"; then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not running"
      rc=1
    fi
  done
  if [[ $rc -eq 0 ]]; then
    SLURM_CONF=$dir/slurm.conf timeout 10 "$(find_bin sinfo)" || rc=1
  fi
  return "$rc"
}

case ${1:-} in
  install) cmd_install ;;
  up) cmd_up "${2:-}" ;;
  down) cmd_down "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  *) usage ;;
esac

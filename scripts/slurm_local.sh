#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests and CI.
#
#   scripts/slurm_local.sh start    install (if missing) and start munge, [mariadb + slurmdbd], slurmctld, slurmd
#   scripts/slurm_local.sh stop     cancel jobs, stop exactly the daemons started by `start`
#   scripts/slurm_local.sh status   sinfo/squeue; exit 0 when the node is up
#
# Everything lives under one state directory, ${SLURM_LOCAL_DIR:-/tmp/care-slurm}:
#   etc/ (slurm.conf, slurmdbd.conf)  spool/  log/  run/ (pid files)  munge/  mysql/  env.sh
# Client commands find the cluster through `. $STATE/env.sh` (SLURM_CONF) or through
# /etc/slurm/slurm.conf, which `start` links to our config when the machine has none
# (submitit runs plain `sbatch`/`sacct`, so this link is what makes it work unmodified).
#
# Accounting (mariadb + slurmdbd) is best effort: without it `sacct` fails, submitit reports
# every job state as UNKNOWN, and a job that died never looks finished -- tests must then
# bound their waits. `start` prints a warning when it runs without accounting.
#
# Facts this is built on: /work/shared/docs/slurm_local.md (Debian 12, Slurm 22.05, no systemd).
# Needs root (package installs, running munged/mariadbd as their own users).

set -euo pipefail

STATE="${SLURM_LOCAL_DIR:-/tmp/care-slurm}"
CLUSTER_NAME="${SLURM_LOCAL_CLUSTER:-care}"
PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
DB_PORT="${SLURM_LOCAL_DB_PORT:-3307}"      # not 3306: leave a system MariaDB alone
CTLD_PORT=6817
SLURMD_PORT=6818
DBD_PORT=6819
WAIT_IDLE_S="${SLURM_LOCAL_WAIT_S:-60}"

ETC="$STATE/etc"
RUN="$STATE/run"
LOG="$STATE/log"
SPOOL="$STATE/spool"
MUNGE_DIR="$STATE/munge"
DB_DIR="$STATE/mysql"
CONF="$ETC/slurm.conf"
DBD_CONF="$ETC/slurmdbd.conf"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
DB_SOCKET="$DB_DIR/mysqld.sock"
SYSTEM_CONF=/etc/slurm/slurm.conf
# Every daemon we start carries this variable: `stop` uses it to find leftovers that belong to
# THIS cluster (e.g. slurmstepd of a job) without touching anything else on the machine.
MARKER="CARE_SLURM_LOCAL_STATE=$STATE"

say() { printf '[slurm_local] %s\n' "$*"; }
warn() { printf '[slurm_local] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[slurm_local] ERROR: %s\n' "$*" >&2
    exit 1
}

# Run a client command against our config, whatever /etc/slurm holds.
slurm_cmd() { SLURM_CONF="$CONF" timeout 15 "$@"; }

# ---------------------------------------------------------------- processes and pid files

# pid file of each daemon (slurm daemons write theirs where slurm.conf says; munged and
# mariadbd where their flags say)
pidfile() {
    case "$1" in
        munged) echo "$RUN/munged.pid" ;;
        mariadbd) echo "$RUN/mariadbd.pid" ;;
        slurmdbd) echo "$RUN/slurmdbd.pid" ;;
        slurmctld) echo "$RUN/slurmctld.pid" ;;
        slurmd) echo "$RUN/slurmd.pid" ;;
    esac
}

# Prints the pid of daemon $1 if it is running AND is one we started (its command line or
# environment names our state dir) -- a stale pid file or a recycled pid is never trusted.
our_pid() {
    local f pid
    f="$(pidfile "$1")"
    [[ -s "$f" ]] || return 1
    pid="$(tr -dc '0-9' <"$f")"
    [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1"* ]] || return 1
    if grep -qaF "$STATE" "/proc/$pid/cmdline" 2>/dev/null ||
        grep -qaF "$MARKER" "/proc/$pid/environ" 2>/dev/null; then
        echo "$pid"
        return 0
    fi
    return 1
}

running() { our_pid "$1" >/dev/null; }

# Wait up to $2 seconds for "$1" (a shell command) to succeed.
wait_for() {
    local cond="$1" limit="$2" t=0
    while ((t < limit * 2)); do
        if eval "$cond" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
        t=$((t + 1))
    done
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Start a daemon with our marker and SLURM_CONF in its environment, detached from this shell.
launch() {
    env "$MARKER" SLURM_CONF="$CONF" setsid "$@" </dev/null
}

stop_daemon() {
    local name="$1" pid t
    pid="$(our_pid "$name")" || {
        rm -f "$(pidfile "$name")"
        return 0
    }
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((t = 0; t < 40; t++)); do # mariadb can take a few seconds to flush
        [[ -d "/proc/$pid" ]] || break
        sleep 0.5
    done
    if [[ -d "/proc/$pid" ]]; then
        warn "$name did not stop on SIGTERM, killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$(pidfile "$name")"
}

# ---------------------------------------------------------------- installation

have_core() { command -v slurmctld && command -v slurmd && command -v sinfo && command -v munged; } >/dev/null 2>&1
have_accounting() { command -v slurmdbd && command -v mariadbd && command -v mariadb-install-db; } >/dev/null 2>&1

# apt-get install without starting services (a daemon started by a postinst would be one we
# do not own). Runs `apt-get update` only when the first try fails (fresh image: no lists).
apt_install() {
    local added_policy=0 rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    say "apt-get install $*"
    if ! apt-get install -y -q --no-install-recommends "$@" >"$LOG/apt.log" 2>&1; then
        say "install failed without fresh package lists; running apt-get update"
        { apt-get update -q && apt-get install -y -q --no-install-recommends "$@"; } >>"$LOG/apt.log" 2>&1 || rc=$?
    fi
    ((added_policy)) && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

install_packages() {
    if ! have_core; then
        command -v apt-get >/dev/null || die "slurm/munge are not installed and there is no apt-get"
        apt_install slurmctld slurmd slurm-client munge ||
            die "could not install slurm/munge (see $LOG/apt.log)"
    fi
    have_core || die "slurm/munge still missing after install (see $LOG/apt.log)"
    if ! have_accounting && [[ "${SLURM_LOCAL_ACCOUNTING:-1}" != 0 ]]; then
        apt_install slurmdbd mariadb-server ||
            warn "could not install slurmdbd/mariadb-server (see $LOG/apt.log); continuing without accounting"
    fi
}

# ---------------------------------------------------------------- munge

start_munge() {
    running munged && return 0
    id munge >/dev/null 2>&1 || die "user 'munge' missing (munge package not installed?)"
    # Our own key and socket: a system munged (if any) is left alone, and the slurm daemons and
    # clients find ours through AuthInfo=socket=... in the configs.
    install -d -m 0755 -o munge -g munge "$MUNGE_DIR" # clients need x on the socket dir
    if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 0400 "$MUNGE_DIR/munge.key"
    # the pid file lives in run/ with the others; munged (user munge) must be able to write it
    touch "$RUN/munged.pid" "$LOG/munged.log"
    chown munge:munge "$RUN/munged.pid" "$LOG/munged.log"
    say "starting munged"
    launch runuser -u munge -- munged \
        --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --seed-file="$MUNGE_DIR/munged.seed" --log-file="$LOG/munged.log" \
        --pid-file="$RUN/munged.pid" ||
        die "munged failed to start; see $LOG/munged.log"
    wait_for "[[ -S '$MUNGE_SOCKET' ]] && running munged" 10 ||
        die "munged did not come up; see $LOG/munged.log"
}

# ---------------------------------------------------------------- mariadb + slurmdbd

db_sql() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }

start_mariadb() {
    running mariadbd && return 0
    id mysql >/dev/null 2>&1 || return 1
    install -d -m 0750 -o mysql -g mysql "$DB_DIR"
    if [[ ! -d "$DB_DIR/data/mysql" ]]; then
        say "initialising a private MariaDB in $DB_DIR/data"
        # --no-defaults: ignore /etc/mysql so a system installation cannot interfere
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
            {
                warn "mariadb-install-db failed; see $LOG/mariadb-install.log"
                return 1
            }
    fi
    touch "$RUN/mariadbd.pid" && chown mysql:mysql "$RUN/mariadbd.pid"
    touch "$LOG/mariadb.log" && chown mysql:mysql "$LOG/mariadb.log"
    say "starting mariadbd on 127.0.0.1:$DB_PORT"
    # small buffers: this database holds a handful of test jobs
    launch mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" \
        --socket="$DB_SOCKET" --pid-file="$RUN/mariadbd.pid" --log-error="$LOG/mariadb.log" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --innodb-buffer-pool-size=32M --performance-schema=OFF \
        --innodb-lock-wait-timeout=900 >/dev/null 2>&1 &
    if ! wait_for "db_sql -e 'select 1'" 30; then
        warn "mariadbd did not come up; see $LOG/mariadb.log"
        return 1
    fi
    # The slurm user connects over TCP from 127.0.0.1 (skip-name-resolve: no 'localhost' match).
    db_sql -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
               GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;" || {
        warn "could not create the slurm database user"
        return 1
    }
}

write_dbd_conf() {
    # slurmdbd finds slurmdbd.conf next to $SLURM_CONF; it must be mode 600, owned by SlurmUser
    cat >"$DBD_CONF" <<EOF
# Generated by scripts/slurm_local.sh -- accounting daemon of the local test cluster.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DBD_CONF"
}

start_slurmdbd() {
    running slurmdbd && return 0
    write_dbd_conf
    say "starting slurmdbd"
    launch slurmdbd >>"$LOG/slurmdbd.log" 2>&1 || {
        warn "slurmdbd failed to start; see $LOG/slurmdbd.log"
        return 1
    }
    # first start creates the schema, which takes a few seconds
    if ! wait_for "running slurmdbd && port_open $DBD_PORT" 60; then
        warn "slurmdbd did not come up; see $LOG/slurmdbd.log"
        return 1
    fi
}

# Returns 0 when accounting is up (mariadb + slurmdbd), 1 otherwise (and warns).
start_accounting() {
    [[ "${SLURM_LOCAL_ACCOUNTING:-1}" != 0 ]] || return 1
    have_accounting || {
        warn "slurmdbd/mariadb not installed"
        return 1
    }
    start_mariadb && start_slurmdbd
}

# ---------------------------------------------------------------- slurm.conf

write_slurm_conf() {
    local accounting="$1" real_cpus mem cpus
    # `slurmd -C` prints this machine's hardware as slurm sees it; we keep its memory, but
    # advertise more CPUs than exist (config_overrides) so several one-CPU test jobs run at once.
    real_cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)"
    mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)"
    real_cpus="${real_cpus:-$(nproc)}"
    mem="${mem:-1000}"
    cpus="${SLURM_LOCAL_CPUS:-$((real_cpus * 2 > 4 ? real_cpus * 2 : 4))}"

    local acct_lines
    if [[ "$accounting" == 1 ]]; then
        acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for accounting_storage/slurmdbd this names the munge socket (AuthInfo is not used there)
AccountingStoragePass=$MUNGE_SOCKET"
    else
        acct_lines="AccountingStorageType=accounting_storage/none"
    fi

    cat <<EOF
# Generated by scripts/slurm_local.sh -- one-node test cluster on $NODE ($real_cpus real CPUs).
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# own munge socket; cred_expire=10 (minimum 5) shortens the hold of a requeued job from
# 120 s to ~10 s, together with the short scheduler interval below
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge

StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# no cgroups in containers / without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$acct_lines

SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# trust the CPU count below rather than the hardware (over-subscription for tests)
SlurmdParameters=config_overrides

# short timers: a test cluster should react in seconds
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
SlurmctldTimeout=60
SlurmdTimeout=120
MessageTimeout=10

NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# ---------------------------------------------------------------- node state

node_state() { slurm_cmd sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1; }

node_up() {
    case "$(node_state)" in
        idle* | mixed* | allocated* | completing*) return 0 ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------- commands

write_env_file() {
    cat >"$STATE/env.sh" <<EOF
# source this to talk to the local test cluster: . $STATE/env.sh
export SLURM_CONF=$CONF
export SLURM_LOCAL_DIR=$STATE
EOF
}

link_system_conf() {
    # Plain `sinfo`/`sbatch` (as run by submitit) read /etc/slurm/slurm.conf. Link it to ours
    # only when the machine has none; remember that we did, so `stop` removes just our link.
    if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
        return 0
    fi
    if [[ -e "$SYSTEM_CONF" || -L "$SYSTEM_CONF" ]]; then
        warn "$SYSTEM_CONF exists and is not ours; plain slurm commands use it -- run '. $STATE/env.sh' first"
        return 0
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
    echo "$SYSTEM_CONF" >"$STATE/linked_system_conf"
    say "linked $SYSTEM_CONF -> $CONF"
}

cmd_start() {
    [[ $EUID -eq 0 ]] || die "start needs root (package install, munge/mysql users)"
    local t0=$SECONDS accounting=0
    mkdir -p "$ETC" "$RUN" "$LOG" "$SPOOL/ctld" "$SPOOL/d"
    chmod 755 "$STATE" # munged and mariadbd (own users) must traverse it

    install_packages
    NODE="$(hostname -s)"

    # Already up? Then only re-check (idempotent start). Accounting counts when it was on before.
    local acct_ok=1
    if [[ "$(cat "$STATE/accounting" 2>/dev/null)" == 1 ]] && ! { running mariadbd && running slurmdbd; }; then
        acct_ok=0
    fi
    if ((acct_ok)) && running munged && running slurmctld && running slurmd && node_up; then
        link_system_conf
        write_env_file
        say "already running: node $NODE is $(node_state) ($((SECONDS - t0)) s)"
        return 0
    fi

    start_munge
    if start_accounting; then
        accounting=1
    else
        warn "running WITHOUT accounting: sacct fails and submitit sees job states as UNKNOWN"
        stop_daemon slurmdbd
        stop_daemon mariadbd
    fi

    # (Re)write the config; daemons still running on an outdated one are restarted.
    write_slurm_conf "$accounting" >"$CONF.new"
    if ! cmp -s "$CONF.new" "$CONF"; then
        stop_daemon slurmd
        stop_daemon slurmctld
        mv "$CONF.new" "$CONF"
        say "wrote $CONF"
    else
        rm -f "$CONF.new"
    fi
    echo "$accounting" >"$STATE/accounting"
    write_env_file
    link_system_conf

    if ! running slurmctld; then
        if ((accounting)); then
            # register the cluster so sacct knows it (harmless when it already exists)
            SLURM_CONF="$CONF" timeout 20 sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null 2>&1 || true
        fi
        say "starting slurmctld"
        launch slurmctld -f "$CONF" >>"$LOG/slurmctld.log" 2>&1 || die "slurmctld failed; see $LOG/slurmctld.log"
    fi
    if ! running slurmd; then
        say "starting slurmd"
        launch slurmd -f "$CONF" >>"$LOG/slurmd.log" 2>&1 || die "slurmd failed; see $LOG/slurmd.log"
    fi

    say "waiting up to ${WAIT_IDLE_S}s for node $NODE to be idle"
    local resumed=0 deadline=$((SECONDS + WAIT_IDLE_S))
    while ! node_up; do
        if ((SECONDS >= deadline)); then
            warn "node state: '$(node_state)'"
            tail -n 15 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 2>/dev/null || true
            die "node $NODE did not become idle within ${WAIT_IDLE_S}s (logs in $LOG)"
        fi
        local d
        for d in slurmctld slurmd; do
            if ! running "$d"; then
                tail -n 15 "$LOG/$d.log" >&2 2>/dev/null || true
                die "$d exited (see $LOG/$d.log)"
            fi
        done
        # a node left DOWN/DRAINED by an earlier unclean stop: put it back once
        if ((!resumed)) && [[ "$(node_state)" =~ ^(down|drain) ]]; then
            slurm_cmd scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            resumed=1
        fi
        sleep 0.5
    done
    say "cluster up in $((SECONDS - t0)) s: node $NODE $(node_state), partition $PARTITION, accounting=$( ((accounting)) && echo on || echo off)"
    say "clients: . $STATE/env.sh   (or plain commands via $SYSTEM_CONF)"
}

cmd_stop() {
    [[ $EUID -eq 0 ]] || die "stop needs root"
    if [[ ! -d "$STATE" ]]; then
        say "nothing to stop ($STATE does not exist)"
        return 0
    fi
    # cancel jobs first: their slurmstepd would otherwise outlive slurmd
    if running slurmctld; then
        local jobs
        jobs="$(slurm_cmd squeue -h -o '%F' 2>/dev/null | sort -u || true)"
        if [[ -n "$jobs" ]]; then
            say "cancelling jobs: ${jobs//$'\n'/ }"
            # shellcheck disable=SC2086
            slurm_cmd scancel $jobs || true
            wait_for "[[ -z \"\$(slurm_cmd squeue -h -o %i)\" ]]" 15 || warn "jobs still listed after 15 s"
        fi
    fi
    local d
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        stop_daemon "$d"
    done
    # leftovers of THIS cluster only (e.g. a slurmstepd): found by the marker in their environment
    local p pids=()
    for p in /proc/[0-9]*; do
        grep -qaF "$MARKER" "$p/environ" 2>/dev/null && pids+=("${p#/proc/}")
    done
    if ((${#pids[@]})); then
        say "killing leftover processes of this cluster: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    if [[ -f "$STATE/linked_system_conf" ]]; then
        if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
            rm -f "$SYSTEM_CONF"
            say "removed link $SYSTEM_CONF"
        fi
        rm -f "$STATE/linked_system_conf"
    fi
    say "stopped (state kept in $STATE; delete it for a clean slate)"
}

cmd_status() {
    NODE="$(hostname -s)"
    local d
    for d in munged mariadbd slurmdbd slurmctld slurmd; do
        if running "$d"; then say "$d: running (pid $(our_pid "$d"))"; else say "$d: not running"; fi
    done
    [[ -f "$CONF" ]] || die "no config at $CONF (never started?)"
    slurm_cmd sinfo || true
    slurm_cmd squeue || true
    if node_up; then
        say "node $NODE is up ($(node_state))"
    else
        die "node $NODE is not up (state: '$(node_state)')"
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status   (state dir: \${SLURM_LOCAL_DIR:-/tmp/care-slurm})" >&2
        exit 2
        ;;
esac

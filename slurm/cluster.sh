#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, from Debian packages (Slurm 22.05):
# munged + MariaDB + slurmdbd (accounting) + slurmctld + slurmd, started by hand (no systemd).
#
#   bash slurm/cluster.sh start    install if missing, write configs, start what is not running,
#                                  wait until the node is idle (idempotent)
#   bash slurm/cluster.sh stop     stop the daemons (state under /var/spool and the DB survive)
#   bash slurm/cluster.sh status   daemon states + sinfo
#
# Must run as root. Environment knobs: MALM_SLURM_CLUSTER (malm), MALM_SLURM_PARTITION (debug),
# MALM_SLURM_WAIT_S (timeout of every wait, 60). The configs are regenerated on every start; when
# one changed while the cluster runs, the daemons that read it are restarted (jobs survive).
#
# Timers for tests with minute-long limits (measurements in slurm/README.md):
#   KillWait=5                       SIGTERM -> SIGKILL 5 s after a time limit is enforced (30)
#   AuthInfo=cred_expire=30          a requeued job may start 30 s after the requeue (120)
#   sched_interval=5,bf_interval=5   ... and is scheduled within ~5 s of becoming eligible
#   MinJobAge=60                     finished jobs leave slurmctld after 60 s; sacct keeps them
# Not tunable: slurmctld tests time limits every 30 s, so --signal=USR2@N arrives N..N+30 s before
# the limit and a job is killed 0..30 s after it (malm/launch/submit.py: signal_delay_s).
set -euo pipefail

CLUSTER=${MALM_SLURM_CLUSTER:-malm}
PARTITION=${MALM_SLURM_PARTITION:-debug}
WAIT_S=${MALM_SLURM_WAIT_S:-60}
HOST=$(hostname -s)

ETC=/etc/slurm
LOG=/var/log/slurm
RUN=/run/slurm
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
MUNGE_KEY=/etc/munge/munge.key
MUNGE_LOG=/var/log/munge/munged.log
DB_DATA=/var/lib/mysql
DB_RUN=/run/mysqld
DB_SOCK=$DB_RUN/mysqld.sock
DB_PID=$DB_RUN/mysqld.pid
DB_LOG=/var/log/mysql/error.log
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=malm-slurmdbd   # local socket-only MariaDB (--skip-networking); not a secret
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

say() { echo "[cluster] $*"; }
die() { echo "[cluster] ERROR: $*" >&2; exit 1; }

# fail_with LOGFILE MESSAGE: print the end of the daemon's log and exit.
fail_with() {
    echo "[cluster] ERROR: $2 (log: $1)" >&2
    [[ -f $1 ]] && tail -n 20 "$1" | sed 's/^/    /' >&2
    exit 1
}

# wait_until SECONDS LOGFILE WHAT CMD...: retry CMD every 0.5 s; fail loudly on timeout.
wait_until() {
    local timeout=$1 logfile=$2 what=$3; shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail_with "$logfile" "$what not ready after ${timeout}s"
        sleep 0.5
    done
}

# alive PID NAME: PID is a live (not zombie) process named NAME.
alive() {
    [[ $1 =~ ^[0-9]+$ && "$(cat /proc/"$1"/comm 2>/dev/null)" == "$2" ]] || return 1
    [[ "$(awk '{print $3}' /proc/"$1"/stat 2>/dev/null)" != Z ]]
}

# pid_of NAME [PIDFILE]: print the pid of the running daemon NAME (exact process name); prefer the
# pid file, drop it when stale, fall back to a process of that exact name (started elsewhere).
pid_of() {
    local name=$1 pidfile=${2:-} pid
    if [[ -n $pidfile && -f $pidfile ]]; then
        pid=$(<"$pidfile")
        if alive "$pid" "$name"; then echo "$pid"; return 0; fi
        rm -f "$pidfile"   # stale: the process is gone or the pid was reused
    fi
    for pid in $(pgrep -x "$name"); do
        if alive "$pid" "$name"; then echo "$pid"; return 0; fi
    done
    return 1
}

# ---------------------------------------------------------------------------------------- install
install_packages() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    say "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${PKGS[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------- configs
slurm_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024))
    cat <<EOF
# Written by slurm/cluster.sh (regenerated on every start): a single-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# Requeued jobs wait cred_expire seconds before they may start again (default 120).
AuthInfo=cred_expire=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No PMIx here; srun would otherwise try (and log errors for) mpi/pmix.
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it one job takes the whole node's memory and the next stays PENDING.
DefMemPerCPU=1024
MailProg=/bin/true
ReturnToService=2
# submitit requeues timed-out/preempted jobs with scontrol requeue.
JobRequeue=1
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# Short timers for tests with minute-long limits.
KillWait=5
MinJobAge=60
OverTimeLimit=0
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
# Accounting: without it submitit cannot see CANCELLED/FAILED jobs (sacct).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf() {
    cat <<EOF
# Written by slurm/cluster.sh (regenerated on every start).
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

# install_file PATH MODE < content: replace PATH when the content differs; status 0 = changed.
install_file() {
    local path=$1 mode=$2 tmp
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then rm -f "$tmp"; return 1; fi
    mv -f "$tmp" "$path"
    say "wrote $path"
}

SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0
write_configs() {
    mkdir -p "$ETC" "$LOG" "$RUN" "$SPOOL_CTLD" "$SPOOL_D"
    # slurmdbd refuses a config readable by others (it holds the DB password)
    slurm_conf | install_file "$ETC/slurm.conf" 644 && SLURM_CONF_CHANGED=1
    slurmdbd_conf | install_file "$ETC/slurmdbd.conf" 600 && DBD_CONF_CHANGED=1
    return 0
}

# ---------------------------------------------------------------------------------------- daemons
start_munge() {
    if pid=$(pid_of munged /run/munge/munged.pid); then say "munged running (pid $pid)"; return; fi
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating $MUNGE_KEY"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY"; chmod 400 "$MUNGE_KEY"
    mkdir -p /run/munge /var/log/munge; chown munge:munge /run/munge /var/log/munge
    chmod 755 /run/munge
    rm -f /run/munge/munged.pid   # stale; munged also refuses to start on a stale socket lock
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force 9>&- || fail_with "$MUNGE_LOG" "munged did not start"
    wait_until "$WAIT_S" "$MUNGE_LOG" "munge" bash -c 'munge -n | unmunge'
}

start_mariadb() {
    if pid=$(pid_of mariadbd "$DB_PID"); then say "mariadbd running (pid $pid)"; else
        mkdir -p "$DB_RUN" "$(dirname "$DB_LOG")"
        chown mysql:mysql "$DB_RUN" "$(dirname "$DB_LOG")"
        if [[ ! -d $DB_DATA/mysql ]]; then
            say "initialising $DB_DATA"
            mariadb-install-db --user=mysql --datadir="$DB_DATA" >/dev/null \
                || fail_with "$DB_LOG" "mariadb-install-db failed"
        fi
        say "starting mariadbd (log $DB_LOG)"
        # Socket only; setsid+nohup so it outlives this shell and the caller's terminal.
        setsid nohup /usr/sbin/mariadbd --user=mysql --datadir="$DB_DATA" --skip-networking \
            --socket="$DB_SOCK" --pid-file="$DB_PID" --log-error="$DB_LOG" \
            --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 9>&- &
    fi
    wait_until "$WAIT_S" "$DB_LOG" "mariadbd" mariadb-admin --socket="$DB_SOCK" ping
    mariadb --socket="$DB_SOCK" -e "
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
        ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" \
        || fail_with "$DB_LOG" "could not create the database user $DB_USER"
}

start_slurmdbd() {
    if pid=$(pid_of slurmdbd "$RUN/slurmdbd.pid"); then say "slurmdbd running (pid $pid)"; else
        say "starting slurmdbd (log $LOG/slurmdbd.log)"
        slurmdbd 9>&- || fail_with "$LOG/slurmdbd.log" "slurmdbd did not start"
    fi
    wait_until "$WAIT_S" "$LOG/slurmdbd.log" "slurmdbd (sacctmgr list cluster)" \
        sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        say "adding cluster $CLUSTER to the accounting database"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null \
            || fail_with "$LOG/slurmdbd.log" "sacctmgr add cluster $CLUSTER failed"
    fi
}

start_slurmctld() {
    if pid=$(pid_of slurmctld "$RUN/slurmctld.pid"); then say "slurmctld running (pid $pid)"; else
        say "starting slurmctld (log $LOG/slurmctld.log)"
        slurmctld 9>&- || fail_with "$LOG/slurmctld.log" "slurmctld did not start"
    fi
    wait_until "$WAIT_S" "$LOG/slurmctld.log" "slurmctld (scontrol ping)" \
        bash -c 'scontrol ping | grep -q "is UP"'
}

node_ready() {
    sinfo -h -N -n "$HOST" -o %T | grep -Eqx 'idle|mixed|allocated|completing'
}

start_slurmd() {
    if pid=$(pid_of slurmd "$RUN/slurmd.pid"); then say "slurmd running (pid $pid)"; else
        say "starting slurmd (log $LOG/slurmd.log)"
        slurmd 9>&- || fail_with "$LOG/slurmd.log" "slurmd did not start"
    fi
    local deadline=$((SECONDS + WAIT_S)) state
    until node_ready; do
        state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true)
        if [[ $state =~ ^(down|drain|drained|draining) ]]; then
            say "node $HOST is $state: resuming it"
            scontrol update nodename="$HOST" state=resume 2>/dev/null || true
        fi
        ((SECONDS < deadline)) \
            || fail_with "$LOG/slurmd.log" "node $HOST not idle after ${WAIT_S}s (state: ${state:-?})"
        sleep 0.5
    done
}

cmd_start() {
    [[ $EUID -eq 0 ]] || die "run as root"
    local t0=$SECONDS
    # one start at a time (several test runs may call it at once); daemons get 9>&- so that
    # they do not inherit (and hold) the lock
    exec 9>/run/malm-slurm-cluster.lock
    flock -w "$WAIT_S" 9 || die "another cluster.sh start holds /run/malm-slurm-cluster.lock"
    install_packages
    write_configs
    if ((SLURM_CONF_CHANGED)) && pid_of slurmctld "$RUN/slurmctld.pid" >/dev/null; then
        say "slurm.conf changed: restarting slurmd and slurmctld (running jobs survive)"
        stop_daemon slurmd "$RUN/slurmd.pid"
        stop_daemon slurmctld "$RUN/slurmctld.pid"
    fi
    if ((DBD_CONF_CHANGED)) && pid_of slurmdbd "$RUN/slurmdbd.pid" >/dev/null; then
        say "slurmdbd.conf changed: restarting slurmdbd"
        stop_daemon slurmdbd "$RUN/slurmdbd.pid"
    fi
    start_munge
    start_mariadb
    start_slurmdbd   # must answer, with the cluster added, before slurmctld starts
    start_slurmctld
    start_slurmd
    say "cluster $CLUSTER up in $((SECONDS - t0))s; node $HOST: $(sinfo -h -N -n "$HOST" -o %T)"
}

# stop_daemon NAME PIDFILE: SIGTERM, wait up to WAIT_S, then SIGKILL.
stop_daemon() {
    local name=$1 pidfile=$2 pid deadline
    if ! pid=$(pid_of "$name" "$pidfile"); then say "$name not running"; return 0; fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + WAIT_S))
    while alive "$pid" "$name"; do
        if ((SECONDS >= deadline)); then
            say "$name (pid $pid) ignored SIGTERM for ${WAIT_S}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
}

cmd_stop() {
    [[ $EUID -eq 0 ]] || die "run as root"
    # Reverse start order; running jobs are recovered from /var/spool on the next start.
    stop_daemon slurmd "$RUN/slurmd.pid"
    stop_daemon slurmctld "$RUN/slurmctld.pid"
    stop_daemon slurmdbd "$RUN/slurmdbd.pid"
    stop_daemon mariadbd "$DB_PID"
    stop_daemon munged /run/munge/munged.pid
}

cmd_status() {
    local name pidfile pid rc=0
    for spec in munged:/run/munge/munged.pid mariadbd:$DB_PID slurmdbd:$RUN/slurmdbd.pid \
                slurmctld:$RUN/slurmctld.pid slurmd:$RUN/slurmd.pid; do
        name=${spec%%:*}; pidfile=${spec#*:}
        if pid=$(pid_of "$name" "$pidfile"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s stopped\n' "$name"; rc=1
        fi
    done
    if command -v sinfo >/dev/null && sinfo >/dev/null 2>&1; then sinfo; else
        echo "sinfo: controller not reachable"; rc=1
    fi
    return $rc
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

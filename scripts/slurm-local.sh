#!/bin/sh
# A one-node Slurm cluster on this machine, for testing bn-exp's job arrays against a real
# Slurm: Debian's slurm-wlm and munge, run as root without systemd.
#   scripts/slurm-local.sh start    install if needed, configure, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh stop     stop the three daemons (safe to run when they are down)
#   scripts/slurm-local.sh status   sinfo
# No cgroup.conf is written: with CgroupPlugin=disabled, slurmd 22.05 refuses to start; the
# linuxproc process tracker and task/none need none.
set -eu
host=$(hostname -s)
cpus=$(nproc)
conf=/etc/slurm/slurm.conf

install() {
    if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
}

start_munge() {
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- /usr/sbin/munged
    fi
}

write_conf() {
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat >"$conf" <<CONF
ClusterName=bnexp
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

wait_idle() {
    i=0
    while [ $i -lt 60 ]; do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            return 0
        fi
        sleep 1
        i=$((i + 1))
    done
    echo "slurm-local: the node is not idle after 60 s; see /var/log/slurm/" >&2
    sinfo >&2 || true
    return 1
}

case ${1:-} in
start)
    install
    start_munge
    write_conf
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    wait_idle
    sinfo
    ;;
stop)
    scontrol shutdown >/dev/null 2>&1 || true
    for daemon in slurmd slurmctld munged; do
        pkill -x "$daemon" 2>/dev/null || true
    done
    # Wait for them to go (a test starts the next cluster right after), then make sure.
    i=0
    while { pgrep -x slurmd || pgrep -x slurmctld || pgrep -x munged; } >/dev/null &&
        [ $i -lt 20 ]; do
        sleep 0.5
        i=$((i + 1))
    done
    for daemon in slurmd slurmctld munged; do
        pkill -9 -x "$daemon" 2>/dev/null || true
    done
    ;;
status)
    sinfo
    ;;
*)
    echo "usage: scripts/slurm-local.sh start|stop|status" >&2
    exit 2
    ;;
esac

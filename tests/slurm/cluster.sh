#!/usr/bin/env bash
# A real single-node SLURM cluster for the tests (architecture.md §5): Debian's slurmctld, slurmd,
# slurm-client and munge, one node with every core, one declared (fake) GPU, one partition "debug".
#
#   tests/slurm/cluster.sh start DIR   install what is missing, write /etc/slurm/slurm.conf (state, logs
#                                      and PIDs in DIR), start munged, slurmctld and slurmd, wait until
#                                      the node is idle; prints "SLURM_CONF=/etc/slurm/slurm.conf"
#   tests/slurm/cluster.sh stop DIR    stop the daemons this script started (by the PIDs in DIR)
#
# Needs root (CI has it). Exit status 3 means SLURM cannot run here (not root, no apt, no start):
# the test that uses it skips with the message printed on stderr.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")
cannot() { echo "slurm cluster: $*" >&2; exit 3; }

stop() {
    for name in slurmd slurmctld munged; do
        if [[ -f "$dir/$name.pid" ]]; then
            pid=$(cat "$dir/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$dir/$name.pid"
        fi
    done
}

# Jobs' own srun calls read /etc/slurm/slurm.conf (SLURM_CONF does not reach them), so the config lives there,
# marked as ours; it is removed again on stop. Someone else's slurm.conf is never touched.
etc=/etc/slurm
marker="# written by rewardlab tests/slurm/cluster.sh"

if [[ $cmd == stop ]]; then
    stop
    if grep -qs "^$marker" "$etc/slurm.conf"; then rm -f "$etc/slurm.conf" "$etc/gres.conf"; fi
    exit 0
fi
[[ $cmd == start ]] || cannot "unknown command $cmd"
[[ $(id -u) == 0 ]] || cannot "needs root to run slurmctld/slurmd and munged"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "slurm is not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1; } \
        || cannot "apt-get install slurmctld slurmd slurm-client munge failed"
fi

mkdir -p "$dir"/{state,spool,log}
host=$(hostname -s)
cpus=$(nproc)
free_mb=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
memory=$(( free_mb * 8 / 10 ))

# munge: a key, its run directory, the daemon (as user munge).
if ! pgrep -x munged >/dev/null; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge && chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged || cannot "munged did not start"
    sleep 0.5
    pgrep -x munged > "$dir/munged.pid" || cannot "munged is not running"
fi

if [[ -e $etc/slurm.conf ]] && ! grep -qs "^$marker" "$etc/slurm.conf"; then
    cannot "$etc/slurm.conf exists and is not ours: a real cluster is configured here"
fi
mkdir -p "$etc"
cat > "$etc/slurm.conf" <<CONF
$marker
ClusterName=rewardlab-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
ReturnToService=2
GresTypes=gpu
SchedulerType=sched/backfill
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$host CPUs=$cpus RealMemory=$memory Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# A fake GPU: gpu=1 jobs are scheduled, and SLURM sets CUDA_VISIBLE_DEVICES=0 in them.
echo "NodeName=$host Name=gpu Count=1 File=/dev/null" > "$etc/gres.conf"

export SLURM_CONF="$etc/slurm.conf"
slurmctld -D -f "$SLURM_CONF" -i >/dev/null 2>&1 &
echo $! > "$dir/slurmctld.pid.launch"
sleep 1
slurmd -D -f "$SLURM_CONF" >/dev/null 2>&1 &
echo $! > "$dir/slurmd.pid.launch"
mv "$dir/slurmctld.pid.launch" "$dir/slurmctld.pid"
mv "$dir/slurmd.pid.launch" "$dir/slurmd.pid"

for _ in $(seq 60); do
    if sinfo -h -o "%t" 2>/dev/null | grep -qx "idle"; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
stop
cannot "the node did not become idle within 30 s"

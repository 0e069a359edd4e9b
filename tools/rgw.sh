#!/usr/bin/env bash
# A throwaway single-node Ceph cluster (1 mon, 1 OSD, no mgr) with radosgw (S3), all under DIR.
#
#   rgw.sh start DIR     make (first time) and start it; idempotent: a running one is left as is
#   rgw.sh stop DIR      stop the daemons this script started (pids in DIR/run); idempotent
#   rgw.sh env DIR       `export` lines: S3_ENDPOINT, S3_HOST, AWS_ACCESS_KEY_ID, ...
#   rgw.sh status DIR    each daemon: pid and RSS, or "stopped"
#   rgw.sh destroy DIR   stop, then rm -rf DIR
#   rgw.sh user DIR UID ACCESS SECRET    one more S3 user with fixed keys (while running)
#   rgw.sh role DIR NAME  an STS role the first user may assume, allowed s3:* (RGW_STS=1)
#   rgw.sh install       the Debian packages below, if radosgw is missing (start does it too)
#
# Debian 12 packages: ceph-mon ceph-osd radosgw ceph-common (--no-install-recommends), about
# 61 MB; `start` installs them when radosgw is missing (apt-get, as root or through sudo).
# Tested with Ceph 16.2.15 (pacific), Debian 12's. Used by the tests' RGW tier
# (`python -m pytest -m s3 --s3=rgw`, tests/integration/harness/rgw.py) and by
# `iterum-sidecar demo --s3-endpoint` (docs/s3-servers.md).
# Everything binds 127.0.0.1; no systemd, nothing in /etc/ceph or /var/lib/ceph. Inside the
# cluster auth is "none" (no keyrings); S3 requests are still SigV4/V2-checked by radosgw.
# The OSD is a memstore (objects in RAM, saved under DIR/osd on a clean stop; a DIR whose OSD
# was killed is made anew) or, with RGW_STORE=bluestore, a sparse 10 GiB file DIR/osd/0.block.
# Knobs: RGW_PORT (default: a free port, chosen once per DIR), RGW_ACCESS_KEY,
# RGW_SECRET_KEY (defaults below), RGW_STORE, RGW_MEMSTORE_BYTES, RGW_VERBOSE=1 (timings),
# RGW_STS=1 (STS AssumeRole on; then a wrong secret is answered AccessDenied).
set -Eeuo pipefail
unset CEPH_CONF CEPH_ARGS  # the ceph tools would read them (e.g. from an `rgw.sh env` before)

ACCESS_KEY=${RGW_ACCESS_KEY:-rgw-test-access-key}
SECRET_KEY=${RGW_SECRET_KEY:-rgw-test-secret-key}
STORE=${RGW_STORE:-memstore}
PY=/usr/bin/python3  # Debian's, for python3-rados (a dependency of ceph-common)
PACKAGES="ceph-mon ceph-osd radosgw ceph-common"
# radosgw makes these on first use, each a few seconds; made here in one go instead
POOLS=(.rgw.root default.rgw.log default.rgw.control default.rgw.meta
       default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec)

die() { echo "rgw.sh: $*" >&2; exit 1; }
phase() { [[ -z ${RGW_VERBOSE:-} ]] || echo "rgw.sh: +$((SECONDS - T0))s $*" >&2; }

install_packages() {  # the Debian packages, once: apt-get update, then install
    command -v radosgw >/dev/null && return 0
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null ||
            die "radosgw is not installed and this is not root: apt-get install -y --no-install-recommends $PACKAGES"
        sudo=(sudo -n)
    fi
    echo "rgw.sh: installing $PACKAGES (apt-get)" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
        die "apt-get update failed"
    # shellcheck disable=SC2086
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $PACKAGES >&2 || die "apt-get install $PACKAGES failed"
    command -v radosgw >/dev/null || die "radosgw still missing after apt-get install"
}

new_uuid() { $PY -c 'import uuid; print(uuid.uuid4())'; }

answers() {  # answers PORT: radosgw answers HTTP on it
    $PY -c 'import sys, urllib.request as u; u.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)' "$1" 2>/dev/null
}

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

alive() {  # alive NAME: its pid runs, and it is ours (its command line names our conf)
    local pidfile=$DIR/run/$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-c $CONF "
}

launch() {  # launch NAME cmd...: in the foreground (-f) of its own session; the pid is kept
    local name=$1; shift
    alive "$name" && return 0
    setsid "$@" -c "$CONF" -f >>"$DIR/log/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/run/$name.pid"
}

wait_s3() {  # until radosgw answers; fail at once if a daemon died (with its log's tail)
    local end=$((SECONDS + ${1:-120})) name
    until answers "$(<"$DIR/rgw.port")"; do
        for name in mon osd rgw; do
            alive "$name" || die "$name exited; $DIR/log/$name.out says: $(tail -3 "$DIR/log/$name.out")"
        done
        ((SECONDS < end)) || die "radosgw did not answer within ${1:-120}s (logs: $DIR/log)"
        sleep 0.1
    done
}

mon_setup() {  # OSD id 0 in the CRUSH map and radosgw's pools, through the monitor
    $PY - "$CONF" "$(<"$DIR/osd.uuid")" "${POOLS[@]}" <<'EOF'
import json, sys, time
import rados
conf, osd_uuid, pools = sys.argv[1], sys.argv[2], sys.argv[3:]
deadline = time.monotonic() + 30
while True:
    try:
        cluster = rados.Rados(conffile=conf)
        cluster.connect(timeout=5)
        break
    except rados.Error:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)

def command(**kw):
    while True:  # with auth none the first commands can go out before the monmap: fsid 0
        ret, out, err = cluster.mon_command(json.dumps(kw), b"", timeout=10)
        if ret == -1 and "wrong fsid" in err and time.monotonic() < deadline:
            time.sleep(0.05)
            continue
        if ret < 0:
            sys.exit(f"mon command {kw}: {ret} {err}")
        return out

command(prefix="osd new", uuid=osd_uuid, id=0)
command(prefix="osd crush add", id=0, weight=1.0, args=["root=default", "host=localhost"])
for pool in pools:
    command(prefix="osd pool create", pool=pool, pg_num=8, pgp_num=8)
    command(prefix="osd pool application enable", pool=pool, app="rgw")
cluster.shutdown()
EOF
}

write_conf() {
    local fsid=$1 mon_port=$2 rgw_port=$3
    cat <<EOF
[global]
fsid = $fsid
mon_host = v1:127.0.0.1:$mon_port
mon_initial_members = a
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = /dev/null
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
log_file = $DIR/log/\$name.log
crash_dir = $DIR/log
log_to_stderr = false
err_to_stderr = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0

[mon]
mon_data = $DIR/mon/\$id
# propose map changes at once, not batched for a second: pool creations take ms, not 1 s
paxos_propose_interval = 0.01
paxos_min_wait = 0.01

[osd]
osd_data = $DIR/osd/\$id
osd_objectstore = $STORE
# SIGTERM: a full shutdown, so that a memstore saves its objects
osd_fast_shutdown = false
# this script puts the OSD in the CRUSH map: the OSD's own mon commands at start can go
# out before its first monmap (auth none), get "wrong fsid", and the OSD exits
osd_crush_update_on_start = false
osd_class_update_on_start = false
memstore_device_bytes = ${RGW_MEMSTORE_BYTES:-4294967296}
bluestore_block_path = $DIR/osd/\$id.block
bluestore_block_create = true
bluestore_block_size = 10737418240
bluestore_fsck_on_mount = false
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_memory_target = 939524096
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1

[client]
rgw_data = $DIR/rgw
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_thread_pool_size = 64
rgw_enable_usage_log = false
rgw_enable_ops_log = false
rgw_enable_lc_threads = false
rgw_dynamic_resharding = false
EOF
    if [[ -n ${RGW_STS:-} ]]; then
        # STS AssumeRole: temporary credentials with a session token. Side effect: a wrong
        # secret is then answered AccessDenied, not SignatureDoesNotMatch
        printf 'rgw_s3_auth_use_sts = true\nrgw_sts_key = rgwtestsstskey16\n'
    fi
}

init_cluster() {
    mkdir -p "$DIR"/{mon,osd/0,rgw,log,run}
    local fsid mon_port rgw_port
    fsid=$(new_uuid)
    mon_port=$(free_port)
    rgw_port=${RGW_PORT:-$(free_port)}
    while [[ $rgw_port == "$mon_port" ]]; do mon_port=$(free_port); done
    echo "$rgw_port" >"$DIR/rgw.port"
    new_uuid >"$DIR/osd.uuid"
    write_conf "$fsid" "$mon_port" "$rgw_port" >"$CONF.new"
    monmaptool --create --fsid "$fsid" --addv a "v1:127.0.0.1:$mon_port" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF.new" --mkfs -i a --monmap "$DIR/monmap" >>"$DIR/log/mkfs.out" 2>&1
    ceph-osd -c "$CONF.new" --no-mon-config -i 0 --mkfs --osd-uuid "$(<"$DIR/osd.uuid")" >>"$DIR/log/mkfs.out" 2>&1
    mv "$CONF.new" "$CONF"  # the conf is there only once the mon and the OSD are made
}

add_user() {  # add_user UID ACCESS SECRET: an S3 user with fixed keys (kept if it exists)
    radosgw-admin -c "$CONF" user info --uid="$1" >/dev/null 2>&1 ||
        timeout 60 radosgw-admin -c "$CONF" user create --uid="$1" --display-name="$1" \
            --access-key="$2" --secret="$3" >/dev/null
}

add_role() {  # add_role NAME: assumable by the first user (uid test), allowed s3:* on all
    local trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/test"]},"Action":["sts:AssumeRole"]}]}'
    local allow='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":"arn:aws:s3:::*"}]}'
    radosgw-admin -c "$CONF" role get --role-name="$1" >/dev/null 2>&1 ||
        timeout 60 radosgw-admin -c "$CONF" role create --role-name="$1" --path=/ \
            --assume-role-policy-doc="$trust" >/dev/null
    timeout 60 radosgw-admin -c "$CONF" role-policy put --role-name="$1" --policy-name=s3 \
        --policy-doc="$allow" >/dev/null
    echo "arn:aws:iam:::role/$1"
}

cmd_start() {
    T0=$SECONDS
    install_packages
    if [[ -f $CONF ]] && alive mon && alive osd && alive rgw; then
        wait_s3 && return 0
    fi
    if [[ -f $CONF ]] && grep -q '^osd_objectstore = memstore' "$CONF" && ! alive osd &&
        [[ -f $DIR/run/ready && ! -f $DIR/run/clean ]]; then
        echo "rgw.sh: the OSD of $DIR was not stopped cleanly, its memstore is lost: made anew" >&2
        FAST=0 cmd_stop  # thrown away: no grace
        RGW_PORT=$(<"$DIR/rgw.port")  # same endpoint as before
        rm -rf "$DIR"
    fi
    [[ -f $CONF ]] || init_cluster
    mkdir -p "$DIR/run" "$DIR/log"
    rm -f "$DIR/run/clean"
    phase "conf, mon and OSD made"
    launch mon ceph-mon -i a
    [[ -f $DIR/run/ready ]] || { mon_setup; phase "OSD in the CRUSH map, pools made"; }
    launch osd ceph-osd -i 0
    launch rgw radosgw -n client.rgw  # waits in librados until the OSD is up
    wait_s3 120
    phase "radosgw answers"
    if [[ ! -f $DIR/run/ready ]]; then
        add_user test "$ACCESS_KEY" "$SECRET_KEY"
        echo "$ACCESS_KEY $SECRET_KEY" >"$DIR/keys"
        touch "$DIR/run/ready"
        phase "S3 user made"
    fi
    echo "rgw.sh: S3 at http://127.0.0.1:$(<"$DIR/rgw.port") ready in $((SECONDS - T0))s" >&2
}

term() {  # term NAME: SIGTERM to our daemon NAME, if it runs
    if alive "$1"; then
        kill -TERM "$(<"$DIR/run/$1.pid")" 2>/dev/null || true
    elif [[ $1 == osd && -f $DIR/run/osd.pid ]]; then
        CLEAN=0  # the OSD died on its own: a memstore did not save
    fi
}

reap() {  # reap NAME SECONDS: wait for it to exit (counted from now); then SIGKILL
    local end=$((SECONDS + $2)) pid
    if alive "$1"; then
        pid=$(<"$DIR/run/$1.pid")
        while [[ -e /proc/$pid ]] && ((SECONDS < end)); do sleep 0.05; done
        if alive "$1"; then
            echo "rgw.sh: $1 (pid $pid) still runs $2s after SIGTERM: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            [[ $1 != osd ]] || CLEAN=0
        fi
    fi
    rm -f "$DIR/run/$1.pid"
}

cmd_stop() {  # SIGTERM: clean shutdowns; the OSD tells the mon it goes, a memstore saves
    [[ -d $DIR/run ]] || return 0
    CLEAN=1
    term rgw  # first: its shutdown still talks to the OSD (it hangs if the OSD is gone)
    reap rgw "${FAST:-10}"  # no state of its own: killed after 10 s
    term osd
    reap osd "${FAST:-60}"
    term mon
    reap mon "${FAST:-30}"
    if ((CLEAN)); then touch "$DIR/run/clean"; fi
}

cmd_env() {
    [[ -f $DIR/keys ]] || die "no cluster in $DIR (run: rgw.sh start $DIR)"
    local port keys
    port=$(<"$DIR/rgw.port")
    read -r -a keys <"$DIR/keys"
    cat <<EOF
export S3_ENDPOINT=http://127.0.0.1:$port
export S3_HOST=127.0.0.1:$port
export AWS_ACCESS_KEY_ID=${keys[0]}
export AWS_SECRET_ACCESS_KEY=${keys[1]}
export AWS_DEFAULT_REGION=us-east-1
export CEPH_CONF=$CONF
EOF
}

cmd_status() {
    local name pid
    for name in mon osd rgw; do
        if alive "$name"; then
            pid=$(<"$DIR/run/$name.pid")
            echo "$name pid=$pid rss_kib=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")"
        else
            echo "$name stopped"
        fi
    done
}

if [[ $# -eq 1 && $1 == install ]]; then install_packages; exit; fi
[[ $# -eq 2 || ($# -eq 5 && $1 == user) || ($# -eq 3 && $1 == role) ]] ||
    die "usage: rgw.sh start|stop|env|status|destroy DIR | user DIR UID ACCESS SECRET | role DIR NAME | install"
DIR=$(realpath -m "$2")
CONF=$DIR/ceph.conf
trap 'echo "rgw.sh: failed at line $LINENO: $BASH_COMMAND (logs: $DIR/log)" >&2' ERR
case $1 in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    status) cmd_status ;;
    destroy) cmd_stop; rm -rf "$DIR" ;;
    user) add_user "$3" "$4" "$5" ;;
    role) add_role "$3" ;;
    *) die "unknown command: $1" ;;
esac

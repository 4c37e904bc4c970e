#!/usr/bin/env bash
# A throwaway Redis server for the cluster tests (node registry, room placement, presence, cross-node pub/sub).
#
#   scripts/redis.sh start DIR     start a server kept in DIR, print its redis:// URL on stdout
#   scripts/redis.sh restart DIR   stop it and start it again on the same port with the same password, empty
#                                  (what tests use to play "Redis restarted"); prints the URL again
#   scripts/redis.sh stop DIR      stop the server of DIR (if running); DIR itself is left for the caller
#
# The server listens only on 127.0.0.1, on a free port outside the kernel's ephemeral range (so that no outgoing
# connection can take it between a stop and a restart), with no Unix socket. It keeps nothing: no RDB snapshots, no
# append-only file, shut down without saving. Courier keeps nothing durable in Redis, and a restart must come back
# empty. Connections need a password, random per DIR and part of the printed URL (redis://:PASSWORD@127.0.0.1:PORT/0).
# DIR holds redis.conf (port and password, reused by restart), url, redis.pid, redis.log and lock (start, restart
# and stop of one DIR run one at a time).
# Installs Debian's `redis-server` (which brings redis-cli) when redis-server or redis-cli is not on PATH.
# Everything but the URL goes to stderr.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR | restart DIR | stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

ensure_installed() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    echo "redis.sh: installing Redis (Debian package redis-server)" >&2
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq redis-server >&2
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        echo "redis.sh: redis-server/redis-cli not found after installing redis-server" >&2
        exit 1
    fi
}

# Serializes start, restart and stop of one DIR (tests may restart a shared server from several threads). The lock
# is fd 9; the daemon must not inherit it, or it would hold the lock for its whole life.
lock() {
    exec 9>"$dir/lock"
    flock -w 30 9 || {
        echo "redis.sh: $dir/lock is held for more than 30 s" >&2
        exit 1
    }
}

# The value of `key` in DIR/redis.conf (empty when absent).
conf_get() {
    sed -n "s/^$1 //p" "$dir/redis.conf" 2>/dev/null | head -n 1
}

# redis-cli against the server of DIR, for at most 2 s (whatever else holds the port may accept and never answer);
# the password goes through the environment, not the command line.
cli() {
    REDISCLI_AUTH=$(conf_get requirepass) timeout 2 redis-cli -h 127.0.0.1 -p "$(conf_get port)" "$@"
}

# The pid of the server of DIR if it is running (a live redis-server process), else nothing; never fails.
running_pid() {
    local pid
    pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 0
    case "$pid" in '' | *[!0-9]*) return 0 ;; esac
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis-server; then
        echo "$pid"
    fi
}

# A port nothing listens on, outside the kernel's ephemeral range (above it when there is room, else below it).
pick_port() {
    local lo=32768 hi=60999 base span port
    read -r lo hi 2>/dev/null </proc/sys/net/ipv4/ip_local_port_range || true
    if [ $((65535 - hi)) -ge 1000 ]; then
        base=$((hi + 1)) span=$((65535 - hi))
    else
        base=10000 span=$((lo - 10000))
    fi
    while :; do
        port=$((base + $(od -An -tu4 -N4 /dev/urandom | tr -d ' ') % span))
        if ! (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
}

# Starts redis-server on DIR/redis.conf and waits (up to 10 s) until it answers PING. Returns 0 when it answers,
# 3 when its port is taken, 1 on any other failure (its log then goes to stderr).
launch() {
    [ ! -s "$dir/redis.log" ] || mv "$dir/redis.log" "$dir/redis.log.1"
    redis-server "$dir/redis.conf" >&2 9>&- || return 1
    local i
    for i in $(seq 1 100); do
        if grep -q "Address already in use" "$dir/redis.log" 2>/dev/null; then
            return 3
        fi
        if [ "$(cli ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "redis.sh: the server did not answer within 10 s; its log:" >&2
    tail -n 30 "$dir/redis.log" >&2 2>/dev/null || true
    stop_server
    return 1
}

write_conf() {
    (umask 077 && cat >"$dir/redis.conf") <<EOF
# Written by scripts/redis.sh; restart reuses this port and password.
bind 127.0.0.1
port $1
requirepass $2
protected-mode yes
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
EOF
}

start() {
    ensure_installed
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    lock
    if [ -n "$(running_pid)" ]; then
        echo "redis.sh: a server of $dir runs already; stop it first (or restart)" >&2
        exit 1
    fi
    local password port attempt rc
    password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    # The port is free when picked; if another program binds it before the server does, pick another.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$(pick_port)
        write_conf "$port" "$password"
        rc=0
        launch || rc=$?
        if [ $rc -eq 0 ]; then
            print_url
            return 0
        fi
        [ $rc -eq 3 ] || exit 1
        echo "redis.sh: port $port is taken (attempt $attempt), trying another" >&2
    done
    echo "redis.sh: no free port after 10 attempts" >&2
    exit 1
}

print_url() {
    local url
    url=$(printf 'redis://:%s@127.0.0.1:%s/0' "$(conf_get requirepass)" "$(conf_get port)")
    (umask 077 && printf '%s\n' "$url" >"$dir/url")
    printf '%s\n' "$url"
}

# Stops the server of DIR: SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL, each waited for (bounded).
stop_server() {
    local pid i
    pid=$(running_pid)
    [ -n "$pid" ] || return 0
    if command -v redis-cli >/dev/null 2>&1; then
        cli shutdown nosave >/dev/null 2>&1 || true
    fi
    for i in $(seq 1 50); do
        [ -n "$(running_pid)" ] || return 0
        [ "$i" -ne 30 ] || kill -TERM "$pid" 2>/dev/null || true
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do
        [ -n "$(running_pid)" ] || return 0
        sleep 0.1
    done
    echo "redis.sh: redis-server (pid $pid) does not stop" >&2
    return 1
}

stop() {
    dir=$(cd "$dir" 2>/dev/null && pwd) || exit 0
    [ -f "$dir/redis.conf" ] || exit 0
    lock
    stop_server
    rm -f "$dir/redis.pid"
}

restart() {
    local given=$dir
    if ! dir=$(cd "$dir" 2>/dev/null && pwd) || [ ! -f "$dir/redis.conf" ]; then
        echo "redis.sh: no $given/redis.conf: start a server there first" >&2
        exit 1
    fi
    ensure_installed
    lock
    stop_server
    rm -f "$dir/redis.pid"
    local rc=0
    launch || rc=$?
    if [ $rc -eq 3 ]; then
        echo "redis.sh: port $(conf_get port) was taken while the server was down; cannot restart on it" >&2
        tail -n 5 "$dir/redis.log" >&2
    fi
    [ $rc -eq 0 ] || exit 1
    print_url
}

case "$cmd" in
start) start ;;
restart) restart ;;
stop) stop ;;
*) usage ;;
esac

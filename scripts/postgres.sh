#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the PostgreSQL chat store.
#
#   scripts/postgres.sh start DIR   create a cluster in DIR, start it, print its postgres:// URL on stdout
#   scripts/postgres.sh stop DIR    stop the server of DIR (if running); DIR itself is left for the caller
#   scripts/postgres.sh resume DIR  start the stopped server of DIR again, same port, data kept (tests use it to
#                                   play "PostgreSQL was down for a while")
#
# The server listens only on 127.0.0.1, on a free ephemeral port, with no Unix socket at all; it keeps fsync and
# synchronous_commit on, as the store requires. Connections need the password of the superuser `courier`, which
# is random per cluster and is part of the printed URL. PostgreSQL refuses to run as root, so as root the cluster
# belongs to the `postgres` system user (created by Debian's package), or to `courier-pg`, created if need be.
# Installs Debian's `postgresql` when no initdb/pg_ctl is found in /usr/lib/postgresql/*/bin or on PATH.
# Everything but the URL goes to stderr; the server's log is DIR/postgres.log.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR | stop DIR | resume DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Sets PG_BIN to the directory holding initdb and pg_ctl, newest version first; fails if there is none.
find_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            PG_BIN=$d
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        PG_BIN=$(dirname "$(command -v pg_ctl)")
        return 0
    fi
    return 1
}

# Runs a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

start() {
    if ! find_bin; then
        echo "postgres.sh: installing PostgreSQL (Debian package postgresql)" >&2
        if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq >&2
        $sudo apt-get install -y -qq postgresql >&2
        find_bin || {
            echo "postgres.sh: initdb/pg_ctl not found after installing postgresql" >&2
            exit 1
        }
    fi
    if [ "$(id -u)" -eq 0 ]; then
        if id -u postgres >/dev/null 2>&1; then
            owner=postgres
        else
            id -u courier-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin courier-pg
            owner=courier-pg
        fi
    else
        owner=$(id -un)
    fi

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -e "$dir/data" ]; then
        echo "postgres.sh: $dir/data exists already; stop and remove it first" >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        chown "$owner" "$dir"
        chmod 700 "$dir"
    fi
    if ! as_owner test -w "$dir"; then
        echo "postgres.sh: $owner cannot write $dir (is a parent directory closed to it?)" >&2
        exit 1
    fi

    local password
    password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" >"$dir/password")
    [ "$(id -u)" -ne 0 ] || chown "$owner" "$dir/password"

    as_owner "$PG_BIN/initdb" -D "$dir/data" -U courier --pwfile="$dir/password" \
        --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }

    # A free ephemeral port: a random one nobody answers on; if the server still cannot bind it (a race with
    # another program), try another.
    local port attempt
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((49152 + $(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % 16000))
        if (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        as_owner sh -c "cat >'$dir/data/courier.conf'" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
EOF
        grep -q "^include_if_exists = 'courier.conf'" "$dir/data/postgresql.conf" ||
            as_owner sh -c "echo \"include_if_exists = 'courier.conf'\" >>'$dir/data/postgresql.conf'"
        if as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null 2>&1; then
            printf 'postgres://courier:%s@127.0.0.1:%s/postgres\n' "$password" "$port"
            return 0
        fi
        if ! grep -q "could not bind\|Address already in use" "$dir/postgres.log" 2>/dev/null; then
            break
        fi
        echo "postgres.sh: port $port is taken (attempt $attempt), trying another" >&2
    done
    echo "postgres.sh: the server did not start; its log:" >&2
    tail -n 30 "$dir/postgres.log" >&2 2>/dev/null || true
    exit 1
}

stop() {
    dir=$(cd "$dir" 2>/dev/null && pwd) || exit 0
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    find_bin || {
        echo "postgres.sh: pg_ctl not found" >&2
        exit 1
    }
    owner=$(stat -c %U "$dir/data")
    as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2
}

resume() {
    dir=$(cd "$dir" 2>/dev/null && pwd) || { echo "postgres.sh: no $dir" >&2; exit 1; }
    [ -f "$dir/data/PG_VERSION" ] || { echo "postgres.sh: no cluster in $dir" >&2; exit 1; }
    find_bin || {
        echo "postgres.sh: pg_ctl not found" >&2
        exit 1
    }
    owner=$(stat -c %U "$dir/data")
    as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null
}

case "$cmd" in
start) start ;;
stop) stop ;;
resume) resume ;;
*) usage ;;
esac

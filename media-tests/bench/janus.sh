#!/usr/bin/env bash
# Janus 1.1 (Debian's `janus`, videoroom plugin) for `media-tests load --target janus`.
# Usage: janus.sh CONFDIR — installs janus when missing (never leaving the Debian service running), writes a minimal
# config into CONFDIR and prints CONFDIR as its last line. The load generator then runs, inside its namespace:
#   janus -F CONFDIR -C CONFDIR/janus.jcfg --disable-colors --interface NS_ADDR
# (foreground, logs on stdout, no pid file: the child's pid is janus's; --interface only sets the SDP's c= line).
set -euo pipefail
dir=$(realpath -m "${1:?usage: janus.sh CONFDIR}")

if ! command -v janus >/dev/null; then
    # policy-rc.d exiting 101 forbids maintainer scripts to start services (Docker images ship one already).
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends janus >&2 || { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    # The package ships an init script and a systemd unit (`--daemon`): stop and disable both, wherever they apply.
    invoke-rc.d janus stop >/dev/null 2>&1 || true
    update-rc.d janus disable >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then systemctl disable --now janus.service >/dev/null 2>&1 || true; fi
fi
# The plugin folder is multiarch (/usr/lib/<triplet>/janus): ask dpkg where it is.
lib=$(dirname "$(dirname "$(dpkg -L janus | grep '/plugins/libjanus_videoroom.so$')")")

mkdir -p "$dir/plugins" "$dir/transports" "$dir/none"
# Janus loads every *.so of its folders: give it folders holding only the videoroom plugin and the HTTP transport
# (faster, quieter start than `disable = "..."` lists); event handlers and loggers come from an empty folder.
ln -sfn "$lib/plugins/libjanus_videoroom.so" "$dir/plugins/libjanus_videoroom.so"
ln -sfn "$lib/transports/libjanus_http.so" "$dir/transports/libjanus_http.so"

cat >"$dir/janus.jcfg" <<EOF
general: {
	configs_folder = "$dir"
	plugins_folder = "$dir/plugins"
	transports_folder = "$dir/transports"
	events_folder = "$dir/none"
	loggers_folder = "$dir/none"
	log_to_stdout = true
	debug_level = 3             # errors and warnings
	debug_colors = false
	session_timeout = 60        # a pending long poll counts as a keepalive
	hide_dependencies = true
}
media: {
	no_media_timer = 30         # no "media: false" events for short gaps
	min_nack_queue = 500
}
nat: {
	nice_debug = false
	ice_enforce_list = "veth1"  # the namespace's end of the veth pair; no STUN, no 1:1 NAT, half-trickle
	ignore_mdns = true
}
plugins: {
}
transports: {
}
events: {
	broadcast = false
}
EOF

cat >"$dir/janus.transport.http.jcfg" <<EOF
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = 8088
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
EOF

# No admin_key: rooms are created over the API ("request":"create"). No static rooms.
cat >"$dir/janus.plugin.videoroom.jcfg" <<EOF
general: {
	events = false
}
EOF

echo "$dir"

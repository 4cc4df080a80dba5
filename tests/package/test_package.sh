#!/bin/bash
# shellcheck disable=SC2012,SC2015,SC2016  # A && B || fail is meant; dpkg-query formats are literal
# test_package.sh - end-to-end test of the gophermq .deb in a booted Debian 12.
#
# Usage: tests/package/test_package.sh [path/to/gophermq_VERSION_ARCH.deb]
#        (default: the newest ../gophermq_*.deb beside the source tree)
#
# Boots a throwaway copy of a cached, debootstrapped Debian 12 ("bookworm")
# with systemd-nspawn, installs the package in it with apt and walks the
# life cycle a user goes through: the service starts, the API and metrics
# answer, publish/subscribe/fetch work, the client of gophermq-clients
# (taken from beside the .deb) publishes and tails, `systemd-analyze security` rates the
# unit at 2.0 or better, a changed max_pending is applied by
# `systemctl reload` with the same main PID and the pending messages kept, a
# broken configuration is refused by reload (the old one stays in force and
# the journal says why), restart gives a new PID, stop exits cleanly with
# status 0, and purge removes everything the package installed.
#
# Needs root, systemd-nspawn (package systemd-container), debootstrap,
# nsenter, flock and timeout, and the Debian archive the first time (to
# debootstrap the cached root file system).  The container shares the
# host's network namespace, so nothing else may listen on 127.0.0.1:8082 or
# :9001 while it runs.  Every step is printed; the first failure stops the
# test with the service's status and journal, and the container is always
# torn down.
#
# Environment:
#   GOPHERMQ_TEST_CACHE    where the root file system is cached
#                          (default /var/cache/gophermq-test)
#   GOPHERMQ_TEST_MIRROR   Debian mirror for debootstrap (default: the one
#                          this host's APT sources use for bookworm)
#   GOPHERMQ_TEST_REBUILD  "1": debootstrap the root file system anew
set -Eeuo pipefail

SUITE=bookworm
API=http://127.0.0.1:8082
METRICS=http://127.0.0.1:9001
MAX_EXPOSURE=2.0
# What the cached root file system holds besides the package's own
# dependencies (added from the .deb): an init, D-Bus, /bin/kill, curl.
BASE_PACKAGES="systemd systemd-sysv dbus procps curl"
# Bump when the way the root file system is prepared changes.
ROOTFS_RECIPE=1

CACHE=${GOPHERMQ_TEST_CACHE:-/var/cache/gophermq-test}
ROOTFS=$CACHE/$SUITE
ROOTFS_STAMP=$CACHE/$SUITE.stamp
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)

STEP=0
STARTED=$(date +%s)
WORK=""
NSPAWN_PID=""
CT_PID=""

# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------
elapsed() { echo "$(( $(date +%s) - STARTED ))s"; }

step() {
	STEP=$((STEP + 1))
	printf '\n=== [%s] step %d: %s\n' "$(elapsed)" "$STEP" "$*"
}

ok() { printf '    ok: %s\n' "$*"; }

# Prints the last $2 lines of log $1, indented, without dpkg's progress counter.
show_log() {
	sed -E -e 's/\(Reading database \.\.\. ([0-9]+%)?//g' -e 's/^/    | /' "$1" | tail -n "$2"
}
info() { printf '    %s\n' "$*"; }

# Prints what helps to understand a failure, as far as the container lets.
diagnose() {
	[ -n "$CT_PID" ] && kill -0 "$CT_PID" 2>/dev/null || return 0
	echo "--- systemctl status gophermq (in the container)"
	TIMEOUT=20 in_ct systemctl --no-pager --full status gophermq 2>&1 || true
	echo "--- journalctl -u gophermq (last 60 lines)"
	TIMEOUT=20 in_ct journalctl --no-pager -u gophermq -n 60 2>&1 || true
	echo "--- systemctl --failed"
	TIMEOUT=20 in_ct systemctl --no-pager --failed 2>&1 || true
}

fail() {
	trap - ERR
	printf '\n!!! FAILED at step %d after %s: %s\n' "$STEP" "$(elapsed)" "$*" >&2
	diagnose >&2
	printf '\n!!! FAILED: %s\n' "$*" >&2
	exit 1
}

on_error() {
	fail "command failed (status $1, line $2): $3"
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

# Always leaves no container and no temporary files behind.
cleanup() {
	local status=$?
	trap - ERR
	if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		echo "--- stopping the container"
		kill -TERM "$NSPAWN_PID" 2>/dev/null || true
		for _ in $(seq 1 150); do
			kill -0 "$NSPAWN_PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$NSPAWN_PID" 2>/dev/null; then
			echo "    still running after 15 s: killing it"
			kill -KILL "$NSPAWN_PID" 2>/dev/null || true
		fi
		wait "$NSPAWN_PID" 2>/dev/null || true
	fi
	if [ -n "$WORK" ]; then
		if [ "$status" -ne 0 ] && [ -s "$WORK/nspawn.log" ]; then
			echo "--- container console (last 40 lines)"
			tail -n 40 "$WORK/nspawn.log" || true
		fi
		rm -rf "$WORK"
	fi
	if [ "$status" -eq 0 ]; then
		printf '\n=== PASSED: all %d steps in %s\n' "$STEP" "$(elapsed)"
	fi
	exit "$status"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# Runs a command inside the container, bounded by $TIMEOUT seconds (60),
# with a clean environment.
in_ct() {
	timeout --kill-after=5 "${TIMEOUT:-60}" \
		nsenter -t "$CT_PID" -a -- \
		/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 HOME=/root TERM=dumb DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER= \
		"$@"
}

# Runs a shell command line inside the container.
in_ct_sh() { in_ct /bin/sh -ec "$1"; }

# Waits until "$@" succeeds, at most $1 seconds.  Usage: wait_for SECONDS DESCRIPTION CMD...
wait_for() {
	local seconds=$1 what=$2 deadline
	shift 2
	deadline=$(( $(date +%s) + seconds ))
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${seconds}s waiting for: $what"
		sleep 0.2
	done
}

# HTTP request from inside the container.  Usage: http METHOD URL [JSON]
# Sets HTTP_STATUS and HTTP_BODY.
http() {
	local method=$1 url=$2 body=${3:-} out
	if [ -n "$body" ]; then
		out=$(in_ct curl -sS --max-time 10 -X "$method" -H 'Content-Type: application/json' \
			--data-binary "$body" -w '\n%{http_code}' "$url") || fail "curl $method $url failed"
	else
		out=$(in_ct curl -sS --max-time 10 -X "$method" -w '\n%{http_code}' "$url") \
			|| fail "curl $method $url failed"
	fi
	HTTP_STATUS=${out##*$'\n'}
	HTTP_BODY=${out%$'\n'*}
	[ "$HTTP_BODY" != "$out" ] || HTTP_BODY=""
}

# Usage: expect_http STATUS METHOD URL [JSON]
expect_http() {
	local want=$1
	shift
	http "$@"
	[ "$HTTP_STATUS" = "$want" ] ||
		fail "$1 $2 ${3:-}: expected HTTP $want, got $HTTP_STATUS: $HTTP_BODY"
}

# Fails unless HTTP_BODY matches the extended regular expression $1.
expect_body() {
	printf '%s' "$HTTP_BODY" | grep -Eq -- "$1" ||
		fail "response body does not match /$1/: $HTTP_BODY"
}

subscribe() { # SUBJECT -> SUBSCRIBER_ID
	expect_http 200 POST "$API/api/subscribe" "{\"subject\":\"$1\"}"
	SUBSCRIBER_ID=$(printf '%s' "$HTTP_BODY" | sed -nE 's/.*"id" *: *"([^"]+)".*/\1/p')
	[[ "$SUBSCRIBER_ID" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
		fail "subscribe $1: no UUID v4 id in $HTTP_BODY"
}

publish() { # STATUS SUBJECT DATA
	expect_http "$1" POST "$API/api/publish" "{\"subject\":\"$2\",\"data\":\"$3\"}"
}

fetch() { # SUBJECT ID -> HTTP_BODY
	expect_http 200 POST "$API/api/fetch" "{\"subject\":\"$1\",\"id\":\"$2\"}"
}

# Fails unless the fetched data array is exactly the JSON strings given.
expect_data() {
	local want="" item
	expect_body '"data" *: *\['

	for item in "$@"; do
		want="$want${want:+,}\"$item\""
	done
	local got
	got=$(printf '%s' "$HTTP_BODY" | tr -d ' \n' | sed -nE 's/.*"data":\[([^]]*)\].*/\1/p')
	[ "$got" = "$want" ] || fail "expected data [$want], got: $HTTP_BODY"
}

unit_property() { in_ct systemctl show -P "$1" gophermq.service; }
main_pid() { unit_property MainPID; }
watchdog_moved() { [ "$(unit_property WatchdogTimestampMonotonic)" != "$1" ]; }

expect_active() {
	local state
	state=$(in_ct systemctl is-active gophermq.service || true)
	[ "$state" = active ] || fail "gophermq.service is '$state', expected active"
}

# Counts the journal lines of gophermq.service matching the ERE $1.
journal_count() {
	in_ct journalctl --no-pager -q -o cat -u gophermq.service | grep -Ec -- "$1" || true
}

# Waits until more than $2 journal lines of the unit match the ERE $1.
wait_journal() {
	local pattern=$1 before=$2 deadline
	deadline=$(( $(date +%s) + 20 ))
	while [ "$(journal_count "$pattern")" -le "$before" ]; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for /$pattern/ in journalctl -u gophermq"
		sleep 0.2
	done
}

# The first URI of the host's APT sources that serves $SUITE main (not the
# security archive), from deb822 .sources files or one-line .list files.
host_mirror() {
	local file
	for file in /etc/apt/sources.list.d/*.sources; do
		[ -r "$file" ] || continue
		awk -v suite="$SUITE" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") &&
				    comps ~ /(^| )main( |$)/ && enabled !~ /^(no|false)$/ && uris != "" &&
				    uris !~ /security/) { split(uris, u, " "); print u[1]; found = 1; exit }
				types = suites = comps = uris = enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{ key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
			  if (key == "types") types = $0; else if (key == "uris") uris = $0
			  else if (key == "suites") suites = $0; else if (key == "components") comps = $0
			  else if (key == "enabled") enabled = tolower($0) }
			END { if (!found) flush() }' "$file"
	done
	for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$file" ] || continue
		sed -E -e 's/#.*//' -e 's/\[[^]]*\]//' "$file" |
			awk -v suite="$SUITE" '$1 == "deb" && $3 == suite && / main( |$)/ && $2 !~ /security/ { print $2 }'
	done
}

# Lists the packages the .deb depends on (first alternative, no versions).
deb_dependencies() {
	dpkg-deb -f "$1" Depends Pre-Depends | tr ',' '\n' |
		sed -E -e 's/\|.*//' -e 's/\(.*\)//' -e 's/:any//' -e 's/[[:space:]]//g' |
		sed -e '/^$/d' -e '/^Depends:/d' -e '/^Pre-Depends:/d'
}

# Prints the pids of all descendants of pid $1.
descendants() {
	local parent=$1 stat pid ppid rest
	for stat in /proc/[0-9]*/stat; do
		read -r rest 2>/dev/null < "$stat" || continue
		pid=${rest%% *}
		rest=${rest##*) }
		ppid=$(echo "$rest" | cut -d' ' -f2)
		if [ "$ppid" = "$parent" ]; then
			echo "$pid"
			descendants "$pid"
		fi
	done
}

container_init() {
	local pid
	for pid in $(descendants "$NSPAWN_PID"); do
		if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] &&
		   [ "$(readlink "/proc/$pid/ns/pid")" != "$(readlink /proc/self/ns/pid)" ]; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

port_in_use() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ---------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------
step "preconditions"
[ "$(id -u)" -eq 0 ] || fail "must run as root (systemd-nspawn, debootstrap)"
for tool in systemd-nspawn debootstrap nsenter flock timeout dpkg-deb; do
	command -v "$tool" >/dev/null ||
		fail "$tool not found: apt-get install systemd-container debootstrap util-linux coreutils dpkg"
done
DEB=${1:-${DEB:-}}
if [ -z "$DEB" ]; then
	DEB=$(ls -t "$SOURCE_DIR"/../gophermq_*.deb 2>/dev/null | head -n 1 || true)
	[ -n "$DEB" ] || fail "no .deb given and no gophermq_*.deb in $(cd "$SOURCE_DIR/.." && pwd): build it with dpkg-buildpackage -us -uc -b"
fi
[ -f "$DEB" ] || fail "$DEB: no such file"
DEB=$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")
[ "$(dpkg-deb -f "$DEB" Package)" = gophermq ] || fail "$DEB is not the gophermq package"
ok "package $(basename "$DEB") ($(dpkg-deb -f "$DEB" Version))"
# The client package is built beside it by the same dpkg-buildpackage.
CLIENTS_DEB=$(dirname "$DEB")/$(basename "$DEB" | sed 's/^gophermq_/gophermq-clients_/')
[ -f "$CLIENTS_DEB" ] || fail "no $CLIENTS_DEB beside $DEB (dpkg-buildpackage builds both)"
[ "$(dpkg-deb -f "$CLIENTS_DEB" Package)" = gophermq-clients ] || fail "$CLIENTS_DEB is not the gophermq-clients package"
ok "package $(basename "$CLIENTS_DEB")"

mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock -w 900 9 || fail "another package test holds $CACHE/lock"
ok "holding $CACHE/lock"
for port in 8082 9001; do
	! port_in_use "$port" || fail "something already listens on 127.0.0.1:$port (another gophermqd?); stop it first"
done
ok "127.0.0.1:8082 and :9001 are free"
# Left over by a killed run (--ephemeral snapshots live beside the rootfs).
rm -rf "$CACHE"/.#machine.* 2>/dev/null || true

step "root file system of Debian 12 (cached in $ROOTFS)"
PACKAGES=$( (tr ' ' '\n' <<< "$BASE_PACKAGES"; deb_dependencies "$DEB"; deb_dependencies "$CLIENTS_DEB") |
	sort -u | tr '\n' ' ')
PACKAGES=${PACKAGES% }
STAMP="recipe=$ROOTFS_RECIPE suite=$SUITE packages=$PACKAGES"
if [ "${GOPHERMQ_TEST_REBUILD:-0}" != 1 ] && [ -d "$ROOTFS" ] && [ -f "$ROOTFS_STAMP" ] &&
   [ "$(cat "$ROOTFS_STAMP")" = "$STAMP" ]; then
	ok "cached root file system is current ($PACKAGES)"
else
	MIRROR=${GOPHERMQ_TEST_MIRROR:-$(host_mirror | head -n 1)}
	[ -n "$MIRROR" ] || fail "no APT source for $SUITE main on this host; set GOPHERMQ_TEST_MIRROR"
	proxy=$(apt-config shell proxy Acquire::http::Proxy 2>/dev/null | sed -nE "s/^proxy='(.*)'$/\1/p" || true)
	if [ -n "$proxy" ] && [ -z "${http_proxy:-}" ]; then export http_proxy=$proxy; fi
	info "debootstrap $SUITE from $MIRROR with: $PACKAGES"
	rm -f "$ROOTFS_STAMP"
	rm -rf "$ROOTFS.new"
	started=$(date +%s)
	timeout 1200 debootstrap --variant=minbase --include="${PACKAGES// /,}" \
		"$SUITE" "$ROOTFS.new" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$CACHE/debootstrap.log"; fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
	echo gophermq-test > "$ROOTFS.new/etc/hostname"
	printf '127.0.0.1\tlocalhost gophermq-test\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOTFS.new/etc/hosts"
	tr -d '-' < /proc/sys/kernel/random/uuid > "$ROOTFS.new/etc/machine-id"
	rm -f "$ROOTFS.new"/var/cache/apt/archives/*.deb
	rm -rf "$ROOTFS"
	mv "$ROOTFS.new" "$ROOTFS"
	echo "$STAMP" > "$ROOTFS_STAMP"
	ok "debootstrapped in $(( $(date +%s) - started ))s"
fi

step "boot the container (systemd-nspawn --boot --ephemeral)"
WORK=$(mktemp -d /tmp/gophermq-package-test.XXXXXX)
chmod 0755 "$WORK"
mkdir -m 0755 "$WORK/debs"
install -m 0644 "$DEB" "$CLIENTS_DEB" "$WORK/debs/"
DEB_IN_CT=/srv/debs/$(basename "$DEB")
CLIENTS_DEB_IN_CT=/srv/debs/$(basename "$CLIENTS_DEB")
started=$(date +%s)
systemd-nspawn --quiet --boot --register=no --keep-unit --ephemeral \
	--directory="$ROOTFS" --machine="gophermq-test-$$" \
	--bind-ro="$WORK/debs:/srv/debs" --console=passive --setenv=SYSTEMD_COLORS=0 \
	> "$WORK/nspawn.log" 2>&1 < /dev/null &
NSPAWN_PID=$!
deadline=$(( $(date +%s) + 30 ))
until CT_PID=$(container_init); do
	kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$WORK/nspawn.log"; fail "systemd-nspawn exited"; }
	[ "$(date +%s)" -lt "$deadline" ] || fail "no systemd in the container after 30s"
	sleep 0.2
done
ok "systemd-nspawn pid $NSPAWN_PID, the container's systemd is pid $CT_PID"
state=$(TIMEOUT=90 in_ct systemctl is-system-running --wait || true)
case "$state" in
running) ok "system is running (booted in $(( $(date +%s) - started ))s)" ;;
degraded)
	info "system is degraded (not caused by gophermq, which is not installed yet):"
	in_ct systemctl --no-pager --failed || true ;;
*) fail "the container did not boot: systemctl is-system-running says '$state'" ;;
esac
TIMEOUT=10 in_ct test -x /bin/kill || fail "/bin/kill missing in the container"

step "apt install $DEB_IN_CT $CLIENTS_DEB_IN_CT"
started=$(date +%s)
TIMEOUT=300 in_ct apt-get install -y --no-install-recommends "$DEB_IN_CT" "$CLIENTS_DEB_IN_CT" > "$WORK/apt-install.log" 2>&1 ||
	{ cat "$WORK/apt-install.log"; fail "apt-get install failed"; }
show_log "$WORK/apt-install.log" 8
[ "$(in_ct dpkg-query -W -f='${Status}' gophermq)" = "install ok installed" ] || fail "dpkg does not list gophermq as installed"
[ "$(in_ct dpkg-query -W -f='${Status}' gophermq-clients)" = "install ok installed" ] ||
	fail "dpkg does not list gophermq-clients as installed"
ok "installed in $(( $(date +%s) - started ))s"

step "service enabled, active, running as user gophermq"
wait_for 30 "gophermq.service active" in_ct systemctl is-active --quiet gophermq.service
expect_active
[ "$(in_ct systemctl is-enabled gophermq.service)" = enabled ] || fail "gophermq.service is not enabled"
ok "enabled and active"
in_ct getent passwd gophermq > /dev/null || fail "no user gophermq"
in_ct getent group gophermq > /dev/null || fail "no group gophermq"
PID1=$(main_pid)
[ "$PID1" -gt 0 ] || fail "no MainPID"
owner=$(in_ct stat -c %U "/proc/$PID1")
[ "$owner" = gophermq ] || fail "gophermqd (pid $PID1) runs as '$owner', expected gophermq"
[ "$(in_ct readlink "/proc/$PID1/exe")" = /usr/sbin/gophermqd ] || fail "MainPID $PID1 is not /usr/sbin/gophermqd"
ok "MainPID $PID1 is /usr/sbin/gophermqd running as gophermq"
[ "$(unit_property Type)" = notify ] || fail "unit is not Type=notify"
info "status: $(unit_property StatusText)"
[ "$(unit_property WatchdogUSec)" = 30s ] || fail "WatchdogSec is not 30s: $(unit_property WatchdogUSec)"
in_ct test -f /etc/gophermq.conf || fail "/etc/gophermq.conf missing"
in_ct grep -qx /etc/gophermq.conf /var/lib/dpkg/info/gophermq.conffiles || fail "/etc/gophermq.conf is not a conffile"
ok "/etc/gophermq.conf is a conffile"

step "reinstalling (the upgrade path) restarts the service"
TIMEOUT=300 in_ct apt-get install -y --reinstall "$DEB_IN_CT" > "$WORK/apt-reinstall.log" 2>&1 ||
	{ cat "$WORK/apt-reinstall.log"; fail "apt-get install --reinstall failed"; }
wait_for 30 "gophermq.service active" in_ct systemctl is-active --quiet gophermq.service
PID_UPGRADED=$(main_pid)
[ "$PID_UPGRADED" -gt 0 ] && [ "$PID_UPGRADED" != "$PID1" ] ||
	fail "MainPID $PID_UPGRADED after reinstall (was $PID1): not restarted"
[ "$(in_ct systemctl is-enabled gophermq.service)" = enabled ] || fail "gophermq.service not enabled after reinstall"
ok "restarted: MainPID $PID1 -> $PID_UPGRADED, still enabled"
PID1=$PID_UPGRADED

step "API /ready and metrics answer"
expect_http 204 GET "$API/ready"
ok "GET /ready -> 204"
expect_http 200 GET "$METRICS/metrics"
expect_body '^# (TYPE|HELP) gophermq_'
ok "GET :9001/metrics -> 200 with gophermq_ families"
reply=$(timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8082 && printf "GET /ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && head -n 1 <&3') ||
	fail "the host cannot reach 127.0.0.1:8082"
[[ "$reply" =~ ^HTTP/1\.[01]\ 204 ]] || fail "the host got '$reply' from GET /ready"
ok "the host reaches the broker on its loopback too: $reply"

step "subscribe, publish, fetch"
subscribe e2e.orders
ID1=$SUBSCRIBER_ID
ok "subscribed: $ID1"
publish 200 e2e.orders "first"
expect_body '"status" *: *"ok"'
publish 200 e2e.orders "second"
ok "published 2 messages"
fetch e2e.orders "$ID1"
expect_data first second
ok "fetched [first, second] in order"
fetch e2e.orders "$ID1"
expect_data
ok "a second fetch is empty"
publish 404 e2e.nobody "x"
ok "publish to a subject without subscribers -> 404"
expect_http 200 GET "$METRICS/metrics"
expect_body 'gophermq_client_request_rate'
ok "metrics count the requests"

step "gophermq pub and tail (gophermq-clients) against the installed daemon"
in_ct test -x /usr/bin/gophermq || fail "no /usr/bin/gophermq"
in_ct test -f /usr/share/man/man1/gophermq.1.gz || fail "no gophermq(1) man page"
ok "$(in_ct gophermq --version) with its man page"
subscribers_now() {
	expect_http 200 GET "$METRICS/metrics"
	printf '%s\n' "$HTTP_BODY" | awk '$1 == "gophermq_subscribers" { print $2 }'
}
more_subscribers() { [ "$(subscribers_now)" -gt "$before" ]; }
before=$(subscribers_now)
# tail prints two messages and ends by itself (-C 2), unsubscribing.
TIMEOUT=30 in_ct gophermq tail 'e2e.cli.>' -C 2 --format '{subject} {data}' > "$WORK/tail.out" 2> "$WORK/tail.err" &
tail_job=$!
wait_for 20 "tail's subscriber" more_subscribers
in_ct gophermq pub e2e.cli.one "from the argument" || fail "gophermq pub exited $?"
in_ct_sh 'echo "from stdin" | gophermq pub e2e.cli.two' || fail "gophermq pub (stdin) failed"
wait "$tail_job" || fail "gophermq tail exited $? ($(cat "$WORK/tail.err"))"
printf 'e2e.cli.one from the argument\ne2e.cli.two from stdin\n' | cmp -s - "$WORK/tail.out" ||
	fail "gophermq tail printed: $(cat "$WORK/tail.out") $(cat "$WORK/tail.err")"
[ "$(subscribers_now)" = "$before" ] || fail "tail's subscriber is still there after it ended"
ok "tail printed both messages, then unsubscribed"
# A tail ended by SIGTERM unsubscribes too.
TIMEOUT=30 in_ct gophermq tail e2e.cli.term > "$WORK/tail2.out" 2>&1 &
tail_job=$!
wait_for 20 "the second tail's subscriber" more_subscribers
in_ct pkill -TERM -x gophermq
wait "$tail_job" || fail "gophermq tail exited $? after SIGTERM: $(cat "$WORK/tail2.out")"
[ "$(subscribers_now)" = "$before" ] || fail "tail's subscriber is still there after SIGTERM"
status=0; in_ct gophermq pub e2e.cli.term x 2> "$WORK/pub.err" || status=$?
[ "$status" = 2 ] && grep -q '404 subscriber not found' "$WORK/pub.err" ||
	fail "publish after tail ended: exit $status, $(cat "$WORK/pub.err")"
ok "SIGTERM: tail exited 0 and unsubscribed; a publish then gets exit 2, 404 subscriber not found"

step "pending messages and subscribers survive a restart and an upgrade (persistence = log)"
in_ct grep -qx 'persistence = "log"' /etc/gophermq.conf || fail "the shipped /etc/gophermq.conf does not set persistence = \"log\""
owner=$(in_ct stat -c '%U %a' /var/lib/gophermq) || fail "no /var/lib/gophermq"
[ "$owner" = "gophermq 750" ] || fail "/var/lib/gophermq is '$owner', expected 'gophermq 750'"
ok "/var/lib/gophermq: owner gophermq, mode 750"
subscribe e2e.durable
ID_DURABLE=$SUBSCRIBER_ID
publish 200 e2e.durable "kept-1"
publish 200 e2e.durable "kept-2"
PID_BEFORE=$(main_pid)
TIMEOUT=60 in_ct systemctl restart gophermq.service
expect_active
[ "$(main_pid)" != "$PID_BEFORE" ] || fail "systemctl restart did not give a new process"
expect_http 204 GET "$API/ready"
publish 200 e2e.durable "kept-3"
ok "2 messages pending across systemctl restart, a third published after it"
TIMEOUT=300 in_ct apt-get install -y --reinstall "$DEB_IN_CT" > "$WORK/apt-reinstall-2.log" 2>&1 ||
	{ cat "$WORK/apt-reinstall-2.log"; fail "apt-get install --reinstall failed"; }
wait_for 30 "gophermq.service active" in_ct systemctl is-active --quiet gophermq.service
expect_http 204 GET "$API/ready"
fetch e2e.durable "$ID_DURABLE"
expect_data kept-1 kept-2 kept-3
ok "after a restart and a reinstall the same subscriber id fetched [kept-1, kept-2, kept-3]"
expect_http 200 GET "$METRICS/metrics"
expect_body '^gophermq_journal_replay_seconds '
ok "journal metrics exported"
# The unit lets the journal's sync thread become SCHED_BATCH (group commit).
[ "$(journal_count 'SCHED_BATCH refused')" = 0 ] || fail "the sandbox refused SCHED_BATCH to the sync thread"
batch_threads=$(in_ct ps -L -o cls= -p "$(main_pid)" | grep -c 'B' || true)
[ "$batch_threads" = 1 ] || fail "expected one SCHED_BATCH thread (the journal's), found $batch_threads"
ok "the journal's sync thread runs SCHED_BATCH inside the sandbox"
PID1=$(main_pid)

step "systemd-analyze security gophermq.service <= $MAX_EXPOSURE"
in_ct systemd-analyze security --no-pager gophermq.service > "$WORK/security.txt" 2>&1 ||
	{ cat "$WORK/security.txt"; fail "systemd-analyze security failed"; }
grep -E '^✗' "$WORK/security.txt" | sed 's/^/    | /' || true
exposure=$(sed -nE 's/.*Overall exposure level for gophermq\.service: *([0-9]+(\.[0-9]+)?).*/\1/p' "$WORK/security.txt")
[ -n "$exposure" ] || { cat "$WORK/security.txt"; fail "no exposure level in the output of systemd-analyze security"; }
awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e <= max) }' ||
	fail "exposure $exposure is above $MAX_EXPOSURE"
ok "exposure level $exposure"

step "reload applies a new max_pending, same PID, pending messages kept"
in_ct cp /etc/gophermq.conf /root/gophermq.conf.orig
subscribe e2e.reload
ID2=$SUBSCRIBER_ID
publish 200 e2e.reload "kept-1"
ok "1 message pending for $ID2 before the reload"
in_ct_sh 'sed -i -E "s/^#? *max_pending *=.*/max_pending = 2/" /etc/gophermq.conf'
[ "$(in_ct grep -cx 'max_pending = 2' /etc/gophermq.conf)" = 1 ] ||
	fail "could not set max_pending = 2 in /etc/gophermq.conf"
ok "/etc/gophermq.conf now says max_pending = 2"
reloaded=$(journal_count 'configuration reloaded')
TIMEOUT=30 in_ct systemctl reload gophermq.service || fail "systemctl reload failed on a valid file"
wait_journal 'configuration reloaded' "$reloaded"
expect_active
[ "$(main_pid)" = "$PID1" ] || fail "MainPID changed from $PID1 to $(main_pid) on reload"
ok "reloaded; still active with MainPID $PID1"
publish 200 e2e.reload "kept-2"
publish 429 e2e.reload "refused-3"
expect_body '"message" *: *"broker overflow"'
ok "2nd pending message accepted, 3rd refused with 429: the new limit is in force"
fetch e2e.reload "$ID2"
expect_data kept-1 kept-2
ok "the message published before the reload survived it"

step "a broken configuration is refused; the old one stays in force"
publish 200 e2e.reload "old-1"
# A valid change (max_pending = 5) followed by an invalid line: nothing of
# the file may be applied, not even the part before the error.
in_ct_sh 'sed -i -E "s/^max_pending = 2$/max_pending = 5/" /etc/gophermq.conf && echo "no_such_option = 1" >> /etc/gophermq.conf'
bad_line=$(in_ct grep -n '^no_such_option' /etc/gophermq.conf | cut -d: -f1)
ok "wrote a broken /etc/gophermq.conf (unknown option on line $bad_line)"
checks=$(journal_count "gophermq\\.conf:$bad_line")
if TIMEOUT=30 in_ct systemctl reload gophermq.service > "$WORK/reload.log" 2>&1; then
	fail "systemctl reload succeeded with a broken configuration file"
fi
ok "systemctl reload failed, as it should: $(head -n 1 "$WORK/reload.log")"
wait_journal "gophermq\\.conf:$bad_line" "$checks"
ok "journal: $(in_ct journalctl --no-pager -q -o cat -u gophermq.service | grep -E "gophermq\\.conf:$bad_line" | tail -n 1)"
expect_active
[ "$(main_pid)" = "$PID1" ] || fail "MainPID changed on a refused reload"
# The daemon's own check: send SIGHUP directly, bypassing ExecReload's -t.
failed=$(journal_count 'reload failed')
in_ct kill -HUP "$PID1"
wait_journal 'reload failed' "$failed"
ok "journal: $(in_ct journalctl --no-pager -q -o cat -u gophermq.service | grep -E 'reload failed' | tail -n 1)"
in_ct journalctl --no-pager -q -o cat -u gophermq.service | grep -E 'reload failed' | tail -n 1 |
	grep -Eq "gophermq\\.conf:$bad_line" || fail "the daemon's reload error does not name file and line $bad_line"
expect_active
[ "$(main_pid)" = "$PID1" ] || fail "MainPID changed after SIGHUP with a broken file"
expect_http 204 GET "$API/ready"
publish 200 e2e.reload "old-2"
publish 429 e2e.reload "refused-3"
ok "still active with MainPID $PID1; max_pending is still 2 (not 5)"
fetch e2e.reload "$ID2"
expect_data old-1 old-2
ok "pending messages kept"

step "restore the configuration"
in_ct cp /root/gophermq.conf.orig /etc/gophermq.conf
reloaded=$(journal_count 'configuration reloaded')
TIMEOUT=30 in_ct systemctl reload gophermq.service
wait_journal 'configuration reloaded' "$reloaded"
publish 200 e2e.reload "a"
publish 200 e2e.reload "b"
publish 200 e2e.reload "c"
fetch e2e.reload "$ID2"
expect_data a b c
ok "default limit back in force after reload"

step "watchdog keep-alives arrive"
# Nothing else touches the unit meanwhile, so only a WATCHDOG=1 can move
# the timestamp; systemd would kill the daemon 30 s after the last one.
seen=$(unit_property WatchdogTimestampMonotonic)
started=$(date +%s)
wait_for 25 "a WATCHDOG=1 keep-alive from gophermqd (WatchdogSec=30s)" watchdog_moved "$seen"
[ "$(main_pid)" = "$PID1" ] && [ "$(unit_property NRestarts)" = 0 ] || fail "the service was restarted"
ok "a keep-alive came after $(( $(date +%s) - started ))s; same MainPID $PID1"

step "systemctl restart gives a new process"
TIMEOUT=60 in_ct systemctl restart gophermq.service
expect_active
PID2=$(main_pid)
[ "$PID2" -gt 0 ] && [ "$PID2" != "$PID1" ] || fail "MainPID $PID2 after restart (was $PID1)"
expect_http 204 GET "$API/ready"
[ "$(unit_property NRestarts)" = 0 ] || fail "systemd restarted the service on its own: NRestarts=$(unit_property NRestarts)"
ok "active with new MainPID $PID2 (was $PID1), /ready 204"

step "systemctl stop: clean exit with status 0"
TIMEOUT=60 in_ct systemctl stop gophermq.service
state=$(in_ct systemctl is-active gophermq.service || true)
[ "$state" = inactive ] || fail "after stop the unit is '$state', expected inactive"
result=$(unit_property Result)
code=$(unit_property ExecMainCode)
status=$(unit_property ExecMainStatus)
[ "$result" = success ] && [ "$code" = 1 ] && [ "$status" = 0 ] ||
	fail "after stop: Result=$result ExecMainCode=$code ExecMainStatus=$status (want success, 1 = exited, 0)"
ok "inactive, Result=success, exited with status 0"
! port_in_use 8082 || fail "something still listens on 8082 after stop"
TIMEOUT=60 in_ct systemctl start gophermq.service
expect_active
ok "started again, so that purge has a running service to stop"

step "apt purge removes what the package installed"
TIMEOUT=300 in_ct apt-get purge -y gophermq gophermq-clients > "$WORK/apt-purge.log" 2>&1 ||
	{ cat "$WORK/apt-purge.log"; fail "apt-get purge failed"; }
show_log "$WORK/apt-purge.log" 5
status=$(in_ct dpkg-query -W -f='${Status}' gophermq 2>/dev/null || true)
case "$status" in "" | "unknown ok not-installed" | "purge ok not-installed") ;;
*) fail "dpkg still knows gophermq after purge: $status" ;; esac
status=$(in_ct dpkg-query -W -f='${Status}' gophermq-clients 2>/dev/null || true)
case "$status" in "" | "unknown ok not-installed" | "purge ok not-installed") ;;
*) fail "dpkg still knows gophermq-clients after purge: $status" ;; esac
ok "dpkg: not installed"
[ "$(unit_property LoadState)" = not-found ] || fail "gophermq.service still loaded: $(unit_property LoadState)"
! port_in_use 8082 || fail "something still listens on 8082 after purge"
ok "the unit is gone and nothing listens on 8082"
leftovers=$(in_ct find / -xdev \( -path /proc -o -path /sys -o -path /srv/debs -o -path /root/gophermq.conf.orig \) -prune \
	-o -name '*gophermq*' -print)
[ -z "$leftovers" ] || fail "files left after purge: $leftovers"
ok "no file named *gophermq* left (unit, enablement links, /etc/gophermq.conf, sysusers.d, docs)"
in_ct getent passwd gophermq > /dev/null || fail "the gophermq user was removed, but README.Debian says purge keeps it"
ok "the gophermq system user is kept, as README.Debian documents"

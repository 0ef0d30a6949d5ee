#!/bin/bash
# spind under a real systemd: boots a Debian container with systemd-nspawn and runs scenarios.
#
#   tests/e2e/nspawn/run_e2e.sh [harness] [spind]      # default: both, in one boot
#
# harness  a stdlib Type=notify service (files/notify_demo.py) proves the machinery: start
#          waits for READY=1, kill -9 -> Restart=on-failure, reload waits for READY=1, a missed
#          watchdog -> restart, stop -> Result=success.
# spind    spind installed as the README tells a user (wheel into /opt/spind, sysusers,
#          tmpfiles, unit), then: start (active only after READY), a request over the Unix
#          socket with curl, kill -9 of the main PID mid-chain (NRestarts=1, the chain
#          completes, no completed job runs twice), reload with a broken spec (still running,
#          old specs kept), stop during a long job (chain SUSPENDED, Result=success, no
#          SIGKILL), start again (the chain resumes and completes).
#
# Needs root. The container tree comes from build_root.sh (cached in /var/tmp). Environment:
#   SPIND_NSROOT       the tree (default /var/tmp/spind-nsroot)
#   SPIND_E2E_NAME     container and cgroup name (default spind-e2e-PID)
#   SPIND_E2E_WHEELS   a directory with a spind wheel and its dependencies (default: built
#                      here with `pip wheel`; dependency wheels are cached in /var/tmp)
#   SPIND_E2E_KEEP=1   keep the work directory (logs, staged files) after the run
# Exit status 0 when every check passed; the first failed check prints diagnostics and exits 1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
FILES=$HERE/files
NAME=${SPIND_E2E_NAME:-spind-e2e-$$}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(harness spind)
NSPID=
INIT=
UNIT=        # the unit under test, for diagnostics
CGROUPS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }
for s in "${SCENARIOS[@]}"; do
    case $s in harness|spind) ;; *) log "unknown scenario $s (harness, spind)"; exit 2 ;; esac
done

WORK=$(mktemp -d /var/tmp/spind-e2e.XXXXXX)
STAGE=$WORK/stage
mkdir -p "$STAGE"

# ---- the container -----------------------------------------------------------------------

cgroup_dirs() {
    # cgroup v1 + v2 hybrid (the recipe's hosts): both hierarchies; pure v2: the one tree.
    if [ -d /sys/fs/cgroup/unified ]; then
        echo "/sys/fs/cgroup/systemd/nspawn-$NAME /sys/fs/cgroup/unified/nspawn-$NAME"
    else
        echo "/sys/fs/cgroup/nspawn-$NAME"
    fi
}

boot() {
    read -r -a CGROUPS <<<"$(cgroup_dirs)"
    log "booting container $NAME from $NSROOT"
    (
        for cg in "${CGROUPS[@]}"; do
            mkdir -p "$cg"
            echo "$BASHPID" >"$cg/cgroup.procs"
        done
        exec setsid systemd-nspawn -D "$NSROOT" -M "$NAME" -b --register=no --keep-unit \
            --console=passive --volatile=overlay --bind-ro="$STAGE:/stage" \
            >"$WORK/nspawn.log" 2>&1 </dev/null
    ) &
    NSPID=$!
    for _ in $(seq 300); do
        INIT=$(pgrep -P "$NSPID" -x systemd) && break
        kill -0 "$NSPID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$INIT" ] || fail "the container did not boot (see $WORK/nspawn.log)"
    local state=
    for _ in $(seq 300); do
        state=$(ce systemctl is-system-running --wait 2>/dev/null) || true
        case $state in running|degraded) break ;; esac
        sleep 0.1
    done
    case $state in running|degraded) ;; *) fail "systemd did not come up (state '$state')" ;; esac
    log "container up (systemd PID $INIT on the host, state $state)"
}

halt() {
    [ -n "$NSPID" ] || return 0
    kill -TERM "$NSPID" 2>/dev/null || true        # systemd-nspawn halts the container cleanly
    for _ in $(seq 100); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.1; done
    # Whatever is still there (a hung halt) is killed: nothing may outlive the run.
    local cg pids
    for cg in "${CGROUPS[@]}"; do
        [ -d "$cg" ] || continue
        pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    done
    wait "$NSPID" 2>/dev/null || true
    for cg in "${CGROUPS[@]}"; do
        [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    NSPID=
}

cleanup() {
    local rc=$?
    halt
    if [ "${SPIND_E2E_KEEP:-}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# Run a command inside the container (nsenter passes the host environment on: wipe it).
ce() {
    nsenter --target "$INIT" --all \
        env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

# ---- checks ------------------------------------------------------------------------------

diagnostics() {
    [ -n "$INIT" ] || return 0
    if [ -n "$UNIT" ]; then
        ce systemctl status --no-pager --lines=0 "$UNIT" >&2 || true
        log "last journal lines of $UNIT:"
        ce journalctl -u "$UNIT" --no-pager -n 80 >&2 || true
    fi
}

fail() {
    log "FAIL: $*"
    diagnostics
    exit 1
}

ok() { log "ok: $*"; }

prop() { ce systemctl show -p "$2" --value "$1"; }

prop_is() { [ "$(prop "$1" "$2")" = "$3" ]; }

expect() { # DESCRIPTION ACTUAL EXPECTED
    [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"
    ok "$1 ($3)"
}

wait_for() { # DESCRIPTION TIMEOUT COMMAND...
    local desc=$1 end=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || fail "timed out: $desc"
        sleep 0.2
    done
    ok "$desc"
}

# ---- scenario: the harness itself, with a minimal notify service ---------------------------

scenario_harness() {
    UNIT=notify-demo.service
    ce install -D -m 0755 /stage/files/notify_demo.py /opt/notify-demo/notify_demo.py
    ce install -m 0644 /stage/files/notify-demo.service /etc/systemd/system/notify-demo.service
    ce systemctl daemon-reload
    ce systemctl start "$UNIT"
    # The demo sends READY=1 only after a second of "start-up": start returned after it.
    expect "active as soon as start returns" "$(prop $UNIT ActiveState)" active
    expect "status sent with READY=1" "$(prop $UNIT StatusText)" ready
    local pid
    pid=$(prop $UNIT MainPID)
    ce kill -9 "$pid"
    wait_for "kill -9: restarted once" 20 prop_is $UNIT NRestarts 1
    wait_for "kill -9: active again" 20 prop_is $UNIT ActiveState active
    [ "$(prop $UNIT MainPID)" != "$pid" ] || fail "MainPID did not change after kill -9"
    pid=$(prop $UNIT MainPID)
    # systemd 252 ends the reload job when ExecReload (kill -HUP) exits; RELOADING=1 keeps the
    # unit "reloading" until READY=1, so completion is seen in ActiveState and the status.
    ce systemctl reload "$UNIT"
    wait_for "reload: READY=1 again" 10 reloaded_with "reloaded 1"
    expect "reload kept the process" "$(prop $UNIT MainPID)" "$pid"
    ce touch /run/notify-demo-hang
    wait_for "missed watchdog pings: restarted" 20 prop_is $UNIT NRestarts 2
    ce journalctl -u "$UNIT" --no-pager | grep -q "Watchdog timeout" \
        || fail "no 'Watchdog timeout' in the journal"
    wait_for "active after the watchdog restart" 20 prop_is $UNIT ActiveState active
    ce systemctl stop "$UNIT"
    expect "stop: Result" "$(prop $UNIT Result)" success
    expect "stop: ActiveState" "$(prop $UNIT ActiveState)" inactive
}

reloaded_with() { prop_is "$UNIT" ActiveState active && prop_is "$UNIT" StatusText "$1"; }

# ---- scenario: spind ---------------------------------------------------------------------

SOCK=/run/spind/spind.sock

stage_wheels() {
    mkdir -p "$STAGE/wheels"
    if [ -n "${SPIND_E2E_WHEELS:-}" ]; then
        cp "$SPIND_E2E_WHEELS"/*.whl "$STAGE/wheels/"
        return
    fi
    # Build from a copy of the tree, so the checkout gets no build/ directory.
    local src=$WORK/src
    mkdir -p "$src"
    (cd "$REPO" && tar --exclude=./.git --exclude=./build --exclude=./var --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache -cf - .) \
        | tar -xf - -C "$src"
    local deps_key cache
    deps_key=$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)
    cache=/var/tmp/spind-e2e-wheels/$deps_key
    if [ ! -e "$cache/.complete" ]; then
        log "building dependency wheels into $cache (once per pyproject.toml)"
        rm -rf /var/tmp/spind-e2e-wheels && mkdir -p "$cache"   # drop stale caches too
        python3 -m pip wheel -q "$src" -w "$cache" >"$WORK/pip.log" 2>&1 \
            || { cat "$WORK/pip.log" >&2; fail "pip wheel (dependencies) failed"; }
        rm -f "$cache"/spind-*.whl
        touch "$cache/.complete"
    fi
    cp "$cache"/*.whl "$STAGE/wheels/"
    log "building the spind wheel"
    python3 -m pip wheel -q --no-deps "$src" -w "$STAGE/wheels" >"$WORK/pip.log" 2>&1 \
        || { cat "$WORK/pip.log" >&2; fail "pip wheel (spind) failed"; }
}

install_spind() {
    # What the README tells a user to do, step by step.
    ce python3 -m venv /opt/spind
    ce /opt/spind/bin/pip install -q --no-index --find-links /stage/wheels spind
    ce ln -sf /opt/spind/bin/spind /usr/local/bin/spind
    ce install -m 0644 /stage/systemd/spind.sysusers /usr/lib/sysusers.d/spind.conf
    ce systemd-sysusers spind.conf >/dev/null 2>&1
    ce install -m 0644 /stage/systemd/spind.tmpfiles /usr/lib/tmpfiles.d/spind.conf
    ce systemd-tmpfiles --create spind.conf
    ce install -m 0644 /stage/systemd/spind.service /etc/systemd/system/spind.service
    ce sh -c 'install -m 0644 /stage/specs/*.yaml /etc/spind/specs/'
    # The test's own settings: a short shutdown grace, and a watchdog short enough that a
    # daemon which never pinged would be killed during the run.
    ce install -m 0640 -g spind /stage/spind.yaml /etc/spind/spind.yaml
    ce mkdir -p /etc/systemd/system/spind.service.d
    ce install -m 0644 /stage/e2e-dropin.conf /etc/systemd/system/spind.service.d/e2e.conf
    ce systemctl daemon-reload
    ce spind version >/dev/null || fail "the installed spind does not run"
}

api() { # METHOD PATH [JSON]
    local args=(-sS --fail-with-body --max-time 30 --unix-socket "$SOCK" -X "$1")
    [ $# -lt 3 ] || args+=(-H 'Content-Type: application/json' -d "$3")
    ce curl "${args[@]}" "http://localhost$2"
}

field() { python3 "$FILES/api.py" field "$1"; }

start_request() { # TYPE JSON_ARGS -> request id
    local body
    body=$(api POST /api/v1/requests "{\"type\": \"$1\", \"args\": $2}") \
        || fail "POST /api/v1/requests: $body"
    field id <<<"$body"
}

request_is() { [ "$(api GET "/api/v1/requests/$1" | field state)" = "$2" ]; }

ledger_count() { ce sh -c "[ -e '$1' ] && wc -l <'$1' || echo 0"; }

ledger_has() { [ "$(ledger_count "$1")" -ge "$2" ]; }

journal_state() { # request state read from the journal file (the daemon is stopped)
    ce python3 -c 'import sqlite3, sys
db = sqlite3.connect("file:/var/lib/spind/spind.db?mode=ro", uri=True)
print(db.execute("SELECT state FROM requests WHERE id=?", (sys.argv[1],)).fetchone()[0])' "$1"
}

scenario_spind() {
    UNIT=spind.service
    stage_wheels
    install_spind

    ce systemctl start "$UNIT"
    expect "spind: active as soon as start returns" "$(prop $UNIT ActiveState)" active
    api GET /api/v1/version >/dev/null || fail "the API does not answer right after start"
    ok "spind: the API answers right after start (READY came after listening)"
    [ -n "$(prop $UNIT StatusText)" ] || fail "spind sent no STATUS="
    expect "spind runs as" "$(ce ps -o user= -p "$(prop $UNIT MainPID)")" spind

    # kill -9 of the main PID while job b of a->b->c runs.
    local line=/var/lib/spind/ledger-line rid pid
    rid=$(start_request e2e-line "{\"ledger\": \"$line\", \"pause\": \"2\"}")
    wait_for "chain $rid: job b started" 30 ledger_has $line 2
    pid=$(prop $UNIT MainPID)
    ce kill -9 "$pid"
    wait_for "spind: restarted once after kill -9" 30 prop_is $UNIT NRestarts 1
    wait_for "spind: active again" 30 prop_is $UNIT ActiveState active
    [ "$(prop $UNIT MainPID)" != "$pid" ] || fail "MainPID did not change after kill -9"
    wait_for "chain $rid: COMPLETE after the restart" 60 request_is "$rid" COMPLETE
    # One ledger line per try started: a once, b twice (its interrupted try was rerun), c once.
    expect "tries started per job" \
        "$(ce sort "$line" | uniq -c | awk '{print $1}' | sort -n | tr '\n' ' ')" "1 1 2 "
    expect "COMPLETE tries per job" \
        "$(api GET "/api/v1/requests/$rid/log" | python3 "$FILES/api.py" completed-per-job | tr '\n' ' ')" \
        "a 1 b 1 c 1 "
    api GET /metrics | grep -q '^spind_chains_resumed_total 1.0' \
        || fail "metrics: spind_chains_resumed_total is not 1"
    ok "metrics: one chain resumed"
    # The drop-in sets WatchdogSec=4: spind has lived longer than that, so it pings.
    wait_for "spind: watchdog pings arrive" 10 watchdog_pinged
    expect "spind: no watchdog restart" "$(prop $UNIT NRestarts)" 1

    # Reload with a broken spec: still running, old specs kept.
    pid=$(prop $UNIT MainPID)
    ce install -m 0644 /stage/broken/broken.yaml /etc/spind/specs/broken.yaml
    # `spind reload` (ExecReload) waits for the reload: with spec errors it fails, and so does
    # `systemctl reload`, while the service keeps running on its old specs.
    if ce systemctl reload "$UNIT"; then
        fail "systemctl reload succeeded with a broken spec"
    fi
    ok "reload with a broken spec: systemctl reload fails"
    wait_for "reload: the spec error is logged at priority err" 20 journal_err_has \
        "keeping the old specs"
    wait_for "reload: active again (READY=1 after RELOADING=1)" 20 prop_is $UNIT ActiveState active
    expect "reload: same process" "$(prop $UNIT MainPID)" "$pid"
    if journal_err_has "listening on"; then
        fail "INFO lines show up at priority err: the <N> prefix is not honoured"
    fi
    ok "journald files INFO lines below err (priority prefixes work)"
    rid=$(start_request e2e-line '{"ledger": "/var/lib/spind/ledger-reload", "pause": "0"}')
    wait_for "old specs still serve: chain $rid COMPLETE" 30 request_is "$rid" COMPLETE
    ce rm /etc/spind/specs/broken.yaml
    ce systemctl reload "$UNIT" || fail "systemctl reload failed with good specs"
    expect "clean reload: active at once" "$(prop $UNIT ActiveState)" active

    # Stop during a long job: the chain is suspended, the stop is clean.
    local long=/var/lib/spind/ledger-long since
    rid=$(start_request e2e-long "{\"ledger\": \"$long\"}")
    wait_for "chain $rid: the long job started" 30 ledger_has $long 1
    since=$(date +%s)
    ce systemctl stop "$UNIT"
    expect "stop: Result" "$(prop $UNIT Result)" success
    expect "stop: ActiveState" "$(prop $UNIT ActiveState)" inactive
    if ce journalctl -u "$UNIT" --since "@$since" --no-pager | grep -q "SIGKILL"; then
        fail "systemd had to SIGKILL something at stop"
    fi
    ok "stop: nothing needed SIGKILL"
    expect "stop: chain $rid in the journal" "$(journal_state "$rid")" SUSPENDED

    # Start again: the chain resumes (the rerun of the long job ends at once).
    ce systemctl start "$UNIT"
    wait_for "chain $rid: resumed and COMPLETE" 60 request_is "$rid" COMPLETE
    expect "the long job ran twice (interrupted, then rerun)" "$(ledger_count $long)" 2
    ce systemctl stop "$UNIT"
    expect "final stop: Result" "$(prop $UNIT Result)" success
    ce journalctl -u "$UNIT" --no-pager -o short-precise >"$WORK/spind-journal.log" || true
}

journal_err_has() { ce journalctl -u spind.service -p err --no-pager -o cat | grep -q "$1"; }

watchdog_pinged() {
    local a b
    a=$(prop spind.service WatchdogTimestampMonotonic)
    sleep 2.5
    b=$(prop spind.service WatchdogTimestampMonotonic)
    [ "$a" != 0 ] && [ "$a" != "$b" ]
}

# ---- main --------------------------------------------------------------------------------

NSROOT=$("$HERE/build_root.sh")
mkdir -p "$STAGE/files" "$STAGE/specs" "$STAGE/broken" "$STAGE/systemd"
cp "$FILES"/notify_demo.py "$FILES"/notify-demo.service "$STAGE/files/"
cp "$FILES"/specs/*.yaml "$STAGE/specs/"
cp "$FILES"/broken/*.yaml "$STAGE/broken/"
cp "$REPO"/systemd/spind.service "$REPO"/systemd/spind.sysusers "$REPO"/systemd/spind.tmpfiles \
    "$STAGE/systemd/"
printf 'shutdown_grace: 1s\njob_stop_grace: 2s\nlog:\n  level: DEBUG\n' >"$STAGE/spind.yaml"
printf '[Service]\nWatchdogSec=4\n' >"$STAGE/e2e-dropin.conf"

boot
for s in "${SCENARIOS[@]}"; do
    log "=== scenario $s"
    "scenario_$s"
    UNIT=
done
log "PASS: ${SCENARIOS[*]}"

#!/bin/bash
# Build (once) the Debian bookworm tree that run_e2e.sh boots with systemd-nspawn.
#
#   tests/e2e/nspawn/build_root.sh            # build if missing; print the tree's path
#   SPIND_NSROOT=/path build_root.sh          # another location
#   build_root.sh --rebuild                   # throw the tree away and build it again
#
# About 60 s and 300 MB the first time; later runs return at once. The tree is only ever
# booted with --volatile=overlay, so tests never change it. It is "complete" only once the
# stamp file exists: a build that was interrupted is redone from scratch. Needs root,
# debootstrap and systemd-container (installed with apt-get when missing).
set -euo pipefail

ROOT=${SPIND_NSROOT:-/var/tmp/spind-nsroot}
STAMP="$ROOT/.spind-nsroot-complete"
MIRROR=${SPIND_NSROOT_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# systemd as PID 1, dbus for systemctl, procps for /bin/kill (ExecReload=) and pgrep,
# python3 + python3-venv for /opt/spind, curl + ca-certificates to call the API.
PACKAGES=systemd,systemd-sysv,dbus,procps,python3,python3-venv,curl,ca-certificates

log() { echo "build_root: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }

if [ "${1:-}" = "--rebuild" ]; then
    rm -rf "$ROOT"
fi

exec 9>"$ROOT.lock"
flock 9   # one build at a time; a second caller waits and then finds the stamp

if [ -e "$STAMP" ]; then
    echo "$ROOT"
    exit 0
fi

if ! command -v debootstrap >/dev/null || ! command -v systemd-nspawn >/dev/null; then
    log "installing debootstrap and systemd-container"
    apt-get update -q >&2
    # --no-install-recommends: a recommended package would edit the host's nsswitch.conf.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        systemd-container debootstrap >&2
fi

rm -rf "$ROOT" "$ROOT.tmp"
log "debootstrap $SUITE into $ROOT (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT.tmp" "$MIRROR" >&2
# The host's extra CA certificates, in case something inside must reach a TLS mirror.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT.tmp/usr/local/share/ca-certificates/"
    chroot "$ROOT.tmp" update-ca-certificates >&2
fi
chroot "$ROOT.tmp" apt-get clean
# No getty on the (passive) console; an empty machine-id: each boot gets a transient one.
chroot "$ROOT.tmp" systemctl mask console-getty.service getty@.service >&2 || true
: >"$ROOT.tmp/etc/machine-id"
mv "$ROOT.tmp" "$ROOT"
touch "$STAMP"
log "done"
echo "$ROOT"

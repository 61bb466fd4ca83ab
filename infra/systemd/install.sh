#!/bin/sh
# Install atrelay's systemd services from this checkout, exactly as docs/deploy.md describes:
#   1. the system user `atrelay`, whose home /var/lib/atrelay is the services' state folder (0750, its own);
#   2. /etc/atrelay (created first) and /etc/atrelay/env, 0600 root, from infra/env.example; an existing
#      env file is never overwritten;
#   3. the units atrelay-ingress, atrelay-worker@ and atrelay-beat in /etc/systemd/system, pointing at this
#      checkout's .venv (run `make install` first) and at ATRELAY_VAR_DIR=/var/lib/atrelay, outside it;
#   4. /usr/local/bin/atrelay: `atrelay` with the services' settings, as their user (`sudo atrelay doctor`).
# Run it again any time (after `git pull`, say): it changes only what differs.
#
# --venv DIR: the virtualenv to run (default: this checkout's .venv, which `make install` makes). It must be
# runnable by the atrelay user: a Python under root's home (pyenv's ~/.pyenv) is not, and this script says so.
#
# --prefix DIR puts every file under DIR (DIR/etc/atrelay/env, DIR/var/lib/atrelay, ...) and writes those
# paths into the units and the wrapper: a complete installation under DIR, for trying it or for CI (which
# runs the units' own command lines from it). The `atrelay` user is a real system user either way.
set -eu

PREFIX=""
CHECKOUT=$(cd "$(dirname "$0")/../.." && pwd)
VENV="$CHECKOUT/.venv"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2%/}"; shift 2 ;;
    --venv) VENV="${2%/}"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (--prefix DIR, --venv DIR)" >&2; exit 2 ;;
  esac
done

USER_NAME=atrelay
ETC="$PREFIX/etc/atrelay"
STATE="$PREFIX/var/lib/atrelay"
UNITS="$PREFIX/etc/systemd/system"
BIN="$PREFIX/usr/local/bin"
say() { echo "install.sh: $*"; }

[ "$(id -u)" = 0 ] || { echo "install.sh: run it as root (sudo)" >&2; exit 1; }
[ -x "$VENV/bin/atrelay" ] || {
  echo "install.sh: no $VENV/bin/atrelay: run \`make install\` in the checkout first" >&2; exit 1; }

# 1. The user. --create-home makes the home the units use as their working directory.
if id -u "$USER_NAME" >/dev/null 2>&1; then
  say "user $USER_NAME exists; kept"
else
  mkdir -p "$(dirname "$STATE")"
  useradd --system --user-group --home-dir "$STATE" --create-home --shell /usr/sbin/nologin "$USER_NAME"
  say "created system user $USER_NAME (home $STATE)"
fi
install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE"
# The services run as that user: it must be able to start the venv's Python and import atrelay.
if ! (cd "$STATE" && runuser -u "$USER_NAME" -- "$VENV/bin/python" -c "import workers.cli.main") >/dev/null 2>&1; then
  echo "install.sh: the $USER_NAME user cannot run $VENV/bin/python ($(readlink -f "$VENV/bin/python")) or import" \
       "atrelay from it. Make the venv with a Python every user can read, e.g. in the checkout:" \
       "make clean && make install PYTHON=/usr/bin/python3.11 (a pyenv Python under /root is not readable)" >&2
  exit 1
fi

# 2. The settings: the folder first, then the file (0600 root: systemd reads it before dropping privileges).
install -d -m 0755 -o root -g root "$ETC"
if [ -e "$ETC/env" ]; then
  say "$ETC/env exists; kept (compare with $CHECKOUT/infra/env.example for new settings)"
else
  install -m 0600 -o root -g root "$CHECKOUT/infra/env.example" "$ETC/env"
  say "wrote $ETC/env from infra/env.example: edit it (sudoedit $ETC/env)"
fi

# 3. The units, with this checkout's and this prefix's paths.
install -d -m 0755 "$UNITS" "$BIN"
for unit in "$CHECKOUT"/infra/systemd/*.service; do
  sed -e "s#/opt/atrelay/.venv#$VENV#g" -e "s#/etc/atrelay#$ETC#g" -e "s#/var/lib/atrelay#$STATE#g" "$unit" \
    > "$UNITS/$(basename "$unit").tmp"
  chmod 0644 "$UNITS/$(basename "$unit").tmp"
  mv "$UNITS/$(basename "$unit").tmp" "$UNITS/$(basename "$unit")"
done
say "installed $(ls "$CHECKOUT"/infra/systemd/*.service | xargs -n1 basename | tr '\n' ' ')in $UNITS"

# 4. The admin command.
sed -e "s#@VENV@#$VENV#g" -e "s#@ETC@#$ETC#g" -e "s#@STATE@#$STATE#g" -e "s#@USER@#$USER_NAME#g" \
  -e "s#@BIN@#$BIN#g" "$CHECKOUT/infra/systemd/atrelay-as-service" > "$BIN/atrelay.tmp"
chmod 0755 "$BIN/atrelay.tmp"
mv "$BIN/atrelay.tmp" "$BIN/atrelay"
say "installed $BIN/atrelay (run it with sudo)"

if [ -z "$PREFIX" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  say "next: sudoedit $ETC/env, then: sudo systemctl enable --now atrelay-ingress atrelay-worker@1 atrelay-beat"
else
  say "next: edit $ETC/env; with systemd: systemctl daemon-reload && systemctl enable --now atrelay-ingress atrelay-worker@1 atrelay-beat"
fi

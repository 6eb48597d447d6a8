#!/bin/sh
# DAG sync for the aws-cli image option (stack.yaml: dags.sync_image: aws-cli); docs/dag-sync.md.
# helm/values.yaml embeds this file when the repository is generated; after editing it, copy it
# there again (tests/test_sync_script.py checks that the two are equal).
#
# `aws s3 sync --delete --exact-timestamps` mirrors s3://$BUCKET/$PREFIX/ into a private staging
# folder. Only after a clean sync is the staging folder published as a new snapshot made of hard
# links (the CLI replaces a file by renaming a new one over it, so a snapshot is never modified
# and costs no second copy, and file times are kept), and the relative symlink $DEST/current
# swapped with one rename(2) (mv -T). Airflow never sees half a file or a deletion caused by a
# failed sync. Not published: a sync that would cut the number of files by more than
# MAX_DELETE_PERCENT, and on a cold start (nothing published yet) a prefix with no .py file.
#
# Environment: BUCKET (required), PREFIX, DEST (default /opt/airflow/dags), INTERVAL (seconds,
# default 30), ONCE=1 (one sync, then exit: init containers), MAX_DELETE_PERCENT (default 50;
# 100 disables the guard), ALLOW_EMPTY=1 (publish a cold start without .py files), MAX_AGE
# (seconds, for `check`, default 300). HOME must be writable (an emptyDir): the root filesystem
# stays read-only.
# Usage: dag-sync.sh [check]. Exit codes: 0 synced (or, looping, stopped by SIGTERM), 1 sync
# failed (ONCE=1), 2 bad setting, 3 refused by the shrink or cold-start guard (ONCE=1),
# 4 heartbeat missing or too old (check), 5 another sync holds DEST, 143 ONCE=1 stopped by SIGTERM.
set -u

dest="${DEST:-/opt/airflow/dags}"
staging="$dest/.staging"

if [ "${1:-}" = check ]; then  # probe: is the last successful sync recent enough?
  beat=$(cat "$dest/.heartbeat" 2>/dev/null) || { echo "UNHEALTHY: no heartbeat yet" >&2; exit 4; }
  last=${beat#*\"last_success_unix\": }
  last=${last%%[!0-9]*}
  age=$(( $(date +%s) - ${last:-0} ))
  [ "$age" -le "${MAX_AGE:-300}" ] && exit 0
  echo "UNHEALTHY: last successful sync ${age}s ago" >&2
  exit 4
fi

bad_setting() {  # NAME VALUE ALLOWED: one line, exit 2
  echo "ERROR: $1: '$2' is not allowed; use $3" >&2
  exit 2
}
case "${INTERVAL:-30}" in '' | *[!0-9]* | 0) bad_setting INTERVAL "${INTERVAL:-}" "whole seconds > 0" ;; esac
case "${MAX_DELETE_PERCENT:-50}" in '' | *[!0-9]*) bad_setting MAX_DELETE_PERCENT "${MAX_DELETE_PERCENT:-}" "0..100" ;; esac
case "${ONCE:-0}" in 0 | 1) ;; *) bad_setting ONCE "$ONCE" "0 or 1" ;; esac
case "${ALLOW_EMPTY:-0}" in 0 | 1) ;; *) bad_setting ALLOW_EMPTY "$ALLOW_EMPTY" "0 or 1" ;; esac

prefix="${PREFIX:-}"
prefix="${prefix#/}"
prefix="${prefix%/}"
source="s3://${BUCKET:?BUCKET is required}/${prefix:+$prefix/}"
interval="${INTERVAL:-30}"
max_delete_percent="${MAX_DELETE_PERCENT:-50}"
child=""

log() {  # log LEVEL EVENT [DETAIL]: one JSON line on stderr (quotes and backslashes dropped)
  detail=$(printf '%s' "${3:-}" | tr -d '\042\134' | tr '\n\t' '  ')
  printf '{"time": "%s", "level": "%s", "event": "%s", "detail": "%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" "$detail" >&2
}

count_py() {  # .py files below $1
  n=0
  for entry in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    if [ -d "$entry" ] && [ ! -L "$entry" ]; then
      n=$((n + $(count_py "$entry")))
    elif [ -f "$entry" ]; then
      case "$entry" in *.py) n=$((n + 1)) ;; esac
    fi
  done
  echo "$n"
}

count_files() {  # files below $1; plain sh, because the image need not have find
  n=0
  for entry in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    if [ -L "$entry" ] || [ -f "$entry" ]; then
      n=$((n + 1))
    elif [ -d "$entry" ]; then
      n=$((n + $(count_files "$entry")))
    fi
  done
  echo "$n"
}

publish() {  # link staging into a new snapshot, swap `current`, keep the previous snapshot only
  previous=$(readlink "$dest/current" 2>/dev/null || true)
  snap="snapshots/$(date -u +%Y%m%dT%H%M%S)-$$-$cycle"
  rm -rf "$dest/.current.tmp"
  # Hard links: no second copy, times kept; aws s3 sync renames new files over old ones, so the
  # inodes of a published snapshot are never written again.
  if ! { cp -Rl "$staging" "$dest/$snap.tmp" &&
    mv "$dest/$snap.tmp" "$dest/$snap" &&
    ln -s "$snap" "$dest/.current.tmp" &&
    mv -T "$dest/.current.tmp" "$dest/current"; }; then
    rm -rf "$dest/$snap.tmp" "$dest/.current.tmp"
    [ "$(readlink "$dest/current" 2>/dev/null)" = "$snap" ] || rm -rf "${dest:?}/$snap"
    return 1
  fi
  for old in "$dest"/snapshots/*; do
    case "$old" in
      "$dest/$snap" | "$dest/$previous") ;;
      *) rm -rf "$old" ;;
    esac
  done
}

heartbeat() {  # the same format the own-image agent writes; a full disk is logged, not fatal
  if ! { printf '{"last_success": "%s", "last_success_unix": %s}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(date +%s)" > "$dest/.heartbeat.tmp" &&
    mv -f "$dest/.heartbeat.tmp" "$dest/.heartbeat"; } 2>/dev/null; then
    rm -f "$dest/.heartbeat.tmp"
    log error heartbeat_failed "could not write $dest/.heartbeat"
  fi
  return 0
}

sync_once() {  # 0 published or unchanged, 1 failed, 3 refused
  # Staging that differs from the published snapshot is marked .pending: after a failed or
  # killed sync (.syncing left behind), and after a refused one, so that it is judged again.
  [ -e "$dest/.syncing" ] && : > "$dest/.pending"
  : > "$dest/.syncing"
  # .dagsync/ holds push-dags' bundle for the own-image agent; it is not a DAG file.
  # --exact-timestamps: a same-size edit is fetched too (the default skips it).
  aws s3 sync "$source" "$staging/" --delete --exact-timestamps --no-progress \
    --exclude '.dagsync/*' > "$dest/.sync-output" 2>&1 &
  child=$!
  wait "$child"
  rc=$?
  child=""
  rm -f "$dest/.syncing"
  if [ "$rc" -eq 2 ]; then
    # Exit code 2: some keys were skipped, everything else was synced. Publish, and name the
    # skipped keys once (again only when the list changes).
    grep -i 'skip' "$dest/.sync-output" > "$dest/.skipped.new" 2>/dev/null || true
    if ! cmp -s "$dest/.skipped.new" "$dest/.skipped" 2>/dev/null; then
      log warning skipped_keys "$(head -c 2000 "$dest/.skipped.new")"
    fi
    mv -f "$dest/.skipped.new" "$dest/.skipped"
    : > "$dest/.pending"
    rc=0
  fi
  if [ "$rc" -ne 0 ]; then
    : > "$dest/.pending"
    log error sync_failed "aws s3 sync exited $rc; published snapshot kept: $(tail -n 3 "$dest/.sync-output")"
    return 1
  fi
  [ -s "$dest/.sync-output" ] && : > "$dest/.pending"
  if [ -e "$dest/.pending" ] || [ ! -e "$dest/current" ]; then
    held=0
    [ -e "$dest/current" ] && held=$(count_files "$dest/current")
    files=$(count_files "$staging")
    if [ "$held" -eq 0 ] && [ ! -e "$dest/current" ] && [ "${ALLOW_EMPTY:-0}" != 1 ] &&
      [ "$(count_py "$staging")" -eq 0 ]; then
      log error refused "$source holds no .py file ($files files); nothing published yet, so Airflow would start on it. Check BUCKET/PREFIX, or set ALLOW_EMPTY=1 if intended"
      return 3
    fi
    if [ "$held" -gt 0 ] && [ $(((held - files) * 100)) -gt $((held * max_delete_percent)) ]; then
      log error refused "$source now has $files files, $held published (limit $max_delete_percent% fewer); raise MAX_DELETE_PERCENT if intended"
      return 3
    fi
    publish || { log error publish_failed "could not publish $snap"; return 1; }
    rm -f "$dest/.pending"
    log info published "$files files in $snap"
  fi
  heartbeat
}

stop() {  # a looping sidecar told to stop is done (0); an interrupted ONCE=1 is not (143)
  [ -n "$child" ] && kill "$child" 2>/dev/null
  log info stopped "signal received"
  [ "${ONCE:-0}" = 1 ] && exit 143
  exit 0
}
trap stop TERM INT

mkdir -p "$staging" "$dest/snapshots" || exit 1
if command -v flock > /dev/null 2>&1; then  # one writer per DEST, where the image has flock
  exec 9> "$dest/.lock"
  flock -n 9 || { log error locked "another sync holds $dest/.lock"; exit 5; }
fi
# Leftovers of a killed run: half-built snapshots and temporary files, never published.
rm -rf "$dest"/snapshots/*.tmp "$dest/.current.tmp" "$dest/.heartbeat.tmp"
log info started "$source -> $dest/current every ${interval}s"
cycle=0
while :; do
  cycle=$((cycle + 1))
  sync_once
  rc=$?
  [ "${ONCE:-0}" = 1 ] && exit "$rc"
  spread=$((interval / 10))  # +/- 10% jitter, so pods do not list in step
  delay=$interval
  [ "$spread" -gt 0 ] && delay=$((interval - spread + $(od -An -N2 -tu2 /dev/urandom) % (2 * spread + 1)))
  sleep "$delay" &
  child=$!
  wait "$child"
  child=""
done

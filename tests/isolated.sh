#!/bin/sh
# A test agent for the isolation tests: it tries what a confined agent
# must and must not be able to do, writes each outcome to
# ./probe-<agent>-<pid>.txt (`name=ok` or `name=fail:<error>`; cwd is its
# workspace), then goes on as tests/agent.sh in mode $1.
#
# Paths to try come from its `env`: OUTSIDE_FILE (a file outside the cell
# on a real filesystem), HIDDEN_DIR and HIDDEN_FILE ([isolation]
# hidden_paths), HIDDEN_TMP_DIR (a hidden path under the host's /tmp),
# HOST_TMP_FILE (a file in the host's /tmp); and, if set, NEIGHBOUR_PID
# (a process of the agent's user outside its namespace) and
# NEIGHBOUR_FILE (a file outside the cell that user may write).
set -u
try() {
    name=$1
    shift
    if err=$("$@" 2>&1); then echo "$name=ok"; else echo "$name=fail:$err"; fi
}
out="probe-$LAZARUS_AGENT-$$.txt"
{
    try workspace sh -c 'echo x > ws-written'
    try bus sh -c "echo x > $LAZARUS_CELL_DIR/bus/bus-written"
    try heartbeat sh -c "echo '{}' > $LAZARUS_HEARTBEAT_FILE.probe && rm $LAZARUS_HEARTBEAT_FILE.probe"
    try outside sh -c "echo x > $OUTSIDE_FILE"
    try cell_json sh -c "echo '{}' > $LAZARUS_CELL_DIR/cell.json"
    try cell_json_rename sh -c "echo '{}' > cj && mv cj $LAZARUS_CELL_DIR/cell.json"
    try state_json sh -c "echo '{}' > $LAZARUS_CELL_DIR/.lazarus/state.json"
    try events sh -c "echo forged >> $LAZARUS_CELL_DIR/logs/events.jsonl"
    try cell_top sh -c "echo x > $LAZARUS_CELL_DIR/new-file"
    try tmp sh -c "echo mine > /tmp/agent-$LAZARUS_CELL_UUID"
    try remount mount -o remount,rw /
    try umount umount -l "$LAZARUS_CELL_DIR"
    try dev_null sh -c 'echo x > /dev/null'
    try setuid sh -c 'cp /bin/true ./suid-true && chmod 4755 ./suid-true'
    try setgid sh -c 'chmod g+s ./suid-true'
    echo "hidden_dir=$(ls -A "$HIDDEN_DIR" 2>&1 | tr '\n' ' ')"
    echo "hidden_file=$(cat "$HIDDEN_FILE" 2>&1)"
    echo "hidden_tmp_dir=$(ls -A "$HIDDEN_TMP_DIR" 2>&1 | tr '\n' ' ')"
    echo "host_tmp=$(cat "$HOST_TMP_FILE" 2>&1)"
    echo "cells=$(ls -A "$(dirname "$LAZARUS_CELL_DIR")" | tr '\n' ' ')"
    echo "devices=$(ls /dev | tr '\n' ' ')"
    echo "cap_eff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)"
    echo "cwd=$(pwd)"
    if [ -n "${HOST_PTY:-}" ]; then
        try host_pty sh -c "printf 'agent was here' > /dev/pts/$HOST_PTY"
        echo "pts=$(ls /dev/pts | tr '\n' ' ')"
    fi
    if [ -n "${NEIGHBOUR_PID:-}" ]; then
        try proc_root sh -c "echo x > /proc/$NEIGHBOUR_PID/root$NEIGHBOUR_FILE"
        try proc_cwd sh -c "echo x > /proc/$NEIGHBOUR_PID/cwd/written-through-cwd"
        try signal kill -0 "$NEIGHBOUR_PID"
    fi
} > "$out.tmp"
mv "$out.tmp" "$out"
exec /bin/sh "$(dirname "$0")/agent.sh" "$@"

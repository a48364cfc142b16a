#!/bin/sh
# A test agent for the revival tests: it records how it was started, then
# beats, hangs, crashes or exits as told by $1.
#
#   beat        beat every 0.2 s
#   hang        first start: beat once, then hang without beating; revived: beat
#   hang-hard   like hang, but ignore SIGTERM and leave a child in the session
#   crash       beat once, exit 3 (every time)
#   crash-once  first start: beat once, exit 3; revived: beat
#   crash-child first start: leave a child behind, beat once, exit 3; revived: beat
#   exit0       beat once, exit 0
#   child       leave a child in the session, then beat
#   stubborn    like child, but ignore SIGTERM
#   escape      leave a grandchild in a session of its own (setsid, as agent
#               harnesses do for their tools), then beat
#
# Each start writes ./start-<agent>-<pid>.env (cwd is the cell's workspace).
set -u
mode=${1:-beat}
sid=$(sed 's/.*) //' "/proc/$$/stat" | cut -d' ' -f4)
{
    echo "pid=$$"
    echo "uid=$(id -u)"
    echo "gid=$(id -g)"
    echo "sid=$sid"
    echo "cwd=$(pwd)"
    echo "uuid=${LAZARUS_CELL_UUID:-}"
    echo "dir=${LAZARUS_CELL_DIR:-}"
    echo "agent=${LAZARUS_AGENT:-}"
    echo "hb=${LAZARUS_HEARTBEAT_FILE:-}"
    echo "attempt=${LAZARUS_REVIVE_ATTEMPT:-}"
    echo "custom=${CUSTOM:-}"
    echo "notify=${NOTIFY_SOCKET:-unset}"
    echo "substitute_for=${LAZARUS_SUBSTITUTE_FOR:-}"
    [ -e /proc/$$/fd/7 ] && echo "fd7=open" || echo "fd7=closed"
    echo "home=${HOME:-unset}"
    echo "user=${USER:-unset}"
    echo "logname=${LOGNAME:-unset}"
    echo "shell=${SHELL:-unset}"
    echo "path=${PATH:-unset}"
    echo "nofile_hard=$(ulimit -Hn)"
    echo "names=$(env | sed 's/=.*//' | sort | tr '\n' ' ')"
} > "start-$LAZARUS_AGENT-$$.env.tmp"
mv "start-$LAZARUS_AGENT-$$.env.tmp" "start-$LAZARUS_AGENT-$$.env"
echo "agent $LAZARUS_AGENT up, attempt $LAZARUS_REVIVE_ATTEMPT"

beat() {
    printf '{"timestamp": %s, "pid": %d, "status": "%s"}\n' \
        "$(date +%s.%N)" $$ "$1" > "$LAZARUS_HEARTBEAT_FILE.tmp" &&
        mv "$LAZARUS_HEARTBEAT_FILE.tmp" "$LAZARUS_HEARTBEAT_FILE"
}

first=no
[ "${LAZARUS_REVIVE_ATTEMPT:-0}" = 0 ] && first=yes
case $mode in
crash) beat working; exit 3 ;;
crash-once) if [ $first = yes ]; then beat working; exit 3; fi ;;
crash-child)
    if [ $first = yes ]; then
        sleep 1000 &
        echo "$!" > "child-$LAZARUS_AGENT.pid"
        beat working
        exit 3
    fi
    ;;
exit0) beat done; exit 0 ;;
child | stubborn)
    [ "$mode" = stubborn ] && trap '' TERM
    sleep 1000 &
    echo "$!" > "child-$LAZARUS_AGENT.pid"
    ;;
escape)
    setsid sh -c 'echo $$ > "escaped-$LAZARUS_AGENT.pid.tmp" &&
        mv "escaped-$LAZARUS_AGENT.pid.tmp" "escaped-$LAZARUS_AGENT.pid"; exec sleep 1000' &
    ;;
hang | hang-hard)
    if [ $first = yes ]; then
        if [ "$mode" = hang-hard ]; then
            trap '' TERM
            sleep 1000 &
            echo "$!" > "child-$LAZARUS_AGENT.pid"
        fi
        beat working
        while :; do sleep 1; done
    fi
    ;;
esac
while :; do
    beat working
    sleep 0.2
done

#!/bin/sh
# lazarus-pit notification hook: posts each event to a Telegram chat.
#
# lazarus-pit.toml:
#   [notifications]
#   command = ["/usr/local/lib/lazarus-pit/hooks/telegram.sh"]
#   # events: the default list (agent_stale, agent_revived, revive_failed,
#   # revive_exhausted, revive_requested, agent_dead) or your own
# and in the daemon's environment (e.g. a systemd drop-in):
#   TELEGRAM_BOT_TOKEN=123456:ABC...   TELEGRAM_CHAT_ID=-100123456789
#
# The daemon gives it the event line on stdin and LAZARUS_EVENT,
# LAZARUS_CELL_UUID, LAZARUS_AGENT. Needs curl.
set -eu

: "${TELEGRAM_BOT_TOKEN:?TELEGRAM_BOT_TOKEN is not set}"
: "${TELEGRAM_CHAT_ID:?TELEGRAM_CHAT_ID is not set}"
api=${TELEGRAM_API:-https://api.telegram.org}
line=$(cat)

case $LAZARUS_EVENT in
agent_stale) what="went silent" ;;
agent_revived) what="was revived" ;;
agent_recovered) what="is beating again" ;;
revive_failed) what="could not be started" ;;
revive_exhausted) what="could not be revived: a human must act" ;;
revive_requested) what="is dead; approve its revival with: lazarus-pit approve $LAZARUS_CELL_UUID ${LAZARUS_AGENT:-}" ;;
agent_dead) what="is dead" ;;
*) what=$LAZARUS_EVENT ;;
esac

curl -fsS --max-time 8 -o /dev/null \
    --data-urlencode "chat_id=$TELEGRAM_CHAT_ID" \
    --data-urlencode "text=lazarus-pit: agent ${LAZARUS_AGENT:-?} of cell $LAZARUS_CELL_UUID $what
$line" \
    "$api/bot$TELEGRAM_BOT_TOKEN/sendMessage"

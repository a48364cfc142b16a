#!/bin/sh
# lazarus-pit notification hook: opens a Gitea issue when an agent dies and
# closes it when the agent is revived or recovers (the seed's
# open_issue_on_death / close_issue_on_revive).
#
# lazarus-pit.toml:
#   [notifications]
#   command = ["/usr/local/lib/lazarus-pit/hooks/gitea-issue.sh"]
#   events = ["agent_dead", "revive_exhausted", "revive_requested",
#             "agent_revived", "agent_recovered"]
#   open_issue_on_death = true
#   close_issue_on_revive = true
#   [gitea]
#   url = "https://gitea.example.com"
#   repo = "owner/repo"
# and GITEA_TOKEN in the daemon's environment (or [gitea] token).
#
# The daemon gives it the event line on stdin and LAZARUS_EVENT,
# LAZARUS_CELL_UUID, LAZARUS_AGENT, LAZARUS_GITEA_URL, LAZARUS_GITEA_REPO,
# GITEA_TOKEN, LAZARUS_OPEN_ISSUE_ON_DEATH, LAZARUS_CLOSE_ISSUE_ON_REVIVE.
# The number of the issue it opened is remembered in LAZARUS_HOOK_STATE
# (default /var/lib/lazarus-pit/gitea), outside every cell. Needs curl.
set -eu

: "${LAZARUS_GITEA_URL:?[gitea] url is not set}"
: "${LAZARUS_GITEA_REPO:?[gitea] repo is not set}"
: "${GITEA_TOKEN:?GITEA_TOKEN is not set}"
: "${LAZARUS_AGENT:?no agent in this event}"
state_dir=${LAZARUS_HOOK_STATE:-/var/lib/lazarus-pit/gitea}
api="${LAZARUS_GITEA_URL%/}/api/v1/repos/$LAZARUS_GITEA_REPO"
remembered="$state_dir/$LAZARUS_CELL_UUID.$LAZARUS_AGENT"
line=$(cat)

gitea() { # METHOD PATH JSON
    curl -fsS --max-time 8 -X "$1" \
        -H "Authorization: token $GITEA_TOKEN" \
        -H "Content-Type: application/json" \
        -d "$3" "$api$2"
}

# The event line as a JSON string body (it is one line of JSON already).
escaped=$(printf '%s' "$line" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')

case $LAZARUS_EVENT in
agent_dead | revive_exhausted | revive_requested)
    [ "${LAZARUS_OPEN_ISSUE_ON_DEATH:-1}" = 1 ] || exit 0
    [ -s "$remembered" ] && exit 0 # already open for this agent
    title="[lazarus-pit] agent $LAZARUS_AGENT of cell $LAZARUS_CELL_UUID is down ($LAZARUS_EVENT)"
    body="lazarus-pit reported:\\n\\n\`\`\`json\\n$escaped\\n\`\`\`\\n\\nRevive it with \`lazarus-pit revive $LAZARUS_CELL_UUID $LAZARUS_AGENT\`."
    number=$(gitea POST /issues "{\"title\": \"$title\", \"body\": \"$body\"}" |
        grep -o '"number":[0-9]*' | head -n 1 | cut -d: -f2)
    [ -n "$number" ] || { echo "gitea: no issue number in the reply" >&2; exit 1; }
    mkdir -p "$state_dir"
    printf '%s\n' "$number" > "$remembered"
    ;;
agent_revived | agent_recovered)
    [ "${LAZARUS_CLOSE_ISSUE_ON_REVIVE:-1}" = 1 ] || exit 0
    [ -s "$remembered" ] || exit 0
    number=$(cat "$remembered")
    gitea POST "/issues/$number/comments" \
        "{\"body\": \"lazarus-pit: \`$LAZARUS_EVENT\`\\n\\n\`\`\`json\\n$escaped\\n\`\`\`\"}" >/dev/null
    gitea PATCH "/issues/$number" '{"state": "closed"}' >/dev/null
    rm -f "$remembered"
    ;;
esac

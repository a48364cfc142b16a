# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_lazarus_pit_global_optspecs
    string join \n config= root= json list-cells status h/help V/version
end

function __fish_lazarus_pit_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_lazarus_pit_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_lazarus_pit_using_subcommand
    set -l cmd (__fish_lazarus_pit_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -l list-cells -d 'List every cell and exit (same as `cell list`)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -l status -d 'Print agent health and exit (same as `status`)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -s V -l version -d 'Print version'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "daemon" -d 'Run the supervisor daemon'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "cell" -d 'Create, inspect and change mission cells'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "status" -d 'Per agent: state, heartbeat age, revives (works without a daemon)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "heartbeat" -d 'Write this agent\'s heartbeat file atomically (for shell agents)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "events" -d 'Print the event stream of a cell, or of every cell merged by time'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "revive" -d 'Revive an agent now, whatever its policy (resets an abandoned agent)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "approve" -d 'Approve a pending revival request (policy "ask")'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "deny" -d 'Deny a pending revival request: the agent stays dead'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "checkpoint" -d 'Snapshot a cell\'s workspace/ and bus/ into checkpoints/ (or list them)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "restore" -d 'Roll a frozen or archived cell\'s workspace/ and bus/ back to a checkpoint'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "demo" -d 'A guided run on a temporary root: agents hang, crash, come back, and roll back'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "metrics" -d 'Prometheus text of the root\'s cells and agents (and the daemon\'s counters)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "serve" -d 'The HTTP API and live dashboard (loopback only unless told otherwise)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "man" -d 'Print the manual page lazarus-pit(1) (roff; `lazarus-pit man | man -l -`)'
complete -c lazarus-pit -n "__fish_lazarus_pit_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand daemon" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand daemon" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand daemon" -l once -d 'One discovery and reconcile pass, then exit. It acts like the daemon: it starts, revives and stops agents. Exit 0: all healthy, 1: an agent is not, 3: it could not run (another daemon holds the root, an unusable root or config). For a check that only looks, use `status`'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand daemon" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "create" -d 'Create a cell and print its UUID'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "list" -d 'List cells: "<uuid>: <status> — <mission>"'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "show" -d 'Show one cell\'s manifest'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "join" -d 'Add an agent to a cell'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "set" -d 'Change a cell\'s or an agent\'s settings (KEY=VALUE, fields of cell.json)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "leave" -d 'Remove an agent from a cell'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "freeze" -d 'Stop reviving a cell\'s agents (they stay monitored)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "thaw" -d 'Resume reviving a frozen cell\'s agents'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "archive" -d 'Stop monitoring a cell and keep it as it is'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "destroy" -d 'Remove a cell\'s working files, keeping cell.json and logs/ as the audit trail'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and not __fish_seen_subcommand_from create list show join set leave freeze thaw archive destroy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l name -d 'Human-readable name' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l mission -d 'What the mission is for' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l by -d 'Who creates it [default: $SUDO_USER, $USER, or the uid]' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l agent -d 'An agent to add, with an optional role (repeatable)' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l template -d 'A cell.json (or filled mission-proposal.md) to start from' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from list" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from list" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from list" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from show" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from show" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from show" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l agent -d 'Agent name: 1-64 of [A-Za-z0-9._-], not starting with \'.\'' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l role -d 'The agent\'s role in the mission' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l env -d 'Extra environment for the agent\'s command (repeatable)' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l revive-policy -d 'What happens when it dies: yes, no, ask, substitute [default: the cell\'s, else the config\'s]' -r -f -a "yes\t''
no\t''
ask\t''
substitute\t''"
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l restart -d 'on-failure (a clean exit 0 means finished) or always' -r -f -a "on-failure\t''
always\t''"
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l autostart -d 'Start it as soon as the daemon sees it (true, false) [default: true]' -r -f -a "true\t''
false\t''"
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l substitute -d 'An agent of the cell that takes over when this one dies (repeatable; with --revive-policy substitute)' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l stale-after -d 'Stale when its last heartbeat is older than this many seconds (heartbeat_stale_threshold)' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l resurrect-after -d 'Due for revival this many seconds after its last heartbeat' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l isolation -d 'directory, mount-namespace or podman [default: the cell\'s]' -r -f -a "directory\t''
mount-namespace\t''
podman\t''"
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from join" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from set" -l agent -d 'Change this agent\'s settings instead of the cell\'s' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from set" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from set" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from set" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from leave" -l agent -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from leave" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from leave" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from leave" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from leave" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from freeze" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from freeze" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from freeze" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from freeze" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from thaw" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from thaw" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from thaw" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from thaw" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from archive" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from archive" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from archive" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from archive" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from destroy" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from destroy" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from destroy" -l yes -d 'Confirm: destroying removes workspace/, bus/, checkpoints/ and .lazarus/'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from destroy" -l purge -d 'Remove the whole cell directory, logs and manifest included'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from destroy" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from destroy" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a cell and print its UUID'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "list" -d 'List cells: "<uuid>: <status> — <mission>"'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one cell\'s manifest'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "join" -d 'Add an agent to a cell'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "set" -d 'Change a cell\'s or an agent\'s settings (KEY=VALUE, fields of cell.json)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "leave" -d 'Remove an agent from a cell'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "freeze" -d 'Stop reviving a cell\'s agents (they stay monitored)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "thaw" -d 'Resume reviving a frozen cell\'s agents'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "archive" -d 'Stop monitoring a cell and keep it as it is'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "destroy" -d 'Remove a cell\'s working files, keeping cell.json and logs/ as the audit trail'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand cell; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand status" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand status" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand status" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand status" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l cell -d 'Cell UUID, unique prefix or name [default: $LAZARUS_CELL_UUID]' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l agent -d 'Agent name [default: $LAZARUS_AGENT]' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l status -d 'What the agent is doing (e.g. thinking, idle)' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l cycle -d 'The agent\'s work-loop counter' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l model -d 'Model the agent runs on' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l pid -d 'Pid to record [default: the parent process, i.e. the calling agent]' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l force -d 'Write it even though the cell lists no agent of that name (the daemon ignores such a heartbeat until the agent joins)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand heartbeat" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -l since -d 'Only events at or after this time: a duration back from now (10m, 2h, 1d), an RFC 3339 time, or unix seconds' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -l event -d 'Only events of this name (repeatable)' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -l agent -d 'Only events of this agent' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -s f -l follow -d 'Keep printing new events as they are written (from now, or from --since), new cells and rotated logs included, until interrupted'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand events" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand revive" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand revive" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand revive" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand revive" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand approve" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand approve" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand approve" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand approve" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand deny" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand deny" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand deny" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand deny" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand checkpoint" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand checkpoint" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand checkpoint" -l list -d 'List the cell\'s checkpoints instead of taking one'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand checkpoint" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand checkpoint" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand restore" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand restore" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand restore" -l force -d 'Freeze an active cell first (its agents start again on the restored files when it is thawed)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand restore" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand restore" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand demo" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand demo" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand demo" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand demo" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand metrics" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand metrics" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand metrics" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand metrics" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand serve" -l listen -d 'Address and port to listen on [default: `[http] listen`, else 127.0.0.1:7600]. Beyond loopback, put a TLS proxy in front' -r
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand serve" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand serve" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand serve" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand serve" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand completions" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand completions" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand completions" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand completions" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand man" -l config -d 'Config file [env: LAZARUS_CONFIG] [default: /etc/lazarus-pit/lazarus-pit.toml if present]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand man" -l root -d 'Cells root [env: LAZARUS_ROOT] [default: cells.root from the config, else /var/missions]' -r -F
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand man" -l json -d 'Machine-readable output (JSON) for commands that print'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand man" -s h -l help -d 'Print help'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "daemon" -d 'Run the supervisor daemon'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "cell" -d 'Create, inspect and change mission cells'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "status" -d 'Per agent: state, heartbeat age, revives (works without a daemon)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "heartbeat" -d 'Write this agent\'s heartbeat file atomically (for shell agents)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "events" -d 'Print the event stream of a cell, or of every cell merged by time'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "revive" -d 'Revive an agent now, whatever its policy (resets an abandoned agent)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "approve" -d 'Approve a pending revival request (policy "ask")'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "deny" -d 'Deny a pending revival request: the agent stays dead'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "checkpoint" -d 'Snapshot a cell\'s workspace/ and bus/ into checkpoints/ (or list them)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "restore" -d 'Roll a frozen or archived cell\'s workspace/ and bus/ back to a checkpoint'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "demo" -d 'A guided run on a temporary root: agents hang, crash, come back, and roll back'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "metrics" -d 'Prometheus text of the root\'s cells and agents (and the daemon\'s counters)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "serve" -d 'The HTTP API and live dashboard (loopback only unless told otherwise)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "man" -d 'Print the manual page lazarus-pit(1) (roff; `lazarus-pit man | man -l -`)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and not __fish_seen_subcommand_from daemon cell status heartbeat events revive approve deny checkpoint restore demo metrics serve completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "create" -d 'Create a cell and print its UUID'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "list" -d 'List cells: "<uuid>: <status> — <mission>"'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "show" -d 'Show one cell\'s manifest'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "join" -d 'Add an agent to a cell'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "set" -d 'Change a cell\'s or an agent\'s settings (KEY=VALUE, fields of cell.json)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "leave" -d 'Remove an agent from a cell'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "freeze" -d 'Stop reviving a cell\'s agents (they stay monitored)'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "thaw" -d 'Resume reviving a frozen cell\'s agents'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "archive" -d 'Stop monitoring a cell and keep it as it is'
complete -c lazarus-pit -n "__fish_lazarus_pit_using_subcommand help; and __fish_seen_subcommand_from cell" -f -a "destroy" -d 'Remove a cell\'s working files, keeping cell.json and logs/ as the audit trail'

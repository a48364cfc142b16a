# One lazarus-pit daemon on every client node (a system job), run directly
# on the host with raw_exec, on the node's own disk.
#
#   nomad job run packaging/nomad/lazarus-pit.nomad.hcl
#
# Needs the package (or the binary at /usr/bin/lazarus-pit) on each node,
# and the raw_exec driver enabled in the client's config. The agents'
# cgroups are made beneath the host's cgroup root ([daemon] cgroup), not
# beneath this task's: stopping or restarting the task stops only the
# daemon, and the next one adopts every agent still running, as under
# systemd with KillMode=process.
job "lazarus-pit" {
  type        = "system"
  datacenters = ["*"]

  group "lazarus-pit" {
    restart {
      attempts = 10
      interval = "5m"
      delay    = "1s"
      mode     = "delay"
    }

    task "daemon" {
      driver = "raw_exec"

      config {
        command = "/usr/bin/lazarus-pit"
        args    = ["--config", "${NOMAD_TASK_DIR}/lazarus-pit.toml", "daemon"]
      }

      # SIGTERM: the daemon flushes its state and exits 0 within 2 s,
      # leaving the agents running.
      kill_signal  = "SIGTERM"
      kill_timeout = "5s"

      template {
        destination = "local/lazarus-pit.toml"
        change_mode = "signal"
        # SIGHUP reloads the config.
        change_signal = "SIGHUP"
        data          = <<-EOT
          [daemon]
          log_level = "INFO"
          state_dir = "/var/lib/lazarus-pit"
          cgroup = "/sys/fs/cgroup"

          [cells]
          root = "/var/missions"

          [metrics]
          textfile = "/var/lib/node_exporter/textfile_collector/lazarus-pit.prom"
        EOT
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}

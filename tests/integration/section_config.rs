//! BRIEF sections 8 and 9: config file and root precedence, errors, exit codes.

use crate::harness::{Env, repo_file};

#[test]
fn the_seed_config_loads_unchanged_and_without_warnings() {
    let env = Env::new();
    let seed = repo_file("tests/fixtures/seed-lazarus-pit.toml");
    // The seed's cells.root is /var/missions: LAZARUS_ROOT (set by the
    // harness) wins over it, so this test stays in its temporary root.
    let mut cmd = env.command(&["cell", "create"]);
    cmd.env("LAZARUS_CONFIG", &seed);
    let run = env.run_cmd(cmd, &["cell", "create"]).success();
    assert_eq!(run.stderr, "", "no warning for the seed's keys");
    assert!(env.cell(run.stdout.trim()).join("cell.json").exists());
}

#[test]
fn the_documented_default_config_loads_without_warnings() {
    let env = Env::new();
    let file = repo_file("templates/lazarus-pit.toml");
    let run = env
        .run(&["--config", file.to_str().expect("utf8"), "cell", "create"])
        .success();
    assert_eq!(run.stderr, "");
}

#[test]
fn root_precedence_flag_over_env_over_config() {
    let env = Env::new();
    let from_config = env.tmp.path().join("from-config");
    let from_env = env.tmp.path().join("from-env");
    let from_flag = env.tmp.path().join("from-flag");
    env.config(&format!(
        "[cells]\nroot = {:?}\n",
        from_config.to_str().expect("utf8")
    ));
    let mut cmd = env.command(&["cell", "create"]);
    cmd.env_remove("LAZARUS_ROOT");
    let uuid = env.run_cmd(cmd, &[]).success().stdout;
    assert!(from_config.join(uuid.trim()).is_dir());

    let mut cmd = env.command(&["cell", "create"]);
    cmd.env("LAZARUS_ROOT", &from_env);
    let uuid = env.run_cmd(cmd, &[]).success().stdout;
    assert!(from_env.join(uuid.trim()).is_dir());

    // --root is global: accepted after the subcommand too.
    let mut cmd = env.command(&[
        "cell",
        "create",
        "--root",
        from_flag.to_str().expect("utf8"),
    ]);
    cmd.env("LAZARUS_ROOT", &from_env);
    let uuid = env.run_cmd(cmd, &[]).success().stdout;
    assert!(from_flag.join(uuid.trim()).is_dir());
}

#[test]
fn config_precedence_flag_over_env() {
    let env = Env::new();
    let good = env.tmp.path().join("good.toml");
    std::fs::write(&good, "[cells]\nheartbeat_stale_threshold = 0.5\n").expect("write");
    let missing = env.tmp.path().join("missing.toml");
    let mut cmd = env.command(&["--config", good.to_str().expect("utf8"), "cell", "list"]);
    cmd.env("LAZARUS_CONFIG", &missing);
    std::fs::create_dir_all(&env.root).expect("root");
    env.run_cmd(cmd, &[]).success();
}

#[test]
fn a_named_config_that_is_missing_or_invalid_is_an_error() {
    let env = Env::new();
    let missing = env.tmp.path().join("nope.toml");
    env.run(&["--config", missing.to_str().expect("utf8"), "cell", "list"])
        .fails(1, "nope.toml: config file does not exist");
    // Written as is, so the line numbers hold (it fails before anything
    // would need a state directory).
    std::fs::write(
        &env.config,
        "[cells]\nheartbeat_stale_threshold = 60\npoll_interval = \"soon\"\n",
    )
    .expect("write");
    let run = env.run(&["cell", "list"]).fails(1, "lazarus-pit.toml");
    assert!(run.stderr.contains("line 3"), "{run:#?}");
    std::fs::write(&env.config, "[cells\n").expect("write");
    let run = env.run(&["cell", "list"]).fails(1, "lazarus-pit.toml");
    assert!(run.stderr.contains("line 1"), "{run:#?}");
    env.config("[cells]\nkill_grace = -1\n");
    env.run(&["cell", "list"]).fails(1, "non-negative");
    // Absurd numbers are errors too, never a panic (1e19 s overflows
    // every clock).
    env.config("[cells]\nheartbeat_stale_threshold = 1e19\n");
    env.run(&["cell", "list"]).fails(1, "at most ten years");
    env.config("[cells]\nresurrect_after = 0\n");
    env.run(&["cell", "list"]).fails(1, "positive");
}

#[test]
fn unknown_keys_warn_but_do_not_fail() {
    let env = Env::new();
    env.config("[cells]\nmystery = 1\n[extra]\nx = 2\n");
    let run = env.run(&["cell", "create"]).success();
    assert!(run.stderr.contains("cells.mystery"), "{run:#?}");
    assert!(run.stderr.contains("extra"), "{run:#?}");
}

#[test]
fn fractional_durations_apply() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 0.25\n");
    let uuid = env.create(&["--agent", "a"]);
    env.run(&["heartbeat", "--cell", &uuid, "--agent", "a"])
        .success();
    let fresh = env.run(&["status", "--json"]).success().json();
    // 250 ms later the same heartbeat is stale: wait for it, with a deadline.
    crate::harness::wait_for("stale", std::time::Duration::from_secs(10), || {
        env.run(&["status", "--json"]).reported().json()["cells"][0]["agents"][0]["state"]
            == "stale"
    });
    assert!(
        fresh["cells"][0]["agents"][0]["heartbeat_age_s"]
            .as_f64()
            .expect("age")
            < 10.0
    );
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.run(&["cell", "create", "--bogus"]).fails(2, "--bogus");
    env.run(&["cell"]).fails(2, "Usage");
    env.run(&["--list-cells", "--status"])
        .fails(2, "cannot be used");
}

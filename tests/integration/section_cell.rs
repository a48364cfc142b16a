//! BRIEF sections 2, 3 and 8: `cell create|list|show|join|leave|freeze|
//! thaw|archive|destroy`, through the real binary.

use std::os::unix::fs::symlink;

use serde_json::{Value, json};

use crate::harness::{Env, read_json, repo_file};

const LAYOUT: &[&str] = &[
    "cell.json",
    "workspace",
    "logs/events.jsonl",
    "checkpoints",
    "bus/inbox",
    "bus/outbox",
    ".lazarus/heartbeats",
];

/// Writes a cell directory by hand, as another tool would.
fn handmade(env: &Env, uuid: &str, manifest: &Value) {
    let dir = env.cell(uuid);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("cell.json"), manifest.to_string()).expect("write");
}

#[test]
fn create_prints_only_the_uuid_and_makes_the_whole_layout() {
    let env = Env::new();
    let run = env
        .run(&[
            "cell",
            "create",
            "--name",
            "n1",
            "--mission",
            "Fix it",
            "--by",
            "allegro",
        ])
        .success();
    let uuid = run.stdout.trim_end_matches('\n');
    assert_eq!(run.stdout, format!("{uuid}\n"));
    let parsed = uuid::Uuid::parse_str(uuid).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 4);
    for rel in LAYOUT {
        assert!(env.cell(uuid).join(rel).exists(), "{rel} missing");
    }
    let m = env.manifest(uuid);
    assert_eq!(m["uuid"], uuid);
    assert_eq!(m["name"], "n1");
    assert_eq!(m["mission"], "Fix it");
    assert_eq!(m["created_by"], "allegro");
    assert_eq!(m["status"], "provisioned");
    assert_eq!(m["agents"], json!([]));
    let events = env.events(uuid);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "cell_created");
    assert_eq!(events[0]["by"], "allegro");
    assert_eq!(events[0]["uuid"], uuid);
    assert_eq!(events[0]["name"], "n1");
    assert_eq!(events[0]["cell"], uuid);
    // Nothing but the cell is left in the root (no staging directory).
    assert_eq!(
        std::fs::read_dir(&env.root).expect("root").count(),
        1,
        "{:?}",
        env.tree()
    );
}

#[test]
fn create_with_agents_is_active_and_records_each_join() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "claude:developer", "--agent", "gpt"]);
    let m = env.manifest(&uuid);
    assert_eq!(m["status"], "active");
    assert_eq!(m["agents"][0]["name"], "claude");
    assert_eq!(m["agents"][0]["role"], "developer");
    assert_eq!(m["agents"][1]["role"], "agent");
    assert!(m["agents"][0]["joined_at"].is_string());
    assert_eq!(
        env.event_names(&uuid),
        [
            "cell_created",
            "agent_joined",
            "agent_joined",
            "cell_status_changed"
        ]
    );
    assert!(env.cell(&uuid).join("bus/inbox/claude").is_dir());
}

#[test]
fn create_json_describes_the_cell() {
    let env = Env::new();
    let v = env
        .run(&["cell", "create", "--json", "--mission", "m"])
        .success()
        .json();
    let uuid = v["uuid"].as_str().expect("uuid");
    assert_eq!(v["path"], env.cell(uuid).display().to_string());
    assert_eq!(v["manifest"]["mission"], "m");
}

#[test]
fn create_from_json_template_keeps_its_fields_and_replaces_identity() {
    let env = Env::new();
    let template = repo_file("templates/cell.json");
    let uuid = env.create(&[
        "--template",
        template.to_str().expect("utf8"),
        "--agent",
        "extra",
    ]);
    let m = env.manifest(&uuid);
    let t = read_json(&template);
    assert_eq!(m["uuid"], uuid);
    assert_ne!(m["created_at"], t["created_at"]);
    assert_eq!(m["gitea_issue"], t["gitea_issue"]);
    assert_eq!(m["repo"], t["repo"]);
    assert_eq!(m["heartbeat_stale_threshold"], 60);
    assert_eq!(m["agents"][0]["command"], t["agents"][0]["command"]);
    assert_eq!(m["agents"][2]["name"], "extra");
    assert_eq!(m["status"], "active");
}

#[test]
fn create_from_a_filled_mission_proposal() {
    let env = Env::new();
    let blank = repo_file("templates/mission-proposal.md");
    let text = std::fs::read_to_string(&blank)
        .expect("template")
        .replace(
            "| `mission`                   |       |",
            "| `mission`                   | Ship the thing |",
        )
        .replace(
            "| `max_revive_attempts`       |       |",
            "| `max_revive_attempts`       | 7 |",
        )
        .replace(
            "|       |      |         |",
            "| claude | developer | `python3 agent.py` |",
        );
    let filled = env.tmp.path().join("proposal.md");
    std::fs::write(&filled, text).expect("write");
    let uuid = env.create(&["--template", filled.to_str().expect("utf8")]);
    let m = env.manifest(&uuid);
    assert_eq!(m["mission"], "Ship the thing");
    assert_eq!(m["max_revive_attempts"], 7);
    assert_eq!(m["agents"][0]["name"], "claude");
    assert_eq!(m["agents"][0]["command"], "python3 agent.py");
    // The blank template creates an empty cell.
    env.create(&["--template", blank.to_str().expect("utf8")]);
}

#[test]
fn invalid_agent_names_are_refused_and_nothing_is_written() {
    let env = Env::new();
    let long = "a".repeat(65);
    for bad in ["../x", ".hidden", "a/b", long.as_str()] {
        // What was typed can never be right: a usage error.
        env.run(&["cell", "create", "--agent", bad])
            .fails(2, "invalid agent name");
        assert!(
            !env.root.exists(),
            "create wrote {:?} for {bad}",
            env.tree()
        );
    }
    let uuid = env.create(&["--agent", "ok"]);
    let before = env.tree();
    let manifest = std::fs::read(env.cell(&uuid).join("cell.json")).expect("read");
    for bad in ["../x", ".hidden", "a/b", long.as_str()] {
        env.run(&["cell", "join", &uuid, "--agent", bad])
            .fails(2, "invalid agent name");
        env.run(&["heartbeat", "--cell", &uuid, "--agent", bad])
            .fails(2, "invalid agent name");
        env.run(&["cell", "leave", &uuid, "--agent", bad])
            .fails(2, "invalid agent name");
    }
    assert_eq!(env.tree(), before);
    assert_eq!(
        std::fs::read(env.cell(&uuid).join("cell.json")).expect("read"),
        manifest
    );
    assert_eq!(env.events(&uuid).len(), 3);
    // A 64-character name is fine.
    env.run(&["cell", "join", &uuid, "--agent", &"b".repeat(64)])
        .success();
}

#[test]
fn list_prints_uuid_status_and_mission_and_survives_corrupt_manifests() {
    let env = Env::new();
    let a = env.create(&["--mission", "Alpha"]);
    let b = env.create(&["--mission", "Beta", "--agent", "x"]);
    let corrupt = "00000000-0000-4000-8000-00000000000c";
    std::fs::create_dir_all(env.cell(corrupt)).expect("mkdir");
    std::fs::write(env.cell(corrupt).join("cell.json"), "{ not json").expect("write");
    std::fs::create_dir_all(env.root.join("not-a-cell")).expect("mkdir");
    let listing = env.run(&["--list-cells"]).success();
    let mut expected = vec![
        format!("{a}: provisioned — Alpha"),
        format!("{b}: active — Beta"),
        format!("{corrupt}: [unreadable manifest]"),
    ];
    expected.sort();
    assert_eq!(listing.stdout.lines().collect::<Vec<_>>(), expected);
    assert!(listing.stderr.contains("cell.json"), "{listing:#?}");
    assert_eq!(env.run(&["cell", "list"]).success().stdout, listing.stdout);
    let json = env.run(&["cell", "list", "--json"]).success().json();
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    let json2 = env.run(&["--list-cells", "--json"]).success().json();
    assert_eq!(json, json2);
}

#[test]
fn list_of_a_missing_root_names_it() {
    let env = Env::new();
    env.run(&["--list-cells"]).fails(1, "does not exist");
}

#[test]
fn prefixes_resolve_and_unknown_or_ambiguous_ones_say_so() {
    let env = Env::new();
    let m = |u: &str| json!({"uuid": u, "status": "active", "mission": "m", "agents": []});
    let one = "abcd1111-0000-4000-8000-000000000001";
    let two = "abcd2222-0000-4000-8000-000000000002";
    handmade(&env, one, &m(one));
    handmade(&env, two, &m(two));
    let shown = env.run(&["cell", "show", "abcd1"]).success();
    assert!(shown.stdout.contains(one), "{shown:#?}");
    let amb = env
        .run(&["cell", "show", "abcd"])
        .fails(1, "matches 2 cells");
    assert!(
        amb.stderr.contains(one) && amb.stderr.contains(two),
        "{amb:#?}"
    );
    env.run(&["cell", "show", "ffff"]).fails(1, "no cell");
    // Not an id: looked up as a cell's name (exactly, in cell.json), so
    // nothing outside the root is reached.
    env.run(&["cell", "show", "../etc"]).fails(1, "no cell");
    env.run(&["cell", "show", "ABCD1"]).success();
}

#[test]
fn show_prints_the_manifest() {
    let env = Env::new();
    let uuid = env.create(&[
        "--name",
        "nm",
        "--mission",
        "Mission text",
        "--agent",
        "claude:dev",
    ]);
    let out = env.run(&["cell", "show", &uuid]).success().stdout;
    for needle in [&uuid[..], "nm", "Mission text", "active", "claude (dev)"] {
        assert!(out.contains(needle), "{needle} missing in {out}");
    }
    let v = env.run(&["cell", "show", &uuid, "--json"]).success().json();
    assert_eq!(v, env.manifest(&uuid));
}

#[test]
fn join_records_command_env_and_role_and_activates_the_cell() {
    let env = Env::new();
    let uuid = env.create(&[]);
    env.run(&[
        "cell", "join", &uuid, "--agent", "w1", "--role", "worker", "--env", "A=1", "--env",
        "B=x=y", "--", "python3", "agent.py", "--fast",
    ])
    .success();
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "w2",
        "--",
        "while true; do sleep 1; done",
    ])
    .success();
    let m = env.manifest(&uuid);
    assert_eq!(m["status"], "active");
    assert_eq!(m["agents"][0]["role"], "worker");
    assert_eq!(
        m["agents"][0]["command"],
        json!(["python3", "agent.py", "--fast"])
    );
    assert_eq!(m["agents"][0]["env"], json!({"A": "1", "B": "x=y"}));
    assert_eq!(m["agents"][1]["command"], "while true; do sleep 1; done");
    let events = env.events(&uuid);
    assert_eq!(
        env.event_names(&uuid),
        [
            "cell_created",
            "agent_joined",
            "cell_status_changed",
            "agent_joined"
        ]
    );
    assert_eq!(events[1]["agent"], "w1");
    assert_eq!(events[1]["role"], "worker");
    assert_eq!(events[2]["from"], "provisioned");
    assert_eq!(events[2]["to"], "active");
    env.run(&["cell", "join", &uuid, "--agent", "w1"])
        .fails(1, "already in the cell");
    env.run(&["cell", "join", &uuid, "--agent", "w3", "--env", "=x"])
        .fails(2, "KEY=VALUE");
}

#[test]
fn leave_removes_the_agent_and_records_it() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a:dev", "--agent", "b"]);
    env.run(&["cell", "leave", &uuid, "--agent", "a"]).success();
    let m = env.manifest(&uuid);
    assert_eq!(m["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(m["agents"][0]["name"], "b");
    let last = env.events(&uuid).pop().expect("event");
    assert_eq!(last["event"], "agent_left");
    assert_eq!(last["agent"], "a");
    assert_eq!(last["role"], "dev");
    env.run(&["cell", "leave", &uuid, "--agent", "a"])
        .fails(1, "no agent of that name");
}

#[test]
fn unknown_fields_survive_every_rewrite() {
    let env = Env::new();
    let uuid = "5eed0000-0000-4000-8000-000000000001";
    let seed = json!({
        "uuid": uuid,
        "name": "seed",
        "mission": "seed-era cell",
        "created_at": "2026-04-06T00:00:00Z",
        "created_by": "allegro",
        "status": "active",
        "agents": [{"name": "claude", "role": "developer", "joined_at": "2026-04-06T00:01:00Z",
                    "home": "/root/wizards/claude", "favourite_colour": "teal",
                    "heartbeat_stale_threshold": 30}],
        "gitea_issue": 879,
        "repo": "Timmy_Foundation/the-nexus",
        "custom": {"nested": [1, 2.5, {"deep": null}], "flag": true},
        "resurrect_after": 1.5
    });
    handmade(&env, uuid, &seed);
    for args in [
        &["cell", "join", uuid, "--agent", "gpt"][..],
        &["cell", "freeze", uuid],
        &["cell", "thaw", uuid],
        &["cell", "leave", uuid, "--agent", "gpt"],
    ] {
        env.run(args).success();
    }
    let m = env.manifest(uuid);
    assert_eq!(m, seed, "after join/freeze/thaw/leave");
    let text = std::fs::read_to_string(env.cell(uuid).join("cell.json")).expect("read");
    assert!(
        text.contains("\"heartbeat_stale_threshold\": 30,"),
        "{text}"
    );
    assert!(!text.contains("30.0"), "{text}");
    // The cell had no logs/ directory: it was created for the events.
    assert_eq!(
        env.event_names(uuid),
        [
            "agent_joined",
            "cell_status_changed",
            "cell_status_changed",
            "agent_left"
        ]
    );
}

#[test]
fn seed_era_manifest_without_status_reads_as_active() {
    let env = Env::new();
    let uuid = "5eed0000-0000-4000-8000-000000000002";
    handmade(
        &env,
        uuid,
        &json!({"uuid": uuid, "mission": "old", "agents": [{"name": "x"}]}),
    );
    let out = env.run(&["cell", "list"]).success().stdout;
    assert_eq!(out, format!("{uuid}: active — old\n"));
    env.run(&["cell", "freeze", uuid]).success();
    assert_eq!(env.manifest(uuid)["status"], "frozen");
}

#[test]
fn status_transitions_follow_the_table() {
    let env = Env::new();
    let uuid = env.create(&[]);
    env.run(&["cell", "freeze", &uuid])
        .fails(1, "no agents to freeze");
    env.run(&["cell", "thaw", &uuid])
        .fails(1, "only a frozen cell");
    env.run(&["cell", "join", &uuid, "--agent", "a"]).success();
    let out = env.run(&["cell", "freeze", &uuid]).success().stdout;
    assert_eq!(out, format!("{uuid}: active → frozen\n"));
    env.run(&["cell", "freeze", &uuid])
        .fails(1, "already frozen");
    env.run(&["cell", "thaw", &uuid]).success();
    env.run(&["cell", "archive", &uuid]).success();
    env.run(&["cell", "thaw", &uuid]).fails(1, "cannot thaw");
    env.run(&["cell", "join", &uuid, "--agent", "b"])
        .fails(1, "the cell is archived");
    let moves: Vec<(String, String)> = env
        .events(&uuid)
        .iter()
        .filter(|e| e["event"] == "cell_status_changed")
        .map(|e| (e["from"].to_string(), e["to"].to_string()))
        .collect();
    let q = |s: &str| format!("\"{s}\"");
    assert_eq!(
        moves,
        [
            (q("provisioned"), q("active")),
            (q("active"), q("frozen")),
            (q("frozen"), q("active")),
            (q("active"), q("archived")),
        ]
    );
}

#[test]
fn unknown_status_is_reported_not_fatal() {
    let env = Env::new();
    let uuid = "5eed0000-0000-4000-8000-000000000003";
    handmade(
        &env,
        uuid,
        &json!({"uuid": uuid, "status": "exploded", "mission": "m"}),
    );
    let out = env.run(&["cell", "list"]).success().stdout;
    assert_eq!(out, format!("{uuid}: exploded — m\n"));
    let shown = env.run(&["cell", "show", uuid]).success().stdout;
    assert!(shown.contains("\"exploded\" is not one of"), "{shown}");
    env.run(&["cell", "freeze", uuid])
        .fails(1, "not one this program knows");
    env.run(&["cell", "destroy", uuid, "--yes"]).success();
}

#[test]
fn destroy_needs_yes_keeps_the_audit_trail_and_never_follows_symlinks() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a"]);
    let cell = env.cell(&uuid);
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("precious"), "x").expect("write");
    std::fs::create_dir_all(outside.path().join("dir")).expect("mkdir");
    std::fs::write(outside.path().join("dir/also"), "x").expect("write");
    symlink(outside.path(), cell.join("workspace/escape")).expect("symlink");
    symlink(
        outside.path().join("precious"),
        cell.join("bus/inbox/a/link"),
    )
    .expect("symlink");
    std::fs::remove_dir_all(cell.join("checkpoints")).expect("rm");
    symlink(outside.path().join("dir"), cell.join("checkpoints")).expect("symlink");
    std::fs::write(cell.join("workspace/work.txt"), "w").expect("write");

    env.run(&["cell", "destroy", &uuid])
        .fails(2, "without --yes");
    assert!(cell.join("workspace/work.txt").exists());

    env.run(&["cell", "destroy", &uuid, "--yes"]).success();
    for gone in ["workspace", "bus", "checkpoints", ".lazarus"] {
        assert!(
            !cell.join(gone).exists() && !cell.join(gone).is_symlink(),
            "{gone} left"
        );
    }
    assert!(outside.path().join("precious").exists());
    assert!(outside.path().join("dir/also").exists());
    assert_eq!(env.manifest(&uuid)["status"], "destroyed");
    let last = env.events(&uuid).pop().expect("event");
    assert_eq!(
        (last["from"].as_str(), last["to"].as_str()),
        (Some("active"), Some("destroyed"))
    );
    // Destroying it again finishes the job (nothing is left to remove
    // here) and records nothing new.
    let before = env.events(&uuid).len();
    env.run(&["cell", "destroy", &uuid, "--yes"]).success();
    assert_eq!(env.events(&uuid).len(), before);
    let listed = env.run(&["cell", "list"]).success().stdout;
    assert!(listed.contains(&format!("{uuid}: destroyed")), "{listed}");

    env.run(&["cell", "destroy", &uuid, "--yes", "--purge"])
        .success();
    assert!(!cell.exists());
    assert!(outside.path().join("precious").exists());
}

#[test]
fn destroy_purge_removes_a_cell_with_a_corrupt_manifest() {
    let env = Env::new();
    let uuid = "5eed0000-0000-4000-8000-000000000004";
    std::fs::create_dir_all(env.cell(uuid)).expect("mkdir");
    std::fs::write(env.cell(uuid).join("cell.json"), "{").expect("write");
    env.run(&["cell", "destroy", uuid, "--yes"])
        .fails(1, "cell.json");
    env.run(&["cell", "destroy", uuid, "--yes", "--purge"])
        .success();
    assert!(!env.cell(uuid).exists());
}

#[test]
fn corrupt_manifest_is_a_clear_error_naming_the_file() {
    let env = Env::new();
    let uuid = "5eed0000-0000-4000-8000-000000000005";
    std::fs::create_dir_all(env.cell(uuid)).expect("mkdir");
    std::fs::write(env.cell(uuid).join("cell.json"), "{\"agents\": [}").expect("write");
    let run = env
        .run(&["cell", "join", uuid, "--agent", "a"])
        .fails(1, "cell.json");
    assert!(run.stderr.contains("line 1"), "{run:#?}");
    env.run(&["cell", "show", uuid]).fails(1, "invalid JSON");
    // Valid JSON with a value this program does not take: said as such,
    // with the values it does.
    std::fs::write(
        env.cell(uuid).join("cell.json"),
        "{\"isolation\": \"mount-namespaces\", \"agents\": []}",
    )
    .expect("write");
    let run = env.run(&["cell", "show", uuid]).fails(1, "invalid value");
    assert!(
        run.stderr
            .contains("expected one of `directory`, `mount-namespace`, `podman`"),
        "{run:#?}"
    );
}

#[test]
fn twenty_concurrent_joins_are_all_kept() {
    let env = Env::new();
    let uuid = env.create(&[]);
    let children: Vec<_> = (0..20)
        .map(|i| {
            env.command(&["cell", "join", &uuid, "--agent", &format!("agent-{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }
    let m = env.manifest(&uuid);
    let mut names: Vec<String> = m["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("agent-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    // events() fails on any torn or interleaved line.
    let joined = env
        .events(&uuid)
        .iter()
        .filter(|e| e["event"] == "agent_joined")
        .count();
    assert_eq!(joined, 20);
    let activations = env
        .event_names(&uuid)
        .iter()
        .filter(|e| *e == "cell_status_changed")
        .count();
    assert_eq!(activations, 1, "only the first join activates");
}

#[test]
fn a_symlinked_cell_directory_is_not_a_cell() {
    let env = Env::new();
    let real = env.create(&["--mission", "real"]);
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let fake = "fa4e0000-0000-4000-8000-000000000000";
    std::fs::write(
        elsewhere.path().join("cell.json"),
        json!({"uuid": fake, "status": "active"}).to_string(),
    )
    .expect("write");
    symlink(elsewhere.path(), env.cell(fake)).expect("symlink");
    let out = env.run(&["cell", "list"]).success().stdout;
    assert_eq!(out, format!("{real}: provisioned — real\n"));
    env.run(&["cell", "join", fake, "--agent", "a"])
        .fails(1, "no cell");
}

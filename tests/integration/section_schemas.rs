//! What the program writes, what the templates hold and what the spec shows
//! all validate against `spec/schemas/`.

use serde_json::{Value, json};

use crate::harness::{Env, read_json, read_jsonl, repo_file};

pub fn validator(name: &str) -> jsonschema::Validator {
    let schema = read_json(&repo_file(&format!("spec/schemas/{name}.schema.json")));
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name} schema: {e}"))
}

#[track_caller]
fn assert_valid(v: &jsonschema::Validator, what: &str, instance: &Value) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:#?}\n{instance:#}"
    );
}

#[test]
fn written_files_match_the_schemas() {
    let cell_schema = validator("cell");
    let event_schema = validator("event");
    let heartbeat_schema = validator("heartbeat");
    let env = Env::new();
    let template = repo_file("templates/cell.json");
    let uuid = env.create(&[
        "--template",
        template.to_str().expect("utf8"),
        "--agent",
        "extra:observer",
        "--by",
        "ops",
    ]);
    assert_valid(&cell_schema, "created cell.json", &env.manifest(&uuid));
    let steps: &[&[&str]] = &[
        &[
            "cell", "join", &uuid, "--agent", "w", "--env", "K=V", "--", "sleep", "1",
        ],
        &[
            "heartbeat",
            "--cell",
            &uuid,
            "--agent",
            "w",
            "--status",
            "s",
            "--cycle",
            "1",
        ],
        &["cell", "leave", &uuid, "--agent", "extra"],
        &["cell", "freeze", &uuid],
        &["cell", "thaw", &uuid],
        &["cell", "archive", &uuid],
        &["cell", "destroy", &uuid, "--yes"],
    ];
    for step in steps {
        if step[0] == "heartbeat" {
            env.run(step).success();
            let hb = read_json(&env.cell(&uuid).join(".lazarus/heartbeats/w.json"));
            assert_valid(&heartbeat_schema, "heartbeat written by the CLI", &hb);
            continue;
        }
        env.run(step).success();
        assert_valid(
            &cell_schema,
            &format!("cell.json after {step:?}"),
            &env.manifest(&uuid),
        );
    }
    let events = env.events(&uuid);
    assert!(events.len() >= 10);
    for event in &events {
        assert_valid(&event_schema, "event line", event);
    }
}

#[test]
fn the_event_schema_rejects_lines_missing_their_fields() {
    let schema = validator("event");
    let ok = json!({"ts": "2026-01-01T00:00:00.000Z", "event": "agent_stale", "cell": "c",
                    "agent": "a", "last_seen": 1.0, "age_s": 61.0});
    assert!(schema.is_valid(&ok));
    let mut missing = ok.clone();
    missing.as_object_mut().expect("object").remove("age_s");
    assert!(!schema.is_valid(&missing));
    let mut no_ms = ok.clone();
    no_ms["ts"] = json!("2026-01-01T00:00:00Z");
    assert!(!schema.is_valid(&no_ms));
    let exited = json!({"ts": "2026-01-01T00:00:00.000Z", "event": "agent_exited", "cell": "c",
                        "agent": "a", "pid": 5});
    assert!(!schema.is_valid(&exited), "code or signal is required");
}

#[test]
fn templates_match_the_schemas() {
    let cell = read_json(&repo_file("templates/cell.json"));
    assert_valid(&validator("cell"), "templates/cell.json", &cell);
    let agent = read_json(&repo_file("templates/agent.json"));
    let mut with_agent = cell.clone();
    with_agent["agents"] = json!([agent, {"name": "gpt"}]);
    assert_valid(
        &validator("cell"),
        "templates/agent.json in a cell",
        &with_agent,
    );
    let hb = read_json(&repo_file("templates/heartbeat.json"));
    assert_valid(&validator("heartbeat"), "templates/heartbeat.json", &hb);
}

/// Every ```json block of the spec preceded by `<!-- example: KIND -->`
/// validates against KIND's schema (jsonl examples line by line), so the
/// spec's examples cannot drift from the schemas.
#[test]
fn spec_examples_match_the_schemas() {
    let spec = std::fs::read_to_string(repo_file("spec/mission-cell-spec.md")).expect("spec");
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        let Some(kind) = line
            .trim()
            .strip_prefix("<!-- example: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or("");
        assert!(
            fence.starts_with("```json"),
            "example {kind} is not followed by a json block"
        );
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let instances: Vec<Value> = if fence.starts_with("```jsonl") {
            let text = body.join("\n") + "\n";
            let tmp = tempfile::NamedTempFile::new().expect("tmp");
            std::fs::write(tmp.path(), text).expect("write");
            read_jsonl(tmp.path())
        } else {
            vec![serde_json::from_str(&body.join("\n")).unwrap_or_else(|e| panic!("{kind}: {e}"))]
        };
        let v = validator(kind);
        for instance in &instances {
            assert_valid(&v, &format!("spec example ({kind})"), instance);
        }
        *checked.entry(kind.to_string()).or_default() += instances.len();
    }
    for kind in ["cell", "heartbeat", "state", "event"] {
        assert!(
            checked.get(kind).is_some_and(|n| *n > 0),
            "no {kind} example in the spec: {checked:?}"
        );
    }
}

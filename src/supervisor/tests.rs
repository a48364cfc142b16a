//! The core driven by instants: every transition, without sleeping.

use super::*;
use crate::cell::heartbeat::Heartbeat;

const CELL: &str = "c1";

fn core() -> Supervisor {
    Supervisor::new(CellsConfig::default(), HeartbeatEvents::Changes)
}

fn manifest(json: &str) -> Box<Manifest> {
    Box::new(Manifest::from_slice(json.as_bytes()).expect("manifest"))
}

fn cell(json: &str) -> Input {
    Input::Cell {
        id: CELL.into(),
        manifest: manifest(json),
        previous: None,
    }
}

fn beat(agent: &str, ts: f64, status: Option<&str>) -> Input {
    Input::Heartbeat {
        cell: CELL.into(),
        agent: agent.into(),
        heartbeat: Heartbeat {
            agent: None,
            pid: None,
            timestamp: ts,
            cycle: None,
            model: None,
            status: status.map(str::to_string),
            cell_uuid: None,
        },
    }
}

/// The event names among `actions`, in order.
fn events(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { event, .. } => Some(event.kind.as_str()),
            _ => None,
        })
        .collect()
}

/// The `agent` field of each emitted event, in order.
fn agents_in_events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { event, .. } => event.fields["agent"].as_str().map(str::to_string),
            _ => None,
        })
        .collect()
}

const TWO: &str = r#"{"status":"active","heartbeat_stale_threshold":10,"resurrect_after":20,
    "agents":[{"name":"a"},{"name":"b","heartbeat_stale_threshold":5}]}"#;

#[test]
fn deadlines_are_exact_and_per_agent() {
    let mut s = core();
    let out = s.handle(cell(TWO), 100.0);
    assert_eq!(events(&out), Vec::<&str>::new());
    assert!(out.contains(&Action::StateChanged {
        cell: CELL.into(),
        urgent: true
    }));
    // b (5 s) before a (10 s), both counted from first sight.
    assert_eq!(s.next_deadline(), Some(105.0));
    assert_eq!(s.take_due(104.999), vec![]);
    let due = s.take_due(105.0);
    assert_eq!(due, vec![(CELL.into(), "b".into())]);
    let out = s.handle(Input::Expire { due }, 105.0);
    assert_eq!(events(&out), ["agent_stale"]);
    let Action::Emit { event, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(event.fields["agent"], "b");
    assert_eq!(event.fields["last_seen"], Value::Null);
    assert_eq!(event.fields["age_s"], 5.0);
    assert_eq!(s.next_deadline(), Some(110.0));
}

#[test]
fn heartbeats_postpone_without_touching_the_heap() {
    let mut s = core();
    s.handle(cell(TWO), 100.0);
    let heap = s.timers.len();
    for i in 0..100 {
        let t = 100.0 + f64::from(i) * 0.1;
        s.handle(beat("a", t, Some("working")), t);
    }
    assert_eq!(s.timers.len(), heap, "a heartbeat pushes nothing");
    // a's entry fires at 110 and re-arms at 109.9 + 10.
    let out = s.handle(Input::Tick, 110.0);
    assert_eq!(agents_in_events(&out), ["b"], "b is stale, a is not");
    assert_eq!(
        s.snapshot(CELL, 1, 110.0).expect("snap").agent_health["a"].state,
        AgentState::Healthy
    );
    let out = s.handle(Input::Tick, 119.9);
    assert_eq!(events(&out), ["agent_stale"]);
}

#[test]
fn stale_recovered_and_status_events() {
    let mut s = core();
    s.handle(cell(TWO), 0.0);
    assert_eq!(
        events(&s.handle(beat("a", 1.0, Some("thinking")), 1.0)),
        ["heartbeat"]
    );
    assert_eq!(
        events(&s.handle(beat("a", 2.0, Some("thinking")), 2.0)),
        Vec::<&str>::new()
    );
    assert_eq!(
        events(&s.handle(beat("a", 3.0, Some("coding")), 3.0)),
        ["heartbeat"]
    );
    // b (never heard from) went stale at 5; a at 13.
    let out = s.handle(Input::Tick, 13.5);
    assert_eq!(agents_in_events(&out), ["b", "a"]);
    let stale: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Emit { event, .. } if event.fields["agent"] == "a" => Some(event.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].fields["last_seen"], 3.0);
    assert_eq!(stale[0].fields["age_s"], 10.5);
    let out = s.handle(beat("a", 14.0, Some("coding")), 14.0);
    assert_eq!(events(&out), ["agent_recovered"]);
    let snap = s.snapshot(CELL, 42, 14.0).expect("snap");
    assert_eq!(snap.daemon_pid, Some(42));
    assert_eq!(snap.agent_health["a"].state, AgentState::Healthy);
    assert!(snap.agent_health["a"].healthy);
    assert_eq!(snap.agent_health["a"].last_seen, Some(14.0));
}

#[test]
fn heartbeat_event_modes() {
    let mut all = Supervisor::new(CellsConfig::default(), HeartbeatEvents::All);
    all.handle(cell(TWO), 0.0);
    assert_eq!(
        events(&all.handle(beat("a", 1.0, None), 1.0)),
        ["heartbeat"]
    );
    assert_eq!(
        events(&all.handle(beat("a", 2.0, Some("x")), 2.0)),
        ["heartbeat"]
    );
    let mut none = Supervisor::new(CellsConfig::default(), HeartbeatEvents::None);
    none.handle(cell(TWO), 0.0);
    assert_eq!(
        events(&none.handle(beat("a", 1.0, Some("x")), 1.0)),
        Vec::<&str>::new()
    );
}

#[test]
fn due_after_resurrect_after_and_frozen_cells_hold() {
    let mut s = core();
    s.handle(cell(TWO), 0.0);
    s.handle(beat("a", 0.0, None), 0.0);
    s.handle(Input::Tick, 10.0);
    let out = s.handle(Input::Tick, 20.0);
    assert!(out.contains(&Action::StateChanged {
        cell: CELL.into(),
        urgent: true
    }));
    let snap = s.snapshot(CELL, 1, 20.0).expect("snap");
    assert_eq!(snap.agent_health["a"].state, AgentState::Stale);
    assert_eq!(snap.agent_health["a"].extra["revive_due"], true);
    let frozen = TWO.replace("\"active\"", "\"frozen\"");
    let out = s.handle(cell(&frozen), 21.0);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::StatusObserved {
            to: CellStatus::Frozen,
            ..
        }
    )));
    let snap = s.snapshot(CELL, 1, 21.0).expect("snap");
    assert_eq!(snap.agent_health["a"].state, AgentState::Frozen);
}

#[test]
fn rescans_are_idempotent() {
    let mut s = core();
    s.handle(cell(TWO), 0.0);
    s.handle(beat("a", 1.0, Some("x")), 1.0);
    // The same manifest and the same heartbeat again: nothing happens.
    assert_eq!(s.handle(cell(TWO), 2.0), vec![]);
    assert_eq!(s.handle(beat("a", 1.0, Some("x")), 2.0), vec![]);
}

#[test]
fn manifest_edits_add_remove_and_rethreshold_agents() {
    let mut s = core();
    s.handle(cell(TWO), 0.0);
    s.handle(beat("a", 0.0, None), 0.0);
    // a's threshold drops to 1 s: stale at once, at the next input.
    let edited = r#"{"status":"active","heartbeat_stale_threshold":10,"resurrect_after":20,
        "agents":[{"name":"a","heartbeat_stale_threshold":1},{"name":"c"}]}"#;
    let out = s.handle(cell(edited), 2.0);
    assert_eq!(events(&out), ["settings_changed", "agent_stale"]);
    let changed = out
        .iter()
        .find_map(|a| match a {
            Action::Emit { event, .. } if event.kind == EventKind::SettingsChanged => Some(event),
            _ => None,
        })
        .expect("settings_changed");
    assert_eq!(changed.fields["agent"], "a");
    assert_eq!(
        changed.fields["changed"],
        serde_json::json!({"heartbeat_stale_threshold": 1})
    );
    assert_eq!(
        s.agent_names(CELL),
        vec![AgentId::from("a"), AgentId::from("c")]
    );
    // b was removed: its old timer is dead and fires nothing.
    let out = s.handle(Input::Tick, 5.0);
    assert_eq!(events(&out), Vec::<&str>::new());
    assert_eq!(s.next_deadline().map(|d| d >= 5.0), Some(true));
}

#[test]
fn status_moves_are_observed_and_unmonitored_cells_forgotten() {
    let mut s = core();
    let out = s.handle(cell(r#"{"status":"provisioned","agents":[]}"#), 0.0);
    assert!(!out.iter().any(|a| matches!(a, Action::Activate { .. })));
    assert!(s.knows(CELL) && !s.is_monitored(CELL));
    let out = s.handle(
        cell(r#"{"status":"provisioned","agents":[{"name":"a"}]}"#),
        1.0,
    );
    assert!(out.contains(&Action::Activate { cell: CELL.into() }));
    let out = s.handle(cell(TWO), 2.0);
    assert!(out.contains(&Action::StatusObserved {
        cell: CELL.into(),
        from: CellStatus::Provisioned,
        to: CellStatus::Active
    }));
    assert!(s.is_monitored(CELL));
    let archived = TWO.replace("\"active\"", "\"archived\"");
    let out = s.handle(cell(&archived), 3.0);
    let record = out
        .iter()
        .find_map(|a| match a {
            Action::Forget { cell, record, .. } if &**cell == CELL => Some(record.clone()),
            _ => None,
        })
        .expect("forgotten, with its final record");
    assert_eq!(
        record.status.as_deref(),
        Some("archived"),
        "the status it leaves on"
    );
    assert_eq!(record.agents.len(), 2);
    assert!(!s.knows(CELL));
    assert_eq!(s.handle(Input::Tick, 100.0), vec![], "no timers survive");
    // Heartbeats of unknown cells and agents are ignored.
    assert_eq!(s.handle(beat("a", 100.0, None), 100.0), vec![]);
}

#[test]
fn a_previous_daemons_record_is_restored_without_repeating_events() {
    let mut s = core();
    // Records are in unix time; the core runs on a monotonic clock that
    // is 1000 s behind it here.
    assert_eq!(
        s.set_clock(1000.0, 50.0),
        None,
        "the first reading is no step"
    );
    let previous: CellRecord = serde_json::from_str(
        r#"{"cell":"c1","status":"active","agents":{
            "a":{"state":"stale","last_seen":1030.0,"last_claimed":1030.0,"revive_count":2,
                 "last_status":"lost"},
            "b":{"state":"healthy","last_seen":1040.0,"last_claimed":1040.0}}}"#,
    )
    .expect("record");
    let out = s.handle(
        Input::Cell {
            id: CELL.into(),
            manifest: manifest(TWO),
            previous: Some(Box::new(previous)),
        },
        50.0,
    );
    // a was already stale (and reported); b was healthy at 40 with a 5 s
    // threshold, so it is stale now: that is news — at its deadline, which
    // has passed, once the shell has had the chance to read b's heartbeat.
    assert_eq!(agents_in_events(&out), Vec::<String>::new());
    assert_eq!(s.next_deadline(), Some(45.0));
    assert_eq!(agents_in_events(&s.handle(Input::Tick, 50.0)), ["b"]);
    // The heartbeat the record already counted is not news.
    assert_eq!(s.handle(beat("a", 1030.0, Some("lost")), 51.0), vec![]);
    let snap = s.snapshot(CELL, 2, 51.0).expect("snap");
    assert_eq!(snap.agent_health["a"].revive_count, 2);
    assert_eq!(
        snap.agent_health["a"].last_seen,
        Some(1030.0),
        "unix time again"
    );
    assert_eq!(
        events(&s.handle(beat("a", 1051.0, Some("lost")), 51.0)),
        ["agent_recovered"]
    );
}

#[test]
fn a_status_moved_while_no_daemon_ran_is_observed_at_first_sight() {
    let mut s = core();
    let previous = CellRecord {
        cell: CELL.into(),
        status: Some("active".into()),
        ..CellRecord::default()
    };
    let frozen = TWO.replace("\"active\"", "\"frozen\"");
    let out = s.handle(
        Input::Cell {
            id: CELL.into(),
            manifest: manifest(&frozen),
            previous: Some(Box::new(previous.clone())),
        },
        1.0,
    );
    assert!(out.contains(&Action::StatusObserved {
        cell: CELL.into(),
        from: CellStatus::Active,
        to: CellStatus::Frozen
    }));
    // Unchanged since the record: nothing to observe.
    let mut t = core();
    let out = t.handle(
        Input::Cell {
            id: CELL.into(),
            manifest: manifest(TWO),
            previous: Some(Box::new(previous)),
        },
        1.0,
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::StatusObserved { .. }))
    );
}

#[test]
fn invalid_agent_names_in_a_manifest_are_skipped() {
    let mut s = core();
    s.handle(
        cell(r#"{"status":"active","agents":[{"name":"../x"},{"name":"ok"}]}"#),
        0.0,
    );
    assert_eq!(s.agent_names(CELL), vec![AgentId::from("ok")]);
}

#[test]
fn summary_and_all_healthy() {
    let mut s = core();
    s.handle(cell(TWO), 0.0);
    assert!(!s.all_healthy(), "agents never heard from are not healthy");
    s.handle(beat("a", 0.0, None), 0.0);
    s.handle(beat("b", 0.0, None), 0.0);
    assert!(s.all_healthy());
    assert_eq!(
        s.summary(),
        Summary {
            cells: 1,
            agents: 2,
            healthy: 2,
            unhealthy: 0
        }
    );
}

#[test]
fn early_entries_are_rearmed_without_a_wakeup() {
    let mut s = core();
    s.handle(cell(TWO), 0.0);
    s.handle(beat("a", 0.0, None), 0.0);
    s.handle(beat("b", 0.0, None), 0.0);
    // Both beat again at 4: a's entry (10) and b's (5) are now early.
    s.handle(beat("a", 4.0, None), 4.0);
    s.handle(beat("b", 4.0, None), 4.0);
    assert_eq!(s.next_deadline(), Some(5.0));
    s.rearm_early(6.0);
    // b's entry moved to its real deadline (9); a's (10) was beyond the window.
    assert_eq!(s.next_deadline(), Some(9.0));
    assert_eq!(s.take_due(8.9), vec![]);
    // A real deadline inside the window is kept, not re-armed.
    s.rearm_early(9.5);
    assert_eq!(s.next_deadline(), Some(9.0));
    let due = s.take_due(9.0);
    assert_eq!(due, vec![(CELL.into(), "b".into())]);
}

// ---- Revival: the core's side of kill → spawn, and the policies. ----

/// A cell whose agents have commands; `extra` goes into agent "a".
fn revivable(policy: &str, extra: &str) -> Input {
    cell(&format!(
        r#"{{"status":"active","heartbeat_stale_threshold":10,"resurrect_after":20,
            "revive_policy":"{policy}","max_revive_attempts":2,
            "agents":[{{"name":"a","command":["run-a"]{extra}}},
                      {{"name":"b","command":["run-b"]}}]}}"#
    ))
}

fn find_kill(actions: &[Action], agent: &str) -> Option<Option<Instance>> {
    actions.iter().find_map(|a| match a {
        Action::Kill {
            agent: who,
            instance,
            ..
        } if &**who == agent => Some(*instance),
        _ => None,
    })
}

fn find_spawn(actions: &[Action], agent: &str) -> Option<(u32, Reason, Option<String>)> {
    actions.iter().find_map(|a| match a {
        Action::Spawn {
            agent: who,
            attempt,
            reason,
            substitute_for,
            ..
        } if &**who == agent => Some((*attempt, *reason, substitute_for.clone())),
        _ => None,
    })
}

/// Answers a Kill (nothing was running) and the Spawn that follows with
/// a new instance `pid`.
fn complete(s: &mut Supervisor, agent: &str, pid: i32, now: f64) -> Vec<Action> {
    let out = s.handle(
        Input::Killed {
            cell: CELL.into(),
            agent: agent.into(),
            exited: None,
        },
        now,
    );
    assert!(find_spawn(&out, agent).is_some(), "{out:?}");
    s.handle(
        Input::Spawned {
            cell: CELL.into(),
            agent: agent.into(),
            result: Ok(Instance { pid, start_time: 9 }),
        },
        now,
    )
}

/// A core whose agents "a" and "b" were started at 100 as pids 11 and 12.
fn started(cell: Input) -> Supervisor {
    let mut s = core();
    s.handle(cell, 100.0);
    s.handle(Input::Tick, 100.0);
    complete(&mut s, "a", 11, 100.0);
    complete(&mut s, "b", 12, 100.0);
    s
}

fn exit(agent: &str, pid: i32, code: i32) -> Input {
    Input::Exited {
        cell: CELL.into(),
        agent: agent.into(),
        pid,
        exit: ExitInfo {
            code: Some(code),
            signal: None,
        },
    }
}

fn state_of(s: &Supervisor, agent: &str) -> AgentState {
    s.snapshot(CELL, 1, 0.0).expect("snap").agent_health[agent].state
}

#[test]
fn agents_with_commands_start_then_crashes_are_revived_with_backoff_until_exhausted() {
    let mut s = core();
    s.handle(revivable("yes", ""), 100.0);
    // Started at the first deadline, after the shell looked at heartbeats.
    let out = s.handle(Input::Tick, 100.0);
    assert_eq!(find_kill(&out, "a"), Some(None));
    let out = complete(&mut s, "a", 11, 100.0);
    assert_eq!(events(&out), ["agent_started"]);
    complete(&mut s, "b", 12, 100.0);
    assert_eq!(state_of(&s, "a"), AgentState::Unknown);

    // A crash: agent_exited, then revival 1 at once.
    let out = s.handle(exit("a", 11, 3), 101.0);
    assert_eq!(events(&out), ["agent_exited"]);
    assert_eq!(find_kill(&out, "a"), Some(None), "no instance left to stop");
    let out = complete(&mut s, "a", 13, 101.0);
    assert_eq!(events(&out), ["agent_revived"]);
    let Action::Emit { event, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(event.fields["attempt"], 1);
    assert_eq!(event.fields["reason"], "exited");
    assert_eq!(event.fields["pid"], 13);

    // Revival 2 waits for its backoff (1 s + jitter).
    let out = s.handle(exit("a", 13, 1), 102.0);
    assert_eq!(find_kill(&out, "a"), None);
    assert_eq!(state_of(&s, "a"), AgentState::Reviving);
    let at = s.next_deadline().expect("backoff timer");
    assert!((103.0..=103.1).contains(&at), "{at}");
    assert_eq!(find_kill(&s.handle(Input::Tick, at - 0.01), "a"), None);
    assert!(find_kill(&s.handle(Input::Tick, at), "a").is_some());
    complete(&mut s, "a", 14, at);

    // Max 2: the third death is the end, said once.
    let out = s.handle(exit("a", 14, 1), at + 1.0);
    assert_eq!(events(&out), ["agent_exited", "revive_exhausted"]);
    assert_eq!(state_of(&s, "a"), AgentState::Abandoned);
    let out = s.handle(Input::Tick, at + 1000.0);
    assert_eq!(
        find_kill(&out, "a"),
        None,
        "abandoned: no revival by itself"
    );

    // `lazarus-pit revive` brings it back with a fresh count.
    let out = s.handle(
        Input::Revive {
            cell: CELL.into(),
            agent: "a".into(),
        },
        at + 2000.0,
    );
    assert!(find_kill(&out, "a").is_some());
    let out = complete(&mut s, "a", 15, at + 2000.0);
    let Action::Emit { event, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(event.fields["reason"], "manual");
    assert_eq!(event.fields["attempt"], 1);
}

#[test]
fn a_hung_agent_is_stopped_before_its_replacement_starts() {
    let mut s = started(revivable("yes", ""));
    s.handle(beat("a", 101.0, None), 101.0);
    s.handle(beat("b", 101.0, None), 101.0);
    // Silent from 101: stale at 111, due at 121 → stop instance 11 first.
    let out = s.handle(Input::Tick, 121.0);
    assert_eq!(
        find_kill(&out, "a"),
        Some(Some(Instance {
            pid: 11,
            start_time: 9
        }))
    );
    assert!(find_spawn(&out, "a").is_none(), "not before it is stopped");
    let out = s.handle(killed_by("a", 11, 15), 121.5);
    assert_eq!(events(&out), ["agent_exited"]);
    assert_eq!(find_spawn(&out, "a"), Some((1, Reason::Stale, None)));
    // The new instance has resurrect_after (20 s) of grace.
    s.handle(
        Input::Spawned {
            cell: CELL.into(),
            agent: "a".into(),
            result: Ok(Instance {
                pid: 21,
                start_time: 10,
            }),
        },
        121.5,
    );
    let out = s.handle(Input::Tick, 141.4);
    assert!(!events(&out).contains(&"agent_stale"), "{out:?}");
    let out = s.handle(beat("a", 141.0, None), 141.4);
    assert_eq!(events(&out), ["agent_recovered"]);
}

#[test]
fn clean_exit_finishes_and_failed_spawns_count() {
    let mut s = started(revivable("yes", ""));
    let out = s.handle(exit("a", 11, 0), 101.0);
    assert_eq!(events(&out), ["agent_exited"]);
    assert_eq!(state_of(&s, "a"), AgentState::Exited);
    let out = s.handle(Input::Tick, 1000.0);
    assert_eq!(
        find_kill(&out, "a"),
        None,
        "finished agents are not revived"
    );
    assert!(find_kill(&out, "b").is_some(), "b, silent, is");

    // A command that cannot start: revive_failed, each one an attempt.
    let mut s = core();
    s.handle(revivable("yes", ""), 100.0);
    s.handle(Input::Tick, 100.0);
    let fail = |s: &mut Supervisor, now: f64| {
        s.handle(
            Input::Killed {
                cell: CELL.into(),
                agent: "a".into(),
                exited: None,
            },
            now,
        );
        s.handle(
            Input::Spawned {
                cell: CELL.into(),
                agent: "a".into(),
                result: Err("command not found: run-a".into()),
            },
            now,
        )
    };
    let out = fail(&mut s, 100.0);
    assert_eq!(events(&out), ["revive_failed"]);
    assert!(find_kill(&out, "a").is_some(), "revival 1 at once");
    let out = fail(&mut s, 100.0);
    assert_eq!(events(&out), ["revive_failed"]);
    assert_eq!(find_kill(&out, "a"), None, "revival 2 after backoff");
    let out = s.handle(Input::Tick, 102.0);
    assert!(find_kill(&out, "a").is_some());
    let out = fail(&mut s, 102.0);
    assert_eq!(events(&out), ["revive_failed", "revive_exhausted"]);
    assert_eq!(state_of(&s, "a"), AgentState::Abandoned);
}

#[test]
fn policy_no_and_ask() {
    let mut s = core();
    s.handle(revivable("no", ""), 100.0);
    s.handle(Input::Tick, 100.0);
    complete(&mut s, "a", 11, 100.0);
    let out = s.handle(exit("a", 11, 1), 101.0);
    assert_eq!(events(&out), ["agent_exited", "agent_dead"]);
    assert_eq!(find_kill(&out, "a"), None);
    assert_eq!(state_of(&s, "a"), AgentState::Dead);

    let mut s = core();
    s.handle(revivable("ask", ""), 100.0);
    s.handle(Input::Tick, 100.0);
    complete(&mut s, "a", 11, 100.0);
    let out = s.handle(exit("a", 11, 1), 101.0);
    assert_eq!(events(&out), ["agent_exited", "revive_requested"]);
    let Some(Action::Emit { event, .. }) = out.iter().find(
        |a| matches!(a, Action::Emit { event, .. } if event.kind == EventKind::ReviveRequested),
    ) else {
        panic!("{out:?}")
    };
    let request_id = event.fields["request_id"].as_str().expect("id").to_string();
    assert_eq!(s.pending_request(CELL, "a"), Some(request_id.as_str()));
    assert_eq!(state_of(&s, "a"), AgentState::AwaitingApproval);
    // The pending request is in the daemon's record, for `approve`.
    let record = s.record(CELL, 101.0).expect("record");
    assert_eq!(
        record.agents["a"].request.as_ref().map(|r| r.id.as_str()),
        Some(request_id.as_str())
    );
    // A wrong id changes nothing.
    let out = s.handle(
        Input::Decision {
            cell: CELL.into(),
            agent: "a".into(),
            request_id: "other".into(),
            approved: true,
        },
        102.0,
    );
    assert!(find_kill(&out, "a").is_none());
    let out = s.handle(
        Input::Decision {
            cell: CELL.into(),
            agent: "a".into(),
            request_id: request_id.clone(),
            approved: true,
        },
        103.0,
    );
    assert!(find_kill(&out, "a").is_some());
    let out = complete(&mut s, "a", 12, 103.0);
    let Action::Emit { event, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(event.fields["reason"], "approved");

    // Denied: dead, no revival.
    s.handle(exit("a", 12, 1), 104.0);
    let request_id = s
        .pending_request(CELL, "a")
        .expect("asked again")
        .to_string();
    let out = s.handle(
        Input::Decision {
            cell: CELL.into(),
            agent: "a".into(),
            request_id,
            approved: false,
        },
        105.0,
    );
    assert!(find_kill(&out, "a").is_none());
    assert_eq!(state_of(&s, "a"), AgentState::Dead);
}

#[test]
fn policy_substitute_hands_over_to_a_healthy_one_or_starts_one() {
    let mut s = core();
    s.handle(
        revivable("substitute", r#","substitutes":["ghost","b"]"#),
        100.0,
    );
    s.handle(Input::Tick, 100.0);
    complete(&mut s, "a", 11, 100.0);
    complete(&mut s, "b", 12, 100.0);
    s.handle(beat("b", 100.5, None), 100.5);
    let out = s.handle(exit("a", 11, 1), 101.0);
    assert_eq!(events(&out), ["agent_exited", "agent_substituted"]);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Handoff { substitute, .. } if substitute == "b"))
    );
    assert_eq!(find_kill(&out, "a"), None);
    assert_eq!(state_of(&s, "a"), AgentState::Dead);

    // None healthy: the substitute that is down is started for it.
    let mut s = core();
    s.handle(
        cell(
            r#"{"status":"active","revive_policy":"substitute","agents":[
                {"name":"a","command":["run-a"],"substitutes":["b"]},
                {"name":"b","command":["run-b"],"autostart":false}]}"#,
        ),
        100.0,
    );
    s.handle(Input::Tick, 100.0);
    complete(&mut s, "a", 11, 100.0);
    let out = s.handle(exit("a", 11, 1), 101.0);
    assert_eq!(events(&out), ["agent_exited", "agent_substituted"]);
    assert!(find_kill(&out, "b").is_some());
    let out = s.handle(
        Input::Killed {
            cell: CELL.into(),
            agent: "b".into(),
            exited: None,
        },
        101.0,
    );
    assert_eq!(
        find_spawn(&out, "b"),
        Some((0, Reason::Substitute, Some("a".into())))
    );

    // Nobody at all: agent_dead.
    let mut s = core();
    s.handle(
        cell(
            r#"{"status":"active","revive_policy":"substitute","agents":[
                {"name":"a","command":["run-a"],"substitutes":["b"]},{"name":"b"}]}"#,
        ),
        100.0,
    );
    s.handle(Input::Tick, 100.0);
    complete(&mut s, "a", 11, 100.0);
    let out = s.handle(exit("a", 11, 1), 101.0);
    assert_eq!(events(&out), ["agent_exited", "agent_dead"]);
}

#[test]
fn a_restart_adopts_live_instances_and_reports_lost_ones() {
    let mut s = started(revivable("yes", ""));
    s.handle(beat("a", 101.0, None), 101.0);
    s.handle(exit("b", 12, 1), 101.0);
    complete(&mut s, "b", 13, 101.0);
    s.handle(beat("b", 102.0, None), 102.0);
    let mut previous = s.record(CELL, 102.0).expect("record");
    assert_eq!(previous.agents["a"].instance.map(|i| i.pid), Some(11));
    assert_eq!(previous.agents["b"].revive_count, 1);
    // The shell found b's instance gone while no daemon watched.
    let b = previous.agents.get_mut("b").expect("b");
    b.instance = None;
    b.lost_pid = Some(13);

    let mut t = core();
    let out = t.handle(
        Input::Cell {
            id: CELL.into(),
            manifest: match revivable("yes", "") {
                Input::Cell { manifest, .. } => manifest,
                _ => unreachable!(),
            },
            previous: Some(Box::new(previous)),
        },
        103.0,
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Adopt { agent, instance, .. }
        if &**agent == "a" && instance.pid == 11))
    );
    assert!(find_kill(&out, "a").is_none(), "a runs: no second copy");
    assert_eq!(events(&out), ["agent_exited"], "b's death is reported");
    let at = t.next_deadline().expect("b's backoff");
    assert!(
        find_kill(&t.handle(Input::Tick, at), "b").is_some(),
        "and b is revived"
    );
    let out = complete(&mut t, "b", 14, at);
    let Action::Emit { event, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(event.fields["attempt"], 2, "the count survived the restart");
    assert!(find_kill(&t.handle(Input::Tick, at + 1.0), "a").is_none());
}

/// The memory target (100,000 agents in ≤ 100 MiB) rests on this: every
/// byte here is 100 kB at scale. Grow it knowingly.
#[test]
fn an_agent_costs_at_most_256_bytes_of_state() {
    assert!(
        std::mem::size_of::<Tracked>() <= 256,
        "Tracked is {} bytes",
        std::mem::size_of::<Tracked>()
    );
}

/// Item 7 of "Trust boundary": a heartbeat stamped an hour ahead counts
/// from when it was read, once — re-reading the same claim (at the
/// deadline, at a rescan) must not make the agent fresh again.
#[test]
fn a_future_claim_counts_once_from_when_it_was_read() {
    let mut s = core();
    s.handle(cell(TWO), 100.0);
    let out = s.handle(beat("a", 100.0 + 3600.0, Some("up")), 101.0);
    assert_eq!(events(&out), ["heartbeat"]);
    assert_eq!(state_of(&s, "a"), AgentState::Healthy);
    // a's threshold is 10 s from 101, when the claim was read.
    assert_eq!(s.handle(beat("a", 3700.0, Some("up")), 105.0), vec![]);
    assert_eq!(s.handle(beat("a", 3700.0, Some("up")), 110.9), vec![]);
    let out = s.handle(Input::Tick, 111.0);
    assert_eq!(agents_in_events(&out), ["b", "a"]);
    assert_eq!(state_of(&s, "a"), AgentState::Stale);
    // A new claim, even further ahead, is a new write: fresh again.
    let out = s.handle(beat("a", 3800.0, Some("up")), 112.0);
    assert_eq!(events(&out), ["agent_recovered"]);
}

/// Item 13: every change of state, pid or revive count is urgent, so it
/// is in `state.json` within a tick — including a never-seen agent's first
/// heartbeat, which used to wait for the lazy write.
#[test]
fn every_published_change_is_urgent() {
    let mut s = core();
    s.handle(cell(TWO), 100.0);
    let out = s.handle(beat("a", 100.5, None), 100.5);
    assert_eq!(state_of(&s, "a"), AgentState::Healthy);
    assert!(
        out.contains(&Action::StateChanged {
            cell: CELL.into(),
            urgent: true
        }),
        "unknown -> healthy must be written at once: {out:?}"
    );
    // A beat that changes only last_seen is not urgent.
    let out = s.handle(beat("a", 101.0, None), 101.0);
    assert!(
        out.contains(&Action::StateChanged {
            cell: CELL.into(),
            urgent: false
        }) && !out.contains(&Action::StateChanged {
            cell: CELL.into(),
            urgent: true
        }),
        "{out:?}"
    );
    // A pid change alone (a start) is urgent too.
    let mut s = started(revivable("yes", ""));
    let out = s.handle(exit("a", 11, 1), 101.0);
    assert!(out.contains(&Action::StateChanged {
        cell: CELL.into(),
        urgent: true
    }));
}

/// Item 16: deadlines are monotonic. A step of the wall clock moves none
/// of them; agents that were fine get a fresh threshold; heartbeats
/// stamped on either side of the step keep them alive.
#[test]
fn a_clock_step_is_no_mass_staleness() {
    let mut s = core();
    assert_eq!(s.set_clock(1_000_000.0, 100.0), None);
    s.handle(cell(TWO), 100.0);
    // Both beat at mono 101 (wall 1_000_101).
    s.handle(beat("a", 1_000_101.0, None), 101.0);
    s.handle(beat("b", 1_000_101.0, None), 101.0);
    // NTP steps the wall clock an hour forward at mono 102.
    let step = s.set_clock(1_003_600.0, 102.0).expect("a step");
    assert_eq!(step, 3600.0);
    // Small drift is no step.
    assert_eq!(s.set_clock(1_003_600.4, 102.1), None);
    // Heartbeats now carry the new wall time; both agents stay healthy.
    s.handle(beat("a", 1_003_600.0 + 103.0, None), 103.0);
    s.handle(beat("b", 1_003_600.0 + 103.0, None), 103.0);
    assert_eq!(events(&s.handle(Input::Tick, 107.0)), Vec::<&str>::new());
    assert_eq!(state_of(&s, "a"), AgentState::Healthy);
    assert_eq!(state_of(&s, "b"), AgentState::Healthy);
    // And an agent that stops beating is still stale on time, in
    // monotonic seconds: b's threshold is 5 s after its last beat at 103.
    assert_eq!(agents_in_events(&s.handle(Input::Tick, 108.0)), ["b"]);
    // Its event tells unix time, of the new clock.
    let snap = s.snapshot(CELL, 1, 108.0).expect("snap");
    assert_eq!(
        snap.agent_health["b"].last_seen,
        Some(1_003_703.0),
        "the claim, round-tripped"
    );
}

/// Item 16 too: a step back does not postpone detection either.
#[test]
fn a_clock_stepped_back_postpones_nothing() {
    let mut s = core();
    s.set_clock(1_000_000.0, 100.0);
    s.handle(cell(TWO), 100.0);
    s.handle(beat("b", 1_000_100.0, None), 100.0);
    s.set_clock(1_000_000.0 - 3600.0, 101.0);
    // b never beats again: stale 5 s after 100 (at 105, plus the grace
    // from the step at 101: 106), not an hour later.
    assert_eq!(events(&s.handle(Input::Tick, 105.5)), Vec::<&str>::new());
    assert_eq!(agents_in_events(&s.handle(Input::Tick, 106.0)), ["b"]);
}

/// Agents "a" and "b" with commands, in a cell of `status`.
fn commanded(status: &str) -> Input {
    cell(&format!(
        r#"{{"status":"{status}","heartbeat_stale_threshold":10,"resurrect_after":20,
            "agents":[{{"name":"a","command":["run-a"]}},{{"name":"b","command":["run-b"]}}]}}"#
    ))
}

/// The stops the core asked for: (agent, pid).
fn stops(actions: &[Action]) -> Vec<(String, i32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Kill {
                agent,
                instance: Some(i),
                ..
            } => Some((agent.to_string(), i.pid)),
            _ => None,
        })
        .collect()
}

/// The stop of `agent` done: its process `pid` ended by `signal`.
fn killed_by(agent: &str, pid: i32, signal: i32) -> Input {
    Input::Killed {
        cell: CELL.into(),
        agent: agent.into(),
        exited: Some((
            pid,
            ExitInfo {
                code: None,
                signal: Some(signal),
            },
        )),
    }
}

fn killed(agent: &str) -> Input {
    Input::Killed {
        cell: CELL.into(),
        agent: agent.into(),
        exited: None,
    }
}

#[test]
fn freezing_stops_every_instance_and_every_deadline_and_a_thaw_resumes_them() {
    let mut s = started(commanded("active"));
    let frozen = commanded("frozen");
    let out = s.handle(frozen, 101.0);
    let mut freezes: Vec<(String, i32, bool)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Freeze {
                agent,
                instance,
                frozen,
                ..
            } => Some((agent.to_string(), instance.pid, *frozen)),
            _ => None,
        })
        .collect();
    freezes.sort();
    assert_eq!(
        freezes,
        [("a".into(), 11, true), ("b".into(), 12, true)],
        "{out:?}"
    );
    assert_eq!(s.take_due(1.0e6), vec![], "no deadline runs while frozen");
    assert_eq!(
        s.handle(Input::Tick, 1.0e6),
        vec![],
        "far past every deadline"
    );
    let snap = s.snapshot(CELL, 1, 1.0e6).expect("snapshot");
    assert_eq!(snap.agent_health["a"].state, AgentState::Frozen);
    // Thawed: thawed processes, and a fresh grace period from the thaw.
    let out = s.handle(commanded("active"), 2.0e6);
    assert_eq!(
        out.iter()
            .filter(|a| matches!(a, Action::Freeze { frozen: false, .. }))
            .count(),
        2,
        "{out:?}"
    );
    assert!(events(&out).is_empty(), "{out:?}");
    assert!(s.next_deadline().is_some_and(|d| d > 2.0e6));
}

#[test]
fn an_agent_removed_from_the_manifest_is_stopped_then_has_left() {
    let mut s = started(commanded("active"));
    let only_a = r#"{"status":"active","heartbeat_stale_threshold":10,"resurrect_after":20,
        "agents":[{"name":"a","command":["run-a"]}]}"#;
    let out = s.handle(cell(only_a), 101.0);
    assert_eq!(stops(&out), [("b".to_string(), 12)], "only b: {out:?}");
    assert!(!out.iter().any(|a| matches!(a, Action::Left { .. })));
    let record = s.record(CELL, 101.0).expect("record");
    assert!(record.agents["b"].stopping && record.agents["b"].instance.is_some());
    let out = s.handle(killed("b"), 102.0);
    assert!(
        out.contains(&Action::Left {
            cell: CELL.into(),
            agent: "b".into()
        }),
        "{out:?}"
    );
    let record = s.record(CELL, 102.0).expect("record");
    assert!(!record.agents.contains_key("b"));
    assert_eq!(s.agent_names(CELL), vec![AgentId::from("a")]);
}

#[test]
fn archiving_stops_every_agent_and_forgets_the_cell_once_they_are_gone() {
    let mut s = started(commanded("active"));
    let archived = commanded("archived");
    let out = s.handle(archived, 101.0);
    let mut st = stops(&out);
    st.sort();
    assert_eq!(st, [("a".to_string(), 11), ("b".to_string(), 12)]);
    assert!(!out.iter().any(|a| matches!(a, Action::Forget { .. })));
    assert!(s.reviving(), "the shell owes answers");
    // Heartbeats change nothing now; one stop answered, then the other.
    assert_eq!(s.handle(beat("a", 101.5, Some("x")), 101.5), vec![]);
    let out = s.handle(killed("a"), 102.0);
    assert!(!out.iter().any(|a| matches!(a, Action::Forget { .. })));
    let out = s.handle(
        Input::Exited {
            cell: CELL.into(),
            agent: "b".into(),
            pid: 12,
            exit: ExitInfo::default(),
        },
        103.0,
    );
    let record = out
        .iter()
        .find_map(|a| match a {
            Action::Forget { record, .. } => Some(record.clone()),
            _ => None,
        })
        .expect("forgotten once both are gone");
    assert_eq!(record.status.as_deref(), Some("archived"));
    assert!(record.agents.values().all(|a| a.instance.is_none()));
    assert!(events(&out).is_empty(), "no events: {out:?}");
}

#[test]
fn a_start_in_flight_when_the_cell_is_archived_is_stopped_when_it_arrives() {
    let mut s = core();
    s.handle(commanded("active"), 100.0);
    let out = s.handle(Input::Tick, 100.0);
    assert!(!stops(&out).is_empty() || out.iter().any(|a| matches!(a, Action::Kill { .. })));
    // a's Kill answered: a Spawn is in flight for it; b's Kill is too.
    s.handle(killed("a"), 100.0);
    let out = s.handle(commanded("archived"), 100.5);
    assert!(stops(&out).is_empty(), "nothing runs yet: {out:?}");
    let out = s.handle(
        Input::Spawned {
            cell: CELL.into(),
            agent: "a".into(),
            result: Ok(Instance {
                pid: 21,
                start_time: 1,
            }),
        },
        101.0,
    );
    assert_eq!(stops(&out), [("a".to_string(), 21)], "{out:?}");
    assert!(events(&out).is_empty(), "not reported as started: {out:?}");
    s.handle(killed("b"), 101.0);
    let out = s.handle(killed("a"), 102.0);
    assert!(
        out.iter().any(|a| matches!(a, Action::Forget { .. })),
        "{out:?}"
    );
}

#[test]
fn a_start_in_flight_when_the_cell_is_frozen_is_frozen_when_it_arrives() {
    let mut s = core();
    s.handle(commanded("active"), 100.0);
    s.handle(Input::Tick, 100.0);
    s.handle(killed("a"), 100.0);
    // a's start is in flight; the cell is frozen.
    s.handle(commanded("frozen"), 100.5);
    let out = s.handle(
        Input::Spawned {
            cell: CELL.into(),
            agent: "a".into(),
            result: Ok(Instance {
                pid: 31,
                start_time: 1,
            }),
        },
        101.0,
    );
    assert!(
        out.contains(&Action::Freeze {
            cell: CELL.into(),
            agent: "a".into(),
            instance: Instance {
                pid: 31,
                start_time: 1
            },
            frozen: true
        }),
        "{out:?}"
    );
}

#[test]
fn a_stop_cut_short_by_a_restart_is_finished_by_the_next_daemon() {
    // The record of an archived cell still names a live instance (the
    // daemon died while stopping it), and one of an agent that left.
    let mut s = core();
    let previous: CellRecord = serde_json::from_str(
        r#"{"cell":"c1","status":"archived","agents":{
            "a":{"state":"healthy","instance":{"pid":41,"start_time":5},"stopping":true}}}"#,
    )
    .expect("record");
    let out = s.handle(
        Input::Cell {
            id: CELL.into(),
            manifest: manifest(r#"{"status":"archived","agents":[{"name":"a"}]}"#),
            previous: Some(Box::new(previous)),
        },
        10.0,
    );
    assert!(
        out.iter().any(|a| matches!(a, Action::Adopt { .. })),
        "{out:?}"
    );
    assert_eq!(stops(&out), [("a".to_string(), 41)]);
    assert!(!out.iter().any(|a| matches!(a, Action::Forget { .. })));
    let out = s.handle(killed("a"), 11.0);
    assert!(
        out.iter().any(|a| matches!(a, Action::Forget { .. })),
        "{out:?}"
    );

    let mut s = core();
    let previous: CellRecord = serde_json::from_str(
        r#"{"cell":"c1","status":"active","agents":{
            "gone":{"state":"healthy","instance":{"pid":42,"start_time":5}}}}"#,
    )
    .expect("record");
    let out = s.handle(
        Input::Cell {
            id: CELL.into(),
            manifest: manifest(r#"{"status":"active","agents":[{"name":"a"}]}"#),
            previous: Some(Box::new(previous)),
        },
        10.0,
    );
    assert_eq!(stops(&out), [("gone".to_string(), 42)], "{out:?}");
    let out = s.handle(killed("gone"), 11.0);
    assert!(out.contains(&Action::Left {
        cell: CELL.into(),
        agent: "gone".into()
    }));
}

mod cell_timers {
    //! The cell's own deadlines and checkpoints, on a fake clock.

    use super::*;

    fn moves(actions: &[Action]) -> Vec<(CellStatus, &'static str)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::MoveCell { to, reason, .. } => Some((to.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn checkpoints(actions: &[Action]) -> Vec<(&'static str, Vec<AgentId>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Checkpoint { reason, agents, .. } => Some((*reason, agents.clone())),
                _ => None,
            })
            .collect()
    }

    fn freezes(actions: &[Action]) -> Vec<(String, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Freeze { agent, frozen, .. } => Some((agent.to_string(), *frozen)),
                _ => None,
            })
            .collect()
    }

    fn with(status: &str, timers: &str) -> Input {
        cell(&format!(
            r#"{{"status":"{status}","created_at":"1970-01-01T00:01:40Z",
                "heartbeat_stale_threshold":100,"resurrect_after":200,{timers}
                "agents":[{{"name":"a","command":["run-a"]}}]}}"#
        ))
    }

    /// A core (wall clock = monotonic) whose agent "a" runs as pid 11
    /// since 100.
    fn running(input: Input) -> Supervisor {
        let mut s = core();
        s.set_clock(0.0, 100.0);
        s.handle(input, 100.0);
        s.handle(Input::Tick, 100.0);
        complete(&mut s, "a", 11, 100.0);
        s
    }

    #[test]
    fn idle_timeout_freezes_at_its_deadline_and_a_status_change_postpones_it() {
        let mut s = running(with("active", r#""idle_timeout":0.5,"#));
        assert_eq!(s.next_deadline(), Some(100.5));
        // A status change at 100.3 moves the deadline to 100.8.
        s.handle(beat("a", 100.3, Some("thinking")), 100.3);
        let out = s.handle(Input::Expire { due: vec![] }, 100.5);
        assert!(moves(&out).is_empty(), "{out:?}");
        assert_eq!(s.next_deadline(), Some(100.8));
        // The same status again is no activity.
        s.handle(beat("a", 100.6, Some("thinking")), 100.6);
        let out = s.handle(Input::Expire { due: vec![] }, 100.799);
        assert!(moves(&out).is_empty());
        let out = s.handle(Input::Expire { due: vec![] }, 100.8);
        assert_eq!(moves(&out), [(CellStatus::Frozen, "idle")]);
        // Not asked again while the move is on its way...
        let out = s.handle(Input::Expire { due: vec![] }, 101.0);
        assert!(moves(&out).is_empty());
        // ...and once it is seen, a frozen cell does not idle.
        s.handle(with("frozen", r#""idle_timeout":0.5,"#), 101.0);
        let out = s.handle(Input::Expire { due: vec![] }, 1000.0);
        assert!(moves(&out).is_empty());
        // Thawed, idleness counts afresh.
        s.handle(with("active", r#""idle_timeout":0.5,"#), 2000.0);
        let out = s.handle(Input::Expire { due: vec![] }, 2000.499);
        assert!(moves(&out).is_empty());
        let out = s.handle(Input::Expire { due: vec![] }, 2000.5);
        assert_eq!(moves(&out), [(CellStatus::Frozen, "idle")]);
    }

    #[test]
    fn max_duration_archives_counted_from_created_at() {
        // created_at is 100 (unix seconds); the daemon sees it at 100.
        let mut s = running(with("active", r#""max_duration":0.75,"#));
        assert_eq!(s.next_deadline(), Some(100.75));
        let out = s.handle(Input::Expire { due: vec![] }, 100.75);
        assert_eq!(moves(&out), [(CellStatus::Archived, "max_duration")]);
        // A frozen cell retires too.
        let mut s = running(with("active", r#""max_duration":2,"#));
        s.handle(with("frozen", r#""max_duration":2,"#), 101.0);
        let out = s.handle(Input::Expire { due: vec![] }, 102.0);
        assert_eq!(moves(&out), [(CellStatus::Archived, "max_duration")]);
    }

    #[test]
    fn checkpoint_interval_holds_the_agents_and_thaws_them_after() {
        // Below a second counts as a second.
        let mut s = running(with("active", r#""checkpoint_interval":0.25,"#));
        assert_eq!(s.next_deadline(), Some(101.0));
        let out = s.handle(Input::Expire { due: vec![] }, 101.0);
        assert_eq!(checkpoints(&out), [("interval", vec![AgentId::from("a")])]);
        assert_eq!(freezes(&out), [("a".to_string(), true)]);
        // Held: no stale deadline runs while the snapshot is taken, and no
        // second checkpoint starts.
        assert_eq!(s.take_due(1000.0), vec![]);
        let out = s.handle(
            Input::Checkpoint {
                cell: CELL.into(),
                request_id: Some("r1".into()),
                archive: false,
            },
            101.3,
        );
        assert!(checkpoints(&out).is_empty());
        let out = s.handle(
            Input::Checkpointed {
                cell: CELL.into(),
                result: Ok("x.tar.gz".into()),
            },
            101.4,
        );
        // Thawed, and the operator's request taken next.
        assert_eq!(freezes(&out)[0], ("a".to_string(), false));
        assert_eq!(checkpoints(&out), [("manual", vec![AgentId::from("a")])]);
        let record = s.record(CELL, 101.4).expect("record");
        assert_eq!(record.checkpoint.expect("checkpoint").reason, "interval");
        let out = s.handle(
            Input::Checkpointed {
                cell: CELL.into(),
                result: Err("disk full".into()),
            },
            101.5,
        );
        assert_eq!(freezes(&out), [("a".to_string(), false)]);
        let last = s
            .record(CELL, 100.5)
            .expect("record")
            .checkpoint
            .expect("c");
        assert_eq!(last.request_id.as_deref(), Some("r1"));
        assert_eq!(last.error.as_deref(), Some("disk full"));
        // The next interval counts from the end of the last checkpoint.
        assert_eq!(s.next_deadline(), Some(102.5));
    }

    #[test]
    fn a_daemon_that_died_during_a_checkpoint_leaves_agents_its_successor_thaws() {
        let s = running(with("active", r#""checkpoint_interval":1,"#));
        let mut s = s;
        s.handle(beat("a", 100.5, Some("working")), 100.5);
        s.handle(Input::Expire { due: vec![] }, 101.0);
        let record = s.record(CELL, 101.0).expect("record");
        assert!(record.checkpointing);
        // The next daemon starts long after: the agent's last heartbeat is
        // old (it was frozen all along).
        let mut next = core();
        next.set_clock(0.0, 500.0);
        let out = next.handle(
            Input::Cell {
                id: CELL.into(),
                manifest: manifest(
                    r#"{"status":"active","agents":[{"name":"a","command":["run-a"]}]}"#,
                ),
                previous: Some(Box::new(record)),
            },
            500.0,
        );
        assert_eq!(freezes(&out), [("a".to_string(), false)], "{out:?}");
        // Not revived at once for the silence of its freeze: a thaw's grace.
        let due = next.take_due(500.5);
        let out = next.handle(Input::Expire { due }, 500.5);
        assert!(find_kill(&out, "a").is_none(), "{out:?}");
        assert_eq!(next.take_due(600.0), vec![]);
        // What the first daemon, stopping now, would have thawed itself.
        assert_eq!(
            s.held_for_checkpoint(),
            [(CellId::from(CELL), AgentId::from("a"))]
        );
    }

    #[test]
    fn a_cell_frozen_during_a_checkpoint_stays_frozen() {
        let mut s = running(with("active", r#""checkpoint_interval":1,"#));
        s.handle(Input::Expire { due: vec![] }, 101.0);
        s.handle(with("frozen", r#""checkpoint_interval":1,"#), 101.1);
        let out = s.handle(
            Input::Checkpointed {
                cell: CELL.into(),
                result: Ok("x.tar.gz".into()),
            },
            101.2,
        );
        assert!(freezes(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn max_duration_with_checkpoint_on_archive_snapshots_first() {
        let cells = CellsConfig {
            checkpoint_on_archive: true,
            ..CellsConfig::default()
        };
        let mut s = Supervisor::new(cells, HeartbeatEvents::Changes);
        s.set_clock(0.0, 100.0);
        s.handle(with("active", r#""max_duration":1,"#), 100.0);
        let out = s.handle(Input::Expire { due: vec![] }, 101.0);
        assert_eq!(checkpoints(&out).len(), 1);
        assert_eq!(checkpoints(&out)[0].0, "archive");
        assert!(moves(&out).is_empty());
        let out = s.handle(
            Input::Checkpointed {
                cell: CELL.into(),
                result: Ok("x.tar.gz".into()),
            },
            101.5,
        );
        assert_eq!(moves(&out), [(CellStatus::Archived, "max_duration")]);
    }

    #[test]
    fn a_restore_restarts_running_instances_when_the_cell_is_thawed() {
        let mut s = running(with("active", ""));
        s.handle(with("frozen", ""), 140.0);
        let out = s.handle(Input::Restored { cell: CELL.into() }, 150.0);
        assert!(find_kill(&out, "a").is_none());
        let out = s.handle(with("active", ""), 160.0);
        assert_eq!(freezes(&out), [("a".to_string(), false)]);
        assert_eq!(
            find_kill(&out, "a"),
            Some(Some(Instance {
                pid: 11,
                start_time: 9
            }))
        );
        let out = s.handle(
            Input::Killed {
                cell: CELL.into(),
                agent: "a".into(),
                exited: None,
            },
            160.0,
        );
        assert_eq!(find_spawn(&out, "a"), Some((1, Reason::Restored, None)));
        // Not a revival against max_revive_attempts.
        assert_eq!(
            s.record(CELL, 160.0).expect("r").agents["a"].revive_count,
            0
        );
        // In an active cell the restart is immediate.
        let mut s = running(with("active", ""));
        let out = s.handle(Input::Restored { cell: CELL.into() }, 150.0);
        assert!(find_kill(&out, "a").is_some());
    }
}

#[test]
fn a_denied_or_dead_agent_hung_in_place_is_stopped_and_stays_dead() {
    for policy in ["ask", "no"] {
        let mut s = started(revivable(policy, ""));
        s.handle(beat("a", 101.0, None), 101.0);
        s.handle(beat("b", 101.0, None), 101.0);
        // Silent from 101 while its process (11) still runs: due at 121.
        let out = s.handle(Input::Tick, 121.0);
        let out = if policy == "ask" {
            assert_eq!(find_kill(&out, "a"), None, "asking kills nothing");
            let request_id = s.pending_request(CELL, "a").expect("asked").to_string();
            s.handle(
                Input::Decision {
                    cell: CELL.into(),
                    agent: "a".into(),
                    request_id,
                    approved: false,
                },
                122.0,
            )
        } else {
            out
        };
        assert_eq!(
            find_kill(&out, "a"),
            Some(Some(Instance {
                pid: 11,
                start_time: 9
            })),
            "{policy}: the hung instance is stopped"
        );
        assert_eq!(state_of(&s, "a"), AgentState::Dead);
        let out = s.handle(killed_by("a", 11, 9), 123.0);
        assert_eq!(events(&out), ["agent_exited"], "{policy}");
        assert!(find_spawn(&out, "a").is_none(), "{policy}: not revived");
        assert_eq!(state_of(&s, "a"), AgentState::Dead, "{policy}");
        let snap = s.snapshot(CELL, 1, 123.0).expect("snap");
        assert_eq!(snap.agent_health["a"].pid, None, "{policy}: no pid left");
    }
}

#[test]
fn an_abandoned_agent_hung_in_place_is_stopped_and_stays_abandoned() {
    let mut s = started(cell(
        r#"{"status":"active","heartbeat_stale_threshold":10,"resurrect_after":20,
            "revive_policy":"yes","max_revive_attempts":0,
            "agents":[{"name":"a","command":["run-a"]},{"name":"b","command":["run-b"]}]}"#,
    ));
    s.handle(beat("a", 101.0, None), 101.0);
    s.handle(beat("b", 115.0, None), 115.0);
    // Silent from 101 while its process (11) still runs: due at 121, and
    // no attempt is left.
    let out = s.handle(Input::Tick, 121.0);
    assert!(events(&out).contains(&"revive_exhausted"), "{out:?}");
    assert_eq!(stops(&out), [("a".to_string(), 11)]);
    assert_eq!(state_of(&s, "a"), AgentState::Abandoned);
    let out = s.handle(killed_by("a", 11, 15), 122.0);
    assert!(find_spawn(&out, "a").is_none(), "not revived");
    assert_eq!(state_of(&s, "a"), AgentState::Abandoned);
    let snap = s.snapshot(CELL, 1, 122.0).expect("snap");
    assert_eq!(snap.agent_health["a"].pid, None, "no pid left");
}

#[test]
fn a_second_answer_to_a_stop_starts_nothing() {
    let mut s = started(revivable("yes", ""));
    s.handle(beat("a", 101.0, None), 101.0);
    s.handle(beat("b", 101.0, None), 101.0);
    s.handle(Input::Tick, 121.0);
    let out = s.handle(killed("a"), 121.5);
    assert!(find_spawn(&out, "a").is_some());
    let out = s.handle(killed("a"), 121.6);
    assert!(
        find_spawn(&out, "a").is_none(),
        "one instance only: {out:?}"
    );
}

#[test]
fn a_watched_agent_given_a_command_starts_at_once() {
    let watched = r#"{"status":"active","heartbeat_stale_threshold":10,"resurrect_after":20,
        "agents":[{"name":"a"}]}"#;
    let commanded = r#"{"status":"active","heartbeat_stale_threshold":10,"resurrect_after":20,
        "agents":[{"name":"a","command":["run-a"]}]}"#;
    let mut s = core();
    let out = s.handle(cell(watched), 100.0);
    assert_eq!(find_kill(&out, "a"), None);
    let out = s.handle(Input::Tick, 100.0);
    assert_eq!(find_kill(&out, "a"), None, "nothing to start");
    let out = s.handle(cell(commanded), 103.0);
    assert_eq!(events(&out), ["settings_changed"]);
    assert_eq!(find_kill(&out, "a"), Some(None), "started now, not at 110");
    let out = complete(&mut s, "a", 11, 103.0);
    assert_eq!(events(&out), ["agent_started"]);

    // One that beats (it runs outside the daemon) is left alone.
    let mut s = core();
    s.handle(cell(watched), 100.0);
    s.handle(beat("a", 101.0, None), 101.0);
    let out = s.handle(cell(commanded), 103.0);
    assert_eq!(
        find_kill(&out, "a"),
        None,
        "a fresh heartbeat means it runs"
    );
}

#[test]
fn why_an_agent_is_down_is_recorded() {
    let mut s = started(revivable("no", ""));
    s.handle(exit("a", 11, 3), 101.0);
    let record = s.record(CELL, 101.0).expect("record");
    assert_eq!(
        record.agents["a"].why.as_deref(),
        Some("exited with code 3")
    );
    assert_eq!(record.agents["b"].why, None);
    // A start that fails: the error, and the retry is no "exit".
    let mut s = core();
    s.handle(revivable("yes", ""), 100.0);
    s.handle(Input::Tick, 100.0);
    s.handle(killed("a"), 100.0);
    s.handle(
        Input::Spawned {
            cell: CELL.into(),
            agent: "a".into(),
            result: Err("command not found: run-a".into()),
        },
        100.0,
    );
    let record = s.record(CELL, 100.0).expect("record");
    assert_eq!(
        record.agents["a"].why.as_deref(),
        Some("could not start: command not found: run-a")
    );
    let out = s.handle(killed("a"), 100.0);
    assert_eq!(find_spawn(&out, "a"), Some((1, Reason::StartFailed, None)));
    // Beating again clears it.
    complete_spawn(&mut s, "a", 11, 100.0);
    s.handle(beat("a", 101.0, None), 101.0);
    assert_eq!(s.record(CELL, 101.0).expect("record").agents["a"].why, None);
}

fn complete_spawn(s: &mut Supervisor, agent: &str, pid: i32, now: f64) -> Vec<Action> {
    s.handle(
        Input::Spawned {
            cell: CELL.into(),
            agent: agent.into(),
            result: Ok(Instance { pid, start_time: 9 }),
        },
        now,
    )
}

#[test]
fn a_hung_agent_whose_work_is_handed_over_is_stopped() {
    let mut s = started(revivable("substitute", r#","substitutes":["b"]"#));
    s.handle(beat("a", 101.0, None), 101.0);
    s.handle(beat("b", 120.0, None), 120.0);
    let out = s.handle(Input::Tick, 121.0);
    assert_eq!(
        events(&out),
        ["agent_stale", "agent_substituted"],
        "{out:?}"
    );
    assert_eq!(
        find_kill(&out, "a"),
        Some(Some(Instance {
            pid: 11,
            start_time: 9
        })),
        "two instances never work on one workspace"
    );
    assert_eq!(find_kill(&out, "b"), None);
}

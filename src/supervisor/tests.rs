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
    assert_eq!(events(&out), ["agent_stale"]);
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
    assert!(out.contains(&Action::Forget { cell: CELL.into() }));
    assert!(!s.knows(CELL));
    assert_eq!(s.handle(Input::Tick, 100.0), vec![], "no timers survive");
    // Heartbeats of unknown cells and agents are ignored.
    assert_eq!(s.handle(beat("a", 100.0, None), 100.0), vec![]);
}

#[test]
fn a_previous_daemons_state_is_restored_without_repeating_events() {
    let mut s = core();
    let previous = CellState::from_slice(
        br#"{"cell_uuid":"c1","daemon_pid":1,"last_poll":50.0,"agent_health":{
            "a":{"healthy":false,"last_seen":30.0,"revive_count":2,"state":"stale",
                 "heartbeat_status":"lost"},
            "b":{"healthy":true,"last_seen":40.0,"revive_count":0,"state":"healthy"}}}"#,
    )
    .expect("state");
    let out = s.handle(
        Input::Cell {
            id: CELL.into(),
            manifest: manifest(TWO),
            previous: Some(Box::new(previous)),
        },
        50.0,
    );
    // a was already stale (and reported); b was healthy at 40 with a 5 s
    // threshold, so it is stale now: that is news.
    assert_eq!(agents_in_events(&out), ["b"]);
    assert_eq!(s.handle(beat("a", 30.0, Some("lost")), 51.0), vec![]);
    let snap = s.snapshot(CELL, 2, 51.0).expect("snap");
    assert_eq!(snap.agent_health["a"].revive_count, 2);
    assert_eq!(
        events(&s.handle(beat("a", 51.0, Some("lost")), 51.0)),
        ["agent_recovered"]
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

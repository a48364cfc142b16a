//! One agent driven by instants: health, backoff, limits and reset.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cell::manifest::{RestartPolicy, RevivePolicy};
use crate::cell::settings::{SpawnSpec, Timing};

fn settings(stale: f64, revive: f64) -> AgentSettings {
    AgentSettings {
        stale_threshold: Duration::from_secs_f64(stale),
        resurrect_after: Duration::from_secs_f64(revive),
        revive_policy: RevivePolicy::Yes,
        max_revive_attempts: 3,
        restart: RestartPolicy::OnFailure,
        autostart: true,
        spawn: None,
        substitutes: Box::default(),
        timing: Arc::new(Timing {
            kill_grace: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }),
    }
}

fn with_command(mut s: AgentSettings) -> AgentSettings {
    s.spawn = Some(Arc::new(SpawnSpec {
        argv: vec!["agent".into()],
        env: Vec::new(),
        limits: Vec::new(),
        isolation: Default::default(),
    }));
    s
}

fn agent() -> AgentSup {
    AgentSup::new(settings(60.0, 120.0), 1000.0)
}

/// A started agent (instance 100) that has beaten at `now`.
fn running(now: f64) -> AgentSup {
    let mut a = AgentSup::new(with_command(settings(60.0, 120.0)), now);
    assert_eq!(
        a.advance(now),
        vec![Change::Revive {
            attempt: 0,
            reason: Reason::Start
        }]
    );
    assert!(a.killed());
    a.spawned(
        Instance {
            pid: 100,
            start_time: 1,
        },
        now,
    );
    a.heartbeat(now, now, None, None, now);
    assert_eq!(a.health, Health::Healthy);
    a
}

const CRASH: ExitInfo = ExitInfo {
    code: Some(1),
    signal: None,
};

/// Drives a dead agent through `schedule_revival` and a successful spawn;
/// returns the instant the revival began.
fn revive_once(a: &mut AgentSup, died: f64, pid: i32) -> f64 {
    let changes = a.schedule_revival(Reason::Exited, died, 7);
    let began = match changes.as_slice() {
        [Change::Revive { .. }] => died,
        [Change::State] => {
            let at = a.deadline().expect("backoff deadline");
            assert_eq!(a.advance(at - 0.001), vec![], "not before its backoff");
            let c = a.advance(at);
            assert!(matches!(c.as_slice(), [Change::Revive { .. }]), "{c:?}");
            at
        }
        other => panic!("unexpected {other:?}"),
    };
    assert!(a.killed());
    a.spawned(Instance { pid, start_time: 1 }, began);
    began
}

#[test]
fn an_agent_never_heard_from_goes_stale_then_due_from_first_sight() {
    let mut a = agent();
    assert_eq!(a.deadline(), Some(1060.0));
    assert_eq!(a.advance(1059.999), vec![]);
    assert_eq!(a.state(), AgentState::Unknown);
    assert_eq!(
        a.advance(1060.0),
        vec![Change::Stale {
            last_seen: None,
            age_s: 60.0,
            late_s: 0.0
        }]
    );
    assert_eq!(a.deadline(), Some(1120.0));
    assert_eq!(a.advance(1120.0), vec![Change::Due(Reason::Stale)]);
    assert!(a.is_due());
    assert_eq!(a.deadline(), None);
    assert_eq!(a.advance(5000.0), vec![]);
}

#[test]
fn heartbeats_move_the_deadline_and_recover() {
    let mut a = agent();
    let c = a.heartbeat(1010.0, 1010.0, Some("thinking"), None, 1010.0);
    assert_eq!(
        c,
        vec![
            Change::Beat(Some("thinking".into())),
            Change::Status("thinking".into())
        ]
    );
    assert_eq!(a.state(), AgentState::Healthy);
    assert_eq!(a.deadline(), Some(1070.0));
    assert_eq!(
        a.heartbeat(1020.0, 1020.0, Some("thinking"), None, 1020.0),
        vec![Change::Beat(Some("thinking".into()))]
    );
    assert_eq!(a.deadline(), Some(1080.0));
    assert_eq!(
        a.advance(1080.5),
        vec![Change::Stale {
            last_seen: Some(1020.0),
            age_s: 60.5,
            late_s: 0.5
        }]
    );
    assert_eq!(
        a.deadline(),
        Some(1140.0),
        "due at last_seen + resurrect_after"
    );
    assert_eq!(
        a.heartbeat(1100.0, 1100.0, Some("thinking"), None, 1100.0),
        vec![Change::Beat(Some("thinking".into())), Change::Recovered]
    );
    assert_eq!(a.state(), AgentState::Healthy);
}

#[test]
fn old_or_repeated_heartbeats_change_nothing() {
    let mut a = agent();
    a.heartbeat(1010.0, 1010.0, Some("s"), None, 1010.0);
    assert_eq!(
        a.heartbeat(1010.0, 1010.0, Some("other"), None, 1011.0),
        vec![]
    );
    assert_eq!(
        a.heartbeat(1005.0, 1005.0, Some("other"), None, 1011.0),
        vec![]
    );
    assert_eq!(a.last_status.as_deref(), Some("s"));
}

#[test]
fn a_first_heartbeat_that_is_already_old_is_stale_at_once() {
    let mut a = agent();
    let c = a.heartbeat(900.0, 900.0, None, None, 1000.0);
    assert_eq!(
        c,
        vec![
            Change::Beat(None),
            Change::Stale {
                last_seen: Some(900.0),
                age_s: 100.0,
                late_s: 0.0
            }
        ]
    );
    let mut b = agent();
    let c = b.heartbeat(800.0, 800.0, None, None, 1000.0);
    assert_eq!(c.last(), Some(&Change::Due(Reason::Stale)));
}

#[test]
fn lowering_the_threshold_applies_at_once() {
    let mut a = agent();
    a.heartbeat(1000.0, 1000.0, None, None, 1000.0);
    a.set_settings(settings(5.0, 10.0), 1000.0);
    assert_eq!(a.deadline(), Some(1005.0));
    let c = a.advance(1011.0);
    assert_eq!(c.len(), 2);
    assert_eq!(c[1], Change::Due(Reason::Stale));
}

#[test]
fn a_held_agent_is_frozen_and_not_started() {
    let mut a = agent();
    a.held = true;
    a.advance(2000.0);
    assert_eq!(a.state(), AgentState::Frozen);
    let mut b = AgentSup::new(with_command(settings(60.0, 120.0)), 1000.0);
    b.held = true;
    assert_eq!(b.deadline(), None, "a frozen cell starts nothing");
    b.held = false;
    assert_eq!(b.deadline(), Some(1000.0));
}

#[test]
fn a_frozen_agent_never_goes_stale_and_a_thaw_gives_fresh_grace() {
    // settings(stale 60, revive 120); healthy at 1000.
    let mut a = agent();
    a.heartbeat(1000.0, 1000.0, None, None, 1000.0);
    a.hold(true, 1010.0);
    assert_eq!(a.state(), AgentState::Frozen);
    assert_eq!(a.deadline(), None, "no deadline runs while frozen");
    assert!(a.advance(1_000_000.0).is_empty(), "far past every deadline");
    // Thawed: a fresh stale threshold from the thaw, not from 1000.
    a.hold(false, 5000.0);
    assert_eq!(a.state(), AgentState::Healthy);
    assert_eq!(a.deadline(), Some(5060.0));
    // A hang after the thaw is judged as usual.
    let c = a.advance(5060.0);
    assert!(matches!(c[0], Change::Stale { .. }), "{c:?}");
    let c = a.advance(5120.0);
    assert_eq!(c, vec![Change::Due(Reason::Stale)]);
}

#[test]
fn a_stale_agent_thawed_is_not_revived_at_once() {
    let mut a = agent();
    a.heartbeat(1000.0, 1000.0, None, None, 1000.0);
    a.advance(1060.0);
    assert!(matches!(a.health, Health::Stale { .. }));
    a.hold(true, 1061.0);
    a.hold(false, 3000.0);
    assert_eq!(a.health, Health::Waiting { revived: false });
    assert_eq!(a.deadline(), Some(3120.0), "resurrect_after from the thaw");
    // Beating again makes it healthy.
    a.heartbeat(3001.0, 3001.0, None, None, 3001.0);
    assert_eq!(a.health, Health::Healthy);
}

#[test]
fn an_agent_with_a_command_starts_at_once_unless_it_beats_fresh() {
    let mut a = AgentSup::new(with_command(settings(60.0, 120.0)), 1000.0);
    assert_eq!(a.health, Health::Unstarted);
    assert_eq!(a.deadline(), Some(1000.0), "started at once");
    // A fresh heartbeat read before the start: it runs outside the daemon.
    a.heartbeat(999.0, 999.0, None, Some(4242), 1000.0);
    assert_eq!(a.health, Health::Healthy);
    assert_eq!(a.claimed_pid, Some(4242));
    // An old one does not stop the start.
    let mut b = AgentSup::new(with_command(settings(60.0, 120.0)), 1000.0);
    assert_eq!(
        b.heartbeat(500.0, 500.0, None, None, 1000.0).last(),
        Some(&Change::Revive {
            attempt: 0,
            reason: Reason::Start
        })
    );
    assert_eq!(b.revive_count, 0, "a start is not a revival");
    // autostart = false: watched until it dies.
    let mut s = with_command(settings(60.0, 120.0));
    s.autostart = false;
    let c = AgentSup::new(s, 1000.0);
    assert_eq!(c.health, Health::Waiting { revived: false });
}

#[test]
fn a_started_instance_gets_resurrect_after_of_grace() {
    let mut a = AgentSup::new(with_command(settings(60.0, 120.0)), 1000.0);
    a.heartbeat(900.0, 900.0, None, None, 1000.0);
    a.advance(1000.0);
    a.killed();
    a.spawned(
        Instance {
            pid: 7,
            start_time: 3,
        },
        1000.0,
    );
    // The old heartbeat (900) does not count against the new instance.
    assert_eq!(a.deadline(), Some(1120.0));
    assert_eq!(a.advance(1119.999), vec![]);
    let c = a.advance(1120.0);
    assert!(
        matches!(c[0], Change::Stale { age_s, .. } if age_s == 120.0),
        "{c:?}"
    );
    assert_eq!(c[1], Change::Due(Reason::Stale));
}

#[test]
fn failed_exits_are_due_at_once_and_clean_exits_finish() {
    let mut a = running(1000.0);
    assert_eq!(a.exited(999, CRASH, 1000.0), vec![], "not our instance");
    let c = a.exited(100, CRASH, 1000.0);
    assert_eq!(
        c,
        vec![
            Change::Exited {
                pid: 100,
                exit: CRASH
            },
            Change::Due(Reason::Exited)
        ]
    );
    assert_eq!(a.instance, None);

    let mut b = running(1000.0);
    let ok = ExitInfo {
        code: Some(0),
        signal: None,
    };
    assert_eq!(b.exited(100, ok, 1000.0)[1], Change::State);
    assert_eq!(b.state(), AgentState::Exited);
    assert_eq!(b.deadline(), None, "finished: nothing more happens");

    let mut s = with_command(settings(60.0, 120.0));
    s.restart = RestartPolicy::Always;
    let mut c = running(1000.0);
    c.settings = s;
    assert_eq!(c.exited(100, ok, 1000.0)[1], Change::Due(Reason::Exited));
    let killed = ExitInfo {
        code: None,
        signal: Some(9),
    };
    let mut d = running(1000.0);
    assert_eq!(
        d.exited(100, killed, 1000.0)[1],
        Change::Due(Reason::Exited)
    );
}

#[test]
fn backoff_doubles_from_the_second_attempt_and_is_capped() {
    let mut s = settings(60.0, 120.0);
    s.timing = Arc::new(Timing {
        backoff_initial: Duration::from_secs(2),
        backoff_max: Duration::from_secs(10),
        ..(*s.timing).clone()
    });
    let seed = seed_of("cell", "agent");
    let within = |attempt: u32, base: f64| {
        let d = backoff(&s, attempt, seed);
        assert!(
            (base..=base * 1.1).contains(&d),
            "attempt {attempt}: {d} not in [{base}, {}]",
            base * 1.1
        );
    };
    assert_eq!(backoff(&s, 1, seed), 0.0, "the first revival is immediate");
    within(2, 2.0);
    within(3, 4.0);
    within(4, 8.0);
    within(5, 10.0);
    within(40, 10.0);
    // Jitter differs between agents that died together.
    let others: std::collections::HashSet<u64> = (0..20)
        .map(|i| backoff(&s, 3, seed_of("cell", &format!("a{i}"))).to_bits())
        .collect();
    assert!(others.len() > 15, "jitter spreads agents: {others:?}");
}

#[test]
fn exactly_max_attempts_then_one_exhausted() {
    let mut a = running(1000.0);
    let mut t = 1000.0;
    let mut gaps = Vec::new();
    for attempt in 1..=3 {
        let c = a.exited(100 + attempt - 1, CRASH, 1000.0);
        assert_eq!(c[1], Change::Due(Reason::Exited));
        let began = revive_once(&mut a, t, 100 + attempt);
        gaps.push(began - t);
        assert_eq!(a.revive_count, attempt as u32);
        assert_eq!(a.state(), AgentState::Reviving);
        t = began + 0.5;
    }
    assert_eq!(gaps[0], 0.0);
    assert!(
        gaps[1] >= 1.0 && gaps[2] >= 2.0 && gaps[2] > gaps[1],
        "{gaps:?}"
    );
    a.exited(103, CRASH, 1000.0);
    assert_eq!(
        a.schedule_revival(Reason::Exited, t, 7),
        vec![Change::Exhausted { attempts: 3 }]
    );
    assert_eq!(a.state(), AgentState::Abandoned);
    assert_eq!(a.deadline(), None, "no further revivals by itself");
    // An operator's revive starts afresh.
    assert_eq!(
        a.force_revival(Reason::Manual, t),
        vec![Change::Revive {
            attempt: 1,
            reason: Reason::Manual
        }]
    );
}

#[test]
fn the_count_resets_after_reset_after_of_health() {
    let mut a = running(1000.0);
    a.exited(100, CRASH, 1000.0);
    revive_once(&mut a, 1001.0, 101);
    a.heartbeat(1002.0, 1002.0, None, None, 1002.0);
    assert_eq!(a.revive_count, 1);
    // Keep beating: the reset comes exactly reset_after after recovery.
    let mut t = 1002.0;
    while t < 1601.0 {
        t += 30.0;
        a.heartbeat(t, t, None, None, t);
    }
    assert_eq!(a.revive_count, 0, "reset after 600 s of health");

    let mut b = running(1000.0);
    b.exited(100, CRASH, 1000.0);
    revive_once(&mut b, 1001.0, 101);
    b.heartbeat(1002.0, 1002.0, None, None, 1002.0);
    b.heartbeat(1500.0, 1500.0, None, None, 1500.0);
    assert_eq!(b.deadline(), Some(1560.0), "stale first");
    b.advance(1560.0);
    b.heartbeat(1570.0, 1570.0, None, None, 1570.0);
    assert_eq!(b.deadline(), Some(1630.0));
    assert_eq!(b.revive_count, 1, "health interrupted: the clock restarts");
    assert_eq!(b.healthy_since, Some(1570.0));
}

#[test]
fn a_failed_spawn_counts_and_backs_off() {
    let mut a = running(1000.0);
    a.exited(100, CRASH, 1000.0);
    assert!(matches!(
        a.schedule_revival(Reason::Exited, 1000.0, 7)[..],
        [Change::Revive { attempt: 1, .. }]
    ));
    a.killed();
    assert_eq!(a.spawn_failed("boom", 1000.0, 7), vec![Change::State]);
    assert!(matches!(a.health, Health::Backoff { attempt: 2, at, .. } if at >= 1001.0));
    assert_eq!(a.revive_count, 1);
}

#[test]
fn a_backing_off_agent_that_beats_again_recovers() {
    let mut a = running(1000.0);
    a.exited(100, CRASH, 1000.0);
    a.revive_count = 1;
    a.schedule_revival(Reason::Exited, 1000.0, 7);
    assert!(matches!(a.health, Health::Backoff { .. }));
    let c = a.heartbeat(1000.5, 1000.5, None, None, 1000.5);
    assert!(c.contains(&Change::Recovered));
    assert_eq!(a.health, Health::Healthy);
}

#[test]
fn an_edit_of_an_abandoned_agent_starts_it_afresh() {
    let mut a = running(1000.0);
    a.health = Health::Abandoned;
    a.revive_count = 3;
    a.instance = None;
    let mut s = with_command(settings(60.0, 120.0));
    s.spawn = Some(Arc::new(SpawnSpec {
        argv: vec!["fixed".into()],
        env: Vec::new(),
        limits: Vec::new(),
        isolation: Default::default(),
    }));
    a.set_settings(s, 2000.0);
    assert_eq!(a.revive_count, 0);
    assert_eq!(a.health, Health::Unstarted);
    assert_eq!(a.deadline(), Some(2000.0));
}

#[test]
fn a_heartbeat_written_before_the_death_is_read_after_it_and_ignored() {
    let mut a = running(1000.0);
    // The instance beat at 1005 and died at 1005.2; the daemon sees the
    // exit first and the heartbeat file's event after.
    a.exited(100, CRASH, 1005.2);
    a.schedule_revival(Reason::Exited, 1005.2, 7);
    a.health = Health::Abandoned;
    let c = a.heartbeat(1005.0, 1005.0, None, Some(100), 1005.3);
    assert!(!c.contains(&Change::Recovered), "{c:?}");
    assert_eq!(a.health, Health::Abandoned);
    // A heartbeat written after it (someone restarted it by hand) does.
    assert!(
        a.heartbeat(1006.0, 1006.0, None, None, 1006.0)
            .contains(&Change::Recovered)
    );
}

#[test]
fn the_transition_table_refuses_what_no_path_may_do() {
    use super::allowed;
    let stale = Health::Stale { since: 0.0 };
    assert!(allowed(&Health::Healthy, &stale));
    assert!(!allowed(&Health::Abandoned, &stale), "no second stale");
    assert!(
        !allowed(&Health::Denied, &Health::Unstarted),
        "an edit never undoes a deny"
    );
    assert!(!allowed(&Health::Dead, &Health::Denied));
    assert!(allowed(
        &Health::AwaitingApproval {
            request_id: "r".into(),
            reason: Reason::Stale
        },
        &Health::Denied
    ));
    for from in [Health::Denied, Health::Abandoned, Health::Unstarted] {
        assert!(allowed(&from, &Health::Healthy), "a fresh beat: {from:?}");
        assert!(allowed(&from, &Health::Finished), "an exit: {from:?}");
    }
}

#[test]
fn an_agent_whose_process_died_while_frozen_is_revived_at_the_thaw() {
    let mut a = AgentSup::new(with_command(settings(60.0, 120.0)), 1000.0);
    a.advance(1000.0);
    assert!(a.killed());
    a.spawned(
        Instance {
            pid: 7,
            start_time: 1,
        },
        1000.0,
    );
    a.heartbeat(1001.0, 1001.0, None, None, 1001.0);
    assert!(a.hold(true, 1002.0).is_empty());
    let c = a.exited(7, CRASH, 1003.0);
    assert!(c.contains(&Change::Due(Reason::Exited)), "{c:?}");
    assert_eq!(
        a.state(),
        AgentState::Frozen,
        "nothing is revived while frozen"
    );
    assert_eq!(a.hold(false, 2000.0), vec![Change::Due(Reason::Exited)]);
}

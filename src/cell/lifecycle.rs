//! Cell statuses and the one table of legal moves between them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A cell's `status`. A string this program does not know is kept as
/// [`CellStatus::Unknown`] so the manifest still loads and the string
/// survives rewrites; such a cell is reported, never monitored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CellStatus {
    /// Created, no agent yet.
    Provisioned,
    /// Agents are monitored and revived.
    Active,
    /// Agents are monitored but not revived.
    Frozen,
    /// Preserved, not monitored.
    Archived,
    /// Torn down; `cell.json` and `logs/` remain as the audit trail.
    Destroyed,
    Unknown(String),
}

impl CellStatus {
    pub fn as_str(&self) -> &str {
        match self {
            CellStatus::Provisioned => "provisioned",
            CellStatus::Active => "active",
            CellStatus::Frozen => "frozen",
            CellStatus::Archived => "archived",
            CellStatus::Destroyed => "destroyed",
            CellStatus::Unknown(s) => s,
        }
    }

    pub fn parse(s: &str) -> CellStatus {
        match s {
            "provisioned" => CellStatus::Provisioned,
            "active" => CellStatus::Active,
            "frozen" => CellStatus::Frozen,
            "archived" => CellStatus::Archived,
            "destroyed" => CellStatus::Destroyed,
            other => CellStatus::Unknown(other.to_string()),
        }
    }

    /// Whether the daemon watches this cell's agents.
    pub fn is_monitored(&self) -> bool {
        matches!(self, CellStatus::Active | CellStatus::Frozen)
    }

    /// Whether no legal move leads back to supervision from here.
    pub fn is_final(&self) -> bool {
        matches!(self, CellStatus::Archived | CellStatus::Destroyed)
    }

    /// Whether the table of legal moves has one from `from` to `to`.
    pub fn can_move(from: &CellStatus, to: &CellStatus) -> bool {
        ALLOWED_TRANSITIONS
            .iter()
            .any(|(f, _, t)| f == from && t == to)
    }

    /// Whether agents may still join or leave.
    pub fn accepts_members(&self) -> bool {
        matches!(
            self,
            CellStatus::Provisioned | CellStatus::Active | CellStatus::Frozen
        )
    }
}

impl fmt::Display for CellStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CellStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CellStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(CellStatus::parse(&String::deserialize(d)?))
    }
}

/// What asks a cell to change status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An agent joins (`cell join`, or `cell create --agent`).
    Join,
    Freeze,
    Thaw,
    Archive,
    Destroy,
}

impl Trigger {
    pub fn verb(self) -> &'static str {
        match self {
            Trigger::Join => "activate",
            Trigger::Freeze => "freeze",
            Trigger::Thaw => "thaw",
            Trigger::Archive => "archive",
            Trigger::Destroy => "destroy",
        }
    }
}

/// Every legal status move, and what causes it. One table, so the CLI,
/// the daemon and the spec agree.
pub const ALLOWED_TRANSITIONS: &[(CellStatus, Trigger, CellStatus)] = &[
    (CellStatus::Provisioned, Trigger::Join, CellStatus::Active),
    (CellStatus::Active, Trigger::Freeze, CellStatus::Frozen),
    (CellStatus::Frozen, Trigger::Thaw, CellStatus::Active),
    (
        CellStatus::Provisioned,
        Trigger::Archive,
        CellStatus::Archived,
    ),
    (CellStatus::Active, Trigger::Archive, CellStatus::Archived),
    (CellStatus::Frozen, Trigger::Archive, CellStatus::Archived),
    (
        CellStatus::Provisioned,
        Trigger::Destroy,
        CellStatus::Destroyed,
    ),
    (CellStatus::Active, Trigger::Destroy, CellStatus::Destroyed),
    (CellStatus::Frozen, Trigger::Destroy, CellStatus::Destroyed),
    (
        CellStatus::Archived,
        Trigger::Destroy,
        CellStatus::Destroyed,
    ),
];

/// The status `trigger` moves a cell in status `from` to, or why it
/// cannot. Destroying is allowed from an unknown status too: it is the
/// operator's way out of a cell no other command understands.
pub fn transition(from: &CellStatus, trigger: Trigger) -> Result<CellStatus, String> {
    if let Some((_, _, to)) = ALLOWED_TRANSITIONS
        .iter()
        .find(|(f, t, _)| f == from && *t == trigger)
    {
        return Ok(to.clone());
    }
    match (from, trigger) {
        (CellStatus::Unknown(_), Trigger::Destroy) => Ok(CellStatus::Destroyed),
        (CellStatus::Unknown(s), _) => Err(format!(
            "its status {s:?} is not one this program knows; fix cell.json or destroy it"
        )),
        (CellStatus::Frozen, Trigger::Freeze)
        | (CellStatus::Archived, Trigger::Archive)
        | (CellStatus::Destroyed, Trigger::Destroy) => Err(format!("it is already {from}")),
        (CellStatus::Provisioned, Trigger::Freeze) => {
            Err("a provisioned cell has no agents to freeze yet".into())
        }
        (_, Trigger::Thaw) => Err(format!(
            "only a frozen cell can be thawed, this one is {from}"
        )),
        _ => Err(format!("it is {from}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CellStatus::*;

    #[test]
    fn table_of_moves() {
        use Trigger::*;
        let legal = |from: CellStatus, t: Trigger| transition(&from, t).ok();
        assert_eq!(legal(Provisioned, Join), Some(Active));
        assert_eq!(legal(Active, Join), None);
        assert_eq!(legal(Active, Freeze), Some(Frozen));
        assert_eq!(legal(Frozen, Thaw), Some(Active));
        assert_eq!(legal(Provisioned, Thaw), None);
        assert_eq!(legal(Active, Thaw), None);
        for from in [Provisioned, Active, Frozen] {
            assert_eq!(legal(from, Archive), Some(Archived));
        }
        for from in [Provisioned, Active, Frozen, Archived] {
            assert_eq!(legal(from, Destroy), Some(Destroyed));
        }
        for t in [Join, Freeze, Thaw, Archive, Destroy] {
            assert_eq!(legal(Destroyed, t), None);
        }
        assert_eq!(legal(Archived, Thaw), None);
    }

    #[test]
    fn refusals_say_why() {
        use Trigger::*;
        let why = |from: CellStatus, t: Trigger| transition(&from, t).unwrap_err();
        assert!(why(Frozen, Freeze).contains("already frozen"));
        assert!(why(Provisioned, Freeze).contains("no agents"));
        assert!(why(Archived, Thaw).contains("only a frozen cell"));
        let weird = Unknown("exploded".into());
        assert!(why(weird.clone(), Freeze).contains("exploded"));
        assert_eq!(transition(&weird, Destroy), Ok(Destroyed));
        assert!(why(Destroyed, Destroy).contains("already destroyed"));
    }

    #[test]
    fn unknown_status_round_trips() {
        let s: CellStatus = serde_json::from_str("\"paused\"").expect("parse");
        assert_eq!(s, Unknown("paused".into()));
        assert_eq!(serde_json::to_string(&s).expect("ser"), "\"paused\"");
        assert!(!s.is_monitored());
    }
}

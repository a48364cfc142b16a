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

/// Every legal status move, and what causes it:
///
/// | from        | to          | by                                   |
/// |-------------|-------------|--------------------------------------|
/// | provisioned | active      | first `cell join` (CLI or daemon)    |
/// | active      | frozen      | `cell freeze`                        |
/// | frozen      | active      | `cell thaw`                          |
/// | provisioned, active, frozen | archived | `cell archive`         |
/// | any but destroyed | destroyed | `cell destroy --yes`               |
pub const ALLOWED_TRANSITIONS: &[(CellStatus, CellStatus)] = &[
    (CellStatus::Provisioned, CellStatus::Active),
    (CellStatus::Active, CellStatus::Frozen),
    (CellStatus::Frozen, CellStatus::Active),
    (CellStatus::Provisioned, CellStatus::Archived),
    (CellStatus::Active, CellStatus::Archived),
    (CellStatus::Frozen, CellStatus::Archived),
    (CellStatus::Provisioned, CellStatus::Destroyed),
    (CellStatus::Active, CellStatus::Destroyed),
    (CellStatus::Frozen, CellStatus::Destroyed),
    (CellStatus::Archived, CellStatus::Destroyed),
];

/// Checks a move against [`ALLOWED_TRANSITIONS`]. Destroying is allowed
/// from an unknown status too: it is the operator's way out of a cell no
/// other command understands.
pub fn check_transition(from: &CellStatus, to: &CellStatus) -> Result<(), String> {
    let legal = ALLOWED_TRANSITIONS
        .iter()
        .any(|(f, t)| f == from && t == to)
        || (matches!(from, CellStatus::Unknown(_)) && *to == CellStatus::Destroyed);
    if legal {
        return Ok(());
    }
    let hint = match (from, to) {
        (f, t) if f == t => format!("it is already {t}"),
        (CellStatus::Unknown(s), _) => {
            format!("its status {s:?} is not one this program knows; fix cell.json or destroy it")
        }
        (CellStatus::Provisioned, CellStatus::Frozen) => {
            "a provisioned cell has no agents to freeze yet".to_string()
        }
        (f, CellStatus::Active) => format!("only a frozen cell can be thawed, this one is {f}"),
        (f, _) => format!("it is {f}"),
    };
    Err(hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CellStatus::*;

    #[test]
    fn table_of_moves() {
        let all = [Provisioned, Active, Frozen, Archived, Destroyed];
        let mut legal: Vec<(CellStatus, CellStatus)> = all
            .iter()
            .flat_map(|f| all.iter().map(move |t| (f.clone(), t.clone())))
            .filter(|(f, t)| check_transition(f, t).is_ok())
            .collect();
        let mut table = ALLOWED_TRANSITIONS.to_vec();
        let key = |p: &(CellStatus, CellStatus)| (p.0.to_string(), p.1.to_string());
        legal.sort_by_key(key);
        table.sort_by_key(key);
        assert_eq!(legal, table);
    }

    #[test]
    fn refusals_say_why() {
        assert!(
            check_transition(&Active, &Active)
                .unwrap_err()
                .contains("already active")
        );
        assert!(
            check_transition(&Provisioned, &Frozen)
                .unwrap_err()
                .contains("no agents")
        );
        assert!(
            check_transition(&Archived, &Active)
                .unwrap_err()
                .contains("only a frozen cell")
        );
        let weird = Unknown("exploded".into());
        assert!(
            check_transition(&weird, &Frozen)
                .unwrap_err()
                .contains("exploded")
        );
        assert!(check_transition(&weird, &Destroyed).is_ok());
        assert!(check_transition(&Destroyed, &Destroyed).is_err());
    }

    #[test]
    fn unknown_status_round_trips() {
        let s: CellStatus = serde_json::from_str("\"paused\"").expect("parse");
        assert_eq!(s, Unknown("paused".into()));
        assert_eq!(serde_json::to_string(&s).expect("ser"), "\"paused\"");
        assert!(!s.is_monitored());
    }
}

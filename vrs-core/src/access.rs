//! Who may do what (DESIGN.md §3). Every service call names an [`Actor`]; the service
//! resolves it to a [`Principal`] and asks [`authorize`]. Stores never decide access.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, MunicipalityCode, SiteId};
use crate::{Error, Result};

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// Staff of a municipality (市区町村職員).
    MunicipalStaff {
        /// The municipality they work for.
        municipality: MunicipalityCode,
        /// Their user name, for the audit trail.
        user: String,
    },
    /// A tablet account issued to a vaccination site (接種会場).
    Site {
        /// The account.
        account: AccountId,
    },
    /// A reader of aggregate statistics only.
    StatisticsReader {
        /// National, or one prefecture.
        scope: StatsScope,
    },
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::MunicipalStaff { municipality, user } => write!(f, "staff {user}@{municipality}"),
            Actor::Site { account } => write!(f, "site account {account}"),
            Actor::StatisticsReader { scope } => write!(f, "statistics reader ({scope})"),
        }
    }
}

/// What a statistics reader may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatsScope {
    /// The whole country.
    National,
    /// One prefecture, 1–47.
    Prefecture(u8),
}

impl fmt::Display for StatsScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsScope::National => f.write_str("national"),
            StatsScope::Prefecture(p) => write!(f, "prefecture {p:02}"),
        }
    }
}

/// A vaccination site: a municipal venue or a clinic (by its G-MIS ID).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// Venue code or G-MIS ID.
    pub id: SiteId,
    /// Name as printed in the ledger (接種会場名, ≤ 30 characters).
    pub name: String,
    /// The municipality the site is in (接種自治体).
    pub municipality: MunicipalityCode,
}

/// A tablet account issued by a municipality to one of its sites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabletAccount {
    /// The account id.
    pub id: AccountId,
    /// The site it belongs to.
    pub site: Site,
    /// Who issued it.
    pub issued_by: String,
    /// When.
    #[serde(with = "crate::clock::serde_instant")]
    pub issued_at: DateTime<Utc>,
    /// When revoked; a revoked account can do nothing.
    #[serde(default, with = "crate::clock::serde_instant::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Every operation of the service that touches data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// Upload (import) residents.
    UploadResidents,
    /// Read residents.
    ReadResidents,
    /// Register a dose.
    RegisterDose,
    /// Read a dose.
    ReadDose,
    /// Correct a dose (補正).
    CorrectDose,
    /// Void a dose.
    VoidDose,
    /// Read the review queue.
    ReadFindings,
    /// Run matching of unmatched doses.
    Reconcile,
    /// Issue a tablet account.
    IssueAccount,
    /// Revoke a tablet account.
    RevokeAccount,
    /// List tablet accounts.
    ReadAccounts,
    /// Look up a moved-in resident's doses at the previous municipality.
    LookupMovedIn,
    /// Export the ledger (予防接種台帳向け出力).
    ExportLedger,
    /// Export the unmatched list (登録待ちリスト).
    ExportUnmatched,
    /// Read aggregate statistics.
    ReadStatistics,
    /// Sign in as a tablet account with its secret.
    SignIn,
}

impl Operation {
    /// Every operation, for exhaustive access tests.
    pub const ALL: [Operation; 16] = [
        Operation::UploadResidents,
        Operation::ReadResidents,
        Operation::RegisterDose,
        Operation::ReadDose,
        Operation::CorrectDose,
        Operation::VoidDose,
        Operation::ReadFindings,
        Operation::Reconcile,
        Operation::IssueAccount,
        Operation::RevokeAccount,
        Operation::ReadAccounts,
        Operation::LookupMovedIn,
        Operation::ExportLedger,
        Operation::ExportUnmatched,
        Operation::ReadStatistics,
        Operation::SignIn,
    ];
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Operation::UploadResidents => "upload residents",
            Operation::ReadResidents => "read residents",
            Operation::RegisterDose => "register doses",
            Operation::ReadDose => "read this dose",
            Operation::CorrectDose => "correct this dose",
            Operation::VoidDose => "void this dose",
            Operation::ReadFindings => "read findings",
            Operation::Reconcile => "reconcile",
            Operation::IssueAccount => "issue tablet accounts",
            Operation::RevokeAccount => "revoke tablet accounts",
            Operation::ReadAccounts => "read tablet accounts",
            Operation::LookupMovedIn => "look up moved-in residents",
            Operation::ExportLedger => "export the ledger",
            Operation::ExportUnmatched => "export the unmatched list",
            Operation::ReadStatistics => "read statistics",
            Operation::SignIn => "sign in as a tablet account",
        };
        f.write_str(s)
    }
}

/// The caller once resolved by the service (a tablet account looked up in the store).
#[derive(Clone, Debug)]
pub enum Principal {
    /// Staff of a municipality.
    Staff {
        /// Their municipality.
        municipality: MunicipalityCode,
        /// User name.
        user: String,
    },
    /// A tablet account (possibly revoked).
    Site(TabletAccount),
    /// A statistics reader.
    Statistics(StatsScope),
}

impl Principal {
    /// A description for errors and the audit trail (no personal data).
    pub fn describe(&self) -> String {
        match self {
            Principal::Staff { municipality, user } => format!("staff {user}@{municipality}"),
            Principal::Site(a) => format!("site {} account {}", a.site.id, a.id),
            Principal::Statistics(s) => format!("statistics reader ({s})"),
        }
    }
}

/// What an operation is applied to, as far as access is concerned.
#[derive(Clone, Debug)]
pub enum Subject {
    /// A municipality's data area (residents, findings, ledger, unmatched list).
    Municipality(MunicipalityCode),
    /// Registering a new dose (any voucher; the rules decide what is stored).
    NewDose,
    /// An existing dose.
    Dose {
        /// The issuing municipality that owns it.
        owner: MunicipalityCode,
        /// The municipality of the resident it is matched to, if any.
        resident_municipality: Option<MunicipalityCode>,
        /// The site whose account registered it.
        registered_by_site: SiteId,
        /// The day (JST) it was registered.
        registered_on: NaiveDate,
    },
    /// A site (for issuing and revoking accounts).
    Site {
        /// The municipality the site is in.
        municipality: MunicipalityCode,
    },
    /// Statistics of a municipality, a prefecture or the nation.
    Statistics {
        /// `None` for national figures, else the prefecture 1–47.
        prefecture: Option<u8>,
        /// A single municipality, when asked for one.
        municipality: Option<MunicipalityCode>,
    },
}

/// Decides whether `principal` may perform `operation` on `subject`; `today` is the JST date.
pub fn authorize(principal: &Principal, operation: Operation, subject: &Subject, today: NaiveDate) -> Result<()> {
    match decide(principal, operation, subject, today) {
        Ok(()) => Ok(()),
        Err(reason) => Err(Error::PermissionDenied { actor: principal.describe(), operation, reason }),
    }
}

fn decide(principal: &Principal, operation: Operation, subject: &Subject, today: NaiveDate) -> std::result::Result<(), String> {
    use Operation::*;
    match principal {
        Principal::Staff { municipality: m, .. } => match (operation, subject) {
            (
                UploadResidents | ReadResidents | ReadFindings | Reconcile | LookupMovedIn | ExportLedger | ExportUnmatched,
                Subject::Municipality(x),
            ) => {
                if x == m {
                    Ok(())
                } else {
                    Err(format!("the data of {x} belongs to that municipality"))
                }
            }
            (ReadDose | CorrectDose | VoidDose, Subject::Dose { owner, resident_municipality, .. }) => {
                if owner == m || resident_municipality.as_ref() == Some(m) {
                    Ok(())
                } else {
                    Err("the dose is neither issued by nor matched to a resident of this municipality".into())
                }
            }
            (IssueAccount | RevokeAccount | ReadAccounts, Subject::Site { municipality: x }) => {
                if x == m {
                    Ok(())
                } else {
                    Err(format!("the site is in {x}"))
                }
            }
            (ReadStatistics, Subject::Statistics { municipality: Some(x), .. }) => {
                if x == m {
                    Ok(())
                } else {
                    Err("staff read the statistics of their own municipality only".into())
                }
            }
            (RegisterDose, _) => Err("doses are registered by vaccination sites".into()),
            (SignIn, _) => Err("only tablet accounts sign in with a secret".into()),
            _ => Err("not an operation for municipal staff on this data".into()),
        },
        Principal::Site(account) => {
            if account.revoked_at.is_some() {
                return Err("the tablet account is revoked".into());
            }
            match (operation, subject) {
                (RegisterDose | SignIn, Subject::NewDose) => Ok(()),
                (ReadDose | CorrectDose | VoidDose, Subject::Dose { registered_by_site, registered_on, .. }) => {
                    if registered_by_site != &account.site.id {
                        Err("a site sees only the doses it registered".into())
                    } else if *registered_on != today {
                        Err("a site may read and correct only the doses it registered today".into())
                    } else {
                        Ok(())
                    }
                }
                _ => Err("a site may only register doses and handle today's own records".into()),
            }
        }
        Principal::Statistics(scope) => match (operation, subject) {
            (ReadStatistics, Subject::Statistics { prefecture, .. }) => match (scope, prefecture) {
                (StatsScope::National, _) => Ok(()),
                (StatsScope::Prefecture(p), Some(q)) if p == q => Ok(()),
                (StatsScope::Prefecture(p), _) => Err(format!("this reader sees prefecture {p:02} only")),
            },
            _ => Err("statistics readers see aggregates only, never a person".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;
    use chrono::TimeZone;

    fn m(s: &str) -> MunicipalityCode {
        MunicipalityCode::parse(s).unwrap()
    }
    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2021, 7, 1).unwrap()
    }
    fn account(revoked: bool) -> TabletAccount {
        TabletAccount {
            id: AccountId::parse("tab-1").unwrap(),
            site: Site { id: SiteId::parse("venue-1").unwrap(), name: "区民会館".into(), municipality: m("131016") },
            issued_by: "staff".into(),
            issued_at: Utc.with_ymd_and_hms(2021, 6, 1, 0, 0, 0).unwrap(),
            revoked_at: revoked.then(|| Utc.with_ymd_and_hms(2021, 6, 30, 0, 0, 0).unwrap()),
        }
    }

    /// The subject each operation naturally applies to, in 千代田区 (131016): a dose
    /// registered today by venue-1.
    fn subject(op: Operation) -> Subject {
        match op {
            RegisterDose | SignIn => Subject::NewDose,
            ReadDose | CorrectDose | VoidDose => Subject::Dose {
                owner: m("131016"),
                resident_municipality: Some(m("131016")),
                registered_by_site: SiteId::parse("venue-1").unwrap(),
                registered_on: today(),
            },
            IssueAccount | RevokeAccount | ReadAccounts => Subject::Site { municipality: m("131016") },
            ReadStatistics => Subject::Statistics { prefecture: Some(13), municipality: Some(m("131016")) },
            _ => Subject::Municipality(m("131016")),
        }
    }

    /// The access matrix of DESIGN.md §3: every actor × every operation. A new
    /// operation without a row here fails the test.
    #[test]
    fn access_matrix() {
        let staff = Principal::Staff { municipality: m("131016"), user: "a".into() };
        let other_staff = Principal::Staff { municipality: m("131041"), user: "b".into() };
        let site = Principal::Site(account(false));
        let revoked = Principal::Site(account(true));
        let national = Principal::Statistics(StatsScope::National);
        let tokyo = Principal::Statistics(StatsScope::Prefecture(13));
        let hokkaido = Principal::Statistics(StatsScope::Prefecture(1));
        // Columns: staff of 131016, staff of 131041, site in 131016, revoked site,
        // national reader, Tokyo reader, Hokkaido reader.
        let table: [(Operation, [bool; 7]); 16] = [
            (UploadResidents, [true, false, false, false, false, false, false]),
            (ReadResidents, [true, false, false, false, false, false, false]),
            (RegisterDose, [false, false, true, false, false, false, false]),
            (ReadDose, [true, false, true, false, false, false, false]),
            (CorrectDose, [true, false, true, false, false, false, false]),
            (VoidDose, [true, false, true, false, false, false, false]),
            (ReadFindings, [true, false, false, false, false, false, false]),
            (Reconcile, [true, false, false, false, false, false, false]),
            (IssueAccount, [true, false, false, false, false, false, false]),
            (RevokeAccount, [true, false, false, false, false, false, false]),
            (ReadAccounts, [true, false, false, false, false, false, false]),
            (LookupMovedIn, [true, false, false, false, false, false, false]),
            (ExportLedger, [true, false, false, false, false, false, false]),
            (ExportUnmatched, [true, false, false, false, false, false, false]),
            (ReadStatistics, [true, false, false, false, true, true, false]),
            (SignIn, [false, false, true, false, false, false, false]),
        ];
        assert_eq!(table.len(), Operation::ALL.len());
        for op in Operation::ALL {
            let (_, row) = table.iter().find(|(o, _)| *o == op).unwrap_or_else(|| panic!("no row for {op:?}"));
            for (principal, allowed) in [&staff, &other_staff, &site, &revoked, &national, &tokyo, &hokkaido].into_iter().zip(row) {
                let got = authorize(principal, op, &subject(op), today());
                match (allowed, &got) {
                    (true, Ok(())) | (false, Err(Error::PermissionDenied { .. })) => {}
                    _ => panic!("{} / {op:?}: expected allowed={allowed}, got {got:?}", principal.describe()),
                }
            }
        }
    }

    #[test]
    fn sites_see_only_todays_own_doses_and_staff_see_moved_in_residents() {
        let site = Principal::Site(account(false));
        let yesterday = Subject::Dose {
            owner: m("131016"),
            resident_municipality: Some(m("131016")),
            registered_by_site: SiteId::parse("venue-1").unwrap(),
            registered_on: today().pred_opt().unwrap(),
        };
        assert!(authorize(&site, ReadDose, &yesterday, today()).is_err());
        let others = Subject::Dose {
            owner: m("131016"),
            resident_municipality: None,
            registered_by_site: SiteId::parse("clinic-9").unwrap(),
            registered_on: today(),
        };
        assert!(authorize(&site, CorrectDose, &others, today()).is_err());
        // A dose issued by 千代田区 but matched to a resident of 新宿区 (moved in).
        let moved = Subject::Dose {
            owner: m("131016"),
            resident_municipality: Some(m("131041")),
            registered_by_site: SiteId::parse("venue-1").unwrap(),
            registered_on: today(),
        };
        let shinjuku = Principal::Staff { municipality: m("131041"), user: "b".into() };
        assert!(authorize(&shinjuku, ReadDose, &moved, today()).is_ok());
        let osaka = Principal::Staff { municipality: m("271004"), user: "c".into() };
        assert!(matches!(authorize(&osaka, ReadDose, &moved, today()), Err(Error::PermissionDenied { .. })));
        // Staff read only their own municipality's statistics.
        let other_stats = Subject::Statistics { prefecture: Some(13), municipality: Some(m("131041")) };
        let chiyoda = Principal::Staff { municipality: m("131016"), user: "a".into() };
        assert!(authorize(&chiyoda, ReadStatistics, &other_stats, today()).is_err());
    }
}

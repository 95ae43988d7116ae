//! Tablet account secrets: issuing an account yields a secret shown once; stores keep
//! only its salted slow hash (Argon2id, as a PHC string); a tablet signs in with its
//! account id and secret ([`Registry::authenticate`]) and gets the [`Actor`] it acts as.
//!
//! The core stays pure: it reads no random source. The secret's and the salt's bytes come
//! from an [`Entropy`] the frontend hands in (the operating system's generator); hashing
//! and verifying are plain computation.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{Actor, Operation, Principal, Site, Subject, TabletAccount, authorize};
use crate::ids::{AccountId, MunicipalityCode};
use crate::service::Registry;
use crate::store::{AuditEvent, ChangeSet};
use crate::{Error, Result};

/// Random bytes in a secret: 128 bits, far beyond online guessing.
pub const SECRET_BYTES: usize = 16;
/// Random bytes in a salt (the PHC recommendation).
pub const SALT_BYTES: usize = 16;

/// A source of random bytes, given by the frontend (the core never reads one itself).
pub trait Entropy: Send {
    /// Fills `out` with unpredictable bytes.
    fn fill(&mut self, out: &mut [u8]) -> Result<()>;
}

/// A secret just issued: shown to the issuing staff once, never stored, never printed by
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedSecret(String);

impl IssuedSecret {
    /// The secret's text, to hand to the tablet (32 lowercase hex digits).
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuedSecret(<redacted>)")
    }
}

/// What a store keeps of an account's secret: its Argon2id hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHash {
    /// The account.
    pub account: AccountId,
    /// The municipality of the account's site (the leading key, as for every table).
    pub municipality: MunicipalityCode,
    /// The PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    pub phc: String,
    /// When it was set. A hash set before the account was (re)issued is stale: re-issuing a
    /// revoked account id never brings an old secret back.
    #[serde(with = "crate::clock::serde_instant")]
    pub set_at: DateTime<Utc>,
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not the secret, but it can be attacked offline: keep it out of logs.
        f.debug_struct("SecretHash")
            .field("account", &self.account)
            .field("municipality", &self.municipality)
            .field("phc", &"<redacted>")
            .field("set_at", &self.set_at)
            .finish()
    }
}

/// An account issued with its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedAccount {
    /// The account as stored.
    pub account: TabletAccount,
    /// Its secret, to show once.
    pub secret: IssuedSecret,
}

/// The cost of the hash: OWASP's Argon2id minimum (19 MiB, 2 passes, 1 lane), the
/// argon2 crate's default.
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// The Argon2id hash of `secret` with `salt`, as a PHC string.
pub fn hash_secret(secret: &str, salt: &[u8; SALT_BYTES]) -> Result<String> {
    let salt = SaltString::encode_b64(salt).map_err(|e| Error::Invalid { field: "salt", value: String::new(), reason: e.to_string() })?;
    hasher().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| Error::Invalid {
        field: "secret",
        value: "(redacted)".into(),
        reason: e.to_string(),
    })
}

/// Whether `secret` matches the stored `phc` (compared in constant time by the argon2
/// crate). Only Argon2id hashes are accepted: a stored hash of a weaker kind is refused.
pub fn verify_secret(secret: &str, phc: &str) -> Result<bool> {
    let parsed =
        PasswordHash::new(phc).map_err(|e| Error::Storage { message: format!("a stored secret hash is malformed: {e}"), source: None })?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(Error::Storage { message: format!("a stored secret hash is {}, not argon2id", parsed.algorithm), source: None });
    }
    Ok(hasher().verify_password(secret.trim().as_bytes(), &parsed).is_ok())
}

/// A new secret and its hash for `account`, from `entropy`.
pub fn new_secret(entropy: &mut dyn Entropy, account: &TabletAccount, now: DateTime<Utc>) -> Result<(IssuedSecret, SecretHash)> {
    let mut bytes = [0u8; SECRET_BYTES];
    entropy.fill(&mut bytes)?;
    let mut salt = [0u8; SALT_BYTES];
    entropy.fill(&mut salt)?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let phc = hash_secret(&text, &salt)?;
    let hash = SecretHash { account: account.id.clone(), municipality: account.site.municipality, phc, set_at: now };
    Ok((IssuedSecret(text), hash))
}

/// The one answer to every failed sign-in, so that a caller learns nothing about which
/// accounts exist.
fn sign_in_refused(id: &AccountId, reason: &str) -> Error {
    Error::PermissionDenied { actor: format!("site account {id}"), operation: Operation::SignIn, reason: reason.into() }
}

impl Registry {
    /// Issues a tablet account to a site in the staff's municipality together with its
    /// secret, in one change set. The secret is returned once; only its hash is stored.
    pub async fn issue_account_with_secret(
        &self,
        actor: &Actor,
        site: Site,
        id: AccountId,
        entropy: &mut dyn Entropy,
    ) -> Result<IssuedAccount> {
        let (account, mut cs) = self.account_issue(actor, site, id).await?;
        let (secret, hash) = new_secret(entropy, &account, account.issued_at)?;
        cs.account_secrets.push(hash);
        self.store().apply(vec![cs]).await?;
        Ok(IssuedAccount { account, secret })
    }

    /// Gives an active account a new secret (the old one stops working at once): for a
    /// secret that was lost or seen. Staff of the site's municipality only.
    pub async fn renew_account_secret(&self, actor: &Actor, id: &AccountId, entropy: &mut dyn Entropy) -> Result<IssuedSecret> {
        let Some(account) = self.store().account(id).await? else {
            return Err(Error::NotFound { what: format!("account {id}") });
        };
        let principal = self.check(actor, Operation::IssueAccount, &Subject::Site { municipality: account.site.municipality }).await?;
        if account.revoked_at.is_some() {
            return Err(Error::Invalid {
                field: "account",
                value: id.to_string(),
                reason: "the account is revoked; issue a new one".into(),
            });
        }
        let now = self.now();
        let (secret, hash) = new_secret(entropy, &account, now)?;
        let audit = AuditEvent {
            at: now,
            municipality: account.site.municipality,
            actor: principal.describe(),
            action: "renew_account_secret".into(),
            dose: None,
            detail: format!("account {id}"),
        };
        self.store().apply(vec![ChangeSet { account_secrets: vec![hash], audit: vec![audit], ..ChangeSet::default() }]).await?;
        Ok(secret)
    }

    /// Signs a tablet in: the account id and its secret give the [`Actor`] to act as. Fails
    /// with [`Error::PermissionDenied`] for an unknown account, a wrong or stale secret and
    /// a revoked account alike (the reason differs only for a revoked account, whose tablet
    /// must be told to stop). Every later call as that actor is checked again against the
    /// store, so a revocation is effective on the next call of a session already open.
    pub async fn authenticate(&self, id: &AccountId, secret: &str) -> Result<Actor> {
        const REFUSED: &str = "unknown account or wrong secret";
        // Without an account or a hash the same hashing work is done, so that the time an
        // answer takes does not tell which accounts exist.
        let refuse = || {
            std::hint::black_box(hash_secret(secret, &[0; SALT_BYTES]).ok());
            sign_in_refused(id, REFUSED)
        };
        let Some(account) = self.store().account(id).await? else {
            return Err(refuse());
        };
        let Some(hash) = self.store().account_secret(id).await? else {
            return Err(refuse());
        };
        if hash.account != account.id || hash.set_at < account.issued_at || !verify_secret(secret, &hash.phc)? {
            return Err(sign_in_refused(id, REFUSED));
        }
        authorize(&Principal::Site(account), Operation::SignIn, &Subject::NewDose, crate::clock::jst_date(self.now()))?;
        Ok(Actor::Site { account: id.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes: a test's entropy.
    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, out: &mut [u8]) -> Result<()> {
            for b in out {
                self.0 = self.0.wrapping_add(37);
                *b = self.0;
            }
            Ok(())
        }
    }

    #[test]
    fn hashes_are_salted_argon2id_and_verify_only_their_secret() {
        let a = hash_secret("0123456789abcdef0123456789abcdef", &[1; SALT_BYTES]).unwrap();
        let b = hash_secret("0123456789abcdef0123456789abcdef", &[2; SALT_BYTES]).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "the salt changes the hash");
        assert!(!a.contains("0123456789abcdef"));
        assert!(verify_secret("0123456789abcdef0123456789abcdef", &a).unwrap());
        assert!(verify_secret(" 0123456789abcdef0123456789abcdef\n", &a).unwrap());
        assert!(!verify_secret("0123456789abcdef0123456789abcdee", &a).unwrap());
        assert!(!verify_secret("", &a).unwrap());
        // A weaker algorithm in the store is refused, not trusted.
        let argon2i = a.replacen("$argon2id$", "$argon2i$", 1);
        assert!(verify_secret("0123456789abcdef0123456789abcdef", &argon2i).is_err());
        assert!(verify_secret("x", "not a phc string").is_err());
    }

    #[test]
    fn new_secrets_come_from_the_given_entropy_and_hide_in_debug() {
        let account = TabletAccount {
            id: AccountId::parse("tab-1").unwrap(),
            site: Site {
                id: crate::ids::SiteId::parse("venue-1").unwrap(),
                name: "区民会館".into(),
                municipality: MunicipalityCode::parse("131016").unwrap(),
            },
            issued_by: "staff".into(),
            issued_at: DateTime::<Utc>::default(),
            revoked_at: None,
        };
        let (s1, h1) = new_secret(&mut Counter(0), &account, DateTime::<Utc>::default()).unwrap();
        let (s2, h2) = new_secret(&mut Counter(1), &account, DateTime::<Utc>::default()).unwrap();
        assert_eq!(s1.reveal().len(), 2 * SECRET_BYTES);
        assert_ne!(s1, s2);
        assert!(verify_secret(s1.reveal(), &h1.phc).unwrap());
        assert!(!verify_secret(s1.reveal(), &h2.phc).unwrap());
        assert!(!format!("{s1:?}").contains(s1.reveal()));
        assert!(!format!("{h1:?}").contains(&h1.phc));
    }
}

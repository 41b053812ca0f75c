//! Console accounts: who may sign in, with which roles, and their
//! password hashes (argon2id, PHC strings).
//!
//! Accounts live in the knowledge base's point store (a payload-only
//! collection `accounts`), like the turn log and the forms: in the data
//! directory on the embedded default, on the Qdrant cluster in server mode.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use kb::store::{CollectionSpec, Filter, NewPoint, PointStore, StoreError, scroll_all, to_payload};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

const ACCOUNTS: &str = "accounts";
/// Shorter passwords are refused.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writes and revises entries, submits them for review.
    Editor,
    /// Approves or rejects others' entries, retires published ones.
    Reviewer,
    /// Follows demand listings (一单一策).
    Staff,
    /// Everything, including accounts.
    Admin,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 4] = [Self::Editor, Self::Reviewer, Self::Staff, Self::Admin];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Editor => "editor",
            Self::Reviewer => "reviewer",
            Self::Staff => "staff",
            Self::Admin => "admin",
        }
    }

    /// The Chinese name, as shown.
    pub fn label(self) -> &'static str {
        match self {
            Self::Editor => "编辑",
            Self::Reviewer => "审核",
            Self::Staff => "服务专员",
            Self::Admin => "管理员",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == name.trim())
    }
}

/// One console user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The sign-in name (also the actor recorded in entries' history).
    pub username: String,
    /// The name shown.
    pub display_name: String,
    /// What they may do.
    pub roles: Vec<Role>,
    /// The argon2id hash, as a PHC string.
    pub password_hash: String,
    /// A disabled account cannot sign in.
    #[serde(default)]
    pub disabled: bool,
    /// When the account was created, Unix seconds.
    pub created_at: i64,
}

impl Account {
    /// Whether the account has the role; admins have every role.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin) || self.roles.contains(&role)
    }
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The username is empty or has characters other than letters, digits,
    /// `.`, `_`, `-`.
    #[error("用户名只能由字母、数字、点、下划线和连字符组成，且不能为空")]
    InvalidUsername,
    /// The password is too short.
    #[error("密码至少 {MIN_PASSWORD_CHARS} 个字符")]
    WeakPassword,
    /// An account needs at least one role.
    #[error("至少要有一个角色")]
    NoRole,
    /// The username is taken.
    #[error("用户名 {0} 已存在")]
    Exists(String),
    /// Hashing failed (never expected).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A stored account could not be read back.
    #[error("corrupt account record {0}")]
    Corrupt(String),
}

fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn account_id(username: &str) -> Uuid {
    kb::listing::listing_id("account", &username.to_ascii_lowercase())
}

/// Hashes a password with argon2id and a fresh salt. Slow on purpose (tens
/// of milliseconds): call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether the password matches the PHC hash. Slow on purpose: call it off
/// the async threads.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// What a new account needs.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The sign-in name.
    pub username: String,
    /// The name shown; the username when empty.
    pub display_name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Its password, in clear (hashed before it is stored).
    pub password: String,
}

/// The accounts collection.
#[derive(Clone)]
pub struct AccountStore {
    store: Arc<dyn PointStore>,
}

impl AccountStore {
    /// Opens the collection, creating it if missing.
    pub async fn open(store: Arc<dyn PointStore>) -> Result<Self, StoreError> {
        store
            .ensure_collection(&CollectionSpec {
                keyword_fields: vec!["username"],
                ..CollectionSpec::payload_only(ACCOUNTS)
            })
            .await?;
        Ok(Self { store })
    }

    /// The account of a username (case-insensitive), if any.
    pub async fn get(&self, username: &str) -> Result<Option<Account>, AccountError> {
        if !valid_username(username) {
            return Ok(None);
        }
        let Some(record) = self
            .store
            .get(ACCOUNTS, vec![account_id(username)])
            .await?
            .pop()
        else {
            return Ok(None);
        };
        serde_json::from_value(serde_json::Value::Object(record.payload))
            .map(Some)
            .map_err(|_| AccountError::Corrupt(username.to_owned()))
    }

    /// Every account, by username.
    pub async fn list(&self) -> Result<Vec<Account>, AccountError> {
        let records = scroll_all(&*self.store, ACCOUNTS, Filter::default()).await?;
        let mut accounts: Vec<Account> = records
            .into_iter()
            .filter_map(|record| {
                serde_json::from_value(serde_json::Value::Object(record.payload)).ok()
            })
            .collect();
        accounts.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(accounts)
    }

    /// Creates an account; refuses a taken username.
    pub async fn create(&self, new: NewAccount) -> Result<Account, AccountError> {
        if !valid_username(&new.username) {
            return Err(AccountError::InvalidUsername);
        }
        if new.password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(AccountError::WeakPassword);
        }
        if new.roles.is_empty() {
            return Err(AccountError::NoRole);
        }
        if self.get(&new.username).await?.is_some() {
            return Err(AccountError::Exists(new.username));
        }
        let password = new.password;
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))??;
        let mut roles = new.roles;
        roles.sort_by_key(|role| Role::ALL.iter().position(|r| r == role));
        roles.dedup();
        let account = Account {
            display_name: if new.display_name.trim().is_empty() {
                new.username.clone()
            } else {
                new.display_name.trim().to_owned()
            },
            username: new.username,
            roles,
            password_hash,
            disabled: false,
            created_at: OffsetDateTime::now_utc().unix_timestamp(),
        };
        self.store
            .upsert(
                ACCOUNTS,
                vec![NewPoint {
                    id: account_id(&account.username),
                    dense: None,
                    lexical: None,
                    payload: to_payload(&account),
                }],
            )
            .await?;
        Ok(account)
    }

    /// The account if the password is right and the account enabled. The
    /// hash is checked even for unknown users, so timing does not tell
    /// which usernames exist.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Account>, AccountError> {
        let account = self.get(username).await?;
        let hash = account
            .as_ref()
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        Ok(account.filter(|a| matches && !a.disabled))
    }
}

/// A valid argon2id hash of a random password, verified against when the
/// username is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zk3nNuX2rZVb3Tbm3Qb4r0nX0yZ5yWmFv3v0a7m0B9Q";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(!verify_password("anything", DUMMY_HASH));
    }

    #[test]
    fn admins_have_every_role() {
        let account = |roles: Vec<Role>| Account {
            username: "a".into(),
            display_name: "a".into(),
            roles,
            password_hash: String::new(),
            disabled: false,
            created_at: 0,
        };
        assert!(account(vec![Role::Admin]).has(Role::Reviewer));
        assert!(account(vec![Role::Editor]).has(Role::Editor));
        assert!(!account(vec![Role::Editor]).has(Role::Reviewer));
    }

    #[test]
    fn usernames_are_plain_ascii_names() {
        for good in ["zhang.san", "li_si-2", "A1"] {
            assert!(valid_username(good), "{good}");
        }
        for bad in ["", "张三", "a b", "a/b", &"x".repeat(65)] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}

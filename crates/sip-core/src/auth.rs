//! HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), `qop=auth` only.
//!
//! Sans-IO like the rest of the core: the caller passes `now` and the parsed request; this module
//! answers with challenge headers or an [`AuthOutcome`]. It never reads a clock.
//!
//! # How it is meant to be driven
//! 1. A request arrives that needs credentials (REGISTER, or INVITE from an agent).
//! 2. Call [`Authenticator::verify`]. On [`AuthOutcome::Authenticated`] go on.
//! 3. On `Missing`, `Failed` or `Stale`, answer 401 (or 407 for a proxy challenge) carrying the
//!    headers of [`Authenticator::challenge`], with `stale = outcome.is_stale()`. Pick the algorithms
//!    with [`CredentialStore::algorithms_for`], keyed by the claimed user (see
//!    [`Authenticator::claimed_username`]); an unknown user gets the store's default list, so a
//!    wrong password and an unknown user produce the same answer.
//!
//! # Interop
//! Which algorithms are offered, and in which order, is per account (DESIGN.md §6): SIPp 3.6 aborts when
//! the *first* challenge is SHA-256, and baresip 1.0 cannot register when *any* SHA-256 challenge is
//! present. The default list is therefore chosen by the caller, with `[Md5]` as the safe default.
//!
//! # Nonces
//! Nonces are stateless: `hex(issued_ms ‖ salt ‖ HMAC-SHA256(secret, issued_ms ‖ salt)[..16])`.
//! Only the nonce-count replay guard keeps state, in a bounded table (see [`AuthConfig`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use md5::Md5;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rsip::headers::UntypedHeader;
use sha2::{Digest, Sha256};

use crate::time::Instant;

/// A digest hash algorithm we can challenge with. The `-sess` variants are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `MD5`: what every deployed SIP phone speaks.
    Md5,
    /// `SHA-256` (RFC 8760): stronger, but breaks several clients when offered (DESIGN.md §6).
    Sha256,
}

impl DigestAlgorithm {
    /// The token used in the `algorithm` parameter.
    pub const fn wire_name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm` token, case-insensitively. `-sess` variants are not supported.
    pub fn from_wire(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if token.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }

    /// Length of a hex-encoded hash of this algorithm, used to validate configured HA1 values.
    pub const fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Md5 => 32,
            DigestAlgorithm::Sha256 => 64,
        }
    }

    /// Lower-case hex of `H(parts[0] ":" parts[1] ":" ...)`, the only hash shape digest uses.
    fn hash_joined(self, parts: &[&[u8]]) -> String {
        fn feed<D: Digest>(mut d: D, parts: &[&[u8]]) -> String {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex::encode(d.finalize())
        }
        match self {
            DigestAlgorithm::Md5 => feed(Md5::new(), parts),
            DigestAlgorithm::Sha256 => feed(Sha256::new(), parts),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

/// `HA1 = H(user:realm:password)`, for tools that generate account files. The daemon stores only this
/// value, never the password.
pub fn ha1(algorithm: DigestAlgorithm, user: &str, realm: &str, password: &str) -> String {
    algorithm.hash_joined(&[user.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The `qop=auth` request digest: `H(HA1:nonce:nc:cnonce:qop:H(method:uri))`.
///
/// Public so that tools and tests can act as a client; the server side goes through
/// [`Authenticator::verify`].
#[allow(clippy::too_many_arguments)]
pub fn request_digest(
    algorithm: DigestAlgorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = algorithm.hash_joined(&[method.as_bytes(), uri.as_bytes()]);
    algorithm.hash_joined(&[
        ha1.as_bytes(),
        nonce.as_bytes(),
        nc.as_bytes(),
        cnonce.as_bytes(),
        qop.as_bytes(),
        ha2.as_bytes(),
    ])
}

/// Why an account or store could not be built from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// An HA1 is not lower/upper-case hex of the algorithm's length.
    #[error("HA1 for {algorithm} must be {expected} hex digits")]
    BadHa1 {
        algorithm: DigestAlgorithm,
        expected: usize,
    },
    /// An algorithm list is empty: nobody could ever authenticate.
    #[error("the list of offered digest algorithms is empty")]
    NoAlgorithms,
    /// An algorithm is listed twice, which would duplicate challenges.
    #[error("digest algorithm {0} is listed twice")]
    DuplicateAlgorithm(DigestAlgorithm),
}

fn check_algorithm_list(list: &[DigestAlgorithm]) -> Result<(), AccountError> {
    if list.is_empty() {
        return Err(AccountError::NoAlgorithms);
    }
    for (i, a) in list.iter().enumerate() {
        if list[..i].contains(a) {
            return Err(AccountError::DuplicateAlgorithm(*a));
        }
    }
    Ok(())
}

/// Credentials of one SIP account: the realm and one HA1 per algorithm, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    realm: String,
    ha1_md5: Option<String>,
    ha1_sha256: Option<String>,
    algorithms: Vec<DigestAlgorithm>,
}

impl Account {
    /// An account offered `algorithms`, in that order, without any HA1 yet: add them with
    /// [`Account::with_ha1`]. Algorithms without an HA1 are never offered.
    pub fn new(
        realm: impl Into<String>,
        algorithms: Vec<DigestAlgorithm>,
    ) -> Result<Self, AccountError> {
        check_algorithm_list(&algorithms)?;
        Ok(Account {
            realm: realm.into(),
            ha1_md5: None,
            ha1_sha256: None,
            algorithms,
        })
    }

    /// Builds an account from a clear-text password, hashing it for each listed algorithm. For tools
    /// and tests; the daemon's account file holds HA1 values.
    pub fn from_password(
        user: &str,
        realm: impl Into<String>,
        password: &str,
        algorithms: Vec<DigestAlgorithm>,
    ) -> Result<Self, AccountError> {
        check_algorithm_list(&algorithms)?;
        Ok(Account::hashed(user, realm.into(), password, algorithms))
    }

    /// Hashes `password` for each algorithm; the list must already be validated.
    fn hashed(user: &str, realm: String, password: &str, algorithms: Vec<DigestAlgorithm>) -> Self {
        let mut account = Account {
            realm,
            ha1_md5: None,
            ha1_sha256: None,
            algorithms,
        };
        for alg in account.algorithms.clone() {
            let h = ha1(alg, user, &account.realm, password);
            account.set_ha1(alg, h);
        }
        account
    }

    /// Adds the HA1 for `algorithm` (hex, as produced by [`ha1`]).
    pub fn with_ha1(
        mut self,
        algorithm: DigestAlgorithm,
        ha1_hex: &str,
    ) -> Result<Self, AccountError> {
        if ha1_hex.len() != algorithm.hex_len() || !ha1_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AccountError::BadHa1 {
                algorithm,
                expected: algorithm.hex_len(),
            });
        }
        self.set_ha1(algorithm, ha1_hex.to_ascii_lowercase());
        Ok(self)
    }

    fn set_ha1(&mut self, algorithm: DigestAlgorithm, value: String) {
        match algorithm {
            DigestAlgorithm::Md5 => self.ha1_md5 = Some(value),
            DigestAlgorithm::Sha256 => self.ha1_sha256 = Some(value),
        }
    }

    /// The realm the HA1 values were computed for.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The stored HA1 for `algorithm`, lower-case hex.
    pub fn ha1(&self, algorithm: DigestAlgorithm) -> Option<&str> {
        match algorithm {
            DigestAlgorithm::Md5 => self.ha1_md5.as_deref(),
            DigestAlgorithm::Sha256 => self.ha1_sha256.as_deref(),
        }
    }

    /// The configured order of algorithms, including any without an HA1.
    pub fn configured_algorithms(&self) -> &[DigestAlgorithm] {
        &self.algorithms
    }

    /// The algorithms actually offered, in order: configured and backed by an HA1. A response
    /// with any other algorithm is refused, so a client cannot pick one we did not offer.
    pub fn offered_algorithms(&self) -> impl Iterator<Item = DigestAlgorithm> + '_ {
        self.algorithms
            .iter()
            .copied()
            .filter(|a| self.ha1(*a).is_some())
    }
}

/// The accounts known to the switchboard, plus the algorithm list for users it does not know.
///
/// Kept apart from [`Authenticator`] so the daemon can swap a reloaded store while the nonce
/// state lives on.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    default_algorithms: Vec<DigestAlgorithm>,
    accounts: HashMap<String, Account>,
}

impl Default for CredentialStore {
    /// An empty store challenging with MD5 only, which every client handles.
    fn default() -> Self {
        CredentialStore {
            default_algorithms: vec![DigestAlgorithm::Md5],
            accounts: HashMap::new(),
        }
    }
}

impl CredentialStore {
    /// An empty store; `default_algorithms` is what unknown users are challenged with, and what
    /// [`CredentialStore::add_password`] gives new accounts.
    pub fn new(default_algorithms: Vec<DigestAlgorithm>) -> Result<Self, AccountError> {
        check_algorithm_list(&default_algorithms)?;
        Ok(CredentialStore {
            default_algorithms,
            accounts: HashMap::new(),
        })
    }

    /// The list unknown users are challenged with.
    pub fn default_algorithms(&self) -> &[DigestAlgorithm] {
        &self.default_algorithms
    }

    /// Adds or replaces an account, returning the old one.
    pub fn insert(&mut self, user: impl Into<String>, account: Account) -> Option<Account> {
        self.accounts.insert(user.into(), account)
    }

    /// Convenience for tests and tools: an account with the default algorithm list.
    pub fn add_password(&mut self, user: &str, realm: &str, password: &str) -> Option<Account> {
        // The default list was validated when the store was built.
        let account = Account::hashed(
            user,
            realm.to_owned(),
            password,
            self.default_algorithms.clone(),
        );
        self.insert(user, account)
    }

    /// Removes an account.
    pub fn remove(&mut self, user: &str) -> Option<Account> {
        self.accounts.remove(user)
    }

    /// The account of `user`, for [`Authenticator::verify`]'s lookup.
    pub fn get(&self, user: &str) -> Option<&Account> {
        self.accounts.get(user)
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// True if there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The algorithms to challenge `user` with, in order. Unknown (or absent) users get the default
    /// list, so the challenge does not tell whether the user exists — as long as accounts keep the
    /// default list and have an HA1 for each of its algorithms. An account with its own list is
    /// distinguishable by design (that is the point of the list).
    pub fn algorithms_for(&self, user: Option<&str>) -> Vec<DigestAlgorithm> {
        match user.and_then(|u| self.accounts.get(u)) {
            Some(account) => {
                let offered: Vec<_> = account.offered_algorithms().collect();
                if offered.is_empty() {
                    self.default_algorithms.clone()
                } else {
                    offered
                }
            }
            None => self.default_algorithms.clone(),
        }
    }
}

/// Which header pair carries the challenge: a registrar/UAS uses 401 + `WWW-Authenticate` and reads
/// `Authorization`; a proxy uses 407 + `Proxy-Authenticate` and reads `Proxy-Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401 Unauthorized, `WWW-Authenticate` / `Authorization`.
    Www,
    /// 407 Proxy Authentication Required, `Proxy-Authenticate` / `Proxy-Authorization`.
    Proxy,
}

impl ChallengeKind {
    /// The status code to send the challenge with.
    pub const fn status_code(self) -> u16 {
        match self {
            ChallengeKind::Www => 401,
            ChallengeKind::Proxy => 407,
        }
    }
}

/// Settings of an [`Authenticator`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Realm put in challenges and required in credentials, e.g. the SIP domain.
    pub realm: String,
    /// How long a nonce is accepted after it was issued; after that the client gets `stale=true`
    /// and retries without asking its user. Clients reuse a nonce for later requests, so this
    /// trades replay exposure against extra 401 round trips.
    pub nonce_lifetime: Duration,
    /// Upper bound on the nonce-count table. When full, the nonce issued earliest is forgotten and
    /// every unknown nonce issued no later than it is treated as stale, so forgetting never
    /// re-opens a replay.
    pub max_tracked_nonces: usize,
    /// Which header pair to use.
    pub kind: ChallengeKind,
}

impl AuthConfig {
    /// A registrar configuration: 401, nonces valid 300 s, 65 536 tracked nonces.
    pub fn registrar(realm: impl Into<String>) -> Self {
        AuthConfig {
            realm: realm.into(),
            nonce_lifetime: Duration::from_secs(300),
            max_tracked_nonces: 65_536,
            kind: ChallengeKind::Www,
        }
    }
}

/// Why a request's nonce was refused although its digest was right. The client knows the password,
/// so it gets `stale=true` and simply retries with a fresh nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StaleReason {
    /// The nonce is older than the configured lifetime.
    #[error("nonce expired")]
    Expired,
    /// The nonce was not issued by this process (bad MAC, bad shape, or issued "in the future",
    /// as after a restart).
    #[error("nonce not issued by this process")]
    NotOurs,
    /// The nonce-count was not higher than one already seen: a replay, or requests reordered.
    #[error("nonce-count replayed")]
    Replayed,
    /// The nonce's use history was dropped to keep the table bounded.
    #[error("nonce history no longer tracked")]
    Forgotten,
}

/// Why credentials were refused. For logs only: every variant must lead to the same SIP answer,
/// so a caller cannot tell an unknown user from a wrong password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    /// The credentials header could not be parsed.
    #[error("malformed credentials: {0}")]
    Malformed(#[from] CredentialsError),
    /// The `algorithm` is not one we know (e.g. a `-sess` variant).
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// The algorithm is known but was not offered to this account (downgrade attempt or config drift).
    #[error("digest algorithm {0} not offered to this account")]
    AlgorithmNotOffered(DigestAlgorithm),
    /// `userhash=true` (RFC 7616 §3.4.4): we never offer it.
    #[error("hashed usernames are not supported")]
    UserhashUnsupported,
    /// `qop` missing or not `auth`; without it there is no nonce-count to guard replays.
    #[error("qop must be auth")]
    UnsupportedQop,
    /// `nc` or `cnonce` missing or malformed.
    #[error("bad nonce-count or cnonce")]
    BadNonceCount,
    /// The digest `uri` is not the Request-URI: the credentials were made for another request.
    #[error("digest uri does not match the request-uri")]
    UriMismatch,
    /// The user has no account here.
    #[error("unknown user")]
    UnknownUser,
    /// The account's realm differs from the challenge realm (configuration error).
    #[error("account realm differs from the challenge realm")]
    AccountRealmMismatch,
    /// The digest does not match: wrong password, or a tampered parameter.
    #[error("digest response mismatch")]
    BadResponse,
}

/// The result of [`Authenticator::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The request carries valid credentials for `user`.
    Authenticated {
        /// The digest username, i.e. the account name.
        user: String,
        /// The algorithm the client used.
        algorithm: DigestAlgorithm,
    },
    /// No credentials for our realm: challenge.
    Missing,
    /// Right password, unusable nonce: challenge with `stale=true`.
    Stale {
        /// For logs.
        reason: StaleReason,
    },
    /// Refused: challenge again (not stale).
    Failed {
        /// For logs only; never put it in the SIP response.
        reason: FailReason,
    },
}

impl AuthOutcome {
    /// Whether the next challenge should carry `stale=true`.
    pub fn is_stale(&self) -> bool {
        matches!(self, AuthOutcome::Stale { .. })
    }
}

/// Why an `Authorization` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The scheme is not `Digest`.
    #[error("scheme is not Digest")]
    NotDigest,
    /// A parameter is not `name=value`.
    #[error("expected name=value at byte {at}")]
    Syntax {
        /// Byte offset in the header value.
        at: usize,
    },
    /// A quoted string is not closed.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// A parameter appears twice, which would make the digest ambiguous.
    #[error("parameter {name} given twice")]
    DuplicateParam {
        /// Lower-cased parameter name.
        name: String,
    },
    /// A required parameter is absent.
    #[error("missing parameter {name}")]
    MissingParam {
        /// Parameter name.
        name: &'static str,
    },
}

/// The parameters of a `Digest` credentials header. Names are matched case-insensitively;
/// values are unquoted and unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestCredentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri` (the digest-uri).
    pub uri: String,
    /// `response`.
    pub response: String,
    /// `algorithm` token as sent; `None` means MD5.
    pub algorithm: Option<String>,
    /// `qop`.
    pub qop: Option<String>,
    /// `nc`, 8 hex digits as sent.
    pub nc: Option<String>,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `opaque`, echoed by clients; we do not send one.
    pub opaque: Option<String>,
    /// `userhash` (RFC 7616); we do not support hashed usernames.
    pub userhash: bool,
}

impl DigestCredentials {
    /// Parses `Digest name=value, name="quoted, value", ...`. Unknown parameters are ignored;
    /// duplicates are refused.
    pub fn parse(value: &str) -> Result<Self, CredentialsError> {
        let bytes = value.as_bytes();
        let mut i = skip_ws(bytes, 0);
        let scheme_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if !value[scheme_start..i].eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut creds = DigestCredentials::default();
        let mut seen: Vec<String> = Vec::with_capacity(10);
        loop {
            i = skip_ws(bytes, i);
            // Tolerate empty list elements ("a=b,,c=d"), as RFC 7230 #rule allows.
            while i < bytes.len() && bytes[i] == b',' {
                i = skip_ws(bytes, i + 1);
            }
            if i >= bytes.len() {
                break;
            }
            let name_start = i;
            while i < bytes.len() && is_token_byte(bytes[i]) {
                i += 1;
            }
            if i == name_start {
                return Err(CredentialsError::Syntax { at: i });
            }
            let name = value[name_start..i].to_ascii_lowercase();
            i = skip_ws(bytes, i);
            if i >= bytes.len() || bytes[i] != b'=' {
                return Err(CredentialsError::Syntax { at: i });
            }
            i = skip_ws(bytes, i + 1);
            let param_value;
            if i < bytes.len() && bytes[i] == b'"' {
                let (v, next) = parse_quoted(value, i)?;
                param_value = v;
                i = next;
            } else {
                let start = i;
                while i < bytes.len() && bytes[i] != b',' && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i == start {
                    return Err(CredentialsError::Syntax { at: i });
                }
                param_value = value[start..i].to_owned();
            }
            i = skip_ws(bytes, i);
            if i < bytes.len() && bytes[i] != b',' {
                return Err(CredentialsError::Syntax { at: i });
            }
            if seen.contains(&name) {
                return Err(CredentialsError::DuplicateParam { name });
            }
            match name.as_str() {
                "username" => creds.username = param_value,
                "realm" => creds.realm = param_value,
                "nonce" => creds.nonce = param_value,
                "uri" => creds.uri = param_value,
                "response" => creds.response = param_value,
                "algorithm" => creds.algorithm = Some(param_value),
                "qop" => creds.qop = Some(param_value),
                "nc" => creds.nc = Some(param_value),
                "cnonce" => creds.cnonce = Some(param_value),
                "opaque" => creds.opaque = Some(param_value),
                "userhash" => creds.userhash = param_value.eq_ignore_ascii_case("true"),
                _ => {}
            }
            seen.push(name);
        }
        for required in ["username", "realm", "nonce", "uri", "response"] {
            if !seen.iter().any(|s| s == required) {
                return Err(CredentialsError::MissingParam { name: required });
            }
        }
        Ok(creds)
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Parses a quoted-string starting at `start` (the opening quote); returns the unescaped content
/// and the index after the closing quote.
fn parse_quoted(value: &str, start: usize) -> Result<(String, usize), CredentialsError> {
    let bytes = value.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut chunk = i;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                out.push_str(&value[chunk..i]);
                return Ok((out, i + 1));
            }
            b'\\' if i + 1 < bytes.len() => {
                out.push_str(&value[chunk..i]);
                // The escaped character may be multi-byte UTF-8; copy it whole.
                let ch_len = value[i + 1..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&value[i + 1..i + 1 + ch_len]);
                i += 1 + ch_len;
                chunk = i;
            }
            _ => i += 1,
        }
    }
    Err(CredentialsError::UnterminatedQuote)
}

/// Writes `s` as a quoted-string, escaping `"` and `\`.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// HMAC-SHA256 (RFC 2104) over the concatenation of `parts`. Small enough to keep here rather than
/// add a crate.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let mut inner = Sha256::new();
    inner.update(ipad);
    for p in parts {
        inner.update(p);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(opad);
    outer.update(inner);
    outer.finalize().into()
}

/// Equality that does not stop at the first difference, so response checks leak no timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bytes of a decoded nonce: issued-at (8, big-endian ms) + salt (8) + truncated MAC (16).
const NONCE_LEN: usize = 32;
const NONCE_MAC_LEN: usize = 16;

/// The part of a nonce that identifies it in the nonce-count table.
type NonceKey = [u8; 16];

/// A nonce whose MAC checked out.
struct ValidNonce {
    key: NonceKey,
    issued_ms: u64,
}

/// Highest nonce-count seen per nonce, bounded. Ordered by issue time so expired entries and the
/// oldest entry can be dropped cheaply.
#[derive(Debug)]
struct NonceCounts {
    highest_nc: HashMap<NonceKey, u32>,
    by_issue: BTreeSet<(u64, NonceKey)>,
    /// Nonces issued at or before this time and not in the table were forgotten: refuse them.
    forgotten_upto_ms: Option<u64>,
    capacity: usize,
}

impl NonceCounts {
    fn new(capacity: usize) -> Self {
        NonceCounts {
            highest_nc: HashMap::new(),
            by_issue: BTreeSet::new(),
            forgotten_upto_ms: None,
            capacity: capacity.max(1),
        }
    }

    /// Drops entries of nonces that are expired anyway (the expiry check refuses them first).
    fn prune(&mut self, now_ms: u64, lifetime_ms: u64) {
        while let Some(&(issued, key)) = self.by_issue.first() {
            if issued.saturating_add(lifetime_ms) > now_ms {
                break;
            }
            self.by_issue.remove(&(issued, key));
            self.highest_nc.remove(&key);
        }
    }

    /// Records `nc` for the nonce if it is higher than any seen before.
    fn check_and_record(&mut self, nonce: &ValidNonce, nc: u32) -> Result<(), StaleReason> {
        if let Some(seen) = self.highest_nc.get_mut(&nonce.key) {
            if nc <= *seen {
                return Err(StaleReason::Replayed);
            }
            *seen = nc;
            return Ok(());
        }
        if self
            .forgotten_upto_ms
            .is_some_and(|upto| nonce.issued_ms <= upto)
        {
            return Err(StaleReason::Forgotten);
        }
        while self.highest_nc.len() >= self.capacity {
            let Some((issued, key)) = self.by_issue.pop_first() else {
                break;
            };
            self.highest_nc.remove(&key);
            self.forgotten_upto_ms = Some(self.forgotten_upto_ms.map_or(issued, |u| u.max(issued)));
        }
        self.highest_nc.insert(nonce.key, nc);
        self.by_issue.insert((nonce.issued_ms, nonce.key));
        Ok(())
    }

    fn len(&self) -> usize {
        self.highest_nc.len()
    }
}

/// Issues challenges and verifies digest credentials for one realm. Holds the nonce secret and the
/// nonce-count table; one per listening realm, owned by the single task handling requests.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    secret: [u8; 32],
    salt_rng: StdRng,
    counts: NonceCounts,
}

impl Authenticator {
    /// `secret` keys the nonce MAC. Use a fresh random value per process (see
    /// [`Authenticator::with_random_secret`]): nonces then do not survive a restart, and clients
    /// holding one get `stale=true` and retry silently. Do not persist it — the nonce-count table
    /// is not persisted either, so an old nonce could be replayed.
    pub fn new(config: AuthConfig, secret: [u8; 32]) -> Self {
        // Salts only need to be unique; derive their generator from the secret so tests are
        // reproducible and the salt sequence is unpredictable to outsiders.
        let seed = hmac_sha256(&secret, &[b"nonce salt"]);
        Authenticator {
            counts: NonceCounts::new(config.max_tracked_nonces),
            config,
            secret,
            salt_rng: StdRng::from_seed(seed),
        }
    }

    /// [`Authenticator::new`] with a secret from the OS random source.
    pub fn with_random_secret(config: AuthConfig) -> Self {
        Authenticator::new(config, rand::random())
    }

    /// The realm challenged with.
    pub fn realm(&self) -> &str {
        &self.config.realm
    }

    /// The header pair in use.
    pub fn kind(&self) -> ChallengeKind {
        self.config.kind
    }

    /// Number of nonces whose nonce-count is being tracked (for a gauge).
    pub fn tracked_nonces(&self) -> usize {
        self.counts.len()
    }

    /// A fresh nonce issued at `now`.
    pub fn issue_nonce(&mut self, now: Instant) -> String {
        let issued_ms = u64::try_from(now.since_origin().as_millis()).unwrap_or(u64::MAX);
        let mut raw = [0u8; NONCE_LEN];
        raw[..8].copy_from_slice(&issued_ms.to_be_bytes());
        self.salt_rng.fill_bytes(&mut raw[8..16]);
        let mac = hmac_sha256(&self.secret, &[&raw[..16]]);
        raw[16..].copy_from_slice(&mac[..NONCE_MAC_LEN]);
        hex::encode(raw)
    }

    fn decode_nonce(&self, nonce: &str) -> Option<ValidNonce> {
        if nonce.len() != NONCE_LEN * 2 {
            return None;
        }
        let mut raw = [0u8; NONCE_LEN];
        hex::decode_to_slice(nonce, &mut raw).ok()?;
        let mac = hmac_sha256(&self.secret, &[&raw[..16]]);
        if !constant_time_eq(&mac[..NONCE_MAC_LEN], &raw[16..]) {
            return None;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&raw[..16]);
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[..8]);
        Some(ValidNonce {
            key,
            issued_ms: u64::from_be_bytes(issued),
        })
    }

    /// Challenge headers, one per algorithm in the given order (all with the same fresh nonce), as
    /// `WWW-Authenticate` or `Proxy-Authenticate` depending on the configured kind. An empty list
    /// falls back to MD5 so a challenge is never empty.
    pub fn challenge(
        &mut self,
        now: Instant,
        algorithms: &[DigestAlgorithm],
        stale: bool,
    ) -> Vec<rsip::Header> {
        let nonce = self.issue_nonce(now);
        let fallback = [DigestAlgorithm::Md5];
        let algorithms = if algorithms.is_empty() {
            &fallback[..]
        } else {
            algorithms
        };
        algorithms
            .iter()
            .map(|alg| {
                let mut v = String::with_capacity(160);
                v.push_str("Digest realm=");
                push_quoted(&mut v, &self.config.realm);
                v.push_str(", nonce=\"");
                v.push_str(&nonce);
                v.push_str("\", algorithm=");
                v.push_str(alg.wire_name());
                v.push_str(", qop=\"auth\"");
                if stale {
                    v.push_str(", stale=true");
                }
                match self.config.kind {
                    ChallengeKind::Www => {
                        rsip::Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(v))
                    }
                    ChallengeKind::Proxy => {
                        rsip::Header::ProxyAuthenticate(rsip::headers::ProxyAuthenticate::new(v))
                    }
                }
            })
            .collect()
    }

    /// The credentials headers of the configured kind, in order.
    fn credential_values<'r>(&self, req: &'r rsip::Request) -> impl Iterator<Item = &'r str> {
        let kind = self.config.kind;
        req.headers.iter().filter_map(move |h| match (kind, h) {
            (ChallengeKind::Www, rsip::Header::Authorization(a)) => Some(a.value()),
            (ChallengeKind::Proxy, rsip::Header::ProxyAuthorization(a)) => Some(a.value()),
            _ => None,
        })
    }

    /// The first `Digest` credentials addressed to our realm. A request may carry credentials
    /// for several realms (one per proxy); others are not ours to judge.
    fn our_credentials(
        &self,
        req: &rsip::Request,
    ) -> Option<Result<DigestCredentials, CredentialsError>> {
        let mut first_error = None;
        for value in self.credential_values(req) {
            match DigestCredentials::parse(value) {
                Ok(c) if c.realm == self.config.realm => return Some(Ok(c)),
                Ok(_) | Err(CredentialsError::NotDigest) => {}
                Err(e) => {
                    // A header we cannot parse might be ours; report it unless a good one follows.
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map(Err)
    }

    /// The username claimed in credentials for our realm, if any: use it to choose the algorithms
    /// of the next challenge ([`CredentialStore::algorithms_for`]).
    pub fn claimed_username(&self, req: &rsip::Request) -> Option<String> {
        match self.our_credentials(req) {
            Some(Ok(c)) => Some(c.username),
            _ => None,
        }
    }

    /// Checks the request's credentials. `lookup` maps a username to its account (typically
    /// `|u| store.get(u)`).
    ///
    /// The digest is checked before the nonce: only a client that knows the password can be told
    /// `Stale`, as RFC 2617 §3.2.1 asks. The nonce-count is recorded only for requests that pass,
    /// so garbage cannot fill the table.
    pub fn verify<'a>(
        &mut self,
        now: Instant,
        req: &rsip::Request,
        lookup: impl Fn(&str) -> Option<&'a Account>,
    ) -> AuthOutcome {
        self.verify_for_uri(now, req, &req.uri.to_string(), lookup)
    }

    /// [`Authenticator::verify`] for a parsed [`crate::message::Request`], whose Request-URI may be
    /// one rsip cannot represent (IPv6 host, `tel:`).
    pub fn verify_request<'a>(
        &mut self,
        now: Instant,
        req: &crate::message::Request,
        lookup: impl Fn(&str) -> Option<&'a Account>,
    ) -> AuthOutcome {
        self.verify_for_uri(now, req.rsip(), req.uri(), lookup)
    }

    fn verify_for_uri<'a>(
        &mut self,
        now: Instant,
        req: &rsip::Request,
        request_uri: &str,
        lookup: impl Fn(&str) -> Option<&'a Account>,
    ) -> AuthOutcome {
        let creds = match self.our_credentials(req) {
            None => return AuthOutcome::Missing,
            Some(Err(e)) => return failed(e.into()),
            Some(Ok(c)) => c,
        };
        let algorithm = match creds.algorithm.as_deref() {
            None => DigestAlgorithm::Md5,
            Some(token) => match DigestAlgorithm::from_wire(token) {
                Some(a) => a,
                None => return failed(FailReason::UnsupportedAlgorithm),
            },
        };
        if creds.userhash {
            return failed(FailReason::UserhashUnsupported);
        }
        if !creds
            .qop
            .as_deref()
            .is_some_and(|q| q.eq_ignore_ascii_case("auth"))
        {
            return failed(FailReason::UnsupportedQop);
        }
        let (Some(nc_text), Some(cnonce)) = (creds.nc.as_deref(), creds.cnonce.as_deref()) else {
            return failed(FailReason::BadNonceCount);
        };
        let nc = match parse_nc(nc_text) {
            Some(n) => n,
            None => return failed(FailReason::BadNonceCount),
        };
        if !uri_matches(&creds.uri, request_uri) {
            return failed(FailReason::UriMismatch);
        }

        let method = req.method.to_string();
        let account = lookup(&creds.username);
        let ha1 = match account {
            Some(acc) if acc.realm != self.config.realm => Err(FailReason::AccountRealmMismatch),
            Some(acc) => {
                if !acc.offered_algorithms().any(|a| a == algorithm) {
                    Err(FailReason::AlgorithmNotOffered(algorithm))
                } else {
                    acc.ha1(algorithm)
                        .ok_or(FailReason::AlgorithmNotOffered(algorithm))
                }
            }
            None => Err(FailReason::UnknownUser),
        };
        // Hash even when there is nothing to compare against, so an unknown user costs the same
        // time as a wrong password.
        let dummy_ha1 = "0".repeat(algorithm.hex_len());
        let expected = request_digest(
            algorithm,
            ha1.as_ref().map_or(dummy_ha1.as_str(), |h| h),
            &creds.nonce,
            nc_text,
            cnonce,
            "auth",
            &method,
            &creds.uri,
        );
        let given = creds.response.to_ascii_lowercase();
        let digest_ok = constant_time_eq(expected.as_bytes(), given.as_bytes());
        if let Err(reason) = ha1 {
            return failed(reason);
        }
        if !digest_ok {
            return failed(FailReason::BadResponse);
        }

        let now_ms = u64::try_from(now.since_origin().as_millis()).unwrap_or(u64::MAX);
        let lifetime_ms = u64::try_from(self.config.nonce_lifetime.as_millis()).unwrap_or(u64::MAX);
        self.counts.prune(now_ms, lifetime_ms);
        let Some(nonce) = self.decode_nonce(&creds.nonce) else {
            return stale(StaleReason::NotOurs);
        };
        if nonce.issued_ms > now_ms {
            return stale(StaleReason::NotOurs);
        }
        if now_ms - nonce.issued_ms >= lifetime_ms {
            return stale(StaleReason::Expired);
        }
        if let Err(reason) = self.counts.check_and_record(&nonce, nc) {
            return stale(reason);
        }
        AuthOutcome::Authenticated {
            user: creds.username,
            algorithm,
        }
    }
}

fn failed(reason: FailReason) -> AuthOutcome {
    AuthOutcome::Failed { reason }
}

fn stale(reason: StaleReason) -> AuthOutcome {
    AuthOutcome::Stale { reason }
}

/// `nc` is exactly 8 hex digits (RFC 7616 §3.4) and starts at 1.
fn parse_nc(text: &str) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    u32::from_str_radix(text, 16).ok().filter(|n| *n > 0)
}

/// Whether the digest-uri names the Request-URI. Exact text match is the common case; otherwise
/// scheme, user and host:port must agree, since clients and proxies differ in how they render
/// parameters. The digest covers the digest-uri, so this only stops credentials made for one
/// target being reused for another.
fn uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    // SIPp 3.6 writes an IPv6 Request-URI into the digest without brackets (`sip:::1:5060`).
    let unbracket = |u: &str| u.replace(['[', ']'], "").to_ascii_lowercase();
    if unbracket(digest_uri) == unbracket(request_uri) {
        return true;
    }
    let (Some(d), Some(r)) = (
        crate::proxy::RouteUri::parse(digest_uri),
        crate::proxy::RouteUri::parse(request_uri),
    ) else {
        return false;
    };
    d.sips == r.sips && d.user == r.user && d.host.eq_ignore_ascii_case(&r.host) && d.port == r.port
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "12345.qh.gov.cn";

    fn at(secs: u64) -> Instant {
        Instant::from_origin(Duration::from_secs(secs))
    }

    fn md5_hex(s: &str) -> String {
        hex::encode(Md5::digest(s.as_bytes()))
    }

    fn sha256_hex(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(AuthConfig::registrar(REALM), [7u8; 32])
    }

    fn store() -> CredentialStore {
        let mut s = CredentialStore::default();
        s.add_password("1001", REALM, "secret-1001");
        s.insert(
            "2001",
            Account::from_password(
                "2001",
                REALM,
                "pw2001",
                vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            )
            .unwrap(),
        );
        s
    }

    /// Pulls `nonce="..."` out of a challenge header.
    fn nonce_of(header: &rsip::Header) -> String {
        let text = header.to_string();
        let start = text.find("nonce=\"").unwrap() + 7;
        let end = text[start..].find('"').unwrap() + start;
        text[start..end].to_owned()
    }

    /// A REGISTER carrying the given credentials header value.
    fn register_with(auth_header: &str) -> rsip::Request {
        let raw = format!(
            "REGISTER sip:{REALM} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1\r\n\
             From: <sip:1001@{REALM}>;tag=a\r\n\
             To: <sip:1001@{REALM}>\r\n\
             Call-ID: c1\r\n\
             CSeq: 2 REGISTER\r\n\
             {auth_header}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(raw.as_str()).unwrap()
    }

    /// Client side, computed independently of the module's hashing helpers.
    #[allow(clippy::too_many_arguments)]
    fn client_header(
        alg: DigestAlgorithm,
        user: &str,
        password: &str,
        nonce: &str,
        nc: &str,
        cnonce: &str,
        method: &str,
        uri: &str,
    ) -> String {
        let h = |s: &str| match alg {
            DigestAlgorithm::Md5 => md5_hex(s),
            DigestAlgorithm::Sha256 => sha256_hex(s),
        };
        let ha1 = h(&format!("{user}:{REALM}:{password}"));
        let ha2 = h(&format!("{method}:{uri}"));
        let response = h(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm={}, qop=auth, nc={nc}, \
             cnonce=\"{cnonce}\"",
            alg.wire_name()
        )
    }

    fn registered(
        a: &mut Authenticator,
        s: &CredentialStore,
        now: Instant,
        header: &str,
    ) -> AuthOutcome {
        a.verify(now, &register_with(header), |u| s.get(u))
    }

    #[test]
    fn rfc2617_md5_vector() {
        // RFC 2617 §3.5.
        let ha1 = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let r = request_digest(
            DigestAlgorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "auth",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_and_md5_vectors() {
        // RFC 7616 §3.9.1.
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let realm = "http-auth@example.org";
        for (alg, expected) in [
            (
                DigestAlgorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
            (DigestAlgorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
        ] {
            let h = ha1(alg, "Mufasa", realm, "Circle of Life");
            let r = request_digest(
                alg,
                &h,
                nonce,
                "00000001",
                cnonce,
                "auth",
                "GET",
                "/dir/index.html",
            );
            assert_eq!(r, expected, "{alg}");
        }
    }

    #[test]
    fn hmac_sha256_rfc4231_vectors() {
        // Test case 1.
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], &[b"Hi There"])),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2, message split in parts.
        assert_eq!(
            hex::encode(hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn challenge_headers_follow_the_given_order() {
        let mut a = authenticator();
        let hs = a.challenge(
            at(1),
            &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            false,
        );
        assert_eq!(hs.len(), 2);
        let first = hs[0].to_string();
        assert!(first.starts_with("WWW-Authenticate: Digest realm=\"12345.qh.gov.cn\""));
        assert!(first.contains("algorithm=SHA-256"));
        assert!(first.contains("qop=\"auth\""));
        assert!(!first.contains("stale"));
        assert!(hs[1].to_string().contains("algorithm=MD5"));
        assert_eq!(nonce_of(&hs[0]), nonce_of(&hs[1]));

        let stale = a.challenge(at(1), &[DigestAlgorithm::Md5], true);
        assert!(stale[0].to_string().contains("stale=true"));
        assert_ne!(
            nonce_of(&stale[0]),
            nonce_of(&hs[0]),
            "fresh nonce each time"
        );
    }

    #[test]
    fn proxy_kind_uses_proxy_headers() {
        let mut cfg = AuthConfig::registrar(REALM);
        cfg.kind = ChallengeKind::Proxy;
        let mut a = Authenticator::new(cfg, [1; 32]);
        let hs = a.challenge(at(0), &[], false);
        assert_eq!(hs.len(), 1, "empty list falls back to MD5");
        assert!(matches!(hs[0], rsip::Header::ProxyAuthenticate(_)));
        assert!(hs[0].to_string().contains("algorithm=MD5"));
        assert_eq!(a.kind().status_code(), 407);

        // Credentials in the WWW header are not what a proxy reads.
        let nonce = nonce_of(&hs[0]);
        let s = store();
        let www = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "c",
            "REGISTER",
            &format!("sip:{REALM}"),
        );
        assert_eq!(registered(&mut a, &s, at(1), &www), AuthOutcome::Missing);
        let proxy = www.replacen("Authorization", "Proxy-Authorization", 1);
        assert!(matches!(
            registered(&mut a, &s, at(1), &proxy),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn md5_round_trip_then_replay_is_refused() {
        let mut a = authenticator();
        let s = store();
        let nonce = nonce_of(&a.challenge(at(10), &[DigestAlgorithm::Md5], false)[0]);
        let uri = format!("sip:{REALM}");
        let h1 = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "abc",
            "REGISTER",
            &uri,
        );
        assert_eq!(
            registered(&mut a, &s, at(11), &h1),
            AuthOutcome::Authenticated {
                user: "1001".into(),
                algorithm: DigestAlgorithm::Md5
            }
        );
        assert_eq!(a.tracked_nonces(), 1);
        // Same nc again: a replay.
        assert_eq!(
            registered(&mut a, &s, at(12), &h1),
            AuthOutcome::Stale {
                reason: StaleReason::Replayed
            }
        );
        // The client's next request on the same nonce uses nc=2 and passes.
        let h2 = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000002",
            "abd",
            "REGISTER",
            &uri,
        );
        assert!(matches!(
            registered(&mut a, &s, at(13), &h2),
            AuthOutcome::Authenticated { .. }
        ));
        // And nc=1 after nc=2 is still a replay.
        assert!(registered(&mut a, &s, at(14), &h1).is_stale());
    }

    #[test]
    fn sha256_round_trip() {
        let mut a = authenticator();
        let s = store();
        let algs = s.algorithms_for(Some("2001"));
        assert_eq!(algs, vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]);
        let nonce = nonce_of(&a.challenge(at(0), &algs, false)[0]);
        let h = client_header(
            DigestAlgorithm::Sha256,
            "2001",
            "pw2001",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            &format!("sip:{REALM}"),
        );
        assert_eq!(
            registered(&mut a, &s, at(1), &h),
            AuthOutcome::Authenticated {
                user: "2001".into(),
                algorithm: DigestAlgorithm::Sha256
            }
        );
    }

    #[test]
    fn algorithm_not_offered_is_refused() {
        let mut a = authenticator();
        let s = store();
        // 1001 has the default list [MD5]; a SHA-256 answer is a downgrade/upgrade we did not offer.
        let nonce = a.issue_nonce(at(0));
        let h = client_header(
            DigestAlgorithm::Sha256,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            &format!("sip:{REALM}"),
        );
        assert_eq!(
            registered(&mut a, &s, at(1), &h),
            AuthOutcome::Failed {
                reason: FailReason::AlgorithmNotOffered(DigestAlgorithm::Sha256)
            }
        );
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let mut a = authenticator();
        let s = store();
        let nonce = a.issue_nonce(at(0));
        let uri = format!("sip:{REALM}");
        let wrong = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "guess",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        let unknown = client_header(
            DigestAlgorithm::Md5,
            "9999",
            "guess",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        let o1 = registered(&mut a, &s, at(1), &wrong);
        let o2 = registered(&mut a, &s, at(1), &unknown);
        assert_eq!(
            o1,
            AuthOutcome::Failed {
                reason: FailReason::BadResponse
            }
        );
        assert_eq!(
            o2,
            AuthOutcome::Failed {
                reason: FailReason::UnknownUser
            }
        );
        // Same variant, same stale flag, same algorithms in the next challenge.
        assert_eq!(o1.is_stale(), o2.is_stale());
        assert_eq!(
            s.algorithms_for(Some("1001")),
            s.algorithms_for(Some("9999"))
        );
        assert_eq!(s.algorithms_for(None), vec![DigestAlgorithm::Md5]);
        // Failures do not consume table space.
        assert_eq!(a.tracked_nonces(), 0);
    }

    #[test]
    fn expired_nonce_with_right_password_is_stale() {
        let mut a = authenticator();
        let s = store();
        let nonce = a.issue_nonce(at(100));
        let uri = format!("sip:{REALM}");
        let h = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        // Lifetime 300 s: 399.999 s is fine, 400 s is expired.
        let just_before = Instant::from_origin(Duration::from_millis(399_999));
        assert!(matches!(
            registered(&mut a, &s, just_before, &h),
            AuthOutcome::Authenticated { .. }
        ));
        let h2 = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000002",
            "x",
            "REGISTER",
            &uri,
        );
        assert_eq!(
            registered(&mut a, &s, at(400), &h2),
            AuthOutcome::Stale {
                reason: StaleReason::Expired
            }
        );
        // Expired with a wrong password is a plain failure: only the owner learns "stale".
        let wrong = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "nope",
            &nonce,
            "00000003",
            "x",
            "REGISTER",
            &uri,
        );
        assert!(matches!(
            registered(&mut a, &s, at(400), &wrong),
            AuthOutcome::Failed { .. }
        ));
        // Pruned from the table once expired.
        assert_eq!(a.tracked_nonces(), 0);
    }

    #[test]
    fn tampered_nonce_is_refused() {
        let mut a = authenticator();
        let s = store();
        let nonce = a.issue_nonce(at(5));
        let uri = format!("sip:{REALM}");
        // Move issued-at forward by flipping a bit: the MAC no longer matches.
        let mut raw = hex::decode(&nonce).unwrap();
        raw[7] ^= 0x01;
        let tampered = hex::encode(raw);
        // A client that computed its digest over the original nonce, with the nonce swapped.
        let good = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        let swapped = good.replace(&nonce, &tampered);
        assert_eq!(
            registered(&mut a, &s, at(6), &swapped),
            AuthOutcome::Failed {
                reason: FailReason::BadResponse
            }
        );
        // Someone with the password signing a forged nonce learns only "stale" and gets no access.
        let forged = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &tampered,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        assert_eq!(
            registered(&mut a, &s, at(6), &forged),
            AuthOutcome::Stale {
                reason: StaleReason::NotOurs
            }
        );
        // A nonce of another process (different secret), e.g. before a restart: stale.
        let mut other = Authenticator::new(AuthConfig::registrar(REALM), [9u8; 32]);
        let foreign = other.issue_nonce(at(5));
        let h = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &foreign,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        assert!(registered(&mut a, &s, at(6), &h).is_stale());
        // A nonce issued "in the future" (time line restarted with the same secret): stale.
        let mut twin = authenticator();
        let future = twin.issue_nonce(at(1000));
        let h = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &future,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        assert_eq!(
            registered(&mut a, &s, at(6), &h),
            AuthOutcome::Stale {
                reason: StaleReason::NotOurs
            }
        );
    }

    #[test]
    fn missing_and_foreign_realm_credentials() {
        let mut a = authenticator();
        let s = store();
        let req = register_with("Max-Forwards: 70");
        assert_eq!(a.verify(at(0), &req, |u| s.get(u)), AuthOutcome::Missing);
        let other_realm = "Authorization: Digest username=\"1001\", realm=\"elsewhere\", \
                           nonce=\"n\", uri=\"sip:x\", response=\"00\"";
        assert_eq!(
            registered(&mut a, &s, at(0), other_realm),
            AuthOutcome::Missing
        );
        assert_eq!(
            registered(&mut a, &s, at(0), "Authorization: Basic QWxhZGRpbjpvcGVu"),
            AuthOutcome::Missing
        );
        assert!(matches!(
            registered(
                &mut a,
                &s,
                at(0),
                "Authorization: Digest username=\"1001\", realm="
            ),
            AuthOutcome::Failed {
                reason: FailReason::Malformed(_)
            }
        ));
    }

    #[test]
    fn qop_nc_and_uri_are_enforced() {
        let mut a = authenticator();
        let s = store();
        let nonce = a.issue_nonce(at(0));
        let uri = format!("sip:{REALM}");
        let good = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            &uri,
        );
        let no_qop = good.replace(", qop=auth", "");
        assert_eq!(
            registered(&mut a, &s, at(1), &no_qop),
            AuthOutcome::Failed {
                reason: FailReason::UnsupportedQop
            }
        );
        let short_nc = good.replace("nc=00000001", "nc=1");
        assert_eq!(
            registered(&mut a, &s, at(1), &short_nc),
            AuthOutcome::Failed {
                reason: FailReason::BadNonceCount
            }
        );
        let sess = good.replace("algorithm=MD5", "algorithm=MD5-sess");
        assert_eq!(
            registered(&mut a, &s, at(1), &sess),
            AuthOutcome::Failed {
                reason: FailReason::UnsupportedAlgorithm
            }
        );
        // Credentials computed for another target.
        let other = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "x",
            "REGISTER",
            "sip:other.example.org",
        );
        assert_eq!(
            registered(&mut a, &s, at(1), &other),
            AuthOutcome::Failed {
                reason: FailReason::UriMismatch
            }
        );
        // Method is part of the digest: an INVITE digest does not fit a REGISTER.
        let invite = client_header(
            DigestAlgorithm::Md5,
            "1001",
            "secret-1001",
            &nonce,
            "00000001",
            "x",
            "INVITE",
            &uri,
        );
        assert_eq!(
            registered(&mut a, &s, at(1), &invite),
            AuthOutcome::Failed {
                reason: FailReason::BadResponse
            }
        );
        // After all that, the good one still works (failures recorded no nc).
        assert!(matches!(
            registered(&mut a, &s, at(1), &good),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn absent_algorithm_means_md5_and_params_parse_loosely() {
        let mut a = authenticator();
        let s = store();
        let nonce = a.issue_nonce(at(0));
        let uri = format!("sip:{REALM}");
        let ha1 = md5_hex(&format!("1001:{REALM}:secret-1001"));
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let resp = md5_hex(&format!("{ha1}:{nonce}:0000000a:a,b \"c\":auth:{ha2}"));
        // Mixed-case names, a quoted cnonce with a comma and escaped quotes, odd spacing, quoted
        // qop, upper-case response hex, an unknown parameter, and no algorithm at all.
        let header = format!(
            "Authorization: digest USERNAME = \"1001\" ,Realm=\"{REALM}\",  NONCE=\"{nonce}\",\
             uri=\"{uri}\",cnonce=\"a,b \\\"c\\\"\",nc=0000000a, QOP=\"auth\",\
             x-extra=\"1,2\", response=\"{}\"",
            resp.to_uppercase()
        );
        assert_eq!(
            registered(&mut a, &s, at(1), &header),
            AuthOutcome::Authenticated {
                user: "1001".into(),
                algorithm: DigestAlgorithm::Md5
            }
        );
        assert_eq!(
            a.claimed_username(&register_with(&header)).as_deref(),
            Some("1001")
        );
    }

    #[test]
    fn credentials_parser_errors() {
        assert_eq!(
            DigestCredentials::parse("Digest username=\"a"),
            Err(CredentialsError::UnterminatedQuote)
        );
        assert_eq!(
            DigestCredentials::parse(
                "Digest username=a, username=b, realm=r, nonce=n, uri=u, response=x"
            ),
            Err(CredentialsError::DuplicateParam {
                name: "username".into()
            })
        );
        assert_eq!(
            DigestCredentials::parse("Digest username=a realm=r"),
            Err(CredentialsError::Syntax { at: 18 })
        );
        assert_eq!(
            DigestCredentials::parse("Digest username=a, realm=r, nonce=n, uri=u"),
            Err(CredentialsError::MissingParam { name: "response" })
        );
        assert_eq!(
            DigestCredentials::parse("Bearer abc"),
            Err(CredentialsError::NotDigest)
        );
        let c = DigestCredentials::parse(
            "Digest username=\"\\\\u\", realm=\"r\", nonce=n, uri=\"sip:a@b;x=1,2\", response=x,",
        )
        .unwrap();
        assert_eq!(c.username, "\\u");
        assert_eq!(c.uri, "sip:a@b;x=1,2");
    }

    #[test]
    fn uri_match_tolerates_rendering_differences() {
        let req_uri = "sip:12345.qh.gov.cn";
        assert!(uri_matches("sip:12345.qh.gov.cn", req_uri));
        assert!(uri_matches("SIP:12345.QH.gov.cn;transport=udp", req_uri));
        assert!(!uri_matches("sip:1001@12345.qh.gov.cn", req_uri));
        assert!(!uri_matches("sip:12345.qh.gov.cn:5080", req_uri));
        assert!(!uri_matches("not a uri at all", req_uri));
        assert!(
            uri_matches("sip:::1:5060", "sip:[::1]:5060"),
            "SIPp's unbracketed IPv6 digest-uri"
        );
    }

    #[test]
    fn nonce_table_is_bounded_and_forgetting_never_reopens_replay() {
        let mut cfg = AuthConfig::registrar(REALM);
        cfg.max_tracked_nonces = 2;
        let mut a = Authenticator::new(cfg, [3; 32]);
        let s = store();
        let uri = format!("sip:{REALM}");
        let use_nonce = |a: &mut Authenticator, nonce: &str, nc: &str, now: Instant| {
            let h = client_header(
                DigestAlgorithm::Md5,
                "1001",
                "secret-1001",
                nonce,
                nc,
                "x",
                "REGISTER",
                &uri,
            );
            registered(a, &s, now, &h)
        };
        let n1 = a.issue_nonce(at(1));
        let n2 = a.issue_nonce(at(2));
        let n3 = a.issue_nonce(at(3));
        let n4 = a.issue_nonce(at(4));
        assert!(!use_nonce(&mut a, &n1, "00000001", at(10)).is_stale());
        assert!(!use_nonce(&mut a, &n2, "00000001", at(10)).is_stale());
        // Third nonce: n1 is forgotten to make room.
        assert!(matches!(
            use_nonce(&mut a, &n3, "00000001", at(10)),
            AuthOutcome::Authenticated { .. }
        ));
        assert_eq!(a.tracked_nonces(), 2);
        // n1 replayed: not in the table any more, but issued before the watermark.
        assert_eq!(
            use_nonce(&mut a, &n1, "00000001", at(10)),
            AuthOutcome::Stale {
                reason: StaleReason::Forgotten
            }
        );
        assert_eq!(
            use_nonce(&mut a, &n1, "00000005", at(10)),
            AuthOutcome::Stale {
                reason: StaleReason::Forgotten
            }
        );
        // A newer nonce is still accepted.
        assert!(matches!(
            use_nonce(&mut a, &n4, "00000001", at(10)),
            AuthOutcome::Authenticated { .. }
        ));
        assert_eq!(a.tracked_nonces(), 2);
    }

    #[test]
    fn account_validation() {
        assert_eq!(Account::new(REALM, vec![]), Err(AccountError::NoAlgorithms));
        assert_eq!(
            Account::new(REALM, vec![DigestAlgorithm::Md5, DigestAlgorithm::Md5]),
            Err(AccountError::DuplicateAlgorithm(DigestAlgorithm::Md5))
        );
        assert!(CredentialStore::new(vec![]).is_err());
        let bad = Account::new(REALM, vec![DigestAlgorithm::Md5])
            .unwrap()
            .with_ha1(DigestAlgorithm::Md5, "xyz");
        assert_eq!(
            bad,
            Err(AccountError::BadHa1 {
                algorithm: DigestAlgorithm::Md5,
                expected: 32
            })
        );
        // HA1 from config; upper-case hex is accepted and normalised.
        let h = ha1(DigestAlgorithm::Md5, "1001", REALM, "pw").to_uppercase();
        let acc = Account::new(REALM, vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5])
            .unwrap()
            .with_ha1(DigestAlgorithm::Md5, &h)
            .unwrap();
        assert_eq!(
            acc.ha1(DigestAlgorithm::Md5),
            Some(h.to_lowercase().as_str())
        );
        // SHA-256 is configured but has no HA1, so it is not offered.
        assert_eq!(
            acc.offered_algorithms().collect::<Vec<_>>(),
            vec![DigestAlgorithm::Md5]
        );
        assert_eq!(
            DigestAlgorithm::from_wire("sha-256"),
            Some(DigestAlgorithm::Sha256)
        );
        assert_eq!(DigestAlgorithm::from_wire("SHA-256-sess"), None);
    }

    #[test]
    fn store_with_sha256_first_default() {
        let mut s =
            CredentialStore::new(vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]).unwrap();
        s.add_password("3001", REALM, "pw");
        assert_eq!(
            s.algorithms_for(Some("3001")),
            vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        );
        assert_eq!(
            s.algorithms_for(Some("nobody")),
            s.algorithms_for(Some("3001"))
        );
        // An old phone's account pinned to MD5 only.
        s.insert(
            "4001",
            Account::from_password("4001", REALM, "pw", vec![DigestAlgorithm::Md5]).unwrap(),
        );
        assert_eq!(s.algorithms_for(Some("4001")), vec![DigestAlgorithm::Md5]);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn realm_with_quote_is_escaped() {
        let mut a = Authenticator::new(AuthConfig::registrar("a\"b"), [0; 32]);
        let h = a.challenge(at(0), &[DigestAlgorithm::Md5], false);
        assert!(h[0].to_string().contains("realm=\"a\\\"b\""));
    }
}

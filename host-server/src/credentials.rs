//! Pairing codes, device tokens, ids, and the enroll rate limiter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use fusion_protocol::TOKEN_PREFIX;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// The pairing-code alphabet: no vowels (no words), no look-alikes.
pub const CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Letters in a pairing code.
pub const CODE_LEN: usize = 8;

/// Fills `buf` from the OS generator. Failing here means the OS cannot give
/// randomness at all, and minting a guessable secret is worse than stopping.
fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256, lowercase hex.
pub(crate) fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    random(&mut buf);
    hex(&buf)
}

/// A random id: `prefix` + 32 hex characters (128 bits).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(16))
}

/// A fresh pairing code, `XXXX-XXXX`, uniformly drawn from the alphabet.
pub(crate) fn new_pairing_code() -> String {
    let mut letters = Vec::with_capacity(CODE_LEN);
    while letters.len() < CODE_LEN {
        let mut byte = [0u8; 1];
        random(&mut byte);
        // 240 is the largest multiple of 20 below 256: rejecting the rest
        // keeps every letter equally likely.
        if byte[0] < 240 {
            letters.push(CODE_ALPHABET[(byte[0] % 20) as usize]);
        }
    }
    let s = String::from_utf8(letters).unwrap_or_default();
    format!("{}-{}", &s[..4], &s[4..])
}

/// The canonical form of a typed code (upper case, no dashes or spaces), or
/// `None` when it cannot be a code at all.
pub(crate) fn normalize_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\u{2010}'..='\u{2015}'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

/// A new device token for `device_id`: `fh_<device_id>.<64 hex>` (256 random bits).
pub(crate) fn new_token(device_id: &str) -> String {
    let mut secret = [0u8; 32];
    random(&mut secret);
    format!("{TOKEN_PREFIX}{device_id}.{}", hex(&secret))
}

/// The device id a token claims, if it has the token's shape.
pub(crate) fn token_device_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (device_id, secret) = rest.split_once('.')?;
    (device_id.starts_with("dev_") && secret.len() == 64).then_some(device_id)
}

/// Whether `token` hashes to `stored_hash`, compared in constant time.
pub(crate) fn token_matches(token: &str, stored_hash: &str) -> bool {
    sha256_hex(token).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Limits enroll attempts in fixed windows, as RFC 8628 §5.1 asks of user
/// codes: per client address, and a global backstop on wrong codes.
///
/// Every attempt is counted *before* its code is looked up, under one lock,
/// so concurrent guesses cannot overrun a limit: an attempt reserves a
/// failure and a place in its address's count, and a code that is found or
/// pairs gives both back (an office behind one NAT pairs as many laptops as
/// it has codes for).
///
/// - An address (an IPv6 /64 counts as one) gets `per_address` attempts per
///   window. The key may be something else than an address: a signed-in
///   account, for lookups that need one ([`EnrollLimiter::attempt_as`]).
/// - When `global_failures` wrong codes were tried in a window, the backstop
///   engages: until the window ends, only addresses that have not tried yet
///   in it get their (one) code checked; the rest get `rate_limited`. A flood
///   therefore checks at most `global_failures` codes plus one per distinct
///   fresh address, while a person typing a correct code on another machine
///   is still paired.
#[derive(Debug)]
pub(crate) struct EnrollLimiter<K = Option<IpAddr>> {
    window: Duration,
    per_address: u32,
    global_failures: u32,
    state: Mutex<LimiterState<K>>,
}

#[derive(Debug)]
struct LimiterState<K> {
    started: Instant,
    attempts: HashMap<K, u32>,
    /// Wrong codes tried this window, counting attempts still being checked.
    failures: u32,
}

/// One counted enroll attempt. It stays counted as a failure unless
/// [`Attempt::succeeded`] is called.
#[derive(Debug)]
pub(crate) struct Attempt<'a, K: std::hash::Hash + Eq + Clone = Option<IpAddr>> {
    limiter: &'a EnrollLimiter<K>,
    key: K,
    window: Instant,
}

impl<K: std::hash::Hash + Eq + Clone> Attempt<'_, K> {
    /// The code was found or paired a device: this attempt was not a wrong
    /// guess, and it does not count against its address either.
    pub(crate) fn succeeded(self) {
        let mut state = self.limiter.lock();
        if state.started == self.window {
            state.failures = state.failures.saturating_sub(1);
            if let Some(tried) = state.attempts.get_mut(&self.key) {
                *tried = tried.saturating_sub(1);
            }
        }
    }
}

/// The key an address is limited under: IPv4 as is, IPv6 by its /64 (one
/// host commonly holds a whole /64).
fn address_key(addr: Option<IpAddr>) -> Option<IpAddr> {
    addr.map(|a| match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    })
}

impl EnrollLimiter {
    /// Counts an attempt from `addr` before its code is checked;
    /// `Err(retry_after)` when it may not be checked at all.
    pub(crate) fn attempt(&self, addr: Option<IpAddr>) -> Result<Attempt<'_>, Duration> {
        self.attempt_as(address_key(addr))
    }
}

impl<K: std::hash::Hash + Eq + Clone> EnrollLimiter<K> {
    pub(crate) fn new(window: Duration, per_address: u32, global_failures: u32) -> Self {
        EnrollLimiter {
            window,
            per_address,
            global_failures,
            state: Mutex::new(LimiterState {
                started: Instant::now(),
                attempts: HashMap::new(),
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt under `key` before its code is checked;
    /// `Err(retry_after)` when it may not be checked at all.
    pub(crate) fn attempt_as(&self, key: K) -> Result<Attempt<'_, K>, Duration> {
        let mut state = self.lock();
        let now = Instant::now();
        if now.duration_since(state.started) >= self.window {
            state.started = now;
            state.attempts.clear();
            state.failures = 0;
        }
        let retry_after = self.window.saturating_sub(now.duration_since(state.started));
        let tried = state.attempts.get(&key).copied().unwrap_or(0);
        if tried >= self.per_address || (state.failures >= self.global_failures && tried > 0) {
            return Err(retry_after);
        }
        state.attempts.insert(key.clone(), tried + 1);
        state.failures += 1;
        Ok(Attempt {
            limiter: self,
            key,
            window: state.started,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn codes_use_the_alphabet_and_normalize() {
        for _ in 0..200 {
            let code = new_pairing_code();
            assert_eq!(code.len(), 9);
            assert_eq!(&code[4..5], "-");
            let normal = normalize_code(&code).unwrap();
            assert_eq!(normalize_code(&code.to_lowercase()), Some(normal.clone()));
            assert_eq!(normalize_code(&normal), Some(normal.clone()));
            assert_eq!(normalize_code(&format!(" {} ", &code)), Some(normal));
        }
        assert_eq!(normalize_code("BCDF-GHJA"), None, "A is not in the alphabet");
        assert_eq!(normalize_code("BCDF-GHJ"), None);
        assert_eq!(normalize_code("BCDF-GHJKL"), None);
        assert_eq!(normalize_code(""), None);
    }

    #[test]
    fn every_letter_is_drawn() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.extend(new_pairing_code().bytes().filter(|b| *b != b'-'));
        }
        assert_eq!(seen.len(), 20);
    }

    #[test]
    fn tokens_carry_their_device_and_verify() {
        let id = new_id("dev_");
        let token = new_token(&id);
        assert!(token.starts_with("fh_dev_"));
        assert_eq!(token_device_id(&token), Some(id.as_str()));
        let hash = sha256_hex(&token);
        assert!(token_matches(&token, &hash));
        assert!(!token_matches(&new_token(&id), &hash));
        assert_eq!(token_device_id("fh_dev_x.short"), None);
        assert_eq!(token_device_id("Bearer something"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_windows() {
        let limiter = EnrollLimiter::new(Duration::from_secs(60), 3, 5);
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..3 {
            limiter.attempt(a).unwrap();
        }
        let retry = limiter.attempt(a).unwrap_err();
        assert!(retry <= Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(61)).await;
        limiter.attempt(a).unwrap();
    }

    #[test]
    fn the_backstop_admits_only_fresh_addresses_once() {
        let limiter = EnrollLimiter::new(Duration::from_secs(60), 10, 5);
        let addr = |i: u8| Some(IpAddr::from([10, 0, 0, i]));
        for _ in 0..5 {
            limiter.attempt(addr(1)).unwrap();
        }
        // Five wrong codes: address 1 is done for the window...
        assert!(limiter.attempt(addr(1)).is_err());
        // ...a fresh address gets exactly one check.
        limiter.attempt(addr(2)).unwrap();
        assert!(limiter.attempt(addr(2)).is_err());
        // A success gives its reservation back.
        limiter.attempt(addr(3)).unwrap().succeeded();
        assert_eq!(limiter.lock().failures, 6);
    }

    #[test]
    fn codes_that_are_found_do_not_count_against_their_address() {
        let limiter = EnrollLimiter::new(Duration::from_secs(60), 10, 60);
        let office = Some(IpAddr::from([192, 0, 2, 7]));
        // One address pairing 30 laptops with 30 good codes.
        for _ in 0..30 {
            limiter.attempt(office).unwrap().succeeded();
        }
        // Wrong guesses from it still count.
        for _ in 0..10 {
            limiter.attempt(office).unwrap();
        }
        assert!(limiter.attempt(office).is_err());
        // The same rules under another key: an account.
        let accounts = EnrollLimiter::<String>::new(Duration::from_secs(60), 2, u32::MAX);
        accounts.attempt_as("usr_a".into()).unwrap();
        accounts.attempt_as("usr_a".into()).unwrap();
        assert!(accounts.attempt_as("usr_a".into()).is_err());
        accounts.attempt_as("usr_b".into()).unwrap();
    }

    #[test]
    fn concurrent_attempts_cannot_overrun_the_backstop() {
        let limiter = Arc::new(EnrollLimiter::new(Duration::from_secs(60), 1000, 60));
        let addr = Some(IpAddr::from([10, 0, 0, 1]));
        // Attempts in flight: none has failed yet when the others are counted.
        let admitted: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    s.spawn(move || limiter.attempt(addr).is_ok())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // One address: the first attempt is fresh, the backstop then holds at 60.
        assert_eq!(admitted.iter().filter(|ok| **ok).count(), 60);
    }

    #[test]
    fn an_ipv6_host_is_one_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(Some(a)), address_key(Some(b)));
        assert_ne!(address_key(Some(a)), address_key(Some(c)));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(Some(mapped)), Some(IpAddr::from([192, 0, 2, 1])));
    }
}

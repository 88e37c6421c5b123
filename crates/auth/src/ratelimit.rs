//! Failed-login limiting, per user name and per client address, in memory: a token bucket for each,
//! where every failed login takes a token and tokens come back at a steady rate. While either bucket
//! of a login attempt is empty, the attempt is refused before any password is checked, with how long
//! to wait (`TOOMANYREQUESTS` with `Retry-After` at the HTTP edge).
//!
//! IPv6 clients are counted per /64 (one host usually has a whole /64). The table is bounded: past
//! its size, buckets that have refilled are dropped, then the least-limited ones.
//!
//! Must never: let a success reset the address's bucket (one valid account must not unlock guessing
//! others' passwords), grow without bound, or check a password while a bucket is empty.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Failures allowed in a burst.
    pub burst: u32,
    /// Time for one failure to be forgiven.
    pub refill_every: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub per_user: Limit,
    pub per_address: Limit,
    /// Most buckets kept.
    pub max_entries: usize,
}

impl Default for Config {
    /// 10 failures, then one every 6 s per user; 30, then one every 2 s per address.
    fn default() -> Config {
        Config {
            per_user: Limit { burst: 10, refill_every: Duration::from_secs(6) },
            per_address: Limit { burst: 30, refill_every: Duration::from_secs(2) },
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&self, limit: Limit, now: Instant) -> f64 {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() / limit.refill_every.as_secs_f64();
        (self.tokens + refilled).min(f64::from(limit.burst))
    }
}

/// The limiter; share it between requests (it locks internally).
#[derive(Debug)]
pub struct LoginLimiter {
    config: Config,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

fn addr_key(addr: IpAddr) -> Key {
    match addr {
        IpAddr::V4(_) => Key::Addr(addr),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::Addr(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                Key::Addr(IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
            }
        },
    }
}

impl LoginLimiter {
    pub fn new(config: Config) -> LoginLimiter {
        LoginLimiter { config, buckets: Mutex::new(HashMap::new()) }
    }

    fn limit(&self, key: &Key) -> Limit {
        match key {
            Key::User(_) => self.config.per_user,
            Key::Addr(_) => self.config.per_address,
        }
    }

    fn keys(user: Option<&str>, addr: IpAddr) -> Vec<Key> {
        let mut keys = vec![addr_key(addr)];
        if let Some(u) = user {
            keys.push(Key::User(u.to_string()));
        }
        keys
    }

    /// Before checking credentials: `Err(retry_after)` if the user or the address has no failure left.
    pub fn check(&self, user: Option<&str>, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for key in Self::keys(user, addr) {
            let limit = self.limit(&key);
            if let Some(b) = buckets.get(&key) {
                let level = b.level(limit, now);
                if level < 1.0 {
                    wait = wait.max(limit.refill_every.mul_f64(1.0 - level));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            // Whole seconds for `Retry-After`, rounded up.
            Err(Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)))
        }
    }

    /// After a failed login: takes one token from the user's and the address's buckets.
    pub fn failure(&self, user: Option<&str>, addr: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for key in Self::keys(user, addr) {
            let limit = self.limit(&key);
            let level = buckets.get(&key).map_or(f64::from(limit.burst), |b| b.level(limit, now));
            if !buckets.contains_key(&key) && buckets.len() >= self.config.max_entries {
                self.evict(&mut buckets, now);
            }
            buckets.insert(key, Bucket { tokens: (level - 1.0).max(0.0), at: now });
        }
    }

    /// After a successful login: forgets the user's failures (not the address's).
    pub fn success(&self, user: &str) {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).remove(&Key::User(user.to_string()));
    }

    fn evict(&self, buckets: &mut HashMap<Key, Bucket>, now: Instant) {
        buckets.retain(|k, b| b.level(self.limit(k), now) < f64::from(self.limit(k).burst));
        while buckets.len() >= self.config.max_entries {
            let fullest = buckets
                .iter()
                .map(|(k, b)| (k.clone(), b.level(self.limit(k), now) / f64::from(self.limit(k).burst)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| k);
            match fullest {
                Some(k) => buckets.remove(&k),
                None => break,
            };
        }
    }

    /// How many buckets are kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(Config {
            per_user: Limit { burst: 3, refill_every: Duration::from_secs(10) },
            per_address: Limit { burst: 5, refill_every: Duration::from_secs(4) },
            max_entries: 1000,
        })
    }

    #[test]
    fn per_user_limit_and_retry_after() {
        let l = limiter();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.check(Some("bob"), ip("10.0.0.1"), t0).is_ok(), "attempt {i}");
            l.failure(Some("bob"), ip("10.0.0.1"), t0);
        }
        // bob is locked, from any address; alice is not.
        assert_eq!(l.check(Some("bob"), ip("10.0.0.1"), t0), Err(Duration::from_secs(10)));
        assert_eq!(l.check(Some("bob"), ip("10.0.0.2"), t0), Err(Duration::from_secs(10)));
        assert!(l.check(Some("alice"), ip("10.0.0.2"), t0).is_ok());
        // Retry-After shrinks with time and is rounded up.
        assert_eq!(l.check(Some("bob"), ip("10.0.0.2"), t0 + Duration::from_millis(2500)), Err(Duration::from_secs(8)));
        assert!(l.check(Some("bob"), ip("10.0.0.2"), t0 + Duration::from_secs(10)).is_ok());
        // Names are exact: `Bob` is another bucket.
        assert!(l.check(Some("Bob"), ip("10.0.0.2"), t0).is_ok());
    }

    #[test]
    fn per_address_limit_across_users() {
        let l = limiter();
        let t0 = Instant::now();
        for i in 0..5 {
            let user = format!("user{i}");
            assert!(l.check(Some(&user), ip("192.0.2.7"), t0).is_ok());
            l.failure(Some(&user), ip("192.0.2.7"), t0);
        }
        assert_eq!(l.check(Some("fresh"), ip("192.0.2.7"), t0), Err(Duration::from_secs(4)));
        assert_eq!(l.check(None, ip("192.0.2.7"), t0), Err(Duration::from_secs(4)));
        assert!(l.check(Some("fresh"), ip("192.0.2.8"), t0).is_ok());
        // A success does not reset the address.
        l.success("user0");
        assert!(l.check(None, ip("192.0.2.7"), t0).is_err());
    }

    #[test]
    fn success_resets_the_user() {
        let l = limiter();
        let t0 = Instant::now();
        for _ in 0..3 {
            l.failure(Some("bob"), ip("10.0.0.1"), t0);
        }
        assert!(l.check(Some("bob"), ip("10.0.0.9"), t0).is_err());
        l.success("bob");
        assert!(l.check(Some("bob"), ip("10.0.0.9"), t0).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = limiter();
        let t0 = Instant::now();
        for i in 0..5 {
            l.failure(None, ip(&format!("2001:db8:1:2::{i}")), t0);
        }
        assert!(l.check(None, ip("2001:db8:1:2:ffff::1"), t0).is_err());
        assert!(l.check(None, ip("2001:db8:1:3::1"), t0).is_ok());
        for _ in 0..5 {
            l.failure(None, ip("::ffff:198.51.100.1"), t0);
        }
        assert!(l.check(None, ip("198.51.100.1"), t0).is_err());
    }

    #[test]
    fn table_is_bounded() {
        let l = LoginLimiter::new(Config { max_entries: 50, ..Config::default() });
        let t0 = Instant::now();
        for i in 0..500u32 {
            l.failure(Some(&format!("u{i}")), IpAddr::from(i.to_be_bytes()), t0);
            assert!(l.len() <= 50);
        }
        // Drained buckets are kept over nearly full ones: a locked user stays locked under a flood.
        let l = LoginLimiter::new(Config { max_entries: 20, ..Config::default() });
        for _ in 0..10 {
            l.failure(Some("victim"), ip("10.9.9.9"), t0);
        }
        for i in 0..200u32 {
            l.failure(Some(&format!("u{i}")), IpAddr::from((i + 1000).to_be_bytes()), t0);
        }
        assert!(l.check(Some("victim"), ip("10.1.1.1"), t0).is_err());
    }
}

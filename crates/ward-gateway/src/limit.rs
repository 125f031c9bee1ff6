//! Rate limits per route, GCRA: locally with `governor` (one keyed limiter
//! per route), or shared by every gateway in Redis, where one Lua script
//! reads and advances the key's theoretical arrival time atomically on
//! Redis's own clock (so several gateways share one limit exactly, whatever
//! their clocks say). When Redis does not answer in time the local limiter
//! decides, and the fallback is counted.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{RateLimitConfig, RedisConfig};

type Local =
    RateLimiter<String, HashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The answer of one check, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The burst size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests left now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until a request would be allowed (`Retry-After`,
    /// `RateLimit-Reset`), rounded up; 0 when allowed.
    pub retry_after: u64,
}

/// Most keys one route's local limiter keeps between sweeps.
const MAX_KEYS: usize = 100_000;

/// One route's limit.
pub struct RouteLimit {
    route: String,
    config: RateLimitConfig,
    burst: u32,
    /// Nanoseconds between two requests at the steady rate.
    interval_ns: u64,
    local: Local,
    global: Option<Arc<Global>>,
}

impl RouteLimit {
    pub fn new(route: &str, config: &RateLimitConfig, global: Option<Arc<Global>>) -> Self {
        let burst = config.burst.unwrap_or(config.rate).max(1);
        let interval = config.per / config.rate.max(1);
        let interval = interval.max(Duration::from_nanos(1));
        // Checked at load: burst and rate are above zero.
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            route: route.to_owned(),
            config: config.clone(),
            burst,
            interval_ns: interval.as_nanos().min(u64::MAX as u128) as u64,
            local: RateLimiter::hashmap(quota).with_middleware::<StateInformationMiddleware>(),
            global: if config.global { global } else { None },
        }
    }

    pub fn key_kind(&self) -> crate::config::LimitKey {
        self.config.key
    }

    fn check_local(&self, key: &str) -> Verdict {
        // Past the cap (swept every minute), new keys share one bucket: a
        // flood of made-up keys cannot grow memory, and costs its senders.
        let key = if self.local.len() >= MAX_KEYS {
            "\0overflow".to_owned()
        } else {
            key.to_owned()
        };
        match self.local.check_key(&key) {
            Ok(snapshot) => Verdict {
                allowed: true,
                limit: self.burst,
                remaining: snapshot.remaining_burst_capacity(),
                retry_after: 0,
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Verdict {
                    allowed: false,
                    limit: self.burst,
                    remaining: 0,
                    retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }
            }
        }
    }

    /// Checks (and counts) one request under `key`.
    pub async fn check(&self, key: &str, metrics: &crate::metrics::Metrics) -> Verdict {
        if let Some(g) = &self.global {
            match g
                .check(&self.route, key, self.interval_ns, self.burst)
                .await
            {
                Ok(v) => return v,
                Err(e) => {
                    metrics.ratelimit_fallback(&self.route);
                    tracing::warn!(route = %self.route, error = %e, "the shared rate limit is unavailable; using the local one");
                }
            }
        }
        self.check_local(key)
    }

    /// Forgets keys that are back to full capacity.
    pub fn sweep(&self) {
        self.local.retain_recent();
    }
}

/// GCRA on Redis's clock: TAT = max(TAT, now) + interval; allowed when
/// TAT - burst·interval ≤ now. Returns {allowed, wait_us, remaining}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, math.floor((now - allow_at) / interval)}
"#;

/// The shared limit store.
pub struct Global {
    manager: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    client: redis::Client,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl Global {
    pub fn new(config: &RedisConfig) -> Result<Self, String> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| format!("[redis] url: {e}"))?;
        Ok(Self {
            manager: tokio::sync::OnceCell::new(),
            client,
            script: redis::Script::new(GCRA),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
        })
    }

    async fn check(
        &self,
        route: &str,
        key: &str,
        interval_ns: u64,
        burst: u32,
    ) -> Result<Verdict, String> {
        let attempt = async {
            let manager = self
                .manager
                .get_or_try_init(|| async {
                    let cfg = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1);
                    redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg).await
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut conn = manager.clone();
            // The key is hashed: subjects and addresses are not stored as such.
            let digest = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                format!("{route}\0{key}").as_bytes(),
            );
            let mut redis_key = self.prefix.clone();
            for b in &digest.as_ref()[..16] {
                redis_key.push_str(&format!("{b:02x}"));
            }
            let interval_us = (interval_ns / 1000).max(1);
            let (allowed, wait_us, remaining): (i64, i64, i64) = self
                .script
                .key(redis_key)
                .arg(interval_us)
                .arg(burst)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let wait = wait_us.max(0) as u64;
            Ok(Verdict {
                allowed: allowed == 1,
                limit: burst,
                remaining: remaining.clamp(0, i64::from(burst)) as u32,
                retry_after: wait.div_ceil(1_000_000),
            })
        };
        match tokio::time::timeout(self.timeout * 2, attempt).await {
            Ok(r) => r,
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitKey;

    fn limit(rate: u32, burst: u32) -> RouteLimit {
        RouteLimit::new(
            "r",
            &RateLimitConfig {
                rate,
                per: Duration::from_secs(60),
                burst: Some(burst),
                key: LimitKey::Address,
                global: false,
            },
            None,
        )
    }

    #[test]
    fn the_burst_passes_then_each_key_waits_on_its_own() {
        let l = limit(1, 3);
        for left in [2, 1, 0] {
            let v = l.check_local("a");
            assert!(v.allowed && v.remaining == left, "{v:?}");
        }
        let v = l.check_local("a");
        assert!(
            !v.allowed && v.retry_after > 0 && v.retry_after <= 60,
            "{v:?}"
        );
        assert!(l.check_local("b").allowed, "another key has its own budget");
    }
}

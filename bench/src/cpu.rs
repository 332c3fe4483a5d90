//! CPU time probes: of a thread of this process (from
//! `/proc/self/task/<tid>/schedstat`, nanoseconds on CPU) and of
//! `redis-server`'s main thread (`INFO cpu`, microseconds).
//!
//! They show where the time goes independently of the throughput: the
//! server thread's CPU per request is what a contender costs the app.

use std::path::PathBuf;

use fred::clients::Client;

/// The schedstat file of the calling thread, by its thread id (so that
/// another thread can read it).
pub fn thread_schedstat() -> Option<PathBuf> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    let tid = link.file_name()?.to_owned();
    Some(PathBuf::from("/proc/self/task").join(tid).join("schedstat"))
}

/// Nanoseconds the thread has spent on a CPU.
pub fn thread_cpu_ns(schedstat: Option<&PathBuf>) -> Option<u64> {
    let text = std::fs::read_to_string(schedstat?).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Nanoseconds a group of threads has spent on a CPU, together (`None`
/// when any of them cannot be read).
pub fn threads_cpu_ns(schedstats: &[PathBuf]) -> Option<u64> {
    if schedstats.is_empty() {
        return None;
    }
    schedstats.iter().map(|s| thread_cpu_ns(Some(s))).sum()
}

/// Microseconds `redis-server`'s main thread has spent on a CPU (user +
/// system), or of the whole process on servers without the per-thread
/// fields.
pub async fn redis_cpu_us(client: &Client) -> Option<f64> {
    let info = crate::common::info(client, "cpu").await;
    let field = |name: &str| -> Option<f64> { crate::common::field(&info, name)?.parse().ok() };
    let seconds = match (
        field("used_cpu_user_main_thread"),
        field("used_cpu_sys_main_thread"),
    ) {
        (Some(user), Some(sys)) => user + sys,
        _ => field("used_cpu_user")? + field("used_cpu_sys")?,
    };
    Some(seconds * 1e6)
}

/// Clock ticks (`USER_HZ`, 100 per second on Linux) all CPUs have spent
/// busy, from the first line of `/proc/stat`.
pub fn system_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy = fields.get(..8)?;
    Some(busy[0] + busy[1] + busy[2] + busy[5] + busy[6] + busy[7])
}

/// Clock ticks this process has spent on a CPU (user + system).
pub fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc/stat` (`USER_HZ`): 100 on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub server_ns: Option<u64>,
    pub client_ns: Option<u64>,
    pub redis_us: Option<f64>,
    pub system_ticks: Option<u64>,
    pub process_ticks: Option<u64>,
}

/// CPU used between two samples, per request, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerRequest {
    pub server_us: Option<f64>,
    pub client_us: Option<f64>,
    pub redis_us: Option<f64>,
    /// Share of the window the server and client threads were on a CPU.
    pub server_busy: Option<f64>,
    pub client_busy: Option<f64>,
    /// Cores' worth of CPU used by other processes than this one and
    /// `redis-server` (another build, say): the noise to look out for.
    pub foreign_cores: Option<f64>,
}

impl PerRequest {
    pub fn between(a: Sample, b: Sample, requests: u64, window_s: f64) -> PerRequest {
        let n = requests.max(1) as f64;
        let ns = |x: Option<u64>, y: Option<u64>| Some(y?.saturating_sub(x?) as f64);
        let server = ns(a.server_ns, b.server_ns);
        let client = ns(a.client_ns, b.client_ns);
        PerRequest {
            server_us: server.map(|ns| ns / 1e3 / n),
            client_us: client.map(|ns| ns / 1e3 / n),
            redis_us: match (a.redis_us, b.redis_us) {
                (Some(x), Some(y)) => Some((y - x).max(0.0) / n),
                _ => None,
            },
            server_busy: server.map(|ns| ns / 1e9 / window_s),
            client_busy: client.map(|ns| ns / 1e9 / window_s),
            foreign_cores: foreign_cores(a, b, window_s),
        }
    }
}

fn foreign_cores(a: Sample, b: Sample, window_s: f64) -> Option<f64> {
    let system = b.system_ticks?.checked_sub(a.system_ticks?)? as f64;
    let own = b.process_ticks?.checked_sub(a.process_ticks?)? as f64;
    let redis = (b.redis_us? - a.redis_us?).max(0.0) / 1e6 * TICKS_PER_SECOND;
    Some(((system - own - redis) / TICKS_PER_SECOND / window_s).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_counters_are_readable_here() {
        assert!(system_busy_ticks().is_some());
        assert!(process_ticks().is_some());
        let path = thread_schedstat();
        assert!(thread_cpu_ns(path.as_ref()).is_some());
    }
}

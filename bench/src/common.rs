//! Helpers both benchmark programs use: the harness (`bench/`) and the
//! purge benchmark (`benches/purge.rs`, which includes this file by path).
#![allow(dead_code)]

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::CustomCommand;

/// A fred client on its defaults, connected to `url`.
pub async fn connect(url: &str) -> Result<Client, String> {
    let config = fred::types::config::Config::from_url(url).map_err(|e| e.to_string())?;
    let client = fred::types::Builder::from_config(config)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .init()
        .await
        .map_err(|e| format!("connect to the bench redis-server: {e}"))?;
    Ok(client)
}

/// The text of `INFO <section>` (empty if the command fails).
pub async fn info(client: &Client, section: &str) -> String {
    client
        .custom(
            CustomCommand::new_static("INFO", None, false),
            vec![section.to_owned()],
        )
        .await
        .unwrap_or_default()
}

/// One field of an `INFO` text.
pub fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// One field of `INFO <section>` ("?" if absent).
pub async fn info_field(client: &Client, section: &str, name: &str) -> String {
    field(&info(client, section).await, name)
        .unwrap_or("?")
        .to_owned()
}

/// The CPU model, the core count, the OS and the architecture.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!(
        "{cpu}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

//! kuutamoctl: ask Consul which kuutamod node is the active validator.
//!
//! `kuutamoctl active-validator [--json]` exits 0 and names the node holding the lock, exits 1
//! when no node holds it, and exits 2 when the key names a session that no longer exists.
//! Other failures (Consul unreachable) exit 3.

use clap::{Parser, Subcommand};
use kuutamod::consul::Consul;
use kuutamod::lease::{Record, RecordState};
use kuutamod::settings::{check_consul_url, consul_token, leader_key};

#[derive(Parser)]
#[command(name = "kuutamoctl", version, about = "Inspect a kuutamod cluster")]
struct Cli {
    /// Consul HTTP API.
    #[arg(
        long,
        env = "KUUTAMO_CONSUL_URL",
        default_value = "http://localhost:8500"
    )]
    consul_url: String,
    /// Validator account whose lock to inspect.
    #[arg(long, env = "KUUTAMO_ACCOUNT_ID")]
    account_id: String,
    /// Consul ACL token (else CONSUL_HTTP_TOKEN, else the token file).
    #[arg(long, env = "KUUTAMO_CONSUL_TOKEN", hide_env_values = true)]
    consul_token: Option<String>,
    /// File holding the Consul ACL token.
    #[arg(long, env = "KUUTAMO_CONSUL_TOKEN_FILE")]
    consul_token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the node that holds the validator lock.
    ActiveValidator {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kuutamoctl: {e}");
            3
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32, String> {
    check_consul_url(&cli.consul_url)?;
    let token = consul_token(
        cli.consul_token.as_deref(),
        cli.consul_token_file.as_deref(),
    )?;
    let consul = Consul::new(&cli.consul_url, token).map_err(|e| e.to_string())?;
    let Command::ActiveValidator { json } = cli.command;
    let key = leader_key(&cli.account_id);
    let (entry, _) = consul
        .get_key(&key, None, false)
        .await
        .map_err(|e| e.to_string())?;
    let holder = entry
        .as_ref()
        .and_then(|e| e.session.clone())
        .filter(|s| !s.is_empty());
    let record = entry.as_ref().and_then(|e| Record::parse(&e.bytes()));
    let (code, leader, session_alive) = match (&entry, &holder) {
        (Some(e), Some(session)) => {
            let alive = consul
                .session_info(session)
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            let _ = e;
            (if alive { 0 } else { 2 }, record.clone(), alive)
        }
        _ => (1, None, false),
    };
    if json {
        let out = serde_json::json!({
            "account_id": cli.account_id,
            "key": key,
            "node_id": leader.as_ref().map(|l| l.node_id.clone()),
            "hostname": leader.as_ref().map(|l| l.hostname.clone()),
            "session": holder,
            "session_alive": session_alive,
            "released": record.as_ref().is_some_and(|r| r.state == RecordState::Released),
        });
        println!("{out}");
    } else {
        match (code, &leader) {
            (0, Some(l)) => println!("{} ({})", l.node_id, l.hostname),
            (0, None) => println!(
                "held by session {} (value is not a kuutamod leader)",
                holder.unwrap_or_default()
            ),
            (2, _) => println!(
                "no active validator: {key} names session {} which no longer exists",
                holder.unwrap_or_default()
            ),
            _ => println!("no active validator for {}", cli.account_id),
        }
    }
    Ok(code)
}

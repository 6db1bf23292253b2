//! The schedule's text form: a scenario line and one line per fault, as [`Schedule`]'s
//! `Display` writes them and [`Schedule::parse`] reads them back, so that a shrunk schedule can
//! be kept in a file and replayed.

use std::fmt;

use super::{Fault, FaultKind, ReloadMode, Scenario, Schedule};

impl Schedule {
    /// Parses the text [`Schedule`]'s `Display` writes.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let mut scenario = None;
        let mut faults = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |e: String| format!("line {}: {e}: {line}", i + 1);
            if let Some(rest) = line.strip_prefix("scenario ") {
                scenario = Some(parse_scenario(rest).map_err(err)?);
            } else {
                faults.push(parse_fault(line).map_err(err)?);
            }
        }
        let scenario = scenario.ok_or("no scenario line")?;
        if let Some(f) = faults
            .iter()
            .find(|f| f.host().is_some_and(|h| h >= scenario.hosts))
        {
            return Err(format!("fault for a host that does not exist: {f}"));
        }
        faults.sort_by_key(|f| f.at);
        Ok(Schedule { scenario, faults })
    }
}

impl fmt::Display for ReloadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReloadMode::Slow => "slow",
            ReloadMode::Ignore => "ignore",
            ReloadMode::Fail => "fail",
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FaultKind::*;
        write!(f, "{} ", self.at)?;
        match &self.kind {
            NeardCrash { host } => write!(f, "neard-crash host={host}"),
            NeardHang { host, dur } => write!(f, "neard-hang host={host} dur={dur}"),
            NeardSyncing { host, dur } => write!(f, "neard-syncing host={host} dur={dur}"),
            NeardReload { host, dur, mode } => {
                write!(f, "neard-reload host={host} dur={dur} mode={mode}")
            }
            NeardLag { host, dur, lag } => write!(f, "neard-lag host={host} dur={dur} lag={lag}"),
            NeardSlowStop { host, dur } => write!(f, "neard-slow-stop host={host} dur={dur}"),
            KuutamodKill { host, down } => write!(f, "kuutamod-kill host={host} down={down}"),
            KuutamodStop { host, dur } => write!(f, "kuutamod-stop host={host} dur={dur}"),
            GroupStop { host, dur } => write!(f, "group-stop host={host} dur={dur}"),
            GuardStop { host, dur } => write!(f, "guard-stop host={host} dur={dur}"),
            GuardKill { host } => write!(f, "guard-kill host={host}"),
            GroupStopGuardKill { host, dur, after } => {
                write!(
                    f,
                    "group-stop-guard-kill host={host} dur={dur} after={after}"
                )
            }
            AgentRestart { host, down } => write!(f, "agent-restart host={host} down={down}"),
            AgentKill { host, down } => write!(f, "agent-kill host={host} down={down}"),
            AgentPause { host, dur } => write!(f, "agent-pause host={host} dur={dur}"),
            AgentPartition { host, dur } => write!(f, "agent-partition host={host} dur={dur}"),
            Election { dur } => write!(f, "consul-election dur={dur}"),
            QuorumLoss { dur } => write!(f, "consul-quorum-loss dur={dur}"),
            ConsulSlow { dur, max } => write!(f, "consul-slow dur={dur} max={max}"),
            ConsulLossy { dur, permille } => {
                write!(f, "consul-lossy dur={dur} permille={permille}")
            }
            KvDelete => write!(f, "kv-delete"),
            KvOverwrite => write!(f, "kv-overwrite"),
            KvForeignAcquire { dur } => write!(f, "kv-foreign-acquire dur={dur}"),
            TombstoneReap => write!(f, "tombstone-reap"),
            HostSuspend { host, dur } => write!(f, "host-suspend host={host} dur={dur}"),
            HandOver { host } => write!(f, "hand-over host={host}"),
            Sigterm { host, down } => write!(f, "sigterm host={host} down={down}"),
            CtlPause { dur } => write!(f, "ctl-pause dur={dur}"),
            CtlSwitchover { to, wait } => {
                write!(f, "ctl-switchover")?;
                if let Some(h) = to {
                    write!(f, " to={h}")?;
                }
                if *wait {
                    write!(f, " wait=1")?;
                }
                Ok(())
            }
            CtlCancel => write!(f, "ctl-cancel"),
            PriorityChange {
                host,
                priority,
                down,
            } => write!(f, "priority host={host} priority={priority} down={down}"),
            NeardBehind { host, dur, heights } => {
                write!(f, "neard-behind host={host} dur={dur} heights={heights}")
            }
            NeardSyncSpells { host, dur, spell } => {
                write!(f, "neard-sync-spells host={host} dur={dur} spell={spell}")
            }
            NeardFreeze { host, dur } => write!(f, "neard-freeze host={host} dur={dur}"),
            WallStep { host, dur, step } => {
                write!(f, "wall-step host={host} dur={dur} step={step}")
            }
            ConsulRestore { dur } => write!(f, "consul-restore dur={dur}"),
        }
    }
}

fn list<T: fmt::Display>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scenario hosts={} hot_swap={} stall={} old_neard={} priority={} drift_ppm={} wall_offset_ms={} boot_ms={} lag_ms={}",
            self.hosts,
            u8::from(self.hot_swap),
            u8::from(self.stall),
            list(&self.old_neard.iter().map(|b| u8::from(*b)).collect::<Vec<_>>()),
            list(&self.priority),
            list(&self.drift_ppm),
            list(&self.wall_offset_ms),
            list(&self.boot_ms),
            list(&self.lag_ms),
        )?;
        // Written only when set, so that schedules from before they existed read the same.
        if self.kd_wall_ms.iter().any(|w| *w != 0) {
            write!(f, " kd_wall_ms={}", list(&self.kd_wall_ms))?;
        }
        if let Some(h) = self.same_id {
            write!(f, " same_id={h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.scenario)?;
        for fault in &self.faults {
            writeln!(f, "{fault}")?;
        }
        Ok(())
    }
}

fn words(s: &str) -> Result<Vec<(&str, &str)>, String> {
    s.split_whitespace()
        .map(|w| {
            w.split_once('=')
                .ok_or(format!("expected key=value, got {w:?}"))
        })
        .collect()
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("not a number: {v:?}"))
}

fn nums<T: std::str::FromStr>(v: &str) -> Result<Vec<T>, String> {
    v.split(',').map(num).collect()
}

fn parse_scenario(rest: &str) -> Result<Scenario, String> {
    let mut s = Scenario {
        hosts: 0,
        hot_swap: true,
        stall: false,
        old_neard: Vec::new(),
        priority: Vec::new(),
        drift_ppm: Vec::new(),
        wall_offset_ms: Vec::new(),
        boot_ms: Vec::new(),
        lag_ms: Vec::new(),
        kd_wall_ms: Vec::new(),
        same_id: None,
    };
    for (k, v) in words(rest)? {
        match k {
            "hosts" => s.hosts = num(v)?,
            "hot_swap" => s.hot_swap = num::<u8>(v)? == 1,
            "stall" => s.stall = num::<u8>(v)? == 1,
            "old_neard" => s.old_neard = nums::<u8>(v)?.into_iter().map(|x| x == 1).collect(),
            "priority" => s.priority = nums(v)?,
            "drift_ppm" => s.drift_ppm = nums(v)?,
            "wall_offset_ms" => s.wall_offset_ms = nums(v)?,
            "boot_ms" => s.boot_ms = nums(v)?,
            "lag_ms" => s.lag_ms = nums(v)?,
            "kd_wall_ms" => s.kd_wall_ms = nums(v)?,
            "same_id" => s.same_id = Some(num(v)?),
            _ => return Err(format!("unknown scenario field {k}")),
        }
    }
    let n = s.hosts;
    if s.kd_wall_ms.is_empty() {
        s.kd_wall_ms = vec![0; n];
    }
    if s.kd_wall_ms.len() != n || s.same_id.is_some_and(|h| h == 0 || h >= n) {
        return Err("kd_wall_ms needs one value per host, same_id a host other than 0".into());
    }
    let ok = n >= 1
        && [
            s.old_neard.len(),
            s.priority.len(),
            s.drift_ppm.len(),
            s.wall_offset_ms.len(),
            s.boot_ms.len(),
            s.lag_ms.len(),
        ]
        .iter()
        .all(|l| *l == n);
    if !ok {
        return Err("every per-host list needs one value per host".into());
    }
    Ok(s)
}

fn parse_fault(line: &str) -> Result<Fault, String> {
    use FaultKind::*;
    let mut it = line.splitn(3, ' ');
    let at: u64 = num(it.next().unwrap_or(""))?;
    let name = it.next().ok_or("no fault name")?;
    let args = words(it.next().unwrap_or(""))?;
    let get = |k: &str| -> Result<u64, String> {
        args.iter()
            .find(|(key, _)| *key == k)
            .ok_or(format!("{name} needs {k}="))
            .and_then(|(_, v)| num(v))
    };
    let host = || get("host").map(|h| h as usize);
    let signed = |k: &str| -> Result<i64, String> {
        args.iter()
            .find(|(key, _)| *key == k)
            .ok_or(format!("{name} needs {k}="))
            .and_then(|(_, v)| num(v))
    };
    let kind = match name {
        "neard-crash" => NeardCrash { host: host()? },
        "neard-hang" => NeardHang {
            host: host()?,
            dur: get("dur")?,
        },
        "neard-syncing" => NeardSyncing {
            host: host()?,
            dur: get("dur")?,
        },
        "neard-reload" => NeardReload {
            host: host()?,
            dur: get("dur")?,
            mode: match args.iter().find(|(k, _)| *k == "mode").map(|(_, v)| *v) {
                Some("slow") => ReloadMode::Slow,
                Some("ignore") => ReloadMode::Ignore,
                Some("fail") => ReloadMode::Fail,
                other => return Err(format!("bad reload mode {other:?}")),
            },
        },
        "neard-lag" => NeardLag {
            host: host()?,
            dur: get("dur")?,
            lag: get("lag")?,
        },
        "neard-slow-stop" => NeardSlowStop {
            host: host()?,
            dur: get("dur")?,
        },
        "kuutamod-kill" => KuutamodKill {
            host: host()?,
            down: get("down")?,
        },
        "kuutamod-stop" => KuutamodStop {
            host: host()?,
            dur: get("dur")?,
        },
        "group-stop" => GroupStop {
            host: host()?,
            dur: get("dur")?,
        },
        "guard-stop" => GuardStop {
            host: host()?,
            dur: get("dur")?,
        },
        "guard-kill" => GuardKill { host: host()? },
        "group-stop-guard-kill" => GroupStopGuardKill {
            host: host()?,
            dur: get("dur")?,
            after: get("after")?,
        },
        "agent-restart" => AgentRestart {
            host: host()?,
            down: get("down")?,
        },
        "agent-kill" => AgentKill {
            host: host()?,
            down: get("down")?,
        },
        "agent-pause" => AgentPause {
            host: host()?,
            dur: get("dur")?,
        },
        "agent-partition" => AgentPartition {
            host: host()?,
            dur: get("dur")?,
        },
        "consul-election" => Election { dur: get("dur")? },
        "consul-quorum-loss" => QuorumLoss { dur: get("dur")? },
        "consul-slow" => ConsulSlow {
            dur: get("dur")?,
            max: get("max")?,
        },
        "consul-lossy" => ConsulLossy {
            dur: get("dur")?,
            permille: get("permille")?,
        },
        "kv-delete" => KvDelete,
        "kv-overwrite" => KvOverwrite,
        "kv-foreign-acquire" => KvForeignAcquire { dur: get("dur")? },
        "tombstone-reap" => TombstoneReap,
        "host-suspend" => HostSuspend {
            host: host()?,
            dur: get("dur")?,
        },
        "hand-over" => HandOver { host: host()? },
        "sigterm" => Sigterm {
            host: host()?,
            down: get("down")?,
        },
        "ctl-pause" => CtlPause { dur: get("dur")? },
        "ctl-switchover" => CtlSwitchover {
            to: get("to").ok().map(|h| h as usize),
            wait: get("wait").is_ok_and(|w| w == 1),
        },
        "ctl-cancel" => CtlCancel,
        "priority" => PriorityChange {
            host: host()?,
            priority: u32::try_from(get("priority")?).map_err(|e| e.to_string())?,
            down: get("down")?,
        },
        "neard-behind" => NeardBehind {
            host: host()?,
            dur: get("dur")?,
            heights: get("heights")?,
        },
        "neard-sync-spells" => NeardSyncSpells {
            host: host()?,
            dur: get("dur")?,
            spell: get("spell")?,
        },
        "neard-freeze" => NeardFreeze {
            host: host()?,
            dur: get("dur")?,
        },
        "wall-step" => WallStep {
            host: host()?,
            dur: get("dur")?,
            step: signed("step")?,
        },
        "consul-restore" => ConsulRestore { dur: get("dur")? },
        other => return Err(format!("unknown fault {other}")),
    };
    Ok(Fault { at, kind })
}

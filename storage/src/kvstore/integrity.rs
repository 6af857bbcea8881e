//! The integrity check: decodes every record of every family and checks that records and
//! their index entries agree in both directions. Used by the crash test, the conformance suite
//! and `fleetgate storage check`.

use std::collections::{BTreeMap, BTreeSet};

use fleetgate_model::app::{ApiKey, Application};
use fleetgate_model::command::{Command, CommandStatus};
use fleetgate_model::device::{Credential, Device, Group};
use fleetgate_model::lwm2m::RegistrationId;
use fleetgate_model::ota::{OtaDeviceProgress, OtaPackage, OtaTask};
use fleetgate_model::product::Product;
use fleetgate_model::rule::{AclRule, RoutingRule, RuleAction};
use fleetgate_model::shadow::Shadow;
use fleetgate_model::{AppId, CommandId};
use serde::de::DeserializeOwned;

use super::KvStore;
use super::commands::{deadline_key, idempotency_key, sent_key};
use super::devices::index_keys;
use super::registrations::{count_from, location_from};
use crate::error::Result;
use crate::keys;
use crate::kv::{Cf, Entry, KeyRange, KvEngine};
use crate::traits::IntegrityReport;
use crate::value;

struct Checker<'a, E> {
    store: &'a KvStore<E>,
    report: IntegrityReport,
}

impl<E: KvEngine> Checker<'_, E> {
    /// Visits every entry of `cf` under `prefix`, in pages.
    fn each(
        &mut self,
        cf: Cf,
        prefix: &[u8],
        mut f: impl FnMut(&mut Self, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut range = KeyRange::prefix(prefix);
        loop {
            let entries: Vec<Entry> = self.store.engine.scan(cf, &range, 4096)?;
            for (k, v) in &entries {
                self.report.checked += 1;
                f(self, k, v)?;
            }
            match entries.last() {
                Some((k, _)) if entries.len() == 4096 => {
                    range = KeyRange::prefix_after(prefix, Some(k))
                }
                _ => return Ok(()),
            }
        }
    }

    fn problem(&mut self, text: String) {
        self.report.problems.push(text);
    }

    fn decode<T: DeserializeOwned>(&mut self, cf: Cf, k: &[u8], v: &[u8]) -> Option<T> {
        match value::decode(cf, k, v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(e.to_string());
                None
            }
        }
    }

    fn present(&mut self, cf: Cf, key: &[u8], what: impl FnOnce() -> String) -> Result<()> {
        if self.store.engine.get(cf, key)?.is_none() {
            let text = what();
            self.problem(format!("missing {}: {text}", cf.name()));
        }
        Ok(())
    }
}

pub(super) fn check<E: KvEngine>(store: &KvStore<E>) -> Result<IntegrityReport> {
    let mut c = Checker {
        store,
        report: IntegrityReport::default(),
    };

    // Devices and every index entry they imply.
    let mut device_index = BTreeSet::new();
    let mut group_members: BTreeMap<String, u32> = BTreeMap::new();
    c.each(Cf::Devices, b"", |c, k, v| {
        let Some(d) = c.decode::<Device>(Cf::Devices, k, v) else {
            return Ok(());
        };
        if k != d.device_id.as_str().as_bytes() {
            c.problem(format!(
                "device {} stored under key {}",
                d.device_id,
                value::escape(k)
            ));
        }
        for key in index_keys(&d) {
            c.present(Cf::Index, &key, || {
                format!(
                    "index entry {} of device {}",
                    value::escape(&key),
                    d.device_id
                )
            })?;
            device_index.insert(key);
        }
        let unique = keys::node_in_product(&d.product_id, &d.node_id);
        match c.store.engine.get(Cf::Index, &unique)? {
            Some(v) if v == d.device_id.as_str().as_bytes() => {}
            _ => c.problem(format!(
                "node index of device {} is missing or wrong",
                d.device_id
            )),
        }
        // A device without a credential is allowed: the application API revoked it.
        c.present(Cf::Products, d.product_id.as_str().as_bytes(), || {
            format!("product of device {}", d.device_id)
        })?;
        for g in &d.groups {
            *group_members.entry(g.to_string()).or_default() += 1;
        }
        Ok(())
    })?;
    c.each(Cf::Credentials, b"", |c, k, v| {
        c.decode::<Credential>(Cf::Credentials, k, v);
        c.present(Cf::Devices, k, || {
            format!("device of credential {}", value::escape(k))
        })
    })?;
    c.each(Cf::Presence, b"", |c, k, v| {
        if let Err(e) = value::decode_presence(k, v) {
            c.problem(e.to_string());
        }
        c.present(Cf::Devices, k, || {
            format!("device of presence {}", value::escape(k))
        })
    })?;
    c.each(Cf::Shadows, b"", |c, k, v| {
        c.decode::<Shadow>(Cf::Shadows, k, v);
        c.present(Cf::Devices, k, || {
            format!("device of shadow {}", value::escape(k))
        })
    })?;

    // Index entries must point back at records that imply them.
    c.each(Cf::Index, b"", |c, k, v| {
        match k.first() {
            Some(b'A' | b'P' | b'W' | b'S' | b'M' | b'T' | b'n') => {
                if !device_index.contains(k) {
                    c.problem(format!("stale device index entry {}", value::escape(k)));
                }
            }
            Some(b'N') => {
                c.present(Cf::Devices, v, || {
                    format!("device of node entry {}", value::escape(k))
                })?;
            }
            Some(b'm') => c.present(Cf::Products, v, || {
                format!("product of name entry {}", value::escape(k))
            })?,
            Some(b'a') => {
                let id = keys::last_part(k).unwrap_or_default().as_bytes().to_vec();
                c.present(Cf::Products, &id, || {
                    format!("product of index entry {}", value::escape(k))
                })?;
            }
            Some(b'g') => {
                let id = keys::last_part(k).unwrap_or_default().as_bytes().to_vec();
                c.present(Cf::Groups, &id, || {
                    format!("group of index entry {}", value::escape(k))
                })?;
            }
            _ => c.problem(format!("unknown index entry {}", value::escape(k))),
        }
        Ok(())
    })?;
    c.each(Cf::Products, b"", |c, k, v| {
        if let Some(p) = c.decode::<Product>(Cf::Products, k, v) {
            c.present(Cf::Index, &keys::product_name(&p.name), || {
                format!("name entry of product {}", p.product_id)
            })?;
        }
        Ok(())
    })?;
    c.each(Cf::Groups, b"", |c, k, v| {
        if let Some(g) = c.decode::<Group>(Cf::Groups, k, v) {
            let members = group_members.get(g.group_id.as_str()).copied().unwrap_or(0);
            if members != g.device_count {
                c.problem(format!(
                    "group {} counts {} members but has {members}",
                    g.group_id, g.device_count
                ));
            }
        }
        Ok(())
    })?;

    // Commands: records, history, time and idempotency indexes, queue, deadline and sent
    // entries.
    let mut queued: BTreeSet<CommandId> = BTreeSet::new();
    let mut deadlined: BTreeSet<CommandId> = BTreeSet::new();
    let mut sent: BTreeSet<CommandId> = BTreeSet::new();
    c.each(Cf::CommandQueue, b"", |c, k, v| {
        match k.first() {
            Some(b'q') => {
                let Ok(bytes) = <[u8; 16]>::try_from(v) else {
                    c.problem(format!(
                        "queue entry {} is not a command id",
                        value::escape(k)
                    ));
                    return Ok(());
                };
                let id = CommandId::from_bytes(bytes);
                match c.store.read::<Command>(Cf::Commands, &keys::command(&id)) {
                    Ok(Some(cmd))
                        if cmd.status == CommandStatus::Pending
                            && k.starts_with(&keys::queue(&cmd.device_id, None)) =>
                    {
                        queued.insert(id);
                    }
                    Ok(Some(cmd)) => c.problem(format!(
                        "queue entry for command {id} in status {}",
                        cmd.status
                    )),
                    Ok(None) => c.problem(format!("queue entry for missing command {id}")),
                    Err(e) => c.problem(e.to_string()),
                }
            }
            Some(b'x') => {
                let Some(id) = keys::tail::<16>(k)
                    .filter(|_| k.len() == 25)
                    .map(CommandId::from_bytes)
                else {
                    c.problem(format!(
                        "deadline entry {} has the wrong length",
                        value::escape(k)
                    ));
                    return Ok(());
                };
                match c.store.read::<Command>(Cf::Commands, &keys::command(&id)) {
                    Ok(Some(cmd)) if deadline_key(&cmd).as_deref() == Some(k) => {
                        deadlined.insert(id);
                    }
                    Ok(Some(cmd)) => c.problem(format!(
                        "deadline entry {} does not match command {id} in status {}",
                        value::escape(k),
                        cmd.status
                    )),
                    Ok(None) => c.problem(format!("deadline entry for missing command {id}")),
                    Err(e) => c.problem(e.to_string()),
                }
            }
            Some(b's') => {
                let Some(id) = keys::tail::<16>(k).map(CommandId::from_bytes) else {
                    c.problem(format!("sent entry {} is too short", value::escape(k)));
                    return Ok(());
                };
                match c.store.read::<Command>(Cf::Commands, &keys::command(&id)) {
                    Ok(Some(cmd)) if sent_key(&cmd).as_deref() == Some(k) => {
                        sent.insert(id);
                    }
                    Ok(Some(cmd)) => c.problem(format!(
                        "sent entry {} for command {id} in status {}",
                        value::escape(k),
                        cmd.status
                    )),
                    Ok(None) => c.problem(format!("sent entry for missing command {id}")),
                    Err(e) => c.problem(e.to_string()),
                }
            }
            _ => c.problem(format!("unknown command_queue entry {}", value::escape(k))),
        }
        Ok(())
    })?;
    c.each(Cf::Commands, b"i", |c, k, v| {
        let Ok(bytes) = <[u8; 16]>::try_from(v) else {
            c.problem(format!(
                "idempotency entry {} is not a command id",
                value::escape(k)
            ));
            return Ok(());
        };
        let id = CommandId::from_bytes(bytes);
        match c.store.read::<Command>(Cf::Commands, &keys::command(&id)) {
            Ok(Some(cmd)) if idempotency_key(&cmd).as_deref() == Some(k) => {}
            Ok(Some(_)) => c.problem(format!(
                "idempotency entry {} does not match command {id}",
                value::escape(k)
            )),
            Ok(None) => c.problem(format!("idempotency entry for missing command {id}")),
            Err(e) => c.problem(e.to_string()),
        }
        Ok(())
    })?;
    c.each(Cf::Commands, b"r", |c, k, v| {
        let Some(cmd) = c.decode::<Command>(Cf::Commands, k, v) else {
            return Ok(());
        };
        let at = Some((cmd.created_time, &cmd.command_id));
        c.present(
            Cf::Commands,
            &keys::command_history(&cmd.device_id, at),
            || format!("history entry of {}", cmd.command_id),
        )?;
        c.present(Cf::Commands, &keys::command_by_time(at), || {
            format!("time entry of {}", cmd.command_id)
        })?;
        if c.store
            .engine
            .get(Cf::Devices, cmd.device_id.as_str().as_bytes())?
            .is_none()
        {
            c.problem(format!(
                "command {} of missing device {}",
                cmd.command_id, cmd.device_id
            ));
        }
        if cmd.status == CommandStatus::Pending && !queued.contains(&cmd.command_id) {
            c.problem(format!("pending command {} is not queued", cmd.command_id));
        }
        if cmd.deadline().is_some() && !deadlined.contains(&cmd.command_id) {
            c.problem(format!(
                "{} command {} has no deadline entry",
                cmd.status, cmd.command_id
            ));
        }
        if cmd.status == CommandStatus::Sent && !sent.contains(&cmd.command_id) {
            c.problem(format!("sent command {} has no sent entry", cmd.command_id));
        }
        if let Some(key) = idempotency_key(&cmd) {
            match c.store.engine.get(Cf::Commands, &key)? {
                Some(v) if v == cmd.command_id.as_bytes() => {}
                _ => c.problem(format!(
                    "idempotency entry of command {} is missing or wrong",
                    cmd.command_id
                )),
            }
        }
        Ok(())
    })?;
    for prefix in [b"h", b"t"] {
        c.each(Cf::Commands, prefix, |c, k, _| {
            match keys::tail::<16>(k).map(CommandId::from_bytes) {
                Some(id) => c.present(Cf::Commands, &keys::command(&id), || {
                    format!("command of index entry {}", value::escape(k))
                })?,
                None => c.problem(format!(
                    "command index entry {} is too short",
                    value::escape(k)
                )),
            }
            Ok(())
        })?;
    }

    // The remaining families only need to decode.
    c.each(Cf::Ota, b"k", |c, k, v| {
        c.decode::<OtaPackage>(Cf::Ota, k, v);
        Ok(())
    })?;
    c.each(Cf::Ota, b"j", |c, k, v| {
        c.decode::<OtaTask>(Cf::Ota, k, v);
        Ok(())
    })?;
    c.each(Cf::Ota, b"p", |c, k, v| {
        if let Some(p) = c.decode::<OtaDeviceProgress>(Cf::Ota, k, v)
            && !p.status.is_terminal()
        {
            c.present(
                Cf::Ota,
                &keys::active_task(&p.device_id, Some(&p.task_id)),
                || format!("active entry of {} in {}", p.device_id, p.task_id),
            )?;
        }
        Ok(())
    })?;
    c.each(Cf::Rules, b"r", |c, k, v| {
        c.decode::<RoutingRule>(Cf::Rules, k, v);
        Ok(())
    })?;
    c.each(Cf::Rules, b"a", |c, k, v| {
        if let Some(a) = c.decode::<RuleAction>(Cf::Rules, k, v) {
            c.present(Cf::Rules, &keys::rule(&a.rule_id), || {
                format!("rule of action {}", a.action_id)
            })?;
        }
        Ok(())
    })?;
    c.each(Cf::Acl, b"", |c, k, v| {
        c.decode::<AclRule>(Cf::Acl, k, v);
        Ok(())
    })?;

    // Applications and API keys: records, the unique-name index and keys by application.
    c.each(Cf::Apps, b"", |c, k, v| {
        match k.first() {
            Some(b'a') => {
                let Some(app) = c.decode::<Application>(Cf::Apps, k, v) else {
                    return Ok(());
                };
                if k != keys::app(&app.app_id) {
                    c.problem(format!(
                        "application {} stored under key {}",
                        app.app_id,
                        value::escape(k)
                    ));
                }
                match c.store.engine.get(Cf::Apps, &keys::app_name(&app.name))? {
                    Some(id) if id == app.app_id.as_str().as_bytes() => {}
                    _ => c.problem(format!(
                        "name entry of application {} is missing or wrong",
                        app.app_id
                    )),
                }
            }
            Some(b'n') => {
                let name = String::from_utf8_lossy(&k[1..]);
                let app = std::str::from_utf8(v)
                    .ok()
                    .and_then(|id| AppId::new(id).ok());
                let record = match &app {
                    Some(id) => c.store.read::<Application>(Cf::Apps, &keys::app(id)),
                    None => Ok(None),
                };
                match record {
                    Ok(Some(a)) if a.name == name => {}
                    Ok(_) => c.problem(format!(
                        "name entry {} does not match an application",
                        value::escape(k)
                    )),
                    Err(e) => c.problem(e.to_string()),
                }
            }
            Some(b'k') => {
                let Some(key) = c.decode::<ApiKey>(Cf::Apps, k, v) else {
                    return Ok(());
                };
                if k != keys::api_key(&key.key_id) {
                    c.problem(format!(
                        "API key {} stored under key {}",
                        key.key_id,
                        value::escape(k)
                    ));
                }
                c.present(
                    Cf::Apps,
                    &keys::api_key_by_app(&key.app_id, Some(&key.key_id)),
                    || format!("application entry of API key {}", key.key_id),
                )?;
                c.present(Cf::Apps, &keys::app(&key.app_id), || {
                    format!("application of API key {}", key.key_id)
                })?;
            }
            Some(b'K') => {
                // `K{app}\0{key_id}`: app ids contain no NUL, key ids might.
                let parsed = k[1..].iter().position(|b| *b == 0).and_then(|i| {
                    let app = std::str::from_utf8(&k[1..1 + i]).ok()?;
                    let key_id = std::str::from_utf8(&k[2 + i..]).ok()?;
                    Some((AppId::new(app).ok()?, key_id))
                });
                let record = match parsed {
                    Some((app, key_id)) => c
                        .store
                        .read::<ApiKey>(Cf::Apps, &keys::api_key(key_id))
                        .map(|r| r.filter(|key| key.app_id == app)),
                    None => Ok(None),
                };
                match record {
                    Ok(Some(_)) => {}
                    Ok(None) => c.problem(format!("stale API key entry {}", value::escape(k))),
                    Err(e) => c.problem(e.to_string()),
                }
            }
            _ => c.problem(format!("unknown apps entry {}", value::escape(k))),
        }
        Ok(())
    })?;

    // LwM2M registrations: records and their device and expiry entries, and the count.
    let mut registrations: i64 = 0;
    c.each(Cf::Registrations, b"", |c, k, v| {
        match k.first() {
            Some(b'r') => {
                registrations += 1;
                let Some(location) = keys::tail::<8>(k)
                    .filter(|_| k.len() == 9)
                    .map(|b| RegistrationId::from_u64(u64::from_be_bytes(b)))
                else {
                    c.problem(format!(
                        "registration key {} is malformed",
                        value::escape(k)
                    ));
                    return Ok(());
                };
                let r = match value::decode_registration(k, location, v) {
                    Ok(r) => r,
                    Err(e) => {
                        c.problem(e.to_string());
                        return Ok(());
                    }
                };
                let of_device = keys::registration_of_device(Some(&r.device_id));
                match c.store.engine.get(Cf::Registrations, &of_device)? {
                    Some(v) if v == location.as_u64().to_be_bytes() => {}
                    _ => c.problem(format!(
                        "device entry of registration {location} is missing or wrong"
                    )),
                }
                let expiry = keys::registration_expiry(Some((r.expires_at, location)));
                c.present(Cf::Registrations, &expiry, || {
                    format!("expiry entry of registration {location}")
                })?;
                c.present(Cf::Devices, r.device_id.as_str().as_bytes(), || {
                    format!("device {} of registration {location}", r.device_id)
                })?;
            }
            Some(b'd') => match location_from(k, v) {
                Ok(location) => match c.store.read_registration(location) {
                    Ok(Some(r)) if keys::registration_of_device(Some(&r.device_id)) == k => {}
                    Ok(_) => c.problem(format!(
                        "stale registration device entry {}",
                        value::escape(k)
                    )),
                    Err(e) => c.problem(e.to_string()),
                },
                Err(e) => c.problem(e.to_string()),
            },
            Some(b'x') => match location_from(k, k.get(9..).unwrap_or_default()) {
                Ok(location) => match c.store.read_registration(location) {
                    Ok(Some(r))
                        if keys::registration_expiry(Some((r.expires_at, location))) == k => {}
                    Ok(_) => c.problem(format!(
                        "stale registration expiry entry {}",
                        value::escape(k)
                    )),
                    Err(e) => c.problem(e.to_string()),
                },
                Err(e) => c.problem(e.to_string()),
            },
            Some(b'c') => match count_from(k, v) {
                Ok(n) => registrations -= n,
                Err(e) => c.problem(e.to_string()),
            },
            _ => c.problem(format!("unknown registrations entry {}", value::escape(k))),
        }
        Ok(())
    })?;
    if registrations != 0 {
        c.problem(format!(
            "the registration count is off by {registrations} from the records"
        ));
    }
    Ok(c.report)
}

//! The query parameters of LwM2M Register and Update (OMA LwM2M 1.0–1.2 TS Core §6.2.1 and
//! §6.2.2), checked against the rules of `docs/coap.md`.
//!
//! [`parse_register`] reads the Uri-Query options of `POST /rd?ep=…&lt=…&lwm2m=…&b=…` into
//! [`RegisterParams`]; [`parse_update`] reads those of `POST /rd/{location}?…` into
//! [`UpdateParams`]. The parameters come as the raw Uri-Query option values
//! ([`message::uri_query`](super::message::uri_query)). Every error displays as a short English
//! sentence meant for the diagnostic payload of the 4.00 Bad Request answer
//! ([`Lwm2mError::diagnostic`]).
//!
//! fleetgate serves the UDP binding only: `b=U`, with queue mode as `b=UQ` in LwM2M 1.0 and as
//! the `Q` parameter from 1.1 on. Other bindings are refused. Unknown parameters are ignored;
//! a parameter given twice is refused.

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::RangeInclusive;

use super::message::split_query;

/// The registration lifetime when `lt` is absent (LwM2M TS Core §6.2.1).
pub const DEFAULT_LIFETIME_SECS: u32 = 86_400;

/// The longest endpoint name fleetgate accepts.
pub const MAX_ENDPOINT_LEN: usize = 64;

/// An LwM2M enabler version, from the `lwm2m` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lwm2mVersion {
    /// LwM2M 1.0, the version of a client that sends no `lwm2m` parameter.
    V1_0,
    /// LwM2M 1.1.
    V1_1,
    /// LwM2M 1.2.
    V1_2,
}

impl Lwm2mVersion {
    /// The version as written in the `lwm2m` parameter.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
        }
    }

    /// Reads `1.0`, `1.1` or `1.2`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1.0" => Some(Self::V1_0),
            "1.1" => Some(Self::V1_1),
            "1.2" => Some(Self::V1_2),
            _ => None,
        }
    }
}

impl fmt::Display for Lwm2mVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device's binding: always UDP, with or without queue mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Binding {
    /// Queue mode: the device is reachable only for a while after it sent something.
    pub queue: bool,
}

/// What a Register request says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterParams {
    /// `ep`: the endpoint name, 1–64 characters of `[A-Za-z0-9_.:-]` (the device's node id).
    pub endpoint: String,
    /// `lt`: the lifetime in seconds, within the caller's bounds; `None` when absent (see
    /// [`RegisterParams::lifetime_or_default`]).
    pub lifetime_secs: Option<u32>,
    /// `lwm2m`: the enabler version, 1.0 when absent.
    pub version: Lwm2mVersion,
    /// `b` and `Q`: UDP, with or without queue mode.
    pub binding: Binding,
    /// `sms`: the device's MSISDN, kept as sent.
    pub sms_number: Option<String>,
    /// `et`: the endpoint type, kept as sent.
    pub endpoint_type: Option<String>,
    /// `d`: the domain, kept as sent.
    pub domain: Option<String>,
}

impl RegisterParams {
    /// The lifetime, [`DEFAULT_LIFETIME_SECS`] when `lt` was absent.
    #[must_use]
    pub fn lifetime_or_default(&self) -> u32 {
        self.lifetime_secs.unwrap_or(DEFAULT_LIFETIME_SECS)
    }
}

/// What an Update request changes; `None` leaves the registration's value as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateParams {
    /// `lt`: a new lifetime in seconds.
    pub lifetime_secs: Option<u32>,
    /// `b` and/or `Q`: a new binding. In LwM2M 1.1 and later, `Q` alone or `b=U` alone both
    /// set it (queue mode exactly when `Q` is present).
    pub binding: Option<Binding>,
    /// `sms`: a new MSISDN.
    pub sms_number: Option<String>,
}

/// Why a Register or Update query was refused. Its `Display` text is the diagnostic payload of
/// the 4.00 Bad Request answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Lwm2mError {
    /// No `ep` parameter in a Register.
    #[error("missing endpoint name (ep)")]
    MissingEndpoint,
    /// `ep` is empty, too long or holds a character outside `[A-Za-z0-9_.:-]`.
    #[error("invalid endpoint name (ep): 1-64 characters of A-Z a-z 0-9 _ - . :")]
    BadEndpoint,
    /// `lt` is not a decimal number within the bounds.
    #[error("invalid lifetime (lt): must be {min}-{max} seconds")]
    BadLifetime {
        /// Smallest lifetime allowed.
        min: u32,
        /// Largest lifetime allowed.
        max: u32,
    },
    /// `lwm2m` is not 1.0, 1.1 or 1.2.
    #[error("unsupported LwM2M version (lwm2m): 1.0, 1.1 or 1.2")]
    BadVersion,
    /// A binding other than UDP (with queue mode).
    #[error("unsupported binding (b={binding}): only U{}", if *v1_0 { " or UQ" } else { ", with Q for queue mode" })]
    BadBinding {
        /// The binding as sent (truncated to 16 characters).
        binding: String,
        /// Whether the client speaks LwM2M 1.0 (where `UQ` is the queue-mode binding).
        v1_0: bool,
    },
    /// `Q` in LwM2M 1.0, where queue mode is `b=UQ`.
    #[error("queue mode parameter Q needs LwM2M 1.1 or later; use b=UQ in 1.0")]
    QueueParamIn1_0,
    /// `Q` with a value.
    #[error("queue mode parameter Q takes no value")]
    QueueParamWithValue,
    /// A parameter that needs a value without one (`ep`, `lt=`, ...).
    #[error("parameter {name} needs a value")]
    MissingValue {
        /// The parameter's name.
        name: &'static str,
    },
    /// A parameter given twice.
    #[error("parameter {name} given twice")]
    Duplicate {
        /// The parameter's name.
        name: &'static str,
    },
}

impl Lwm2mError {
    /// The diagnostic payload of the 4.00 answer (RFC 7252 §5.5.2): the error's text.
    #[must_use]
    pub fn diagnostic(&self) -> String {
        self.to_string()
    }
}

/// The parameters fleetgate reads; others are ignored.
const KNOWN: [&str; 8] = ["ep", "lt", "lwm2m", "b", "Q", "sms", "et", "d"];

/// Query parameters by name, each at most once.
#[derive(Debug, Default)]
struct Query<'a> {
    values: [Option<Option<&'a str>>; KNOWN.len()],
}

impl<'a> Query<'a> {
    fn read(params: &[&'a str]) -> Result<Self, Lwm2mError> {
        let mut query = Self::default();
        for param in params {
            let (name, value) = split_query(param);
            let Some(index) = KNOWN.iter().position(|&known| known == name) else {
                continue;
            };
            if query.values[index].is_some() {
                return Err(Lwm2mError::Duplicate { name: KNOWN[index] });
            }
            query.values[index] = Some(value);
        }
        Ok(query)
    }

    /// `None` when absent, `Some(None)` for a bare name.
    fn get(&self, name: &str) -> Option<Option<&'a str>> {
        let index = KNOWN.iter().position(|&known| known == name)?;
        self.values[index]
    }

    /// The value of a parameter that needs one.
    fn value(&self, name: &'static str) -> Result<Option<&'a str>, Lwm2mError> {
        match self.get(name) {
            None => Ok(None),
            Some(Some(value)) if !value.is_empty() => Ok(Some(value)),
            Some(_) => Err(Lwm2mError::MissingValue { name }),
        }
    }
}

fn valid_endpoint(ep: &str) -> bool {
    (1..=MAX_ENDPOINT_LEN).contains(&ep.len())
        && ep
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn lifetime(query: &Query<'_>, bounds: &RangeInclusive<u32>) -> Result<Option<u32>, Lwm2mError> {
    let bad = || Lwm2mError::BadLifetime {
        min: *bounds.start(),
        max: *bounds.end(),
    };
    let Some(text) = query.value("lt").map_err(|_| bad())? else {
        return Ok(None);
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u32>() {
        Ok(secs) if bounds.contains(&secs) => Ok(Some(secs)),
        _ => Err(bad()),
    }
}

/// The binding from `b` and `Q`; `None` when neither is present.
fn binding(query: &Query<'_>, version: Lwm2mVersion) -> Result<Option<Binding>, Lwm2mError> {
    let b = query.value("b")?;
    let q = match query.get("Q") {
        None => false,
        Some(None) => true,
        Some(Some(_)) => return Err(Lwm2mError::QueueParamWithValue),
    };
    let v1_0 = version == Lwm2mVersion::V1_0;
    if q && v1_0 {
        return Err(Lwm2mError::QueueParamIn1_0);
    }
    let queue_binding = match b {
        None => false,
        Some("U") => false,
        Some("UQ") if v1_0 => true,
        Some(other) => {
            return Err(Lwm2mError::BadBinding {
                binding: other.chars().take(16).collect(),
                v1_0,
            });
        }
    };
    if b.is_none() && !q {
        return Ok(None);
    }
    Ok(Some(Binding {
        queue: queue_binding || q,
    }))
}

fn owned(query: &Query<'_>, name: &'static str) -> Result<Option<String>, Lwm2mError> {
    Ok(query.value(name)?.map(str::to_owned))
}

/// Reads the query of a Register request. `lifetime_bounds` are the accepted values of `lt`
/// (`[engine.coap] min_lifetime_secs..=max_lifetime_secs`).
pub fn parse_register(
    query: &[&str],
    lifetime_bounds: &RangeInclusive<u32>,
) -> Result<RegisterParams, Lwm2mError> {
    let query = Query::read(query)?;
    let endpoint = match query.get("ep") {
        None => return Err(Lwm2mError::MissingEndpoint),
        Some(None) => return Err(Lwm2mError::MissingValue { name: "ep" }),
        Some(Some(ep)) if valid_endpoint(ep) => ep.to_owned(),
        Some(Some(_)) => return Err(Lwm2mError::BadEndpoint),
    };
    let version = match query.value("lwm2m")? {
        None => Lwm2mVersion::V1_0,
        Some(text) => Lwm2mVersion::parse(text).ok_or(Lwm2mError::BadVersion)?,
    };
    Ok(RegisterParams {
        endpoint,
        lifetime_secs: lifetime(&query, lifetime_bounds)?,
        version,
        binding: binding(&query, version)?.unwrap_or_default(),
        sms_number: owned(&query, "sms")?,
        endpoint_type: owned(&query, "et")?,
        domain: owned(&query, "d")?,
    })
}

/// Reads the query of an Update request of a registration made with LwM2M `version`.
/// `lifetime_bounds` are the accepted values of `lt`. Register-only parameters (`ep`, `lwm2m`,
/// `et`, `d`) are ignored.
pub fn parse_update(
    query: &[&str],
    version: Lwm2mVersion,
    lifetime_bounds: &RangeInclusive<u32>,
) -> Result<UpdateParams, Lwm2mError> {
    let query = Query::read(query)?;
    Ok(UpdateParams {
        lifetime_secs: lifetime(&query, lifetime_bounds)?,
        binding: binding(&query, version)?,
        sms_number: owned(&query, "sms")?,
    })
}

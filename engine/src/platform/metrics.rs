//! The platform's counters: what happened to property reports, messages, events, shadow gets
//! and platform-originated requests. Written by the dispatcher thread and by API threads
//! (relaxed atomics), rendered as [`Family`] values next to the shards' families by
//! [`Engine::metrics`](crate::Engine::metrics). Labels come from closed enums.

use std::sync::atomic::{AtomicU64, Ordering};

use fleetgate_model::topic::RequestKind;

use crate::engine::DeliverError;
use crate::metrics::{Family, Sample, plain};

macro_rules! labels {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $(#[doc = $label] $variant,)* }
        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            const COUNT: usize = Self::ALL.len();
            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

labels! {
    /// The topic kind of a payload that could not be read or failed validation.
    PayloadKind {
        PropertiesReport => "properties_report",
        GatewayReport => "gateway_properties_report",
        EventsUp => "events_up",
        CommandResponse => "command_response",
        PropertiesSetResponse => "properties_set_response",
        PropertiesGetResponse => "properties_get_response",
        ShadowGet => "shadow_get",
    }
}

labels! {
    /// What became of one device's property report (a gateway batch counts per device).
    ReportOutcome {
        Accepted => "accepted",
        Invalid => "invalid",
        UnknownDevice => "unknown_device",
        UnknownProduct => "unknown_product",
        NotSubDevice => "not_sub_device",
        BatchTooLarge => "batch_too_large",
        StorageError => "storage_error",
    }
}

labels! {
    /// What one service event of `events/up` was.
    EventOutcome {
        TimeSync => "time_sync",
        DeviceInfo => "device_info",
        Log => "log",
        System => "system",
        Model => "model",
        UnknownSystem => "unknown_system",
        Invalid => "invalid",
        NotSubDevice => "not_sub_device",
    }
}

labels! {
    /// What a device's shadow get came to.
    ShadowGetOutcome {
        Answered => "answered",
        Invalid => "invalid",
        NotSubDevice => "not_sub_device",
        StorageError => "storage_error",
        Undeliverable => "undeliverable",
    }
}

labels! {
    /// Platform-originated requests: the three the API sends and the desired-shadow pushes.
    RequestLabel {
        Command => "command",
        PropertiesSet => "properties_set",
        PropertiesGet => "properties_get",
        DesiredPush => "desired_push",
    }
}

labels! {
    /// Why a platform-originated request was not sent.
    RequestRefusal {
        Offline => "offline",
        Busy => "busy",
        TooMany => "too_many",
        InvalidBody => "invalid_body",
    }
}

labels! {
    /// Why a platform downlink (reply, push, message) could not be handed to the session.
    DownlinkFailure {
        Offline => "offline",
        Busy => "busy",
    }
}

impl RequestLabel {
    /// The label of a request kind the platform sends (`shadow/get` is device-originated and
    /// never sent; it maps to nothing).
    pub fn of(kind: RequestKind) -> Option<RequestLabel> {
        match kind {
            RequestKind::Command => Some(RequestLabel::Command),
            RequestKind::PropertiesSet => Some(RequestLabel::PropertiesSet),
            RequestKind::PropertiesGet => Some(RequestLabel::PropertiesGet),
            RequestKind::ShadowGet => None,
        }
    }
}

impl From<DeliverError> for DownlinkFailure {
    fn from(e: DeliverError) -> Self {
        match e {
            DeliverError::Offline => DownlinkFailure::Offline,
            DeliverError::Busy => DownlinkFailure::Busy,
        }
    }
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The platform's counters.
#[derive(Debug)]
pub struct PlatformMetrics {
    invalid: [AtomicU64; PayloadKind::COUNT],
    reports: [AtomicU64; ReportOutcome::COUNT],
    events: [AtomicU64; EventOutcome::COUNT],
    shadow_gets: [AtomicU64; ShadowGetOutcome::COUNT],
    sent: [AtomicU64; RequestLabel::COUNT],
    answered: [AtomicU64; RequestLabel::COUNT],
    refused: [AtomicU64; RequestRefusal::COUNT],
    downlink_failed: [AtomicU64; DownlinkFailure::COUNT],
    unmatched: AtomicU64,
    messages_up: AtomicU64,
    messages_down: AtomicU64,
}

impl Default for PlatformMetrics {
    fn default() -> Self {
        PlatformMetrics {
            invalid: zeros(),
            reports: zeros(),
            events: zeros(),
            shadow_gets: zeros(),
            sent: zeros(),
            answered: zeros(),
            refused: zeros(),
            downlink_failed: zeros(),
            unmatched: AtomicU64::new(0),
            messages_up: AtomicU64::new(0),
            messages_down: AtomicU64::new(0),
        }
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl PlatformMetrics {
    /// Counts a payload that was malformed or failed validation.
    pub fn invalid(&self, k: PayloadKind) {
        bump(&self.invalid[k as usize]);
    }
    /// Counts one device's property report.
    pub fn report(&self, o: ReportOutcome) {
        bump(&self.reports[o as usize]);
    }
    /// Counts one service event.
    pub fn event(&self, o: EventOutcome) {
        bump(&self.events[o as usize]);
    }
    /// Counts one shadow get.
    pub fn shadow_get(&self, o: ShadowGetOutcome) {
        bump(&self.shadow_gets[o as usize]);
    }
    /// Counts a request handed to a session.
    pub fn sent(&self, l: RequestLabel) {
        bump(&self.sent[l as usize]);
    }
    /// Counts a response matched to its request.
    pub fn answered(&self, l: RequestLabel) {
        bump(&self.answered[l as usize]);
    }
    /// Counts a request refused before it was sent.
    pub fn refused(&self, r: RequestRefusal) {
        bump(&self.refused[r as usize]);
    }
    /// Counts a downlink no session took.
    pub fn downlink_failed(&self, f: DownlinkFailure) {
        bump(&self.downlink_failed[f as usize]);
    }
    /// Counts a response nobody waited for.
    pub fn unmatched(&self) {
        bump(&self.unmatched);
    }
    /// Counts a device message.
    pub fn message_up(&self) {
        bump(&self.messages_up);
    }
    /// Counts a platform message.
    pub fn message_down(&self) {
        bump(&self.messages_down);
    }

    /// Payloads refused for `k` so far.
    pub fn invalid_count(&self, k: PayloadKind) -> u64 {
        get(&self.invalid[k as usize])
    }
    /// Reports with outcome `o` so far.
    pub fn report_count(&self, o: ReportOutcome) -> u64 {
        get(&self.reports[o as usize])
    }
    /// Service events with outcome `o` so far.
    pub fn event_count(&self, o: EventOutcome) -> u64 {
        get(&self.events[o as usize])
    }
    /// Shadow gets with outcome `o` so far.
    pub fn shadow_get_count(&self, o: ShadowGetOutcome) -> u64 {
        get(&self.shadow_gets[o as usize])
    }
    /// Requests of `l` sent so far.
    pub fn sent_count(&self, l: RequestLabel) -> u64 {
        get(&self.sent[l as usize])
    }
    /// Requests of `l` answered so far.
    pub fn answered_count(&self, l: RequestLabel) -> u64 {
        get(&self.answered[l as usize])
    }
    /// Requests refused for `r` so far.
    pub fn refused_count(&self, r: RequestRefusal) -> u64 {
        get(&self.refused[r as usize])
    }
    /// Responses nobody waited for so far.
    pub fn unmatched_count(&self) -> u64 {
        get(&self.unmatched)
    }
    /// Device messages so far.
    pub fn messages_up_count(&self) -> u64 {
        get(&self.messages_up)
    }

    /// The metric families; `outstanding` is the number of requests awaiting an answer.
    pub fn families(&self, outstanding: usize) -> Vec<Family> {
        vec![
            labelled(
                "fleetgate_platform_invalid_payloads_total",
                "Device payloads refused as malformed or invalid for the product model, by topic.",
                "topic",
                PayloadKind::ALL
                    .iter()
                    .map(|k| (k.label(), &self.invalid[*k as usize])),
            ),
            labelled(
                "fleetgate_platform_property_reports_total",
                "Property reports (per device; gateway batches per sub-device), by outcome.",
                "outcome",
                ReportOutcome::ALL
                    .iter()
                    .map(|o| (o.label(), &self.reports[*o as usize])),
            ),
            labelled(
                "fleetgate_platform_events_up_total",
                "Service events reported on events/up, by type.",
                "type",
                EventOutcome::ALL
                    .iter()
                    .map(|o| (o.label(), &self.events[*o as usize])),
            ),
            labelled(
                "fleetgate_platform_shadow_gets_total",
                "Shadow requests of devices, by outcome.",
                "outcome",
                ShadowGetOutcome::ALL
                    .iter()
                    .map(|o| (o.label(), &self.shadow_gets[*o as usize])),
            ),
            labelled(
                "fleetgate_platform_requests_sent_total",
                "Platform-originated requests handed to device sessions, by kind.",
                "kind",
                RequestLabel::ALL
                    .iter()
                    .map(|l| (l.label(), &self.sent[*l as usize])),
            ),
            labelled(
                "fleetgate_platform_requests_answered_total",
                "Device responses matched to a platform request, by kind.",
                "kind",
                RequestLabel::ALL
                    .iter()
                    .map(|l| (l.label(), &self.answered[*l as usize])),
            ),
            labelled(
                "fleetgate_platform_requests_refused_total",
                "Platform requests refused before sending, by reason.",
                "reason",
                RequestRefusal::ALL
                    .iter()
                    .map(|r| (r.label(), &self.refused[*r as usize])),
            ),
            labelled(
                "fleetgate_platform_downlinks_failed_total",
                "Platform replies, pushes and messages no device session took, by reason.",
                "reason",
                DownlinkFailure::ALL
                    .iter()
                    .map(|f| (f.label(), &self.downlink_failed[*f as usize])),
            ),
            plain(
                "fleetgate_platform_unmatched_responses_total",
                "Device responses for which no request was waiting (dropped).",
                true,
                get(&self.unmatched) as f64,
            ),
            plain(
                "fleetgate_platform_messages_up_total",
                "Device messages received on messages/up.",
                true,
                get(&self.messages_up) as f64,
            ),
            plain(
                "fleetgate_platform_messages_down_total",
                "Platform messages handed to device sessions.",
                true,
                get(&self.messages_down) as f64,
            ),
            plain(
                "fleetgate_platform_requests_outstanding",
                "Platform requests waiting for the device's response.",
                false,
                outstanding as f64,
            ),
        ]
    }
}

fn labelled<'a>(
    name: &'static str,
    help: &'static str,
    key: &'static str,
    values: impl Iterator<Item = (&'static str, &'a AtomicU64)>,
) -> Family {
    let samples: Vec<Sample> = values
        .map(|(label, a)| (vec![(key, label)], get(a) as f64))
        .collect();
    Family {
        name,
        help,
        counter: true,
        samples,
    }
}

//! Counters of the CoAP endpoint, on /metrics as `fleetgate_coap_*`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{Family, Sample, plain};

/// Why a datagram was refused or ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Too short to be CoAP.
    Short,
    /// Not CoAP version 1.
    Version,
    /// A token length of 9–15.
    TokenLength,
    /// Options or payload malformed.
    Format,
    /// An unknown critical option.
    BadOption,
    /// An acknowledgement, reset or response fleetgate was not waiting for.
    Unmatched,
}

impl Rejected {
    /// Every reason.
    pub const ALL: [Rejected; 6] = [
        Rejected::Short,
        Rejected::Version,
        Rejected::TokenLength,
        Rejected::Format,
        Rejected::BadOption,
        Rejected::Unmatched,
    ];

    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Short => "short",
            Rejected::Version => "version",
            Rejected::TokenLength => "token_length",
            Rejected::Format => "format",
            Rejected::BadOption => "bad_option",
            Rejected::Unmatched => "unmatched",
        }
    }

    /// The reason a decoder error names (unknown labels count as format errors).
    pub fn from_reason(reason: &str) -> Self {
        Rejected::ALL
            .into_iter()
            .find(|r| r.label() == reason)
            .unwrap_or(Rejected::Format)
    }
}

/// The endpoint's counters.
#[derive(Debug, Default)]
pub struct CoapMetrics {
    received: AtomicU64,
    sent: AtomicU64,
    send_failed: AtomicU64,
    rejected: [AtomicU64; 6],
    duplicates: AtomicU64,
    registrations: AtomicU64,
    registrations_refused: AtomicU64,
    updates: AtomicU64,
    deregistrations: AtomicU64,
    notifications: AtomicU64,
    reports: AtomicU64,
    reports_invalid: AtomicU64,
    commands_sent: AtomicU64,
    retransmissions: AtomicU64,
    gave_up: AtomicU64,
    hibernated: AtomicU64,
    expired: AtomicU64,
    upstream_dropped: AtomicU64,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

impl CoapMetrics {
    pub(crate) fn received(&self) {
        inc(&self.received);
    }
    pub(crate) fn sent(&self) {
        inc(&self.sent);
    }
    pub(crate) fn send_failed(&self) {
        inc(&self.send_failed);
    }
    pub(crate) fn rejected(&self, r: Rejected) {
        inc(&self.rejected[r as usize]);
    }
    pub(crate) fn duplicate(&self) {
        inc(&self.duplicates);
    }
    pub(crate) fn registration(&self, ok: bool) {
        inc(if ok {
            &self.registrations
        } else {
            &self.registrations_refused
        });
    }
    pub(crate) fn update(&self) {
        inc(&self.updates);
    }
    pub(crate) fn deregistration(&self) {
        inc(&self.deregistrations);
    }
    pub(crate) fn notification(&self) {
        inc(&self.notifications);
    }
    pub(crate) fn report(&self, ok: bool) {
        inc(if ok {
            &self.reports
        } else {
            &self.reports_invalid
        });
    }
    pub(crate) fn command_sent(&self) {
        inc(&self.commands_sent);
    }
    pub(crate) fn retransmission(&self) {
        inc(&self.retransmissions);
    }
    pub(crate) fn gave_up(&self) {
        inc(&self.gave_up);
    }
    pub(crate) fn hibernated(&self) {
        inc(&self.hibernated);
    }
    pub(crate) fn expired(&self) {
        inc(&self.expired);
    }
    pub(crate) fn upstream_dropped(&self) {
        inc(&self.upstream_dropped);
    }

    /// Datagrams rejected for `reason` so far.
    pub fn rejected_count(&self, reason: Rejected) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// Registrations accepted so far.
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::Relaxed)
    }

    /// The metric families; `awake` is the number of awake devices now.
    pub fn families(&self, awake: usize) -> Vec<Family> {
        let rejected: Vec<Sample> = Rejected::ALL
            .iter()
            .map(|r| {
                (
                    vec![("reason", r.label())],
                    get(&self.rejected[*r as usize]),
                )
            })
            .collect();
        vec![
            plain(
                "fleetgate_coap_datagrams_received_total",
                "CoAP datagrams received.",
                true,
                get(&self.received),
            ),
            plain(
                "fleetgate_coap_datagrams_sent_total",
                "CoAP datagrams sent.",
                true,
                get(&self.sent),
            ),
            plain(
                "fleetgate_coap_send_errors_total",
                "CoAP datagrams the socket refused.",
                true,
                get(&self.send_failed),
            ),
            Family {
                name: "fleetgate_coap_datagrams_rejected_total",
                help: "CoAP datagrams refused (answered with RST or dropped) or not matched, by reason.",
                counter: true,
                samples: rejected,
            },
            plain(
                "fleetgate_coap_duplicates_total",
                "Duplicate confirmable messages answered from the deduplication cache.",
                true,
                get(&self.duplicates),
            ),
            Family {
                name: "fleetgate_lwm2m_registrations_total",
                help: "LwM2M registrations, by outcome.",
                counter: true,
                samples: vec![
                    (vec![("outcome", "accepted")], get(&self.registrations)),
                    (
                        vec![("outcome", "refused")],
                        get(&self.registrations_refused),
                    ),
                ],
            },
            plain(
                "fleetgate_lwm2m_updates_total",
                "LwM2M registration updates.",
                true,
                get(&self.updates),
            ),
            plain(
                "fleetgate_lwm2m_deregistrations_total",
                "LwM2M de-registrations.",
                true,
                get(&self.deregistrations),
            ),
            plain(
                "fleetgate_lwm2m_notifications_total",
                "Notifications received on report observations.",
                true,
                get(&self.notifications),
            ),
            Family {
                name: "fleetgate_lwm2m_reports_total",
                help: "Binary reports, by outcome of the product codec.",
                counter: true,
                samples: vec![
                    (vec![("outcome", "decoded")], get(&self.reports)),
                    (vec![("outcome", "invalid")], get(&self.reports_invalid)),
                ],
            },
            plain(
                "fleetgate_coap_commands_sent_total",
                "Commands sent to CoAP devices.",
                true,
                get(&self.commands_sent),
            ),
            plain(
                "fleetgate_coap_retransmissions_total",
                "Confirmable messages sent again for lack of an ACK.",
                true,
                get(&self.retransmissions),
            ),
            plain(
                "fleetgate_coap_exchanges_abandoned_total",
                "Confirmable messages never acknowledged after every retransmission.",
                true,
                get(&self.gave_up),
            ),
            plain(
                "fleetgate_coap_hibernations_total",
                "Awake devices that went back to sleep (their actor released).",
                true,
                get(&self.hibernated),
            ),
            plain(
                "fleetgate_lwm2m_registrations_expired_total",
                "Registrations that ended because their lifetime passed without an update.",
                true,
                get(&self.expired),
            ),
            plain(
                "fleetgate_coap_upstream_dropped_total",
                "Reports and wake events dropped because the upstream queue was full.",
                true,
                get(&self.upstream_dropped),
            ),
            plain(
                "fleetgate_coap_awake_devices",
                "CoAP devices awake now (an actor in memory).",
                false,
                awake as f64,
            ),
        ]
    }
}

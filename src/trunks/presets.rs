//! Provider presets: the carrier's facts a trunk gets when the operator does not say
//! otherwise. Every field is a default only: a value given on create (or PATCH) wins, and
//! a field set to null in a PATCH returns to its preset. The table is in docs/trunks.md.

use super::{NumberFormat, Provider, TrunkTransport};

/// A provider's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub provider: Provider,
    /// The SIP host, when the carrier has one for every customer.
    pub host: Option<&'static str>,
    pub port: Option<u16>,
    pub transport: TrunkTransport,
    pub codecs: &'static [&'static str],
    pub max_cps: Option<u32>,
    pub max_calls_per_minute: Option<u32>,
    pub max_concurrent_calls: Option<u32>,
    pub number_format: NumberFormat,
    pub country_code: Option<&'static str>,
    /// REGISTER Expires when `outbound.register` is on.
    pub register_expires: u32,
    /// Whether the trunk must say where its inbound calls come from (allowed CIDRs or
    /// credentials) before it admits any.
    pub inbound_required: bool,
    /// Whether the trunk needs an outbound host (all but `simulated`).
    pub host_required: bool,
}

/// The preset of `provider`.
pub fn preset(provider: Provider) -> Preset {
    let base = Preset {
        provider,
        host: None,
        port: None,
        transport: TrunkTransport::Udp,
        codecs: &["PCMU", "PCMA", "telephone-event"],
        max_cps: None,
        max_calls_per_minute: None,
        max_concurrent_calls: None,
        number_format: NumberFormat::E164,
        country_code: None,
        register_expires: 3600,
        inbound_required: false,
        host_required: true,
    };
    match provider {
        // Elastic SIP Trunking: E.164 with +, G.711, 1 CPS by default on a trunk,
        // origination only from Twilio's signalling ranges (listed per edge in Twilio's
        // docs: the operator gives the ones they use), termination by digest
        // (credential list) and/or IP access control list.
        Provider::Twilio => Preset {
            codecs: &["PCMU", "PCMA"],
            max_cps: Some(1),
            inbound_required: true,
            ..base
        },
        // Zentrunk: G.711, RFC 4733 DTMF, 2 CPS by default, digest and/or IP auth.
        Provider::Plivo => Preset {
            max_cps: Some(2),
            ..base
        },
        // Exotel: SIP over TCP on port 5070 (or TLS), Indian numbers as +91 E.164 on the
        // SIP side, 200 calls a minute, telephone-event.
        Provider::Exotel => Preset {
            port: Some(5070),
            transport: TrunkTransport::Tcp,
            max_calls_per_minute: Some(200),
            country_code: Some("91"),
            ..base
        },
        Provider::Generic => base,
        // No network at all.
        Provider::Simulated => Preset {
            codecs: &["PCMU", "PCMA"],
            host_required: false,
            ..base
        },
    }
}

impl Preset {
    /// The port when none is given: the preset's own for its transport (Exotel's 5070 is
    /// for TCP; over TLS the operator gives the port Exotel assigns, else 5061), else
    /// none (RFC 3263 decides).
    pub fn port_for(&self, transport: TrunkTransport) -> Option<u16> {
        if transport == self.transport {
            self.port
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriers_facts() {
        let t = preset(Provider::Twilio);
        assert_eq!(
            (t.max_cps, t.codecs, t.number_format),
            (Some(1), &["PCMU", "PCMA"][..], NumberFormat::E164)
        );
        assert!(t.inbound_required);
        let p = preset(Provider::Plivo);
        assert_eq!(p.max_cps, Some(2));
        assert!(p.codecs.contains(&"telephone-event"));
        let e = preset(Provider::Exotel);
        assert_eq!(
            (e.transport, e.port, e.country_code, e.max_calls_per_minute),
            (TrunkTransport::Tcp, Some(5070), Some("91"), Some(200))
        );
        assert_eq!(e.port_for(TrunkTransport::Tls), None);
        assert_eq!(e.port_for(TrunkTransport::Tcp), Some(5070));
        assert!(!preset(Provider::Simulated).host_required);
        assert_eq!(preset(Provider::Generic).register_expires, 3600);
    }
}

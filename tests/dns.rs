//! RFC 3263 resolution (`voxgate::sip::resolve`) against a real DNS server: dnsmasq from
//! Debian (`dnsmasq-base`), unprivileged-friendly on a loopback port, serving SRV and A
//! records for `.test` names it is authoritative for (`--local=/test/`: anything else
//! under `.test` is NXDOMAIN at once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dnsmasq::Dnsmasq;
use voxgate::sip::resolve::{Destination, Resolver, ServerNames};
use voxgate_sip::transaction::{Peer, Transport};

/// The zone of these tests.
const ZONE: &[&str] = &[
    // Two at priority 10 weighted 90/10, a backup at 20.
    "--srv-host=_sip._udp.carrier.test,sip1.carrier.test,5070,10,90",
    "--srv-host=_sip._udp.carrier.test,sip2.carrier.test,5071,10,10",
    "--srv-host=_sip._udp.carrier.test,backup.carrier.test,5072,20,0",
    "--host-record=carrier.test,127.0.0.10",
    "--host-record=sip1.carrier.test,127.0.0.11",
    "--host-record=sip2.carrier.test,127.0.0.12",
    "--host-record=backup.carrier.test,127.0.0.13",
    // No SRV at all.
    "--host-record=plain.test,127.0.0.21",
    // IPv6 only.
    "--host-record=six.test,::1",
    // TLS only, the target named differently from the domain.
    "--srv-host=_sips._tcp.secure.test,edge7.provider.test,5063,0,0",
    "--host-record=edge7.provider.test,127.0.0.31",
    // NAPTR: TCP before UDP (without NAPTR, UDP comes first), TLS last, an
    // unsupported service (SCTP) skipped.
    "--naptr-record=naptr.test,5,50,s,SIP+D2S,,_sip._sctp.naptr.test",
    "--naptr-record=naptr.test,10,50,s,SIP+D2T,,_sip._tcp.naptr.test",
    "--naptr-record=naptr.test,20,50,s,SIP+D2U,,_sip._udp.naptr.test",
    "--naptr-record=naptr.test,30,50,s,SIPS+D2T,,_sips._tcp.naptr.test",
    "--srv-host=_sip._sctp.naptr.test,n0.naptr.test,5089,0,0",
    "--srv-host=_sip._tcp.naptr.test,n1.naptr.test,5090,0,0",
    "--srv-host=_sip._udp.naptr.test,n2.naptr.test,5091,0,0",
    "--srv-host=_sips._tcp.naptr.test,n3.naptr.test,5092,0,0",
    "--host-record=n0.naptr.test,127.0.0.50",
    "--host-record=n1.naptr.test,127.0.0.51",
    "--host-record=n2.naptr.test,127.0.0.52",
    "--host-record=n3.naptr.test,127.0.0.53",
    // TCP only.
    "--srv-host=_sip._tcp.tcponly.test,tcp1.tcponly.test,5080,0,0",
    "--host-record=tcp1.tcponly.test,127.0.0.41",
];

fn dest(transport: Transport, addr: &str, name: Option<&str>) -> Destination {
    Destination {
        transport,
        addr: addr.parse().unwrap(),
        server_name: name.map(str::to_owned),
    }
}

#[tokio::test]
async fn srv_targets_in_priority_and_weight_order() {
    let dns = Dnsmasq::start(ZONE);
    let resolver = Resolver::new(&[dns.addr], ServerNames::default()).unwrap();
    let mut sip1_first = 0;
    let mut sip2_first = 0;
    let started = Instant::now();
    for _ in 0..200 {
        let d = resolver
            .resolve("carrier.test", None, Some(Transport::Udp), false)
            .await
            .unwrap();
        assert_eq!(d.len(), 3, "{d:?}");
        // Priority 20 always after both priority-10 targets.
        assert_eq!(
            d[2],
            dest(Transport::Udp, "127.0.0.13:5072", Some("carrier.test"))
        );
        let first_two: Vec<SocketAddr> = d[..2].iter().map(|d| d.addr).collect();
        assert!(
            first_two.contains(&"127.0.0.11:5070".parse().unwrap())
                && first_two.contains(&"127.0.0.12:5071".parse().unwrap()),
            "{d:?}"
        );
        match d[0].addr.port() {
            5070 => sip1_first += 1,
            _ => sip2_first += 1,
        }
    }
    // Weights 90/10 (RFC 2782): about 180/20; equal odds would give about 100/100.
    assert!(
        sip1_first >= 150 && sip2_first >= 1,
        "weight 90 first {sip1_first} times, weight 10 first {sip2_first} times"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Without a transport, UDP's SRV records are found first (RFC 3263 §4.1).
    let d = resolver
        .resolve("carrier.test", None, None, false)
        .await
        .unwrap();
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d.iter().all(|d| d.transport == Transport::Udp), "{d:?}");
    // Only TCP has SRV records here.
    let d = resolver
        .resolve("tcponly.test", None, None, false)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(
            Transport::Tcp,
            "127.0.0.41:5080",
            Some("tcponly.test")
        )]
    );
}

#[tokio::test]
async fn without_srv_a_records_on_the_default_port() {
    let dns = Dnsmasq::start(ZONE);
    let resolver = Resolver::new(&[dns.addr], ServerNames::default()).unwrap();
    let d = resolver
        .resolve("plain.test", None, None, false)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(Transport::Udp, "127.0.0.21:5060", Some("plain.test"))]
    );
    let d = resolver
        .resolve("plain.test", None, Some(Transport::Tcp), false)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(Transport::Tcp, "127.0.0.21:5060", Some("plain.test"))]
    );
    let d = resolver
        .resolve("plain.test", None, None, true)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(Transport::Tls, "127.0.0.21:5061", Some("plain.test"))]
    );
    // AAAA when there is no A record.
    let d = resolver
        .resolve("six.test", None, None, false)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(Transport::Udp, "[::1]:5060", Some("six.test"))]
    );
    // A name that does not exist is an error, not an empty list.
    let e = resolver
        .resolve("missing.test", None, None, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing.test"), "{e}");
}

#[tokio::test]
async fn an_explicit_port_skips_srv() {
    let dns = Dnsmasq::start(ZONE);
    let resolver = Resolver::new(&[dns.addr], ServerNames::default()).unwrap();
    // carrier.test has SRV records and an A record: with a port, only the A record counts.
    let d = resolver
        .resolve("carrier.test", Some(5090), None, false)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(
            Transport::Udp,
            "127.0.0.10:5090",
            Some("carrier.test")
        )]
    );
    let d = resolver
        .resolve("carrier.test", Some(5091), Some(Transport::Tcp), false)
        .await
        .unwrap();
    assert_eq!(
        d[0].peer(),
        Peer {
            transport: Transport::Tcp,
            addr: "127.0.0.10:5091".parse().unwrap(),
            conn: None,
        }
    );
    let log = dns.log_with("query[A] carrier.test", Duration::from_secs(2));
    assert!(
        log.contains("query[A] carrier.test"),
        "dnsmasq logs its queries:\n{log}"
    );
    assert!(
        !dns.log().contains("_sip._udp.carrier.test")
            && !dns.log().contains("_sip._tcp.carrier.test"),
        "no SRV query with an explicit port:\n{}",
        dns.log()
    );
}

#[tokio::test]
async fn tls_destinations_carry_the_domain_name() {
    let dns = Dnsmasq::start(ZONE);
    let names = ServerNames::default();
    let resolver = Resolver::new(&[dns.addr], names.clone()).unwrap();
    let d = resolver
        .resolve("secure.test", None, Some(Transport::Tls), false)
        .await
        .unwrap();
    // RFC 5922 §4: the certificate must name the domain resolved, not the SRV target.
    assert_eq!(
        d,
        vec![dest(Transport::Tls, "127.0.0.31:5063", Some("secure.test"))]
    );
    assert_eq!(
        names.get(&"127.0.0.31:5063".parse().unwrap()).as_deref(),
        Some("secure.test"),
        "the connector learns the name for SNI"
    );
    // sips: means TLS whatever transport was asked for.
    let d = resolver
        .resolve("secure.test", None, Some(Transport::Udp), true)
        .await
        .unwrap();
    assert_eq!(d[0].transport, Transport::Tls);
}

#[tokio::test]
async fn a_silent_dns_server_fails_the_lookup_in_bounded_time() {
    // A UDP socket nobody reads: every query times out (and nothing listens on TCP).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let resolver = Resolver::new(&[addr], ServerNames::default()).unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        resolver.resolve("carrier.test", None, None, false),
    )
    .await
    .expect("resolution hung");
    assert!(r.is_err(), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn naptr_chooses_the_transports_and_their_order() {
    let dns = Dnsmasq::start(ZONE);
    let resolver = Resolver::new(&[dns.addr], ServerNames::default()).unwrap();
    let d = resolver
        .resolve("naptr.test", None, None, false)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![
            dest(Transport::Tcp, "127.0.0.51:5090", Some("naptr.test")),
            dest(Transport::Udp, "127.0.0.52:5091", Some("naptr.test")),
            dest(Transport::Tls, "127.0.0.53:5092", Some("naptr.test")),
        ]
    );
    // sips: only the SIPS+D2T record.
    let d = resolver
        .resolve("naptr.test", None, None, true)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(Transport::Tls, "127.0.0.53:5092", Some("naptr.test"))]
    );
    // A transport given: straight to its SRV name (§4.1: NAPTR only chooses a transport).
    let d = resolver
        .resolve("naptr.test", None, Some(Transport::Udp), false)
        .await
        .unwrap();
    assert_eq!(
        d,
        vec![dest(Transport::Udp, "127.0.0.52:5091", Some("naptr.test"))]
    );
}

//! DHCP replies reach zoa-init from anyone on the L2 segment: deciding whether a datagram
//! answers us must refuse any bytes cleanly, and a lease taken from an ACK must be one the
//! kernel can be given (a prefix of at most 32 bits, a host address, routes and a resolver
//! configuration that cannot be abused to forge lines).
//!
//! Input: one flags byte, then the datagram. Flag bit 0 writes the DHCP magic cookie at its
//! offset, bit 1 takes the transaction id and hardware address from the datagram itself, so
//! that most inputs get past the checks a random datagram fails and into option decoding.
use std::net::Ipv4Addr;

use zoa_init::net::dhcp::{classify, lease_from_ack, prefix_len, Reply};
use zoa_init::net::link::{broadcast, netmask};
use zoa_init::net::{resolv_conf, Lease};

/// What zoa-init asks with when the datagram does not name them (bit 1 clear).
const XID: u32 = 0x1234_5678;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// RFC 2131 §3: the cookie after the 236 bytes of fixed BOOTP fields.
const MAGIC_OFFSET: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

pub fn run(data: &[u8]) {
    let Some((&flags, datagram)) = data.split_first() else {
        return;
    };
    let mut packet = datagram.to_vec();
    if flags & 1 != 0 && packet.len() >= MAGIC_OFFSET + 4 {
        packet[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
    }
    let (xid, mac) = match (flags & 2 != 0, packet.get(4..8), packet.get(28..34)) {
        (true, Some(xid), Some(mac)) => (
            u32::from_be_bytes([xid[0], xid[1], xid[2], xid[3]]),
            [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]],
        ),
        _ => (XID, MAC),
    };
    if cfg!(debug_assertions) && trips_dhcproto_debug_assertion(&packet) {
        return;
    }
    match classify(&packet, xid, mac) {
        Ok(Reply::Offer(offer)) => {
            assert!(is_host(offer.address), "offer of {}", offer.address);
        }
        Ok(Reply::Ack(ack)) => {
            if let Ok(lease) = lease_from_ack("eth0", &ack) {
                check_lease(&lease);
            }
        }
        Ok(Reply::Nak { .. }) => {}
        Err(ignored) => assert!(!ignored.to_string().is_empty()),
    }
}

/// Whether dhcproto 0.15 fails a `debug_assert!` (or an unchecked subtraction) on an option
/// of this code and length: RapidCommit, ClientFQDN, ClientNetworkInterface, the bulk
/// leasequery status code and times.
fn trips((code, len): (u8, usize)) -> bool {
    match code {
        80 => len != 0,
        81 => len < 3,
        94 => len != 3,
        151 => len < 1,
        152..=155 => len != 4,
        _ => false,
    }
}

/// Whether decoding `packet` would fail one of dhcproto's debug assertions on option lengths.
/// They are compiled out of zoa-init's release build, where a wrong length only makes that
/// option decode to an error or garbage; a debug-assertion fuzz build (cargo fuzz's default)
/// would stop at them every few thousand runs, so such datagrams are skipped there. With
/// `cargo fuzz run -O dhcp` (no debug assertions, as the image is built) nothing is skipped.
fn trips_dhcproto_debug_assertion(packet: &[u8]) -> bool {
    // dhcproto's walk: from after the cookie to End; Pad ends a run of options with the same
    // code, which are one option with their values joined (RFC 3396).
    let mut i = MAGIC_OFFSET + 4;
    let mut run: Option<(u8, usize)> = None;
    while let Some(&code) = packet.get(i) {
        if code == 255 {
            return run.is_some_and(trips);
        }
        if code == 0 {
            if run.is_some_and(trips) {
                return true;
            }
            run = None;
            i += 1;
            continue;
        }
        let Some(&len) = packet.get(i + 1) else { break };
        let len = usize::from(len);
        if i + 2 + len > packet.len() {
            break;
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            Some(previous) if trips(previous) => return true,
            _ => Some((code, len)),
        };
        i += 2 + len;
    }
    run.is_some_and(trips)
}

fn is_host(address: Ipv4Addr) -> bool {
    !(address.is_unspecified() || address.is_broadcast() || address.is_multicast())
}

fn check_lease(lease: &Lease) {
    assert!(lease.prefix_len <= 32, "prefix /{}", lease.prefix_len);
    assert!(is_host(lease.address), "lease of {}", lease.address);
    // The mask the kernel gets back from the prefix is the contiguous one it came from, and
    // the subnet's broadcast address (link.rs) lies inside the subnet of the address.
    let mask = u32::from(netmask(lease.prefix_len));
    assert_eq!(prefix_len(Ipv4Addr::from(mask)), Some(lease.prefix_len));
    let subnet = u32::from(lease.address) & mask;
    assert_eq!(
        u32::from(broadcast(lease.address, lease.prefix_len)) & mask,
        subnet
    );

    for route in &lease.routes {
        assert!(route.prefix_len <= 32, "route {route}");
        let host_bits = u32::from(route.destination) & !u32::from(netmask(route.prefix_len));
        assert_eq!(host_bits, 0, "route {route} has host bits set");
        assert!(
            route.gateway.is_none_or(|g| !g.is_unspecified()),
            "route {route}"
        );
    }
    assert!(lease.dns.iter().all(|s| is_host(*s)), "{:?}", lease.dns);
    if let Some(mtu) = lease.mtu {
        assert!((576..=65535).contains(&mtu), "mtu {mtu}");
    }
    if let Some(domain) = &lease.domain {
        assert!(!domain.is_empty() && domain.len() <= 253, "{domain:?}");
        assert!(
            domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
            "{domain:?}"
        );
    }

    // The console line is one line; resolv.conf has exactly the lines zoa-init means to
    // write, whatever the server put into its options.
    let line = lease.to_string();
    assert!(
        line.starts_with("network eth0 ") && !line.contains(['\n', '\r']),
        "{line:?}"
    );
    let conf = resolv_conf(lease);
    let expected = 1 + usize::from(lease.domain.is_some()) + lease.dns.len().min(3);
    assert_eq!(conf.lines().count(), expected, "{conf:?}");
    assert!(
        conf.lines().all(|l| l.starts_with("# written by zoa-init ")
            || l.starts_with("search ")
            || l.starts_with("nameserver ")),
        "{conf:?}"
    );
}

//! A DHCPv4 client for one boot: DISCOVER → OFFER → REQUEST → ACK (RFC 2131), nothing after.
//!
//! The messages are encoded and decoded by `dhcproto`; this module decides what to send, which
//! replies are ours, and what an ACK means. Leases are not renewed: the address is added as
//! permanent (see `link.rs`), and neither QEMU's user network nor an EC2 VPC takes an address
//! back from a running machine.
//!
//! Transport: a UDP socket on 0.0.0.0:68 bound to the interface (SO_BINDTODEVICE) with
//! SO_BROADCAST, instead of the packet socket most clients use. It works because
//! - Linux routes a send to 255.255.255.255 out of the bound device even before the interface
//!   has an address (source 0.0.0.0);
//! - we set the BROADCAST flag, so servers answer to 255.255.255.255 (RFC 2131 §4.1), which the
//!   kernel delivers to port 68 without an address either. QEMU's user network (libslirp
//!   `bootp.c`) broadcasts every reply whatever the flag says.
//!
//! With `rp_filter` enabled such replies would be dropped (no route back to the server yet);
//! the kernel's default, which an initramfs keeps, is off.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, CLIENT_PORT, MAGIC,
    MIN_PACKET_SIZE, SERVER_PORT,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Lease, NetError, Route};

/// Options we ask for (option 55): what [`lease_from_ack`] reads, plus the server identifier.
const REQUESTED_OPTIONS: [OptionCode; 8] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
    OptionCode::ClasslessStaticRoute,
];

/// The largest DHCP message we accept (option 57), IP and UDP headers included: an Ethernet
/// frame's payload. Without it servers stop at 576 bytes.
const MAX_MESSAGE_SIZE: u16 = 1500;

/// How many REQUESTs are sent for one OFFER before starting again with a DISCOVER.
const REQUEST_SENDS: usize = 4;

/// Pause after a DHCPNAK before discovering again, so a confused server cannot make us spin.
const AFTER_NAK: Duration = Duration::from_secs(1);

/// MTUs (option 26) outside this range are ignored: below 576 IPv4 hosts need not cope
/// (RFC 791), and 65535 is the most an IPv4 packet can be.
const MTU_RANGE: std::ops::RangeInclusive<u16> = 576..=u16::MAX;

/// Lease time meaning "forever" (RFC 2131 §3.3).
const INFINITE_LEASE: u32 = u32::MAX;

/// How long to wait after the `attempt`-th send (0-based) before sending again.
///
/// RFC 2131 §4.1 suggests 4 s doubling to 64 s, randomised by ±1 s against synchronised
/// clients. One VM booting wants an answer fast: the first packet is often lost while the
/// link comes up, and the servers we talk to answer in milliseconds. So: 1 s doubling, at
/// most 8 s, no randomisation.
pub fn retransmit_delay(attempt: usize) -> Duration {
    Duration::from_secs(1u64 << attempt.min(3))
}

/// What the server offered and who offered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
}

/// A reply addressed to our transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Offer),
    Ack(Box<Message>),
    Nak {
        server: Option<Ipv4Addr>,
        message: Option<String>,
    },
}

/// Why a received datagram is not a reply to us. Such datagrams are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Too short, no DHCP magic cookie, or undecodable.
    Malformed(String),
    /// A BOOTREQUEST (another client's broadcast) or an unknown op.
    NotAReply,
    /// Another transaction's reply.
    OtherXid(u32),
    /// A reply for another client's hardware address.
    OtherClient,
    /// BOOTP without option 53, or a message type a server does not send us now.
    Unexpected(Option<MessageType>),
    /// A DHCPOFFER without a usable address or without a server identifier (option 54).
    IncompleteOffer,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::Malformed(e) => write!(f, "malformed packet ({e})"),
            Ignored::NotAReply => write!(f, "not a BOOTREPLY"),
            Ignored::OtherXid(xid) => write!(f, "reply to another transaction (xid {xid:#010x})"),
            Ignored::OtherClient => write!(f, "reply for another hardware address"),
            Ignored::Unexpected(Some(t)) => write!(f, "unexpected {t:?}"),
            Ignored::Unexpected(None) => write!(f, "reply without a DHCP message type"),
            Ignored::IncompleteOffer => {
                write!(f, "DHCPOFFER without an address or server identifier")
            }
        }
    }
}

/// The DHCPDISCOVER of transaction `xid`, `secs` seconds after we started.
pub fn discover(xid: u32, mac: [u8; 6], secs: u16) -> Message {
    let mut message = request_base(xid, mac, secs);
    message
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    message
}

/// The DHCPREQUEST that takes `offer` (SELECTING state: requested address and server
/// identifier as options, `ciaddr` zero; RFC 2131 §4.3.2).
pub fn request(xid: u32, mac: [u8; 6], offer: &Offer, secs: u16) -> Message {
    let mut message = request_base(xid, mac, secs);
    let options = message.opts_mut();
    options.insert(DhcpOption::MessageType(MessageType::Request));
    options.insert(DhcpOption::RequestedIpAddress(offer.address));
    options.insert(DhcpOption::ServerIdentifier(offer.server));
    message
}

fn request_base(xid: u32, mac: [u8; 6], secs: u16) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut message = Message::new_with_id(
        xid,
        unspecified,
        unspecified,
        unspecified,
        unspecified,
        &mac,
    );
    message
        .set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_secs(secs)
        // We cannot receive unicast before the address is configured.
        .set_flags(Flags::default().set_broadcast());
    let options = message.opts_mut();
    options.insert(DhcpOption::ParameterRequestList(REQUESTED_OPTIONS.to_vec()));
    options.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
    message
}

/// The bytes of `message`, zero-padded to BOOTP's 300-byte minimum (RFC 1542 §2.1: some
/// relays and servers drop shorter packets; bytes after the End option are ignored).
pub fn encode(message: &Message) -> Result<Vec<u8>, NetError> {
    let mut bytes = Vec::with_capacity(MIN_PACKET_SIZE);
    message
        .encode(&mut Encoder::new(&mut bytes))
        .map_err(|e| NetError::Encode(e.to_string()))?;
    if bytes.len() < MIN_PACKET_SIZE {
        bytes.resize(MIN_PACKET_SIZE, 0);
    }
    Ok(bytes)
}

/// Offset of the magic cookie: after the fixed BOOTP fields (RFC 2131 §2).
const MAGIC_OFFSET: usize = 236;

/// Decides whether `packet` answers transaction `xid` of the client with `mac`, and how.
pub fn classify(packet: &[u8], xid: u32, mac: [u8; 6]) -> Result<Reply, Ignored> {
    if packet.get(MAGIC_OFFSET..MAGIC_OFFSET + 4) != Some(&MAGIC[..]) {
        return Err(Ignored::Malformed(format!(
            "{} bytes, no DHCP magic cookie at offset {MAGIC_OFFSET}",
            packet.len()
        )));
    }
    let message = Message::decode(&mut Decoder::new(packet))
        .map_err(|e| Ignored::Malformed(e.to_string()))?;
    if message.opcode() != Opcode::BootReply {
        return Err(Ignored::NotAReply);
    }
    if message.xid() != xid {
        return Err(Ignored::OtherXid(message.xid()));
    }
    // hlen first: dhcproto's chaddr() slices chaddr[..hlen] unchecked and panics for
    // hlen > 16, and one forged broadcast reply must not take PID 1 down (found by the
    // `dhcp` fuzz target). Ethernet addresses are 6 bytes.
    if message.htype() != HType::Eth
        || message.hlen() != 6
        || message.chaddr().get(..6) != Some(&mac[..])
    {
        return Err(Ignored::OtherClient);
    }
    let server = server_identifier(&message);
    match message.opts().msg_type() {
        Some(MessageType::Offer) => {
            let address = message.yiaddr();
            match server {
                Some(server) if is_unicast(address) => Ok(Reply::Offer(Offer { address, server })),
                _ => Err(Ignored::IncompleteOffer),
            }
        }
        Some(MessageType::Ack) => Ok(Reply::Ack(Box::new(message))),
        Some(MessageType::Nak) => {
            let text = match message.opts().get(OptionCode::Message) {
                Some(DhcpOption::Message(text)) => Some(text.clone()),
                _ => None,
            };
            Ok(Reply::Nak {
                server,
                message: text,
            })
        }
        other => Err(Ignored::Unexpected(other)),
    }
}

fn server_identifier(message: &Message) -> Option<Ipv4Addr> {
    match message.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(server)) => Some(*server),
        _ => None,
    }
}

fn is_unicast(address: Ipv4Addr) -> bool {
    !(address.is_unspecified() || address.is_broadcast() || address.is_multicast())
}

/// The lease a DHCPACK grants, as far as it is usable: an address and a contiguous subnet
/// mask are required; routes come from option 121 when present (RFC 3442 says to ignore
/// option 3 then), else a default route through the first router. The MTU is the offered
/// one, if any; [`super::bring_up`] replaces it by the one in effect.
pub fn lease_from_ack(interface: &str, ack: &Message) -> Result<Lease, String> {
    let options = ack.opts();
    let address = ack.yiaddr();
    if !is_unicast(address) {
        return Err(format!("yiaddr {address} is not a host address"));
    }
    let Some(DhcpOption::SubnetMask(mask)) = options.get(OptionCode::SubnetMask) else {
        return Err("no subnet mask (option 1)".to_string());
    };
    let prefix_len =
        prefix_len(*mask).ok_or_else(|| format!("subnet mask {mask} is not contiguous"))?;

    let routes = match options.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(routes)) => routes
            .iter()
            .map(|(net, gateway)| Route {
                destination: net.network(),
                prefix_len: net.prefix_len(),
                // Gateway 0.0.0.0: the destination is on this link (RFC 3442 §2).
                gateway: (!gateway.is_unspecified()).then_some(*gateway),
            })
            .collect(),
        _ => match options.get(OptionCode::Router) {
            Some(DhcpOption::Router(routers)) => routers
                .iter()
                .find(|r| is_unicast(**r))
                .map(|gateway| Route::default_via(*gateway))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        },
    };
    let dns = match options.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => {
            servers.iter().copied().filter(|s| is_unicast(*s)).collect()
        }
        _ => Vec::new(),
    };
    let domain = match options.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(name)) => valid_domain(name),
        _ => None,
    };
    let mtu = match options.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(mtu)) if MTU_RANGE.contains(mtu) => Some(u32::from(*mtu)),
        _ => None,
    };
    let lease_time = match options.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(INFINITE_LEASE)) | None => None,
        Some(DhcpOption::AddressLeaseTime(secs)) => Some(Duration::from_secs(u64::from(*secs))),
        Some(_) => None,
    };
    Ok(Lease {
        interface: interface.to_string(),
        address,
        prefix_len,
        routes,
        dns,
        domain,
        mtu,
        lease_time,
        server: server_identifier(ack).unwrap_or(ack.siaddr()),
    })
}

/// The prefix length of a contiguous netmask (255.255.255.0 → 24).
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// A domain name (option 15) fit for a `search` line: letters, digits, '-', '.', at most
/// 253 characters. Anything else (spaces, newlines) could forge lines in resolv.conf.
fn valid_domain(name: &str) -> Option<String> {
    let name = name.trim_end_matches('\0').trim_end_matches('.');
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then(|| name.to_string())
}

/// Runs the exchange on `interface` until a DHCPACK or `deadline`.
pub fn obtain_lease(interface: &str, mac: [u8; 6], deadline: Instant) -> Result<Lease, NetError> {
    let socket = open_socket(interface)?;
    let mut client = Client {
        socket,
        interface,
        mac,
        started: Instant::now(),
        last_ignored: None,
    };
    let mut waiting_for = "a DHCPOFFER".to_string();
    while Instant::now() < deadline {
        let xid = getrandom::u32().map_err(|e| NetError::Random(e.to_string()))?;
        let offer = client.exchange(
            |secs| discover(xid, mac, secs),
            xid,
            |reply| match reply {
                Reply::Offer(offer) => Some(offer),
                _ => None,
            },
            deadline,
            usize::MAX,
        )?;
        let Some(offer) = offer else { break };

        waiting_for = format!("a DHCPACK from {} for {}", offer.server, offer.address);
        let answer = client.exchange(
            |secs| request(xid, mac, &offer, secs),
            xid,
            |reply| match reply {
                // Only the server we chose may answer (RFC 2131 §4.3.2).
                Reply::Ack(ack) if server_identifier(&ack).is_none_or(|s| s == offer.server) => {
                    Some(Ok(ack))
                }
                Reply::Nak { server, message } if server.is_none_or(|s| s == offer.server) => {
                    Some(Err(message))
                }
                _ => None,
            },
            deadline,
            REQUEST_SENDS,
        )?;
        match answer {
            Some(Ok(ack)) => {
                return lease_from_ack(interface, &ack).map_err(|detail| NetError::BadLease {
                    interface: interface.to_string(),
                    server: offer.server,
                    detail,
                });
            }
            Some(Err(message)) => {
                waiting_for = format!(
                    "a DHCPACK ({} refused {} with a DHCPNAK: {})",
                    offer.server,
                    offer.address,
                    message.as_deref().unwrap_or("no reason given")
                );
                std::thread::sleep(
                    AFTER_NAK.min(deadline.saturating_duration_since(Instant::now())),
                );
            }
            None => {} // no answer to our REQUESTs: discover again
        }
    }
    Err(NetError::Dhcp {
        interface: interface.to_string(),
        waited: client.started.elapsed(),
        waiting_for,
        last_ignored: client.last_ignored.map(|i| i.to_string()),
    })
}

/// The UDP socket the exchange runs on (see the module documentation for why UDP).
fn open_socket(interface: &str) -> Result<UdpSocket, NetError> {
    let fail = |op: &'static str, e: io::Error| NetError::Socket {
        interface: interface.to_string(),
        op,
        detail: e.to_string(),
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| fail("socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| fail("SO_REUSEADDR", e))?;
    socket
        .set_broadcast(true)
        .map_err(|e| fail("SO_BROADCAST", e))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(|e| fail("SO_BINDTODEVICE", e))?;
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into())
        .map_err(|e| fail("bind 0.0.0.0:68", e))?;
    Ok(socket.into())
}

struct Client<'a> {
    socket: UdpSocket,
    interface: &'a str,
    mac: [u8; 6],
    started: Instant,
    last_ignored: Option<Ignored>,
}

impl Client<'_> {
    /// Broadcasts what `build` makes (given the seconds elapsed) and waits for a reply that
    /// `accept` takes, resending on [`retransmit_delay`]'s schedule, at most `max_sends`
    /// times. `None` when the sends are used up or `deadline` passes.
    fn exchange<T>(
        &mut self,
        build: impl Fn(u16) -> Message,
        xid: u32,
        mut accept: impl FnMut(Reply) -> Option<T>,
        deadline: Instant,
        max_sends: usize,
    ) -> Result<Option<T>, NetError> {
        let destination = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
        let mut buffer = vec![0u8; usize::from(u16::MAX)];
        for attempt in 0..max_sends {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let secs = u16::try_from(self.started.elapsed().as_secs()).unwrap_or(u16::MAX);
            let packet = encode(&build(secs))?;
            // A send can fail while the link settles (ENETDOWN, ENOBUFS): treat it as a lost
            // packet, the next attempt comes soon.
            let _ = self.socket.send_to(&packet, destination);
            let resend_at = (now + retransmit_delay(attempt)).min(deadline);
            while let Some(wait) = resend_at.checked_duration_since(Instant::now()) {
                if wait.is_zero() {
                    break;
                }
                self.socket
                    .set_read_timeout(Some(wait))
                    .map_err(|e| self.socket_error("SO_RCVTIMEO", e))?;
                let len = match self.socket.recv_from(&mut buffer) {
                    Ok((len, _from)) => len,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(self.socket_error("recvfrom", e)),
                };
                match classify(&buffer[..len], xid, self.mac) {
                    Ok(reply) => {
                        if let Some(taken) = accept(reply) {
                            return Ok(Some(taken));
                        }
                    }
                    Err(ignored) => self.last_ignored = Some(ignored),
                }
            }
        }
        Ok(None)
    }

    fn socket_error(&self, op: &'static str, e: io::Error) -> NetError {
        NetError::Socket {
            interface: self.interface.to_string(),
            op,
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const XID: u32 = 0x1234_5678;
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn decode(bytes: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(bytes)).unwrap()
    }

    /// A server's reply, as QEMU's slirp builds it (bootp.c): broadcast flag clear, server
    /// identifier, mask, router, DNS, lease time.
    fn slirp_reply(kind: MessageType, xid: u32, mac: [u8; 6]) -> Message {
        let mut reply = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            OFFERED,
            SERVER,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        reply.set_opcode(Opcode::BootReply);
        let options = reply.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ServerIdentifier(SERVER));
        options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        options.insert(DhcpOption::Router(vec![SERVER]));
        options.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        options.insert(DhcpOption::AddressLeaseTime(86400));
        reply
    }

    fn bytes(message: &Message) -> Vec<u8> {
        encode(message).unwrap()
    }

    #[test]
    fn discover_is_a_broadcast_bootrequest_with_our_mac_and_the_options_we_need() {
        let sent = bytes(&discover(XID, MAC, 3));
        assert!(sent.len() >= MIN_PACKET_SIZE, "{} bytes", sent.len());
        let m = decode(&sent);
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.htype(), HType::Eth);
        assert_eq!(m.hlen(), 6);
        assert_eq!(m.xid(), XID);
        assert_eq!(m.secs(), 3);
        assert!(m.flags().broadcast());
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        let Some(DhcpOption::ParameterRequestList(asked)) =
            m.opts().get(OptionCode::ParameterRequestList)
        else {
            panic!("no parameter request list: {m}");
        };
        for code in [
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::InterfaceMtu,
            OptionCode::ClasslessStaticRoute,
            OptionCode::AddressLeaseTime,
        ] {
            assert!(asked.contains(&code), "{code:?} not requested");
        }
        assert_eq!(
            m.opts().get(OptionCode::MaxMessageSize),
            Some(&DhcpOption::MaxMessageSize(1500))
        );
        assert!(!m.opts().contains(OptionCode::RequestedIpAddress));
        assert!(!m.opts().contains(OptionCode::ServerIdentifier));
        // The flags word on the wire: only the broadcast bit (RFC 2131 figure 2).
        assert_eq!(&sent[10..12], &[0x80, 0x00]);
    }

    #[test]
    fn request_names_the_offered_address_and_the_chosen_server() {
        let offer = Offer {
            address: OFFERED,
            server: SERVER,
        };
        let m = decode(&bytes(&request(XID, MAC, &offer, 0)));
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), XID);
        assert!(m.flags().broadcast());
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(OFFERED))
        );
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert!(m.opts().contains(OptionCode::ParameterRequestList));
    }

    #[test]
    fn an_offer_for_us_is_taken_with_its_server() {
        let packet = bytes(&slirp_reply(MessageType::Offer, XID, MAC));
        assert_eq!(
            classify(&packet, XID, MAC),
            Ok(Reply::Offer(Offer {
                address: OFFERED,
                server: SERVER
            }))
        );
    }

    #[test]
    fn replies_to_other_transactions_or_clients_are_ignored() {
        let other_xid = bytes(&slirp_reply(MessageType::Ack, XID ^ 1, MAC));
        assert_eq!(
            classify(&other_xid, XID, MAC),
            Err(Ignored::OtherXid(XID ^ 1))
        );
        let mut other_mac = MAC;
        other_mac[5] ^= 0xff;
        let other_client = bytes(&slirp_reply(MessageType::Ack, XID, other_mac));
        assert_eq!(classify(&other_client, XID, MAC), Err(Ignored::OtherClient));
        // A hardware address length beyond chaddr's 16 bytes (byte 2 of the header):
        // ignored, not a panic.
        let mut long_hlen = bytes(&slirp_reply(MessageType::Ack, XID, MAC));
        for hlen in [0u8, 7, 16, 17, 70, 255] {
            long_hlen[2] = hlen;
            assert_eq!(
                classify(&long_hlen, XID, MAC),
                Err(Ignored::OtherClient),
                "hlen {hlen}"
            );
        }
        // Another client's DISCOVER, seen because it is broadcast too.
        let request = bytes(&discover(XID, MAC, 0));
        assert_eq!(classify(&request, XID, MAC), Err(Ignored::NotAReply));
    }

    #[test]
    fn malformed_packets_are_ignored() {
        let good = bytes(&slirp_reply(MessageType::Ack, XID, MAC));
        for bad in [&[][..], &good[..100], &good[..MAGIC_OFFSET + 2]] {
            assert!(
                matches!(classify(bad, XID, MAC), Err(Ignored::Malformed(_))),
                "{} bytes accepted",
                bad.len()
            );
        }
        let mut no_cookie = good.clone();
        no_cookie[MAGIC_OFFSET] ^= 0xff;
        assert!(matches!(
            classify(&no_cookie, XID, MAC),
            Err(Ignored::Malformed(_))
        ));
        // Plain BOOTP (no option 53) is not DHCP.
        let mut bootp = slirp_reply(MessageType::Ack, XID, MAC);
        bootp.opts_mut().remove(OptionCode::MessageType);
        assert_eq!(
            classify(&bytes(&bootp), XID, MAC),
            Err(Ignored::Unexpected(None))
        );
        // An offer of nothing.
        let mut empty_offer = slirp_reply(MessageType::Offer, XID, MAC);
        empty_offer.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            classify(&bytes(&empty_offer), XID, MAC),
            Err(Ignored::IncompleteOffer)
        );
    }

    #[test]
    fn a_nak_is_recognised_with_its_reason() {
        let mut nak = slirp_reply(MessageType::Nak, XID, MAC);
        nak.opts_mut().insert(DhcpOption::Message(
            "requested address not available".into(),
        ));
        assert_eq!(
            classify(&bytes(&nak), XID, MAC),
            Ok(Reply::Nak {
                server: Some(SERVER),
                message: Some("requested address not available".into())
            })
        );
    }

    #[test]
    fn lease_from_a_slirp_ack() {
        let ack = decode(&bytes(&slirp_reply(MessageType::Ack, XID, MAC)));
        let lease = lease_from_ack("eth0", &ack).unwrap();
        assert_eq!(lease.address, OFFERED);
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.routes, vec![Route::default_via(SERVER)]);
        assert_eq!(lease.gateway(), Some(SERVER));
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.mtu, None);
        assert_eq!(lease.lease_time, Some(Duration::from_secs(86400)));
        assert_eq!(lease.server, SERVER);
        assert_eq!(lease.domain, None);
    }

    #[test]
    fn lease_from_an_ec2_like_ack_with_mtu_and_classless_routes() {
        let mut ack = slirp_reply(MessageType::Ack, XID, MAC);
        ack.set_yiaddr(Ipv4Addr::new(172, 31, 40, 7));
        let options = ack.opts_mut();
        options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 240, 0)));
        options.insert(DhcpOption::Router(vec![Ipv4Addr::new(172, 31, 32, 99)]));
        options.insert(DhcpOption::InterfaceMtu(9001));
        options.insert(DhcpOption::DomainName("eu-west-1.compute.internal".into()));
        options.insert(DhcpOption::AddressLeaseTime(INFINITE_LEASE));
        options.insert(DhcpOption::ClasslessStaticRoute(vec![
            ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(172, 31, 32, 1)),
            ("169.254.169.254/32".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
        ]));
        let lease = lease_from_ack("eth0", &decode(&bytes(&ack))).unwrap();
        assert_eq!(lease.prefix_len, 20);
        // Option 121 wins over option 3 (RFC 3442).
        assert_eq!(
            lease.routes,
            vec![
                Route::default_via(Ipv4Addr::new(172, 31, 32, 1)),
                Route {
                    destination: Ipv4Addr::new(169, 254, 169, 254),
                    prefix_len: 32,
                    gateway: None
                },
            ]
        );
        assert_eq!(lease.mtu, Some(9001));
        assert_eq!(lease.lease_time, None);
        assert_eq!(lease.domain.as_deref(), Some("eu-west-1.compute.internal"));
    }

    #[test]
    fn unusable_acks_are_refused_with_the_reason() {
        let mut no_mask = slirp_reply(MessageType::Ack, XID, MAC);
        no_mask.opts_mut().remove(OptionCode::SubnetMask);
        assert_eq!(
            lease_from_ack("eth0", &no_mask).unwrap_err(),
            "no subnet mask (option 1)"
        );
        let mut holes = slirp_reply(MessageType::Ack, XID, MAC);
        holes
            .opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        assert!(lease_from_ack("eth0", &holes)
            .unwrap_err()
            .contains("not contiguous"));
        let mut no_address = slirp_reply(MessageType::Ack, XID, MAC);
        no_address.set_yiaddr(Ipv4Addr::BROADCAST);
        assert!(lease_from_ack("eth0", &no_address)
            .unwrap_err()
            .contains("yiaddr"));
    }

    #[test]
    fn odd_option_values_are_dropped_not_trusted() {
        let mut ack = slirp_reply(MessageType::Ack, XID, MAC);
        let options = ack.opts_mut();
        options.insert(DhcpOption::InterfaceMtu(68));
        options.insert(DhcpOption::DomainName(
            "evil.example\nnameserver 6.6.6.6".into(),
        ));
        options.insert(DhcpOption::DomainNameServer(vec![
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 3),
        ]));
        let lease = lease_from_ack("eth0", &ack).unwrap();
        assert_eq!(lease.mtu, None);
        assert_eq!(lease.domain, None);
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    }

    #[test]
    fn prefix_lengths_of_masks() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(prefix_len(Ipv4Addr::BROADCAST), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::UNSPECIFIED), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 0, 255)), None);
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 255)), None);
    }

    #[test]
    fn retransmissions_double_from_one_second_up_to_eight() {
        let schedule: Vec<u64> = (0..6).map(|i| retransmit_delay(i).as_secs()).collect();
        assert_eq!(schedule, [1, 2, 4, 8, 8, 8]);
        assert_eq!(retransmit_delay(usize::MAX), Duration::from_secs(8));
        // REQUESTs give up after 1 + 2 + 4 + 8 s and discovery starts again.
        let request_phase: u64 = (0..REQUEST_SENDS)
            .map(|i| retransmit_delay(i).as_secs())
            .sum();
        assert_eq!(request_phase, 15);
    }
}

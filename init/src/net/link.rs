//! The kernel's side of bring-up, over rtnetlink: list interfaces, set one up, give it the
//! leased address, routes and MTU.
//!
//! Why netlink and not the old ioctls (SIOCSIFFLAGS, SIOCSIFADDR, SIOCADDRT, SIOCSIFMTU):
//! rustix wraps none of them, so each would need a hand-declared `ifreq`/`rtentry` and unsafe
//! code, and SIOCADDRT cannot say "this gateway is on-link" the way a classless static route
//! (DHCP option 121) may need. netlink-packet-route declares the rtnetlink messages we send
//! (see [`Request`] for why answers are read with netlink-packet-core's buffers instead);
//! netlink-sys is the plain blocking socket (no async runtime). The kernel answers each
//! request before `send` returns, so no timeouts are needed here.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    Emitable, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkFlags, LinkHeader, LinkLayerType, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::AddressFamily;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{NetError, Route};

// rtnetlink message types and link attributes (linux/rtnetlink.h, linux/if_link.h; kernel
// ABI). netlink-packet-route keeps its own copies private.
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
/// `sizeof(struct ifinfomsg)`: the link header before a link's attributes.
const IFINFOMSG_LEN: usize = 16;

/// Large enough for one datagram of a link dump on a machine with a few interfaces; the
/// kernel splits dumps into datagrams of at most a page (or 32 KiB) anyway.
const RECV_BUFFER: usize = 64 * 1024;

/// One network interface as RTM_GETLINK describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address, if it is a 6-byte Ethernet one.
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub flags: LinkFlags,
    pub kind: LinkLayerType,
}

impl Link {
    pub fn is_loopback(&self) -> bool {
        self.kind == LinkLayerType::Loopback || self.flags.contains(LinkFlags::Loopback)
    }

    /// Carrier present (IFF_LOWER_UP): frames sent now can reach the wire.
    pub fn has_carrier(&self) -> bool {
        self.flags.contains(LinkFlags::LowerUp)
    }

    /// An Ethernet interface that DHCP can run on: not loopback, with a non-zero MAC.
    pub fn is_dhcp_candidate(&self) -> bool {
        !self.is_loopback()
            && self.kind == LinkLayerType::Ether
            && self.mac.is_some_and(|mac| mac != [0; 6])
    }
}

/// An rtnetlink socket, connected to the kernel.
pub struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    pub fn open() -> Result<Rtnl, NetError> {
        let fail = |op: &str, e: std::io::Error| NetError::Netlink {
            what: format!("{op} (NETLINK_ROUTE socket)"),
            detail: e.to_string(),
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| fail("socket", e))?;
        socket.bind_auto().map_err(|e| fail("bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| fail("connect", e))?;
        Ok(Rtnl {
            socket,
            sequence: 0,
        })
    }

    /// Every interface, in the kernel's order (by index).
    pub fn links(&mut self) -> Result<Vec<Link>, NetError> {
        let what = "list interfaces (RTM_GETLINK)";
        let replies = self.request(RTM_GETLINK, LinkMessage::default(), NLM_F_DUMP, what)?;
        replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWLINK)
            .map(|(_, payload)| {
                parse_link(payload).map_err(|detail| NetError::Netlink {
                    what: what.to_string(),
                    detail,
                })
            })
            .collect()
    }

    /// Sets IFF_UP on the interface (`ip link set NAME up`).
    pub fn set_up(&mut self, link: &Link) -> Result<(), NetError> {
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(
            RTM_SETLINK,
            message,
            0,
            &format!("set {} up (RTM_SETLINK)", link.name),
        )
        .map(drop)
    }

    /// `ip link set NAME mtu MTU`.
    pub fn set_mtu(&mut self, link: &Link, mtu: u32) -> Result<(), NetError> {
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        message.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(
            RTM_SETLINK,
            message,
            0,
            &format!("set MTU {mtu} on {} (RTM_SETLINK)", link.name),
        )
        .map(drop)
    }

    /// `ip addr replace ADDRESS/PREFIX broadcast + dev NAME`. The address is permanent: the
    /// kernel would delete an address whose lifetime runs out, and nothing renews the lease.
    pub fn add_address(
        &mut self,
        link: &Link,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix_len;
        message.header.index = link.index;
        message
            .attributes
            .push(AddressAttribute::Local(address.into()));
        message
            .attributes
            .push(AddressAttribute::Address(address.into()));
        // /31 and /32 have no broadcast address (RFC 3021).
        if prefix_len < 31 {
            message
                .attributes
                .push(AddressAttribute::Broadcast(broadcast(address, prefix_len)));
        }
        self.request(
            RTM_NEWADDR,
            message,
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!(
                "add address {address}/{prefix_len} to {} (RTM_NEWADDR)",
                link.name
            ),
        )
        .map(drop)
    }

    /// `ip route replace DEST/PREFIX [via GATEWAY [onlink]] dev NAME proto dhcp`. A gateway
    /// outside the interface's own subnet is marked on-link, as RFC 3442 routes may need.
    pub fn add_route(
        &mut self,
        link: &Link,
        route: &Route,
        own_subnet: (Ipv4Addr, u8),
    ) -> Result<(), NetError> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = route.prefix_len;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Dhcp;
        message.header.kind = RouteType::Unicast;
        if route.prefix_len > 0 {
            message
                .attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    route.destination,
                )));
        }
        match route.gateway {
            Some(gateway) => {
                message.header.scope = RouteScope::Universe;
                message
                    .attributes
                    .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
                if !in_subnet(gateway, own_subnet.0, own_subnet.1) {
                    message.header.flags = RouteFlags::Onlink;
                }
            }
            None => message.header.scope = RouteScope::Link,
        }
        message.attributes.push(RouteAttribute::Oif(link.index));
        self.request(
            RTM_NEWROUTE,
            message,
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("add route {route} dev {} (RTM_NEWROUTE)", link.name),
        )
        .map(drop)
    }

    /// Sends one request and collects the payloads (with their message types) the kernel
    /// answers until its ACK or, for a dump, its NLMSG_DONE. A negative errno in an
    /// NLMSG_ERROR becomes [`NetError::Netlink`].
    fn request<M: Emitable>(
        &mut self,
        kind: u16,
        body: M,
        flags: u16,
        what: &str,
    ) -> Result<Vec<(u16, Vec<u8>)>, NetError> {
        let fail = |detail: String| NetError::Netlink {
            what: what.to_string(),
            detail,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(Request { kind, body }),
        );
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .map_err(|e| fail(format!("send: {e}")))?;

        let mut replies = Vec::new();
        let mut datagram = Vec::with_capacity(RECV_BUFFER);
        loop {
            datagram.clear();
            self.socket
                .recv(&mut datagram, 0)
                .map_err(|e| fail(format!("recv: {e}")))?;
            let mut rest = &datagram[..];
            while !rest.is_empty() {
                let reply = NetlinkBuffer::new_checked(rest)
                    .map_err(|e| fail(format!("undecodable answer: {e}")))?;
                let (kind, payload) = (reply.message_type(), reply.payload());
                let ours = reply.sequence_number() == sequence;
                // Messages are padded to 4 bytes inside a datagram.
                let length = reply.length() as usize;
                rest = &rest[length.next_multiple_of(4).min(rest.len())..];
                if !ours {
                    continue; // a late answer to an earlier request
                }
                match kind {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        let error = ErrorBuffer::new_checked(payload)
                            .map_err(|e| fail(format!("undecodable NLMSG_ERROR: {e}")))?;
                        return match error.code() {
                            None => Ok(replies),
                            Some(code) => Err(fail(
                                std::io::Error::from_raw_os_error(code.get().abs()).to_string(),
                            )),
                        };
                    }
                    _ => replies.push((kind, payload.to_vec())),
                }
            }
        }
    }
}

/// One request: its rtnetlink message type and body. Sending through this rather than
/// netlink-packet-route's `RouteNetlinkMessage`, and reading answers by hand (an ACK's code,
/// three attributes of a link), links in only the emitters of the three messages we send:
/// the crate's parsers for every rtnetlink family would add ~0.5 MB to this static PID 1.
struct Request<M> {
    kind: u16,
    body: M,
}

impl<M: Emitable> NetlinkSerializable for Request<M> {
    fn message_type(&self) -> u16 {
        self.kind
    }

    fn buffer_len(&self) -> usize {
        self.body.buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        self.body.emit(buffer)
    }
}

/// An RTM_NEWLINK payload: `struct ifinfomsg`, then attributes, of which we read the name,
/// hardware address and MTU.
fn parse_link(payload: &[u8]) -> Result<Link, String> {
    let header = LinkHeader::parse(payload).map_err(|e| format!("link header: {e}"))?;
    let mut link = Link {
        index: header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        flags: header.flags,
        kind: header.link_layer_type,
    };
    let attributes = payload.get(IFINFOMSG_LEN..).unwrap_or_default();
    for attribute in NlasIterator::new(attributes) {
        let attribute = attribute.map_err(|e| format!("link attribute: {e}"))?;
        let value = attribute.value();
        match attribute.kind() {
            IFLA_IFNAME => {
                let name = value.split(|b| *b == 0).next().unwrap_or_default();
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(value).ok(),
            IFLA_MTU => link.mtu = <[u8; 4]>::try_from(value).ok().map(u32::from_ne_bytes),
            _ => {}
        }
    }
    if link.name.is_empty() {
        return Err(format!("link {} without IFLA_IFNAME", link.index));
    }
    Ok(link)
}

/// The netmask of a prefix length (0..=32) as an address.
pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// The subnet's broadcast address (all host bits set).
pub fn broadcast(address: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) | !u32::from(netmask(prefix_len)))
}

fn in_subnet(address: Ipv4Addr, subnet: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::from(netmask(prefix_len));
    u32::from(address) & mask == u32::from(subnet) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_and_broadcast_follow_the_prefix() {
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 0, 2, 15), 24),
            Ipv4Addr::new(10, 0, 2, 255)
        );
        assert_eq!(
            broadcast(Ipv4Addr::new(172, 31, 40, 7), 20),
            Ipv4Addr::new(172, 31, 47, 255)
        );
        assert!(in_subnet(
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::new(10, 0, 2, 15),
            24
        ));
        assert!(!in_subnet(
            Ipv4Addr::new(10, 0, 3, 2),
            Ipv4Addr::new(10, 0, 2, 15),
            24
        ));
    }

    #[test]
    fn the_kernel_lists_the_loopback_interface() {
        // Real rtnetlink, read-only: every network namespace has `lo`.
        let mut rtnl = Rtnl::open().unwrap();
        let links = rtnl.links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").unwrap();
        assert!(lo.is_loopback());
        assert!(!lo.is_dhcp_candidate());
        assert!(lo.index >= 1);
    }
}

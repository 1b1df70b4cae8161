//! The network, brought up by PID 1 itself: the kernel has no `ip=` autoconfiguration
//! (CONFIG_IP_PNP is off) and the image has no DHCP client.
//!
//! [`bring_up`] sets loopback up, picks the Ethernet interface, runs a DHCPv4 exchange on it
//! ([`dhcp`]), applies the [`Lease`] over rtnetlink ([`link`]: MTU, address, routes) and writes
//! `/etc/resolv.conf` for the resolvers of zoa-init (musl) and the server (glibc). Targets:
//! QEMU's user network (slirp) and EC2 VPC DHCP (MTU 9001 via option 26, perhaps option 121).

pub mod dhcp;
pub mod link;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use self::link::{Link, Rtnl};

/// Where the name servers go: both musl and glibc read it.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// At most this many `nameserver` lines are written: musl and glibc use only the first three
/// (MAXNS).
const MAX_NAMESERVERS: usize = 3;

/// How long to wait for carrier after setting the interface up before sending anyway (the
/// exchange resends, so a lost first packet only costs a second).
const CARRIER_WAIT: Duration = Duration::from_secs(3);

/// How often interfaces are listed while waiting for one to appear or get carrier.
const POLL: Duration = Duration::from_millis(50);
/// How long an interface may take to appear.
const INTERFACE_WAIT: Duration = Duration::from_secs(5);

/// What the DHCP server granted, as applied to the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// Routes through this interface; the default route has `prefix_len` 0.
    pub routes: Vec<Route>,
    pub dns: Vec<Ipv4Addr>,
    /// The domain name (option 15), written as the resolver's `search` domain.
    pub domain: Option<String>,
    /// The MTU: as offered (option 26) from [`dhcp::lease_from_ack`]; the one in effect on
    /// the interface once [`bring_up`] returns.
    pub mtu: Option<u32>,
    /// `None` for an infinite lease (or one without option 51).
    pub lease_time: Option<Duration>,
    /// The DHCP server that granted it (option 54).
    pub server: Ipv4Addr,
}

impl Lease {
    /// The default route's gateway, if the lease has one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .find(|r| r.prefix_len == 0)
            .and_then(|r| r.gateway)
    }
}

/// The console line after `zoa-init: `, e.g.
/// `network eth0 10.0.2.15/24 via 10.0.2.2 dns 10.0.2.3 mtu 1500 lease 86400s`.
/// Absent values are `none` (gateway, DNS) or `unknown` (MTU); several DNS servers are joined
/// by commas; an infinite lease is `lease infinite`.
impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {} {}/{} via ",
            self.interface, self.address, self.prefix_len
        )?;
        match self.gateway() {
            Some(gateway) => write!(f, "{gateway}")?,
            None => f.write_str("none")?,
        }
        f.write_str(" dns ")?;
        if self.dns.is_empty() {
            f.write_str("none")?;
        }
        for (i, server) in self.dns.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            write!(f, "{separator}{server}")?;
        }
        match self.mtu {
            Some(mtu) => write!(f, " mtu {mtu}")?,
            None => f.write_str(" mtu unknown")?,
        }
        match self.lease_time {
            Some(time) => write!(f, " lease {}s", time.as_secs()),
            None => f.write_str(" lease infinite"),
        }
    }
}

/// One IPv4 route through the leased interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// `None`: the destination is on the link itself.
    pub gateway: Option<Ipv4Addr>,
}

impl Route {
    pub fn default_via(gateway: Ipv4Addr) -> Route {
        Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(gateway),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.destination, self.prefix_len)?;
        match self.gateway {
            Some(gateway) => write!(f, " via {gateway}"),
            None => f.write_str(" on-link"),
        }
    }
}

/// Why the network could not be brought up. Each message is one line naming the interface,
/// the kernel request or the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// An rtnetlink request failed (`what` names it, `detail` is the kernel's errno).
    Netlink { what: String, detail: String },
    /// No (such) interface appeared in time.
    NoInterface {
        wanted: Option<String>,
        waited: Duration,
        present: Vec<String>,
    },
    /// The DHCP socket could not be set up or read.
    Socket {
        interface: String,
        op: &'static str,
        detail: String,
    },
    /// No lease before the deadline.
    Dhcp {
        interface: String,
        waited: Duration,
        waiting_for: String,
        last_ignored: Option<String>,
    },
    /// The server's DHCPACK cannot be applied.
    BadLease {
        interface: String,
        server: Ipv4Addr,
        detail: String,
    },
    /// A DHCP message could not be encoded.
    Encode(String),
    /// No random transaction id (getrandom failed).
    Random(String),
    /// resolv.conf could not be written.
    ResolvConf { path: String, detail: String },
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Netlink { what, detail } => write!(f, "rtnetlink: {what}: {detail}"),
            NetError::NoInterface {
                wanted,
                waited,
                present,
            } => {
                match wanted {
                    Some(name) => write!(f, "no network interface {name}")?,
                    None => f.write_str("no Ethernet interface with a MAC address")?,
                }
                write!(
                    f,
                    " after {:.1} s (present: {}); is its driver module (virtio_net, ena) loaded?",
                    waited.as_secs_f64(),
                    if present.is_empty() {
                        "none".to_string()
                    } else {
                        present.join(", ")
                    }
                )
            }
            NetError::Socket {
                interface,
                op,
                detail,
            } => write!(f, "DHCP socket on {interface}: {op}: {detail}"),
            NetError::Dhcp {
                interface,
                waited,
                waiting_for,
                last_ignored,
            } => {
                write!(
                    f,
                    "DHCP on {interface}: no lease after {:.1} s: waiting for {waiting_for}",
                    waited.as_secs_f64()
                )?;
                if let Some(ignored) = last_ignored {
                    write!(f, " (last packet ignored: {ignored})")?;
                }
                Ok(())
            }
            NetError::BadLease {
                interface,
                server,
                detail,
            } => write!(
                f,
                "DHCP on {interface}: unusable DHCPACK from {server}: {detail}"
            ),
            NetError::Encode(e) => write!(f, "DHCP: encoding a message failed: {e}"),
            NetError::Random(e) => write!(f, "DHCP: getrandom for the transaction id: {e}"),
            NetError::ResolvConf { path, detail } => write!(f, "{path}: {detail}"),
        }
    }
}

impl std::error::Error for NetError {}

/// Brings the network up: loopback, then DHCP on `interface` (or the first Ethernet interface
/// with a MAC address), waiting for it to appear, all within `timeout`. Writes
/// [`RESOLV_CONF`]. Returns the lease as applied; print it as `zoa-init: {lease}`.
pub fn bring_up(interface: Option<&str>, timeout: Duration) -> Result<Lease, NetError> {
    bring_up_at(interface, timeout, Path::new(RESOLV_CONF))
}

/// [`bring_up`], writing the name servers to `resolv_conf`.
pub fn bring_up_at(
    interface: Option<&str>,
    timeout: Duration,
    resolv_conf: &Path,
) -> Result<Lease, NetError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut rtnl = Rtnl::open()?;

    // Loopback: the kernel adds 127.0.0.1/8 itself when `lo` goes up.
    let links = rtnl.links()?;
    if let Some(lo) = links.iter().find(|l| l.is_loopback()) {
        rtnl.set_up(lo)?;
    }

    // Drivers probe synchronously when their module loads (virtio_net, ena): an interface
    // still missing after a few seconds is not coming, and a probe image without a NIC
    // should not sit out the whole DHCP timeout.
    let interface_deadline = (started + INTERFACE_WAIT).min(deadline);
    let link = wait_for_interface(&mut rtnl, interface, started, interface_deadline)?;
    let Some(mac) = link.mac else {
        return Err(NetError::NoInterface {
            wanted: Some(link.name),
            waited: started.elapsed(),
            present: Vec::new(),
        });
    };
    rtnl.set_up(&link)?;
    wait_for_carrier(
        &mut rtnl,
        &link,
        (Instant::now() + CARRIER_WAIT).min(deadline),
    )?;

    let mut lease = dhcp::obtain_lease(&link.name, mac, deadline)?;
    apply(&mut rtnl, &link, &mut lease)?;
    write_resolv_conf(resolv_conf, &lease)?;
    Ok(lease)
}

/// Lists interfaces until the wanted one (or, with no name, a DHCP candidate) is there.
fn wait_for_interface(
    rtnl: &mut Rtnl,
    wanted: Option<&str>,
    started: Instant,
    deadline: Instant,
) -> Result<Link, NetError> {
    loop {
        let links = rtnl.links()?;
        let found = match wanted {
            Some(name) => links.iter().find(|l| l.name == name),
            None => links.iter().find(|l| l.is_dhcp_candidate()),
        };
        if let Some(link) = found {
            return Ok(link.clone());
        }
        if Instant::now() + POLL >= deadline {
            return Err(NetError::NoInterface {
                wanted: wanted.map(str::to_string),
                waited: started.elapsed(),
                present: links.into_iter().map(|l| l.name).collect(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until the interface reports carrier, or `until`; not having carrier is not an error
/// here (the DHCP exchange will tell).
fn wait_for_carrier(rtnl: &mut Rtnl, link: &Link, until: Instant) -> Result<(), NetError> {
    while Instant::now() < until {
        let links = rtnl.links()?;
        if links
            .iter()
            .any(|l| l.index == link.index && l.has_carrier())
        {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// MTU first (a jumbo MTU must be in place before traffic), then the address, then the routes
/// (a gateway must be reachable through the new subnet). Sets `lease.mtu` to the MTU in
/// effect.
fn apply(rtnl: &mut Rtnl, link: &Link, lease: &mut Lease) -> Result<(), NetError> {
    match lease.mtu {
        Some(mtu) if Some(mtu) != link.mtu => rtnl.set_mtu(link, mtu)?,
        Some(_) => {}
        None => lease.mtu = link.mtu,
    }
    rtnl.add_address(link, lease.address, lease.prefix_len)?;
    for route in &lease.routes {
        rtnl.add_route(link, route, (lease.address, lease.prefix_len))?;
    }
    Ok(())
}

/// The resolv.conf for `lease`: a comment naming the source, `search` with the domain, and
/// up to three `nameserver` lines.
pub fn resolv_conf(lease: &Lease) -> String {
    let mut text = format!(
        "# written by zoa-init from the DHCP lease on {} (server {})\n",
        lease.interface, lease.server
    );
    if let Some(domain) = &lease.domain {
        text.push_str(&format!("search {domain}\n"));
    }
    for server in lease.dns.iter().take(MAX_NAMESERVERS) {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

/// Writes [`resolv_conf`] to `path` (creating its directory, which an initramfs may lack),
/// through a temporary file and a rename so a reader never sees half a file.
pub fn write_resolv_conf(path: &Path, lease: &Lease) -> Result<(), NetError> {
    let fail = |op: &str, e: std::io::Error| NetError::ResolvConf {
        path: path.display().to_string(),
        detail: format!("{op}: {e}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail("create directory", e))?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".zoa-init");
    std::fs::write(&temporary, resolv_conf(lease)).map_err(|e| fail("write", e))?;
    std::fs::rename(&temporary, path).map_err(|e| fail("rename", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slirp_lease() -> Lease {
        Lease {
            interface: "eth0".into(),
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            routes: vec![Route::default_via(Ipv4Addr::new(10, 0, 2, 2))],
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            domain: None,
            mtu: Some(1500),
            lease_time: Some(Duration::from_secs(86400)),
            server: Ipv4Addr::new(10, 0, 2, 2),
        }
    }

    #[test]
    fn lease_console_line() {
        assert_eq!(
            slirp_lease().to_string(),
            "network eth0 10.0.2.15/24 via 10.0.2.2 dns 10.0.2.3 mtu 1500 lease 86400s"
        );
        let bare = Lease {
            routes: Vec::new(),
            dns: vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)],
            mtu: None,
            lease_time: None,
            ..slirp_lease()
        };
        assert_eq!(
            bare.to_string(),
            "network eth0 10.0.2.15/24 via none dns 1.1.1.1,8.8.8.8 mtu unknown lease infinite"
        );
    }

    #[test]
    fn resolv_conf_lists_at_most_three_servers_and_the_search_domain() {
        let lease = Lease {
            domain: Some("ec2.internal".into()),
            dns: (1..=4).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect(),
            ..slirp_lease()
        };
        assert_eq!(
            resolv_conf(&lease),
            "# written by zoa-init from the DHCP lease on eth0 (server 10.0.2.2)\n\
             search ec2.internal\n\
             nameserver 10.0.0.1\n\
             nameserver 10.0.0.2\n\
             nameserver 10.0.0.3\n"
        );
    }

    #[test]
    fn resolv_conf_is_written_with_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/resolv.conf");
        write_resolv_conf(&path, &slirp_lease()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            resolv_conf(&slirp_lease())
        );
        assert!(!dir.path().join("etc/resolv.conf.zoa-init").exists());
        // Written again (a second bring-up) it is replaced, not appended to.
        write_resolv_conf(&path, &slirp_lease()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            resolv_conf(&slirp_lease())
        );
    }

    #[test]
    fn unwritable_resolv_conf_names_the_file() {
        let e =
            write_resolv_conf(Path::new("/proc/zoa-test/resolv.conf"), &slirp_lease()).unwrap_err();
        assert!(
            e.to_string().starts_with("/proc/zoa-test/resolv.conf: "),
            "{e}"
        );
    }

    #[test]
    fn a_missing_interface_is_reported_with_those_present() {
        // Real rtnetlink in this network namespace; no interface has this name.
        let started = Instant::now();
        let e = bring_up_at(
            Some("zoa-none0"),
            Duration::from_millis(300),
            Path::new("/nonexistent/resolv.conf"),
        );
        let e = match e {
            Err(e) => e,
            Ok(lease) => panic!("leased {lease}"),
        };
        let message = e.to_string();
        assert!(
            message.starts_with("no network interface zoa-none0 after 0."),
            "{message}"
        );
        assert!(message.contains("lo"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    // ---- End to end: our client against dnsmasq, over a veth pair between two network
    // namespaces made by the test (nothing touches the host's own network). The test binary
    // runs itself again inside the client's namespace (`ip netns exec`), where the part
    // selected by INNER brings the network up and checks it with `ip -j`.

    const INNER: &str = "ZOA_NET_TEST_INNER";
    const RESOLV_ENV: &str = "ZOA_NET_TEST_RESOLV";
    const SERVER_IF: &str = "zoasrv0";
    const CLIENT_IF: &str = "zoa0";
    const SLIRP_IF: &str = "tap0";
    const PORT_ENV: &str = "ZOA_NET_TEST_PORT";

    /// Network namespaces made for one test, and the DHCP server serving the client's one.
    /// Dropping it kills the server and deletes the namespaces (and their interfaces).
    struct Lab {
        client_ns: String,
        server_ns: Option<String>,
        server: Option<std::process::Child>,
        dir: tempfile::TempDir,
    }

    impl Lab {
        fn new(kind: &str, tag: &str) -> Lab {
            let client_ns = format!("zoa-{kind}-{tag}-{}", std::process::id());
            ip(&["netns", "add", &client_ns]);
            Lab {
                client_ns,
                server_ns: None,
                server: None,
                dir: tempfile::tempdir().unwrap(),
            }
        }

        /// dnsmasq in a second namespace, joined to the client's by a veth pair (CLIENT_IF on
        /// the client's side). With `dhcp_options` `None`, no DHCP server runs.
        fn dnsmasq(tag: &str, dhcp_options: Option<&[&str]>) -> Lab {
            let mut lab = Lab::new("dhcpc", tag);
            let srv = format!("zoa-dhcpd-{tag}-{}", std::process::id());
            ip(&["netns", "add", &srv]);
            lab.server_ns = Some(srv.clone());
            ip(&[
                "-n",
                &srv,
                "link",
                "add",
                SERVER_IF,
                "type",
                "veth",
                "peer",
                "name",
                CLIENT_IF,
                "netns",
                &lab.client_ns,
            ]);
            ip(&["-n", &srv, "addr", "add", "192.0.2.1/24", "dev", SERVER_IF]);
            ip(&["-n", &srv, "link", "set", SERVER_IF, "up"]);
            let Some(dhcp_options) = dhcp_options else {
                return lab;
            };
            let mut args: Vec<String> = [
                "netns",
                "exec",
                &srv,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0", // no DNS service, DHCP only
                "--user=root",
                "--bind-interfaces",
                "--interface",
                SERVER_IF,
                "--dhcp-range=192.0.2.50,192.0.2.59,255.255.255.0,12h",
                "--dhcp-authoritative",
                "--no-ping", // else it pings each address for 3 s before offering it
                "--log-dhcp",
                "--log-facility=-",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let dir = lab.dir.path();
            args.push(format!("--dhcp-leasefile={}", dir.join("leases").display()));
            args.push(format!("--pid-file={}", dir.join("pid").display()));
            args.extend(dhcp_options.iter().map(|o| format!("--dhcp-option={o}")));
            lab.spawn_server("ip", &args);
            // dnsmasq logs its DHCP range once its socket is open; sending before that would
            // only test our retransmission.
            lab.wait_until("dnsmasq to open its DHCP socket", |lab| {
                lab.server_log().contains("DHCP, IP range")
            });
            lab
        }

        /// libslirp (the user network of QEMU) behind a tap device in the client's namespace,
        /// through slirp4netns. slirp's DHCP server and gateway live inside the slirp4netns
        /// process; 10.0.2.2 leads to the host's loopback.
        fn slirp(tag: &str) -> Lab {
            let mut lab = Lab::new("slirp", tag);
            let netns = format!("/run/netns/{}", lab.client_ns);
            lab.spawn_server("slirp4netns", &["--netns-type=path", &netns, SLIRP_IF]);
            let client_ns = lab.client_ns.clone();
            lab.wait_until("slirp4netns to create its tap device", |_| {
                std::process::Command::new("ip")
                    .args(["-n", &client_ns, "link", "show", SLIRP_IF])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            lab
        }

        fn spawn_server(&mut self, program: &str, args: &[impl AsRef<std::ffi::OsStr>]) {
            let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
            let child = std::process::Command::new(program)
                .args(args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.server = Some(child);
        }

        fn wait_until(&mut self, what: &str, ready: impl Fn(&Lab) -> bool) {
            let until = Instant::now() + Duration::from_secs(10);
            while !ready(self) {
                if let Some(Some(status)) = self.server.as_mut().map(|c| c.try_wait().unwrap()) {
                    panic!("server exited ({status}):\n{}", self.server_log());
                }
                assert!(
                    Instant::now() < until,
                    "timed out waiting for {what}:\n{}",
                    self.server_log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Runs test `name` of this binary inside the client's namespace, with `env` added;
        /// returns its output.
        fn run_inner(&self, name: &str, env: &[(&str, String)]) -> String {
            let resolv = self.dir.path().join("etc/resolv.conf");
            let exe = std::env::current_exe().unwrap();
            let started = Instant::now();
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.client_ns])
                .arg(&exe)
                .args([name, "--exact", "--nocapture", "--test-threads=1"])
                .env(INNER, "1")
                .env(RESOLV_ENV, &resolv)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("inner run took {:?}", started.elapsed());
            assert!(
                out.status.success() && text.contains("test result: ok. 1 passed"),
                "inner test failed:\n{text}\nserver log:\n{}",
                self.server_log()
            );
            text
        }

        fn server_log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        }

        /// dnsmasq's own record of the lease: "expiry MAC IP hostname client-id".
        fn server_leases(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("leases")).unwrap_or_default()
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            if let Some(mut child) = self.server.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            for ns in std::iter::once(&self.client_ns).chain(&self.server_ns) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .status();
            }
        }
    }

    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -j ARGS` parsed.
    fn ip_json(args: &[&str]) -> serde_json::Value {
        let out = std::process::Command::new("ip")
            .arg("-j")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip -j {}", args.join(" "));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Why the end-to-end tests cannot run here, if they cannot.
    fn lab_unavailable(server: &str) -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
        }
        for (tool, arg) in [("ip", "-V"), (server, "--version")] {
            let found = std::process::Command::new(tool)
                .arg(arg)
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Some(format!(
                    "`{tool}` not found (apt-get install iproute2 dnsmasq-base slirp4netns)"
                ));
            }
        }
        None
    }

    fn inner_bring_up(interface: Option<&str>) -> Lease {
        let resolv = std::env::var_os(RESOLV_ENV).unwrap();
        let lease = bring_up_at(interface, Duration::from_secs(20), Path::new(&resolv)).unwrap();
        println!("\nzoa-init: {lease}");
        let written = std::fs::read_to_string(&resolv).unwrap();
        assert_eq!(written, resolv_conf(&lease));
        lease
    }

    /// The interface's IPv4 addresses as "a.b.c.d/n", its MTU, and whether it is up.
    fn interface_state(name: &str) -> (Vec<String>, u64, bool) {
        let json = ip_json(&["addr", "show", "dev", name]);
        let entry = &json[0];
        let addresses = entry["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        let up = entry["flags"].as_array().unwrap().iter().any(|f| f == "UP");
        (addresses, entry["mtu"].as_u64().unwrap(), up)
    }

    /// IPv4 routes of the main table as "dst via gw" / "dst" (on-link), in `ip`'s order.
    fn routes() -> Vec<String> {
        ip_json(&["-4", "route", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let dst = r["dst"].as_str().unwrap();
                match r["gateway"].as_str() {
                    Some(gw) => format!("{dst} via {gw}"),
                    None => dst.to_string(),
                }
            })
            .collect()
    }

    fn assert_loopback_up() {
        let (addresses, _, up) = interface_state("lo");
        assert!(up, "lo is down");
        assert_eq!(addresses, ["127.0.0.1/8"]);
    }

    #[test]
    fn dhcp_from_dnsmasq_router_dns_mtu_domain() {
        const NAME: &str = "net::tests::dhcp_from_dnsmasq_router_dns_mtu_domain";
        if std::env::var_os(INNER).is_some() {
            // No interface named: the first Ethernet one with a MAC (zoa0) is chosen.
            let lease = inner_bring_up(None);
            let (addresses, mtu, up) = interface_state(CLIENT_IF);
            assert!(up);
            assert_eq!(addresses, [format!("{}/24", lease.address)]);
            assert_eq!(mtu, 1400);
            assert_eq!(routes(), ["default via 192.0.2.1", "192.0.2.0/24"]);
            assert_loopback_up();
            return;
        }
        if let Some(why) = lab_unavailable("dnsmasq") {
            eprintln!("SKIPPED {NAME}: {why}");
            return;
        }
        let lab = Lab::dnsmasq(
            "plain",
            Some(&[
                "option:router,192.0.2.1",
                "option:dns-server,192.0.2.200,192.0.2.201",
                "option:mtu,1400",
                "option:domain-name,zoa.test",
            ]),
        );
        let output = lab.run_inner(NAME, &[]);
        let line = output
            .lines()
            .find(|l| l.starts_with("zoa-init: network "))
            .unwrap_or_else(|| panic!("no lease line in:\n{output}"));
        let address = line.split(' ').nth(3).unwrap().trim_end_matches("/24");
        assert!(address.starts_with("192.0.2.5"), "{line}");
        assert_eq!(
            line,
            format!(
                "zoa-init: network {CLIENT_IF} {address}/24 via 192.0.2.1 \
                 dns 192.0.2.200,192.0.2.201 mtu 1400 lease 43200s"
            )
        );
        let resolv = std::fs::read_to_string(lab.dir.path().join("etc/resolv.conf")).unwrap();
        assert!(
            resolv.contains("search zoa.test\nnameserver 192.0.2.200\nnameserver 192.0.2.201\n"),
            "{resolv}"
        );
        let leases = lab.server_leases();
        assert!(
            leases.contains(&format!(" {address} ")),
            "dnsmasq leases: {leases}"
        );
    }

    #[test]
    fn dhcp_from_dnsmasq_classless_routes_and_jumbo_mtu() {
        const NAME: &str = "net::tests::dhcp_from_dnsmasq_classless_routes_and_jumbo_mtu";
        if std::env::var_os(INNER).is_some() {
            let lease = inner_bring_up(Some(CLIENT_IF));
            let (addresses, mtu, up) = interface_state(CLIENT_IF);
            assert!(up);
            assert_eq!(addresses, [format!("{}/24", lease.address)]);
            assert_eq!(mtu, 9001);
            // Option 121 replaces option 3 (192.0.2.99 must not appear); 198.51.100.0/24 goes
            // through a gateway outside the subnet, which needs the on-link flag.
            let mut got = routes();
            got.sort();
            assert_eq!(
                got,
                [
                    "192.0.2.0/24",
                    "198.51.100.0/24 via 203.0.113.1",
                    "203.0.113.0/24",
                    "default via 192.0.2.1",
                ]
            );
            assert_loopback_up();
            return;
        }
        if let Some(why) = lab_unavailable("dnsmasq") {
            eprintln!("SKIPPED {NAME}: {why}");
            return;
        }
        let lab = Lab::dnsmasq(
            "routes",
            Some(&[
                "option:router,192.0.2.99",
                "option:mtu,9001",
                "option:classless-static-route,\
                 0.0.0.0/0,192.0.2.1,203.0.113.0/24,0.0.0.0,198.51.100.0/24,203.0.113.1",
            ]),
        );
        // The server's side must carry 9001-byte frames too.
        let server_ns = lab.server_ns.as_deref().unwrap();
        ip(&["-n", server_ns, "link", "set", SERVER_IF, "mtu", "9001"]);
        let output = lab.run_inner(NAME, &[]);
        assert!(
            output.contains(" via 192.0.2.1 dns none mtu 9001 lease 43200s"),
            "{output}"
        );
    }

    #[test]
    fn without_a_dhcp_server_bring_up_gives_up_at_the_deadline() {
        const NAME: &str = "net::tests::without_a_dhcp_server_bring_up_gives_up_at_the_deadline";
        const TIMEOUT: Duration = Duration::from_millis(2500);
        if std::env::var_os(INNER).is_some() {
            let resolv = std::env::var_os(RESOLV_ENV).unwrap();
            let started = Instant::now();
            let e = bring_up_at(Some(CLIENT_IF), TIMEOUT, Path::new(&resolv)).unwrap_err();
            let took = started.elapsed();
            println!("\n{e} ({took:?})");
            assert!(
                took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(1),
                "{took:?}"
            );
            assert!(
                e.to_string()
                    .starts_with("DHCP on zoa0: no lease after 2.5 s: waiting for a DHCPOFFER"),
                "{e}"
            );
            assert!(!Path::new(&resolv).exists());
            // Loopback and the link are up even so.
            assert_loopback_up();
            assert!(interface_state(CLIENT_IF).2);
            return;
        }
        if let Some(why) = lab_unavailable("dnsmasq") {
            eprintln!("SKIPPED {NAME}: {why}");
            return;
        }
        let lab = Lab::dnsmasq("silent", None);
        let output = lab.run_inner(NAME, &[]);
        assert!(
            output.contains("\nDHCP on zoa0: no lease after 2.5 s"),
            "{output}"
        );
    }

    #[test]
    fn dhcp_from_libslirp_as_in_qemu_user_networking() {
        const NAME: &str = "net::tests::dhcp_from_libslirp_as_in_qemu_user_networking";
        if std::env::var_os(INNER).is_some() {
            let lease = inner_bring_up(None);
            assert_eq!(
                lease.to_string(),
                "network tap0 10.0.2.15/24 via 10.0.2.2 dns 10.0.2.3 mtu 1500 lease 86400s"
            );
            assert_eq!(routes(), ["default via 10.0.2.2", "10.0.2.0/24"]);
            assert_loopback_up();
            // Through slirp's gateway to the listener the outer test opened on the host's
            // loopback: the address and routes carry TCP, not only DHCP.
            let port: u16 = std::env::var(PORT_ENV).unwrap().parse().unwrap();
            let mut stream = std::net::TcpStream::connect_timeout(
                &(Ipv4Addr::new(10, 0, 2, 2), port).into(),
                Duration::from_secs(5),
            )
            .unwrap();
            std::io::Write::write_all(&mut stream, lease.address.to_string().as_bytes()).unwrap();
            return;
        }
        if let Some(why) = lab_unavailable("slirp4netns") {
            eprintln!("SKIPPED {NAME}: {why}");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::thread::spawn(move || {
            let (mut stream, peer) = listener.accept().unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
            (peer, text)
        });
        let lab = Lab::slirp("qemu");
        let output = lab.run_inner(NAME, &[(PORT_ENV, port.to_string())]);
        assert!(
            output.contains("\nzoa-init: network tap0 10.0.2.15/24"),
            "{output}"
        );
        let (peer, text) = accepted.join().unwrap();
        // slirp connects from the host's side; the guest's address arrives as the payload.
        assert!(peer.ip().is_loopback(), "{peer}");
        assert_eq!(text, "10.0.2.15");
    }
}

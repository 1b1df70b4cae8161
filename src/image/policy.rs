//! The shell-free policy: what must never be inside a zero-operator-access image.
//!
//! Each rule has a stable id (used in recipe exceptions, `build.json` and CI gates) and a
//! one-line reason. The checks run on an [`ImageTree`] (before anything is written) and on
//! the `.cmdline` of a UKI; `zoa check` runs them alone.

use serde::{Deserialize, Serialize};
use std::io::Read;

use super::tree::{FileSource, ImageTree, NodeKind};
use crate::recipe::PolicyException;

pub use crate::recipe::rules::{Rule, ALL_RULES};

/// Names of shells and interactive-access tools (matched on the file name).
pub const FORBIDDEN_NAMES: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "mksh",
    "pdksh",
    "csh",
    "tcsh",
    "fish",
    "rbash",
    "busybox",
    "toybox",
    "sshd",
    "ssh",
    "dropbear",
    "dropbearmulti",
    "telnetd",
    "in.telnetd",
    "telnet",
    "getty",
    "agetty",
    "mingetty",
    "login",
    "su",
    "sudo",
    "doas",
    "amazon-ssm-agent",
    "ssm-agent-worker",
    "ssm-session-worker",
    "ec2-instance-connect",
    "eic_run_authorized_keys",
    "socat",
    "nc",
    "ncat",
    "netcat",
    "nc.openbsd",
    "nc.traditional",
    "gdb",
    "gdbserver",
    "strace",
    "ltrace",
    "python",
    "python3",
    "perl",
    "lua",
    "tclsh",
    "expect",
];

/// Byte strings that identify a shell or multi-call binary whatever it is called.
/// Each is specific enough not to occur in ordinary programs.
pub const FORBIDDEN_CONTENT: &[(&str, &[u8])] = &[
    ("busybox", b"BusyBox v"),
    ("busybox", b"busybox --install"),
    ("toybox", b"toybox --long"),
    ("toybox", b"Toybox 0."),
    ("bash", b"GNU bash, version"),
    ("zsh", b"zsh: sure you want to delete"),
    ("dash", b"Syntax error: Unterminated quoted string"),
    ("mksh", b"@(#)MIRBSD KSH"),
    ("fish", b"fish: Unknown command"),
    ("OpenSSH", b"OpenSSH_"),
    ("dropbear", b"Dropbear SSH"),
    ("gdbserver", b"gdbserver"),
];

/// Kernel arguments that open a way in (matched on the argument name, before any `=`).
pub const FORBIDDEN_CMDLINE: &[&str] = &[
    "single",
    "s",
    "S",
    "1",
    "emergency",
    "rescue",
    "-s",
    "-b",
    "rd.break",
    "rd.shell",
    "rd.emergency",
    "rd.rescue",
    "systemd.debug_shell",
    "systemd.debug-shell",
    "systemd.unit",
    "systemd.confirm_spawn",
    "sysrq_always_enabled",
    "kgdboc",
    "kgdbwait",
    "kgdbcon",
    "kdb",
    "ekgdboc",
    "debug_shell",
    "break",
];

/// The one PID 1 path an image may name on its command line.
pub const IMAGE_INIT: &str = "/init";

/// Device nodes PID 1 needs before devtmpfs is mounted.
pub const ALLOWED_DEVICES: &[(&str, u32, u32)] = &[("/dev/console", 5, 1)];

/// One violation of a rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The rule's id (owned: build.json is read back).
    pub rule: String,
    /// Image path, or the command-line argument.
    pub path: String,
    pub detail: String,
    /// Set when a recipe exception allows this finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excepted_because: Option<String>,
}

/// The policy report recorded in `build.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyReport {
    /// Every rule that was checked, with its reason.
    pub rules: Vec<RuleInfo>,
    /// Findings allowed by a recipe exception (an auditor reads these).
    pub exceptions: Vec<Finding>,
    /// Findings that fail the build.
    pub violations: Vec<Finding>,
    /// Recipe exceptions that matched nothing (kept visible: they may be stale).
    pub unused_exceptions: Vec<PolicyException>,
}

/// A rule and its reason, for reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInfo {
    pub id: String,
    pub reason: String,
}

impl PolicyReport {
    /// True when nothing violates the policy.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// One-line summary of the violations, for an error message.
    pub fn violation_summary(&self) -> String {
        let parts: Vec<String> = self
            .violations
            .iter()
            .map(|f| format!("{} {}: {}", f.rule, f.path, f.detail))
            .collect();
        parts.join("; ")
    }
}

/// Runs every rule over an image tree and a kernel command line.
pub fn check(
    tree: &ImageTree,
    cmdline: &str,
    exceptions: &[PolicyException],
) -> std::io::Result<PolicyReport> {
    let mut findings = check_tree(tree)?;
    findings.extend(check_cmdline(cmdline));
    Ok(apply_exceptions(findings, exceptions))
}

fn apply_exceptions(findings: Vec<Finding>, exceptions: &[PolicyException]) -> PolicyReport {
    let mut report = PolicyReport {
        rules: ALL_RULES
            .iter()
            .map(|r| RuleInfo {
                id: r.id().to_owned(),
                reason: r.reason().to_owned(),
            })
            .collect(),
        ..Default::default()
    };
    let mut used = vec![false; exceptions.len()];
    for mut finding in findings {
        let matched = exceptions
            .iter()
            .position(|e| e.rule == finding.rule && e.path == finding.path);
        match matched {
            Some(i) => {
                used[i] = true;
                finding.excepted_because = Some(exceptions[i].reason.clone());
                report.exceptions.push(finding);
            }
            None => report.violations.push(finding),
        }
    }
    report.unused_exceptions = exceptions
        .iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(e, _)| e.clone())
        .collect();
    report.violations.sort();
    report.exceptions.sort();
    report
}

fn finding(rule: Rule, path: &str, detail: impl Into<String>) -> Finding {
    Finding {
        rule: rule.id().to_owned(),
        path: path.to_owned(),
        detail: detail.into(),
        excepted_because: None,
    }
}

/// File-tree rules: names, content, modes, device nodes.
pub fn check_tree(tree: &ImageTree) -> std::io::Result<Vec<Finding>> {
    let mut out = Vec::new();
    for (path, node) in tree.iter() {
        let name = path.rsplit('/').next().unwrap_or(path);
        if FORBIDDEN_NAMES.contains(&name) {
            out.push(finding(
                Rule::ShellByName,
                path,
                format!("{name:?} is a shell or access tool"),
            ));
        }
        if node.mode & 0o6000 != 0 && !matches!(node.kind, NodeKind::Symlink { .. }) {
            out.push(finding(
                Rule::SetId,
                path,
                format!("mode {:04o} has setuid/setgid", node.mode),
            ));
        }
        let world_writable = node.mode & 0o002 != 0;
        if world_writable && !matches!(node.kind, NodeKind::Symlink { .. }) {
            out.push(finding(
                Rule::WorldWritable,
                path,
                format!("mode {:04o} is world-writable", node.mode),
            ));
        }
        match &node.kind {
            NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } => {
                let allowed = ALLOWED_DEVICES
                    .iter()
                    .any(|(p, ma, mi)| p == path && ma == major && mi == minor)
                    && matches!(node.kind, NodeKind::CharDev { .. });
                if !allowed {
                    out.push(finding(
                        Rule::DeviceNode,
                        path,
                        format!("device {major}:{minor}"),
                    ));
                }
            }
            NodeKind::File { source, .. } => {
                if let Some(f) = check_content(path, source)? {
                    out.push(f);
                }
            }
            NodeKind::Dir | NodeKind::Symlink { .. } => {}
        }
    }
    out.extend(check_server_log(tree)?);
    Ok(out)
}

/// zoa-init's configuration asking for the server's output on the console. Read leniently
/// (a configuration zoa-init would refuse is refused elsewhere, by its own validation).
fn check_server_log(tree: &ImageTree) -> std::io::Result<Option<Finding>> {
    let path = zoa_init::config::DEFAULT_PATH;
    let Some(NodeKind::File { source, .. }) = tree.get(path).map(|n| &n.kind) else {
        return Ok(None);
    };
    let mut text = Vec::new();
    source
        .open()?
        .take(zoa_init::config::MAX_CONFIG_BYTES)
        .read_to_end(&mut text)?;
    let config: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    let to_console = config["server"]["log"] == "console";
    Ok(to_console.then(|| {
        finding(
            Rule::ServerLogToConsole,
            path,
            "server.log is \"console\": the inference server's output goes to the console",
        )
    }))
}

/// Content rules for one file: `#!` scripts, and ELF files carrying a shell's signature.
/// Only ELF files are scanned in full: a multi-call binary must be an ELF to run, and
/// skipping data files (models, large payloads) keeps the check cheap.
fn check_content(path: &str, source: &FileSource) -> std::io::Result<Option<Finding>> {
    let mut reader = source.open()?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut reader, &mut head)?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        return Ok(Some(finding(
            Rule::Script,
            path,
            "starts with #! (a script)",
        )));
    }
    if head != b"\x7fELF" {
        return Ok(None);
    }
    let mut scanner = MarkerScanner::new(FORBIDDEN_CONTENT);
    scanner.feed(head);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if scanner.found().is_some() {
            break;
        }
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        scanner.feed(&buf[..n]);
    }
    Ok(scanner.found().map(|what| {
        finding(
            Rule::ShellByContent,
            path,
            format!("contains the signature of {what}"),
        )
    }))
}

fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Finds any of several byte markers in a stream fed chunk by chunk, including markers
/// that straddle two chunks (the tail of the previous chunk is kept).
struct MarkerScanner {
    markers: &'static [(&'static str, &'static [u8])],
    tail: Vec<u8>,
    keep: usize,
    found: Option<&'static str>,
}

impl MarkerScanner {
    fn new(markers: &'static [(&'static str, &'static [u8])]) -> Self {
        let keep = markers
            .iter()
            .map(|(_, m)| m.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        MarkerScanner {
            markers,
            tail: Vec::new(),
            keep,
            found: None,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.found.is_some() {
            return;
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        self.found = self
            .markers
            .iter()
            .find(|(_, m)| memchr::memmem::find(&window, m).is_some())
            .map(|(what, _)| *what);
        let start = window.len().saturating_sub(self.keep);
        self.tail = window.split_off(start);
    }

    fn found(&self) -> Option<&'static str> {
        self.found
    }
}

/// Command-line rules.
pub fn check_cmdline(cmdline: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for arg in split_cmdline(cmdline) {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (arg.as_str(), None),
        };
        // The kernel treats '-' and '_' alike in parameter names.
        let norm = key.replace('-', "_");
        if norm == "init" || norm == "rdinit" {
            if value != Some(IMAGE_INIT) {
                out.push(finding(
                    Rule::CmdlineInit,
                    &arg,
                    format!("{key}= must be {IMAGE_INIT} (the image's measured PID 1) or absent"),
                ));
            }
            continue;
        }
        let hit = FORBIDDEN_CMDLINE
            .iter()
            .any(|f| f.replace('-', "_") == norm);
        if hit {
            out.push(finding(
                Rule::CmdlineEscape,
                &arg,
                format!("kernel argument {key:?} opens a way in"),
            ));
        }
    }
    out
}

/// Splits a kernel command line like the kernel does: whitespace, with double quotes
/// grouping (the quotes themselves are dropped).
pub fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    for c in cmdline.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::{ImageTree, Node};

    fn tree_with(path: &str, node: Node) -> ImageTree {
        let mut t = ImageTree::new();
        t.insert(path, node).unwrap();
        t
    }

    fn file(bytes: &[u8], mode: u32) -> Node {
        Node::bytes(bytes.to_vec(), mode, "test")
    }

    fn rules_of(t: &ImageTree) -> Vec<String> {
        check_tree(t).unwrap().into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn the_server_s_log_on_the_console_is_a_finding() {
        let config = |log: &str| {
            let json = format!(r#"{{"hostname":"h","server":{{"argv":["/s"]{log}}}}}"#);
            tree_with("/etc/zoa/init.json", file(json.as_bytes(), 0o644))
        };
        assert_eq!(rules_of(&config(r#","log":"console""#)), vec!["ZOA-P009"]);
        assert!(rules_of(&config(r#","log":"discard""#)).is_empty());
        assert!(rules_of(&config("")).is_empty());
        // Elsewhere the same bytes are just a file.
        let elsewhere = r#"{"server":{"log":"console"}}"#;
        assert!(rules_of(&tree_with(
            "/etc/other.json",
            file(elsewhere.as_bytes(), 0o644)
        ))
        .is_empty());
    }

    #[test]
    fn shell_by_name() {
        let t = tree_with("/bin/sh", file(b"\x7fELF....", 0o755));
        assert_eq!(rules_of(&t), vec!["ZOA-P001"]);
    }

    #[test]
    fn busybox_renamed_is_found_by_content() {
        let mut body = b"\x7fELF".to_vec();
        body.extend(vec![0u8; (1 << 20) - 3]); // put the marker across a chunk boundary
        body.extend_from_slice(b"BusyBox v1.36.1 (Debian)");
        let t = tree_with("/usr/bin/server", file(&body, 0o755));
        let f = check_tree(&t).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "ZOA-P002");
        assert!(f[0].detail.contains("busybox"));
    }

    #[test]
    fn scripts_setid_world_writable_devices() {
        assert_eq!(
            rules_of(&tree_with("/usr/bin/run", file(b"#!/bin/sh\n", 0o755))),
            vec!["ZOA-P003"]
        );
        assert_eq!(
            rules_of(&tree_with("/usr/bin/x", file(b"data", 0o4755))),
            vec!["ZOA-P004"]
        );
        assert_eq!(
            rules_of(&tree_with("/etc/x", file(b"data", 0o666))),
            vec!["ZOA-P005"]
        );
        let dev = Node {
            kind: NodeKind::CharDev { major: 1, minor: 3 },
            mode: 0o600,
            origin: "test".into(),
        };
        assert_eq!(rules_of(&tree_with("/dev/null", dev)), vec!["ZOA-P006"]);
        let console = Node {
            kind: NodeKind::CharDev { major: 5, minor: 1 },
            mode: 0o600,
            origin: "test".into(),
        };
        assert!(rules_of(&tree_with("/dev/console", console)).is_empty());
        assert!(rules_of(&tree_with("/etc/ok", file(b"plain data", 0o644))).is_empty());
    }

    #[test]
    fn cmdline_escapes() {
        let f = check_cmdline("console=ttyS0 init=/bin/sh quiet");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "ZOA-P008");
        assert_eq!(f[0].path, "init=/bin/sh");
        assert!(check_cmdline("console=ttyS0 rdinit=/init panic=-1").is_empty());
        let rules: Vec<_> = check_cmdline(
            "single rd.break systemd.debug-shell=1 kgdboc=ttyS0 sysrq_always_enabled",
        )
        .into_iter()
        .map(|f| f.rule)
        .collect();
        assert_eq!(rules, vec!["ZOA-P007"; 5]);
        assert_eq!(split_cmdline(r#"a="b c" d"#), vec!["a=b c", "d"]);
    }

    #[test]
    fn exceptions_move_findings_and_unused_ones_are_listed() {
        let findings = vec![finding(Rule::SetId, "/usr/bin/x", "setuid")];
        let exc = vec![
            PolicyException {
                rule: "ZOA-P004".into(),
                path: "/usr/bin/x".into(),
                reason: "needed for the demo".into(),
            },
            PolicyException {
                rule: "ZOA-P001".into(),
                path: "/bin/sh".into(),
                reason: "never matched here".into(),
            },
        ];
        let r = apply_exceptions(findings, &exc);
        assert!(r.passed());
        assert_eq!(r.exceptions.len(), 1);
        assert_eq!(r.unused_exceptions.len(), 1);
        assert_eq!(r.rules.len(), ALL_RULES.len());
    }

    #[test]
    fn rule_ids_round_trip() {
        for r in ALL_RULES {
            assert_eq!(Rule::from_id(r.id()), Some(r));
            assert!(!r.reason().is_empty());
        }
        assert!(Rule::from_id("nope").is_none());
    }
}

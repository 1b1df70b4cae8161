//! The shell-free policy's rule ids: the vocabulary a recipe's `[policy]` exceptions,
//! `build.json` and CI gates share. The checks themselves are in `image::policy`.

use serde::Serialize;

/// A policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Rule {
    /// A shell or interactive-access tool, found by file name.
    ShellByName,
    /// A shell or multi-call binary (busybox, toybox, ...) found by content, whatever its name.
    ShellByContent,
    /// A `#!` script: it needs an interpreter, and interpreters are what this policy removes.
    Script,
    /// A setuid or setgid file.
    SetId,
    /// A world-writable file or directory.
    WorldWritable,
    /// A device node other than the ones PID 1 needs.
    DeviceNode,
    /// A kernel command-line escape hatch (single-user mode, debug shells, kgdb, ...).
    CmdlineEscape,
    /// `init=`/`rdinit=` pointing anywhere but the image's own PID 1.
    CmdlineInit,
    /// zoa-init hands the inference server's output to the console (`server.log`).
    ServerLogToConsole,
}

pub const ALL_RULES: [Rule; 9] = [
    Rule::ShellByName,
    Rule::ShellByContent,
    Rule::Script,
    Rule::SetId,
    Rule::WorldWritable,
    Rule::DeviceNode,
    Rule::CmdlineEscape,
    Rule::CmdlineInit,
    Rule::ServerLogToConsole,
];

impl Rule {
    /// Stable identifier.
    pub fn id(self) -> &'static str {
        match self {
            Rule::ShellByName => "ZOA-P001",
            Rule::ShellByContent => "ZOA-P002",
            Rule::Script => "ZOA-P003",
            Rule::SetId => "ZOA-P004",
            Rule::WorldWritable => "ZOA-P005",
            Rule::DeviceNode => "ZOA-P006",
            Rule::CmdlineEscape => "ZOA-P007",
            Rule::CmdlineInit => "ZOA-P008",
            Rule::ServerLogToConsole => "ZOA-P009",
        }
    }

    /// Why the rule exists, in one line.
    pub fn reason(self) -> &'static str {
        match self {
            Rule::ShellByName => "a shell or remote-access tool gives an operator a way in",
            Rule::ShellByContent => "a renamed shell or multi-call binary is still a shell",
            Rule::Script => "a script needs an interpreter, and an interpreter is a shell",
            Rule::SetId => "setuid/setgid files let an unprivileged process become root",
            Rule::WorldWritable => "world-writable files let any process change what runs",
            Rule::DeviceNode => "device nodes beyond /dev/console bypass the kernel's devtmpfs",
            Rule::CmdlineEscape => "this kernel argument opens a shell, debugger or rescue mode",
            Rule::CmdlineInit => "init=/rdinit= would replace the image's measured PID 1",
            Rule::ServerLogToConsole => {
                "operators read the console, and a server's log can hold what clients sent"
            }
        }
    }

    /// Looks a rule up by id.
    pub fn from_id(id: &str) -> Option<Rule> {
        ALL_RULES.into_iter().find(|r| r.id() == id)
    }

    /// All rule ids, for error messages.
    pub fn all_ids() -> Vec<&'static str> {
        ALL_RULES.iter().map(|r| r.id()).collect()
    }
}

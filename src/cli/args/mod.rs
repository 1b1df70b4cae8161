//! The command-line interface definition (clap derive). Kept in one place so the parser,
//! the man page and the completions come from the same definition.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "aws")]
pub use aws::*;

/// zoa — zero-operator-access boot images for AI inference on AWS.
///
/// Builds an immutable, shell-free Unified Kernel Image from a pinned recipe,
/// reproducibly; predicts its TPM PCRs; signs, verifies and diffs releases; deploys them to
/// EC2 with KMS keys that only instances attesting those PCRs can use.
#[derive(Debug, Parser)]
#[command(name = "zoa", version = version(), propagate_version = true, max_term_width = 100)]
#[command(after_long_help = super::exit::help_text())]
pub struct Cli {
    /// Print only errors (no progress bars, no summaries).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of the AWS stage: a zoa built without the `aws` feature has none of them.
pub const AWS_COMMANDS: [&str; 6] = ["deploy", "rollout", "destroy", "policy", "seal", "audit"];

/// `zoa --version`: says when the AWS stage was left out, so a build host's zoa is told
/// apart from a deploying one.
const fn version() -> &'static str {
    if cfg!(feature = "aws") {
        env!("CARGO_PKG_VERSION")
    } else {
        concat!(env!("CARGO_PKG_VERSION"), " (without the AWS stage)")
    }
}

/// Parses the command line, exiting with clap's message (status 2) on a usage error. In a
/// zoa built without the `aws` feature, an AWS-stage command gets a message saying so
/// rather than clap's "unrecognized subcommand".
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|err| {
        if let Some(name) = aws_command_left_out(&err) {
            eprintln!(
                "error: `zoa {name}` is part of the AWS stage, which this zoa was built without \
                 (`cargo build --release` with the default features builds it)"
            );
            std::process::exit(2);
        }
        err.exit()
    })
}

/// The AWS-stage command a usage error is about, when clap did not know it.
fn aws_command_left_out(err: &clap::Error) -> Option<&'static str> {
    if err.kind() != clap::error::ErrorKind::InvalidSubcommand {
        return None;
    }
    let clap::error::ContextValue::String(given) =
        err.get(clap::error::ContextKind::InvalidSubcommand)?
    else {
        return None;
    };
    AWS_COMMANDS.into_iter().find(|c| c == given)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a UKI and build.json from a recipe (reproducible, atomic).
    ///
    /// Writes DIR/uki.efi and DIR/build.json (inputs and outputs with sha256, the file
    /// list and the policy report). The same recipe and lock give a byte-identical
    /// uki.efi whatever the time, directory, user, umask, TZ or locale.
    Build(BuildArgs),
    /// Build zoa-init (the image's PID 1) reproducibly from a zoa source checkout.
    ///
    /// The bytes depend on the commit alone: the Rust toolchain rust-toolchain.toml pins
    /// (linking with its own rust-lld), the C compiler init/c-toolchain.toml pins (zig, by
    /// digest), host paths remapped, and cargo run in a cleared environment (RUSTFLAGS,
    /// CC, CFLAGS, CARGO_*, SOURCE_DATE_EPOCH, locale and TZ are ignored and named on
    /// stderr). Writes DIR/zoa-init and DIR/zoa-init.provenance.json (toolchains, flags,
    /// Cargo.lock and source digests, crates), which `zoa build` copies into build.json.
    BuildInit(BuildInitArgs),
    /// Resolve every pinned input and write RECIPE.lock.
    Lock(LockArgs),
    /// Run the shell-free policy alone on a recipe or a built UKI (exit 3 on a violation).
    Check(CheckArgs),
    /// Predict the TPM PCRs (4, 7, 11, 12; SHA-256 and SHA-384) a UKI produces at boot.
    ///
    /// Prints JSON: `pcrs` and the ordered `events` that produce them. With --eventlog,
    /// compares the prediction with a real TCG2 event log and names the first event that
    /// differs (exit 4 on a mismatch).
    Measure(MeasureArgs),
    /// Print and replay a TCG2 binary event log (e.g.
    /// /sys/kernel/security/tpm0/binary_bios_measurements): every event, decoded, and the
    /// PCR values it replays to in each bank.
    Eventlog(EventlogArgs),
    /// Create a minisign key pair for signing releases (PREFIX.key, PREFIX.pub).
    ///
    /// The secret key is password-protected unless --no-password (for CI keys). The
    /// password comes from ZOA_KEY_PASSWORD, --password-file, or a prompt; it is never
    /// printed or logged.
    ///
    /// With --secure-boot: UEFI Secure Boot keys instead (PK, KEK and db: RSA-2048 keys
    /// with self-signed X.509 certificates), for enrolling and for `zoa sign-uki`.
    Keygen(KeygenArgs),
    /// Sign a UKI (or any EFI image) for UEFI Secure Boot (Authenticode, PKCS#7).
    ///
    /// Reproducible: the same key and image always give the same signed bytes (no signing
    /// time). Refuses an already-signed image and a key that does not match the
    /// certificate. The certificate (or a CA above it, with --chain) must be in db.
    SignUki(SignUkiArgs),
    /// Sign a build directory: measure it, write release.json and release.json.minisig.
    Sign(SignArgs),
    /// Verify a signed release: signature and trusted comment, every artifact digest, the
    /// UKI re-measured, and with --rebuild a byte-for-byte rebuild.
    ///
    /// Exit status: 10 bad signature, 11 an artifact differs, 12 measurements differ,
    /// 13 not reproducible.
    Verify(VerifyArgs),
    /// Explain what changed between two releases and why their PCRs differ.
    ///
    /// A and B are each a release or build directory (uki.efi, build.json, and
    /// measurements.json if present), a UKI, or a measurements JSON file (`zoa measure`
    /// output or release.json; only PCR and event differences can be shown then). Names
    /// only what changed: sections (e.g. .cmdline with old and new values), initramfs files
    /// with the packages behind them, kernel, stub, inputs, and which PCR events moved.
    /// --json gives every PCR and each cause with a stable `kind` and `path` for CI gates.
    Diff(DiffArgs),
    /// The append-only log of reference releases.
    #[command(subcommand)]
    Log(LogCommand),
    #[cfg(feature = "aws")]
    /// Deploy a signed release to EC2 with zero operator access.
    ///
    /// Verifies DIR first (nothing is called on AWS for an unsigned or tampered release)
    /// and from then on uses only the bytes it verified: a disk image of the verified UKI
    /// (never written into DIR) → EBS snapshot (EBS direct APIs) → AMI (UEFI, NitroTPM 2.0,
    /// IMDSv2) → IAM role and instance profile → KMS key whose policy releases data keys
    /// only to instances attesting the release's PCR4 and PCR12 → security group (the
    /// serving port to --allow-cidr only; no ingress at all without it; never SSH) →
    /// instances without key pair, SSH or SSM (or, with --count N / --fleet, a launch
    /// template and an Auto Scaling group). --secret NAME=FILE puts `zoa seal` envelopes in
    /// the instances' user data; --model FILE adds the model the image pins as a second
    /// EBS volume. State goes to DIR/deploy/deploy.json: a rerun resumes and never
    /// duplicates. --plan prints every call and changes nothing. AWS
    /// configuration comes from the standard chain (AWS_REGION, AWS_PROFILE,
    /// AWS_ENDPOINT_URL, ...).
    Deploy(DeployArgs),
    #[cfg(feature = "aws")]
    /// Move a fleet from a deployed release to a new one with no unsealing gap.
    ///
    /// Snapshot and AMI of NEW; the key policy admits both releases; a new launch template
    /// version; the Auto Scaling group's instance refresh replaces the instances; the key
    /// policy then admits only NEW; the old AMI and snapshot go (unless --keep-old) and the
    /// deploy record moves to NEW/deploy. Resumable; --plan changes nothing. A key made
    /// with --lock-policy cannot be edited: NEW then gets a new (locked) key, the recorded
    /// secrets are re-sealed under it from --reseal NAME=FILE, and the old key is scheduled
    /// for deletion (--key-deletion-days) once the instances are replaced.
    Rollout(RolloutArgs),
    #[cfg(feature = "aws")]
    /// Remove what `zoa deploy DIR` created (KMS keys: scheduled for deletion).
    ///
    /// Instances, Auto Scaling group, launch template, security group, instance profile,
    /// role, AMI and snapshot are deleted; the KMS key cannot be deleted at once: it is
    /// disabled for use and deleted by KMS after --key-deletion-days (7-30, default 30),
    /// until when `aws kms cancel-key-deletion` can still bring it back.
    Destroy(DestroyArgs),
    #[cfg(feature = "aws")]
    /// Print the KMS key policy and IAM policies a deploy of DIR would create, for review
    /// and for infrastructure-as-code users; with --scp, the region SCP of its signed
    /// regions; with --deployer, the IAM policy the deploying CI role needs.
    Policy(PolicyArgs),
    #[cfg(feature = "aws")]
    /// Seal a secret (e.g. a model key) for a deployment: only an instance that booted the
    /// release can open it.
    ///
    /// The secret (from --in or stdin, at most 8 KiB) is encrypted with AES-256-GCM under
    /// a fresh data key; the data key is encrypted with the deployment's KMS key
    /// (kms:Encrypt, the only right sealers have) with an encryption context naming the
    /// deployment and the secret. The envelope (JSON) goes into the instances' user data
    /// with `zoa deploy --secret NAME=FILE`; zoa-init asks KMS for the data key with its
    /// attestation document at boot.
    Seal(SealArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per command into --out.
    Manpage(ManpageArgs),
    /// Boot a UKI locally under QEMU + OVMF + swtpm and print the guest's PCRs.
    ///
    /// The UKI goes on a deterministic GPT/FAT32 boot disk; the TPM has the SHA-256 and
    /// SHA-384 banks. The serial console is shown live; the guest's PID 1 prints its PCRs
    /// and powers off when the server exits (or stop it with Ctrl-C or --timeout).
    /// QEMU uses TCG unless ZOA_ACCEL=kvm; ZOA_OVMF_CODE / ZOA_OVMF_VARS override the
    /// firmware files.
    Boot(BootArgs),
    /// Verify a server (https://HOST[:PORT]) or a saved attestation document (NitroTPM or
    /// Nitro Enclave) before trusting the machine that sent it.
    ///
    /// With a URL: opens TLS 1.3 to the image's front (its certificate is self-signed:
    /// trust comes from the document), fetches a document with a random nonce over that
    /// connection, and checks it as below with freshness (--max-age, default 5m), the
    /// nonce, and user_data binding the key this very connection presented. Checks, in order: the COSE_Sign1 ES384 signature over the exact payload, the chain
    /// from the leaf through the document's cabundle to the AWS Nitro root embedded in zoa
    /// (pinned by its SHA-256 fingerprint; --root replaces it, e.g. with the root of
    /// `zoa boot --nitrotpm`), valid at the document's own time (or --at); then the PCRs
    /// against a signed release (--release DIR --pubkey PUB: the PCRs its KMS policy binds),
    /// any release of a signed log (--log LOG --pubkey PUB), or --pcr values; then, when
    /// asked, freshness (--max-age), the nonce (--nonce) and the TLS key binding in
    /// user_data (--spki-sha384). Exit 20: not a genuine document; 21: genuine, not the
    /// expected image; 22: genuine, not fresh or not bound to this exchange.
    Attest(AttestArgs),
    /// A local verifying proxy: unchanged clients (curl, the OpenAI SDKs) send plain HTTP
    /// to --listen on loopback, and it reaches the server only over attested TLS.
    ///
    /// Attests the server (as `zoa attest URL` does, with the same expectations) before
    /// serving anything, pins the attested TLS key, checks it on every new upstream
    /// connection, re-attests over a new connection once the last attestation is older
    /// than --max-age, and refuses (502, connection closed) when the key or the PCRs
    /// change. Logs each attestation on stderr. Exits with `zoa attest`'s status when the
    /// first attestation fails.
    Proxy(ProxyArgs),
    #[cfg(feature = "aws")]
    /// Audit CloudTrail for every use of a deployment's key and every access to its image
    /// and instances.
    ///
    /// Reads delivered log files (PATH: a file, plain or .json.gz, or a directory of them
    /// as a trail writes them to S3) or, with --lookup, CloudTrail's LookupEvents (the last
    /// 90 days of management events, in the deployments' regions and each --lookup-region).
    /// Reports every attested key use with the signed release of --log whose PCRs it
    /// carries, and flags: unknown-image (an attested use no signed release matches),
    /// unattested-key-use (Decrypt, GenerateDataKey(Pair), DeriveSharedSecret or ReEncrypt
    /// without an attestation document, allowed or refused), trust-change (key policy,
    /// grants, aliases, replication, deletion, disabling; and with --lookup, a live key
    /// policy other than the one zoa wrote), operator-access (Session Manager, EC2
    /// Instance Connect, serial console keys, console output or screenshots, instance
    /// attribute changes, launches with a key pair), copy-out (image or snapshot sharing,
    /// copies, images or snapshots of the instances) and region (an event on the
    /// deployment's resources outside the regions its release is signed for). Critical
    /// findings first. With --deploy, only those deployments' resources are audited;
    /// without, every key, image and instance in the records. Exit 0: nothing flagged;
    /// 30: at least one finding.
    Audit(AuditArgs),
}

/// Where inputs come from.
#[derive(Debug, Args, Clone)]
pub struct InputArgs {
    /// A directory of pre-fetched input files, searched by name and digest (repeatable;
    /// also ZOA_INPUTS, colon-separated).
    #[arg(long = "inputs", value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    /// Content-addressed download cache [default: $ZOA_CACHE or ~/.cache/zoa].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Never use the network: inputs must be in the cache, an inputs directory or a local path.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe (TOML), e.g. image-recipes/llama-server.toml.
    pub recipe: PathBuf,
    /// Output directory [default: dist/<name>-<version>].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Refuse to build if RECIPE.lock is missing or differs from the recipe's pins.
    #[arg(long)]
    pub locked: bool,
    /// The PID 1 binary (static zoa-init) when the recipe does not pin one
    /// [default: $ZOA_INIT, or zoa-init next to zoa].
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Sign uki.efi for UEFI Secure Boot with this db key and its certificate (e.g.
    /// PREFIX-db.key,PREFIX-db.crt from `zoa keygen --secure-boot`). Signing is
    /// reproducible; build.json records the unsigned UKI's digest and the signer, so a
    /// rebuild without the key can still be compared.
    #[arg(long, value_name = "KEY,CERT", value_parser = parse_sign_with)]
    pub sign_with: Option<(PathBuf, PathBuf)>,
    /// An intermediate certificate to embed with --sign-with (repeatable).
    #[arg(long, value_name = "FILE", requires = "sign_with")]
    pub sign_chain: Vec<PathBuf>,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildInitArgs {
    /// The zoa source checkout [default: the current directory].
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub source: PathBuf,
    /// Where zoa-init and zoa-init.provenance.json go [default: SOURCE/target/zoa-init].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The zig executable of the pinned version [default: $ZOA_ZIG, else
    /// ~/.cache/zoa/toolchains/zig-VERSION/ziglang/zig, where .ci/deps unpacks it].
    #[arg(long, value_name = "FILE")]
    pub zig: Option<PathBuf>,
    /// Print the provenance (JSON) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `KEY,CERT` for --sign-with.
fn parse_sign_with(s: &str) -> Result<(PathBuf, PathBuf), String> {
    match s.split_once(',') {
        Some((key, cert)) if !key.is_empty() && !cert.is_empty() => {
            Ok((PathBuf::from(key), PathBuf::from(cert)))
        }
        _ => Err("expected KEY,CERT (two files separated by a comma)".into()),
    }
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Print the lock as JSON on stdout as well.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A recipe (TOML) or a UKI (PE file); a UKI's .initrd and .cmdline are checked.
    pub target: PathBuf,
    /// The PID 1 binary for recipe checks (see `zoa build --init`).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Print the policy report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Output formats of `zoa measure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MeasureFormat {
    /// zoa's JSON: both banks, every event.
    Zoa,
    /// Byte-identical to AWS nitro-tpm-pcr-compute (SHA-384 PCR4, PCR7, PCR12).
    Nitro,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// The UKI (or a build directory holding uki.efi).
    pub uki: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "zoa")]
    pub format: MeasureFormat,
    /// Platform Key (EFI signature list); implies Secure Boot on unless --secure-boot off.
    #[arg(long, value_name = "FILE")]
    pub pk: Option<PathBuf>,
    /// Key Exchange Key database (EFI signature list).
    #[arg(long, value_name = "FILE")]
    pub kek: Option<PathBuf>,
    /// Allowed signature database (EFI signature list).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Forbidden signature database (EFI signature list).
    #[arg(long, value_name = "FILE")]
    pub dbx: Option<PathBuf>,
    /// An AMI's UefiData variable store (the binary, or its base64 as RegisterImage takes
    /// it; AWS's `uefivars -o aws` writes one): PK, KEK, db and dbx are read from it.
    /// Secure Boot is on when it holds a PK. Not with --pk/--kek/--db/--dbx.
    #[arg(long, value_name = "BLOB", conflicts_with_all = ["pk", "kek", "db", "dbx"])]
    pub uefi_data: Option<PathBuf>,
    /// Secure Boot state [default: on when a PK is given].
    #[arg(long, value_enum, value_name = "on|off")]
    pub secure_boot: Option<OnOff>,
    /// A TCG2 binary event log (/sys/kernel/security/tpm0/binary_bios_measurements) to
    /// compare the prediction with.
    #[arg(long, value_name = "FILE")]
    pub eventlog: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventlogArgs {
    /// The binary event log.
    pub file: PathBuf,
    /// Print JSON (spec header, events with digests, replayed PCRs) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Write zoa.1 and zoa-<command>.1 into this directory instead of printing zoa.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// The UKI, or a build directory holding uki.efi.
    pub target: PathBuf,
    /// Forward TCP 127.0.0.1:HOSTPORT to the guest's GUESTPORT (repeatable), e.g. 8080:8080.
    /// Without any, the guest has no network device.
    #[arg(long = "forward", value_name = "HOSTPORT:GUESTPORT", value_parser = zoa::boot::parse_forward)]
    pub forwards: Vec<(u16, u16)>,
    /// Attach a raw disk image read-only (repeatable; in order: /dev/vdb, /dev/vdc, ...).
    #[arg(long = "disk", value_name = "FILE")]
    pub disks: Vec<PathBuf>,
    /// Stop the guest and fail when it has not powered off after SECS seconds
    /// [default: wait while it runs].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = zoa::boot::DEFAULT_MEMORY_MIB)]
    pub memory: u32,
    /// Guest vCPUs.
    #[arg(long, value_name = "N", default_value_t = zoa::boot::DEFAULT_CPUS)]
    pub cpus: u32,
    /// Keep the boot disk, firmware variables, TPM state and logs in DIR
    /// [default: a temporary directory, removed afterwards].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Rehearse an attested boot: an emulated NitroTPM answers the image's attestation
    /// requests (the NSM vendor command) with documents whose PCRs are the booted ones,
    /// signed by a test CA made for this boot. Nothing it signs chains to the AWS Nitro
    /// root, so KMS never honours it.
    #[arg(long)]
    pub nitrotpm: bool,
    /// Write the test CA's root certificate (PEM) to FILE before the guest starts, for
    /// verifiers of its documents.
    #[arg(long, value_name = "FILE", requires = "nitrotpm")]
    pub attestation_root: Option<PathBuf>,
    /// Boot with Secure Boot on: OVMF's Secure Boot firmware with a copy of FILE, a raw
    /// OVMF variable store (4 MiB layout) that enrolls PK, KEK and db, e.g. made by
    /// `virt-fw-vars --set-pk ... --add-kek ... --add-db ... --sb`. FILE itself is never
    /// written.
    #[arg(long, value_name = "FILE")]
    pub secure_boot_vars: Option<PathBuf>,
    /// With --secure-boot-vars: the same keys as an AMI UefiData blob, to predict PCR7
    /// [default: DIR/uefi-data.bin of a Secure Boot release; without either, PCR7 is not
    /// predicted].
    #[arg(long, value_name = "FILE", requires = "secure_boot_vars")]
    pub uefi_data: Option<PathBuf>,
    /// Print the outcome (PCRs, console, ...) as JSON on stdout instead of the live console.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AttestArgs {
    /// The server: https://HOST[:PORT] of a zoa image's TLS front. A fresh document is
    /// fetched with a random nonce over a TLS connection, and must bind the key that very
    /// connection presented.
    #[arg(value_name = "URL", required_unless_present = "document")]
    pub url: Option<String>,
    /// A saved attestation document instead (COSE_Sign1 bytes, as the NSM returns it).
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    pub document: Option<PathBuf>,
    /// With URL: give up on the server after this long (e.g. 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30s", conflicts_with = "document")]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub expect: ExpectArgs,
    /// Check the chain at TIME (RFC 3339, or Unix seconds) instead of the document's own.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<std::time::SystemTime>,
    /// Refuse a document older than DUR (e.g. 300s, 5m, 1h) [default with URL: 5m].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub max_age: Option<std::time::Duration>,
    /// With --document: expect this nonce (1-64 bytes as hex).
    #[arg(long, value_name = "HEX", value_parser = parse_nonce, conflicts_with = "url")]
    pub nonce: Option<Nonce>,
    /// With --document: expect user_data to bind the TLS key with this SHA-384 of its
    /// SubjectPublicKeyInfo.
    #[arg(long, value_name = "HEX", value_parser = parse_sha384, conflicts_with = "url")]
    pub spki_sha384: Option<[u8; 48]>,
    /// Print the verdict and every check as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `zoa attest` and `zoa proxy` expect of a server.
#[derive(Debug, Args)]
pub struct ExpectArgs {
    /// Expect the PCRs of this signed release directory (repeatable; any may match).
    #[arg(long, value_name = "DIR", requires = "pubkey")]
    pub release: Vec<PathBuf>,
    /// Expect the PCRs of any release in this signed release log.
    #[arg(long, value_name = "LOG", requires = "pubkey")]
    pub log: Option<PathBuf>,
    /// The public key(s) the releases or the log are signed with (repeatable).
    #[arg(long, value_name = "PUB")]
    pub pubkey: Vec<PathBuf>,
    /// Expect this SHA-384 PCR value (repeatable), e.g. 4=9f3c...
    #[arg(long = "pcr", value_name = "N=HEX", value_parser = parse_pcr)]
    pub pcrs: Vec<(u32, String)>,
    /// Trust this root certificate (PEM) instead of the AWS Nitro root (warns every time).
    #[arg(long, value_name = "PEMFILE")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The attested server: https://HOST[:PORT] of a zoa image's TLS front.
    #[arg(value_name = "URL")]
    pub url: String,
    /// Where clients connect, plain HTTP, on a loopback address only (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub expect: ExpectArgs,
    /// Re-attest on the next new connection once the last attestation is this old.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5m")]
    pub max_age: std::time::Duration,
    /// Give up connecting to, or attesting, the server after this long.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30s")]
    pub timeout: std::time::Duration,
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|_| format!("{s:?} is not hex"))
}

fn parse_pcr(s: &str) -> Result<(u32, String), String> {
    let (n, hex) = s.split_once('=').ok_or("expected N=HEX")?;
    let n: u32 = n.parse().ok().filter(|n| *n < 24).ok_or("N must be 0-23")?;
    if parse_hex(hex)?.len() != 48 {
        return Err("a SHA-384 PCR is 96 hex digits".into());
    }
    Ok((n, hex.to_ascii_lowercase()))
}

/// A nonce's bytes (a type of its own: clap would read `Vec<u8>` as many values).
#[derive(Debug, Clone)]
pub struct Nonce(pub Vec<u8>);

fn parse_nonce(s: &str) -> Result<Nonce, String> {
    let b = parse_hex(s)?;
    if !(1..=64).contains(&b.len()) {
        return Err("a nonce is 1-64 bytes".into());
    }
    Ok(Nonce(b))
}

fn parse_sha384(s: &str) -> Result<[u8; 48], String> {
    parse_hex(s)?
        .try_into()
        .map_err(|_| "a SHA-384 is 96 hex digits".to_string())
}

fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    let ts = match s.parse::<i64>() {
        Ok(secs) => jiff::Timestamp::from_second(secs).map_err(|e| e.to_string())?,
        Err(_) => s
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("{s:?} is neither RFC 3339 nor Unix seconds: {e}"))?,
    };
    Ok(ts.into())
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 300s, 5m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit is s, m or h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// Where a secret key's password comes from.
#[derive(Debug, Args, Clone)]
pub struct PasswordArgs {
    /// Read the key's password from the first line of FILE
    /// [default: $ZOA_KEY_PASSWORD, else a prompt on a terminal].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write PREFIX.key (secret, mode 0600) and PREFIX.pub; with --secure-boot,
    /// PREFIX-{PK,KEK,db}.key (mode 0600), .crt (PEM) and .cer (DER).
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// Make UEFI Secure Boot keys (PK, KEK, db) instead of a minisign release key. They
    /// are not password-protected: keep them in a secret store.
    #[arg(long, conflicts_with = "password_file")]
    pub secure_boot: bool,
    /// Secure Boot certificate subjects: CN=<NAME> PK, CN=<NAME> KEK, CN=<NAME> db.
    #[arg(long, value_name = "NAME", requires = "secure_boot", default_value = zoa::secureboot::keys::DEFAULT_NAME)]
    pub name: String,
    /// No password on the secret key (for CI, where the key lives in a secret store).
    #[arg(long)]
    pub no_password: bool,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    /// Print the key files and key id as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `zoa sign-uki`: where the signed image goes is explicit (--out or --in-place).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["out", "in_place"])))]
pub struct SignUkiArgs {
    /// The unsigned UKI (or other PE/EFI image).
    pub uki: PathBuf,
    /// The signing key (unencrypted PEM or DER), e.g. PREFIX-db.key from
    /// `zoa keygen --secure-boot`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The key's certificate (PEM or DER), e.g. PREFIX-db.crt.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Intermediate certificates to embed, between --cert and the certificate enrolled in
    /// db (PEM, several per file allowed; repeatable).
    #[arg(long = "chain", value_name = "FILE")]
    pub chain: Vec<PathBuf>,
    /// Write the signed image to FILE (replaced atomically if it exists).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace UKI with the signed image (atomically). Note that a build directory's
    /// build.json records the unsigned UKI's digest.
    #[arg(long)]
    pub in_place: bool,
    /// Print the result (output, sha256, Authenticode digest, signer) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The build directory (holding uki.efi and build.json).
    pub dir: PathBuf,
    /// The minisign secret key.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Make a Secure Boot release: the AMI UefiData variable store its instances boot with
    /// (binary, or the base64 `uefivars -o aws` prints). It is copied to DIR/uefi-data.bin
    /// (binary), the UKI is measured with its PK, KEK, db and dbx (Secure Boot on when it
    /// holds a PK; the UKI must then be signed by a db key, e.g. with `zoa sign-uki`), and
    /// the signature covers it. `zoa deploy` then registers the AMI with it and binds the
    /// KMS key to PCR7 and PCR12. Without this flag an existing DIR/uefi-data.bin is used
    /// the same way; delete it to sign without one.
    #[arg(long, value_name = "BLOB")]
    pub uefi_data: Option<PathBuf>,
    /// The only AWS regions the release may be deployed in, e.g. eu-central-1,eu-west-1.
    /// Signed into release.json: `zoa deploy` and `zoa rollout` refuse any other region
    /// before their first AWS call, and `zoa policy --scp` pins an account to them.
    /// Without it the release may be deployed in any region.
    #[arg(long, value_name = "R[,R...]", value_parser = parse_regions)]
    pub regions: Option<RegionList>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The signed release directory.
    pub dir: PathBuf,
    /// The minisign public key of the release signer.
    #[arg(long, value_name = "PUB")]
    pub pubkey: PathBuf,
    /// Rebuild from this recipe in a temporary directory and compare byte for byte.
    #[arg(long, value_name = "RECIPE")]
    pub rebuild: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// The PID 1 binary for the rebuild (see `zoa build --init`).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Print the verification report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old release directory, UKI or measurements file.
    pub a: PathBuf,
    /// The new one.
    pub b: PathBuf,
    /// Print the report as JSON (for CI gates).
    #[arg(long)]
    pub json: bool,
    /// Exit with status 5 when anything differs (0 when identical), like `git diff --exit-code`.
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Append a signed release directory to the log (the log and the release are verified first).
    Append {
        /// The log file, e.g. measurements/releases.log.
        log: PathBuf,
        /// The signed release directory.
        dir: PathBuf,
        /// A trusted public key; repeat it when the log spans a key rotation.
        #[arg(long, value_name = "PUB", required = true)]
        pubkey: Vec<PathBuf>,
    },
    /// Verify the log: the hash chain, the order, and every signature.
    Verify {
        log: PathBuf,
        /// A trusted public key; repeat it when the log spans a key rotation (each entry
        /// must be signed by one of them).
        #[arg(long, value_name = "PUB", required = true)]
        pubkey: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// `--regions R[,R...]`, checked and sorted (a newtype: clap reads `Option<Vec<_>>` as a
/// repeated flag).
#[derive(Debug, Clone)]
pub struct RegionList(pub Vec<String>);

fn parse_regions(list: &str) -> Result<RegionList, String> {
    zoa::release::regions::parse_list(list).map(RegionList)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_aws_commands_are_exactly_those_the_feature_adds() {
        let cli = Cli::command();
        for name in AWS_COMMANDS {
            let present = cli.find_subcommand(name).is_some();
            assert_eq!(present, cfg!(feature = "aws"), "zoa {name}");
        }
    }

    #[test]
    fn a_left_out_command_is_named_and_a_typo_is_not() {
        let typo = Cli::try_parse_from(["zoa", "deplyo"]).unwrap_err();
        assert_eq!(aws_command_left_out(&typo), None);
        // Without the feature clap does not know `destroy`; with it, DIR is missing.
        let destroy = Cli::try_parse_from(["zoa", "destroy"]).unwrap_err();
        let expected = (!cfg!(feature = "aws")).then_some("destroy");
        assert_eq!(aws_command_left_out(&destroy), expected);
    }
}

//! Boots the demo image under QEMU + OVMF (TCG) and watches PID 1 start llama-server
//! and power the machine off when the server exits (no model disk is attached, so the
//! server stops right after printing its start-up lines).

mod common;

use common::qemu::boot_with_tpm;
use common::*;
use std::path::Path;

#[test]
fn demo_image_boots_and_starts_llama_server() {
    let f = Fixture::new();
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server.toml"))
        .arg("--out")
        .arg(f.path("out"))
        .arg("--inputs")
        .arg(shared_inputs())
        .arg("--offline"));
    assert!(o.status.success(), "{}", stderr(&o));
    let start = std::time::Instant::now();
    let boot = boot_with_tpm(&f.path("out/uki.efi"), &f.path("vm"), false);
    let serial = &boot.serial;
    for want in [
        "zoa-init: starting /usr/bin/llama-server",
        "zoa-init: server exited",
        "zoa-init: power off",
    ] {
        assert!(
            serial.contains(want),
            "serial console lacks {want:?}:\n{serial}"
        );
    }
    // llama-server itself ran: its own start-up output is on the console.
    let server_lines: Vec<&str> = serial
        .lines()
        .skip_while(|l| !l.contains("zoa-init: starting"))
        .skip(1)
        .take_while(|l| !l.contains("zoa-init: server exited"))
        .collect();
    assert!(
        server_lines.iter().any(|l| l.contains("llama_server")),
        "no output from llama-server on the console:\n{serial}"
    );
    eprintln!("booted in {:?}", start.elapsed());
}

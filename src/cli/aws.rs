//! `zoa deploy`, `zoa rollout`, `zoa destroy`, `zoa policy` and `zoa seal`: argument
//! wiring over `zoa::aws`.

use super::exit::ExitStatus;
use anyhow::{Context, Result};
use std::path::Path;
use zeroize::Zeroizing;

use super::args::{AwsArgs, DeployArgs, DestroyArgs, PolicyArgs, RolloutArgs, SealArgs};
use super::output::print_json;
use zoa::aws::deploy::{self, DeployOptions, PolicyRequest};
use zoa::aws::destroy::{self, DestroyOptions};
use zoa::aws::{AwsOptions, Clients};
use zoa::fsio::{self, ReadBoundedError};
use zoa::progress::Progress;

pub(super) fn aws_options(args: &AwsArgs) -> AwsOptions {
    AwsOptions {
        region: args.region.clone(),
        profile: args.profile.clone(),
        endpoint_url: args.endpoint_url.clone(),
    }
}

pub fn deploy(args: &DeployArgs, quiet: bool, progress: Progress) -> Result<ExitStatus> {
    let mut options = DeployOptions::new(&args.dir, &args.pubkey);
    options.name = args.name.clone();
    options.instance_type = args.instance_type.clone();
    options.allow_cidr = args.allow_cidr.clone();
    options.port = args.port;
    options.count = args.count;
    options.fleet = args.fleet;
    options.subnet_ids = args.subnets.clone();
    options.admin_principals = args.key_admins.clone();
    options.sealer_principals = args.sealers.clone();
    options.lock_policy = args.lock_policy && args.i_understand_this_is_permanent;
    options.user_data = args.user_data.clone();
    options.secrets = args.secrets.clone();
    options.model = args.model.clone();
    options.secure_boot = args.secure_boot;
    options.private = args.private;
    options.privatelink = args.expose == Some(super::args::Exposure::Privatelink);
    options.allowed_principals = args.allow_principals.clone();
    let rt = zoa::aws::runtime()?;
    rt.block_on(async {
        let clients = Clients::connect(&aws_options(&args.aws)).await?;
        let mut deployment = deploy::prepare(&clients, options).await?;
        if args.plan {
            let plan = deployment.plan()?;
            if args.json {
                print_json(&plan)?;
            } else {
                print!("{}", plan.render_text());
            }
            return Ok(ExitStatus::OK);
        }
        let outcome = deployment.apply(&clients, progress).await?;
        if args.json {
            print_json(&outcome)?;
        } else if !quiet {
            print_deployed(&outcome, &args.dir);
        }
        Ok(ExitStatus::OK)
    })
}

/// What `zoa deploy` made or kept, and where its record is.
fn print_deployed(outcome: &deploy::DeployOutcome, dir: &Path) {
    let s = &outcome.state;
    let created = outcome
        .plan
        .steps
        .iter()
        .filter(|st| st.action == zoa::aws::plan::Action::Create)
        .count();
    println!(
        "deployed {} {} as {} in {} ({created} created, {} kept)",
        s.release.name,
        s.release.version,
        s.deployment,
        s.region,
        outcome.plan.steps.len() - created
    );
    let show = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            println!("  {k:<20} {v}");
        }
    };
    show("image", &s.image_id);
    show("kms key", &s.key_arn);
    show("security group", &s.security_group_id);
    show("auto scaling group", &s.auto_scaling_group);
    if !s.instance_ids.is_empty() {
        println!("  {:<20} {}", "instances", s.instance_ids.join(", "));
    }
    if !s.secrets.is_empty() {
        let names: Vec<&str> = s.secrets.keys().map(String::as_str).collect();
        println!("  {:<20} {}", "secrets", names.join(", "));
    }
    println!(
        "  record: {}",
        zoa::aws::state::DeployState::path(dir).display()
    );
}

pub fn rollout(args: &RolloutArgs, quiet: bool, progress: Progress) -> Result<ExitStatus> {
    let options = zoa::aws::rollout::RolloutOptions {
        keep_old: args.keep_old,
        min_healthy_percentage: args.min_healthy_percentage,
        wait: std::time::Duration::from_secs(args.wait_minutes * 60),
        reseal: args.reseal.clone(),
        key_deletion_days: args.key_deletion_days,
        model: args.model.clone(),
        ..zoa::aws::rollout::RolloutOptions::new(
            args.dir.clone(),
            args.from.clone(),
            args.pubkey.clone(),
        )
    };
    let rt = zoa::aws::runtime()?;
    rt.block_on(async {
        let clients = Clients::connect(&aws_options(&args.aws)).await?;
        let rollout = zoa::aws::rollout::prepare(&clients, options).await?;
        if args.plan {
            let plan = rollout.plan()?;
            if args.json {
                print_json(&plan)?;
            } else {
                print!("{}", plan.render_text());
            }
            return Ok(ExitStatus::OK);
        }
        let outcome = rollout.apply(&clients, progress).await?;
        if args.json {
            print_json(&outcome)?;
        } else if !quiet {
            println!(
                "rolled {} out to {} {}; record: {}",
                outcome.state.deployment,
                outcome.state.release.name,
                outcome.state.release.version,
                zoa::aws::state::DeployState::path(&args.dir).display()
            );
            for path in &outcome.sealed {
                println!("  re-sealed under the new key: {}", path.display());
            }
        }
        Ok(ExitStatus::OK)
    })
}

pub fn destroy(args: &DestroyArgs, quiet: bool, progress: Progress) -> Result<ExitStatus> {
    let options = DestroyOptions {
        key_deletion_days: args.key_deletion_days,
        ..DestroyOptions::default()
    };
    let rt = zoa::aws::runtime()?;
    rt.block_on(async {
        let clients = Clients::connect(&aws_options(&args.aws)).await?;
        let destruction = destroy::prepare(&clients, &args.dir, &options)
            .await?;
        if args.plan {
            let plan = destruction.plan();
            if args.json {
                print_json(&plan)?;
            } else {
                print!("{}", plan.render_text());
            }
            return Ok(ExitStatus::OK);
        }
        let report = destruction.apply(&clients, progress).await?;
        if args.json {
            print_json(&report)?;
        } else if !quiet {
            println!("destroyed {}", report.deployment);
            for r in &report.removed {
                println!("  removed {r}");
            }
            if let Some(k) = &report.key_deletion {
                println!(
                    "  KMS key {} is scheduled for deletion on {} ({} days); until then `aws kms cancel-key-deletion --key-id {}` can restore it",
                    k.key_id, k.deletion_date, k.pending_days, k.key_id
                );
            }
        }
        Ok(ExitStatus::OK)
    })
}

pub fn policy(args: &PolicyArgs) -> Result<ExitStatus> {
    if args.scp {
        return region_scp(args);
    }
    let account_id = match &args.account_id {
        Some(a) => a.clone(),
        None => {
            let rt = zoa::aws::runtime()?;
            rt.block_on(async {
                let clients = Clients::connect(&aws_options(&args.aws)).await?;
                Ok::<_, zoa::aws::AwsError>(clients.account().await?.account_id)
            })?
        }
    };
    if args.deployer {
        let verified = zoa::release::verify(&args.dir, &args.pubkey, None)?;
        let policy = zoa::aws::deployer::for_release(
            &verified,
            args.name.as_deref(),
            &args.partition,
            &account_id,
            args.private,
            args.expose == Some(super::args::Exposure::Privatelink),
        )?;
        print_json(&policy)?;
        return Ok(ExitStatus::OK);
    }
    let docs = deploy::render_policies(&PolicyRequest {
        dir: args.dir.clone(),
        pubkey: args.pubkey.clone(),
        name: args.name.clone(),
        partition: args.partition.clone(),
        account_id,
        region: args.aws.region.clone(),
        admin_principals: args.key_admins.clone(),
        sealer_principals: args.sealers.clone(),
        lock: args.lock_policy,
        vpc_endpoint: args.vpc_endpoint.clone(),
    })?;
    print_json(&docs)?;
    Ok(ExitStatus::OK)
}

/// `zoa policy --scp`: the region SCP of a verified release's signed allow-list.
fn region_scp(args: &PolicyArgs) -> Result<ExitStatus> {
    let verified = zoa::release::verify(&args.dir, &args.pubkey, None)?;
    let manifest = verified.manifest();
    if manifest.regions.is_empty() {
        anyhow::bail!(
            "{}: {} {} is signed for every region, so there is nothing to pin: sign it with --regions R[,R...]",
            args.dir.display(),
            manifest.name,
            manifest.version
        );
    }
    print_json(&zoa::aws::policy::region_scp(&manifest.regions)?)?;
    Ok(ExitStatus::OK)
}

/// The key and deployment name a `--key` names: a deployed release directory, or a
/// KMS key reference (alias/zoa/NAME gives the name).
fn seal_target(args: &SealArgs) -> Result<(String, String)> {
    let as_dir = std::path::Path::new(&args.key);
    if as_dir.is_dir() {
        let state = zoa::aws::state::DeployState::load(as_dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no deploy record: deploy this release first, or pass the key alias",
                zoa::aws::state::DeployState::path(as_dir).display()
            )
        })?;
        let key = state.key_arn.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the deploy has no KMS key yet: finish `zoa deploy` first",
                zoa::aws::state::DeployState::path(as_dir).display()
            )
        })?;
        return Ok((key, state.deployment));
    }
    let deployment = match (&args.deployment, args.key.strip_prefix("alias/zoa/")) {
        (Some(d), _) => d.clone(),
        (None, Some(name)) => name.to_owned(),
        (None, None) => anyhow::bail!(
            "--key {}: not a directory or a zoa alias (alias/zoa/NAME): pass --deployment NAME",
            args.key
        ),
    };
    Ok((args.key.clone(), deployment))
}

/// The secret to seal, from `--in FILE` or stdin, zeroed when dropped.
fn read_secret(input: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
    let max = zoa::aws::seal::MAX_SECRET_LEN as u64;
    let (what, read) = match input {
        Some(p) => (p.display().to_string(), fsio::read_secret_file(p, max)),
        None => (
            "stdin".to_owned(),
            fsio::read_secret(std::io::stdin().lock(), max),
        ),
    };
    read.map_err(|e| match e {
        ReadBoundedError::Io(e) => anyhow::Error::new(e).context(format!("{what}: cannot read the secret")),
        ReadBoundedError::TooLarge => anyhow::anyhow!(
            "{what}: the secret is larger than {max} bytes; at most {max} fit in user data (seal a key, not a model)"
        ),
    })
}

pub fn seal(args: &SealArgs, quiet: bool) -> Result<ExitStatus> {
    let (key, deployment) = seal_target(args)?;
    let secret = read_secret(args.input.as_deref())?;
    let rt = zoa::aws::runtime()?;
    let envelope = rt.block_on(async {
        let clients = Clients::connect(&aws_options(&args.aws)).await?;
        let spec = zoa::aws::seal::encrypt_spec(&key, &deployment, &args.name);
        zoa::aws::seal::seal(&clients, &spec, &secret).await
    });
    // Zeroed as soon as it is sealed (or not), not at the end of the command.
    drop(secret);
    let sealed = envelope?;
    let mut bytes = serde_json::to_vec_pretty(&sealed)?;
    bytes.push(b'\n');
    fsio::write_atomic(&args.out, &bytes, fsio::PRIVATE)
        .with_context(|| format!("{}: cannot write the envelope", args.out.display()))?;
    if !quiet {
        eprintln!(
            "sealed {} for {deployment} with {} → {}",
            args.name,
            sealed.key_arn(),
            args.out.display()
        );
    }
    Ok(ExitStatus::OK)
}

//! `meridian demo --snapshot`: the offline snapshot round trip.
//!
//! It shows what the registry core guarantees without any daemon: a node publishes its
//! organisations' agents as a signed snapshot, a second store verifies and imports it, one agent
//! changes and only a small delta travels, and tampered or rolled-back snapshots are refused.
//! Everything happens on this machine, under `DIR/demo` (default `./meridian-data/demo`), with
//! fresh keys.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::samples::sample_card;
use meridian_registry::snapshot::{self, BuildInput, CardInput, Snapshot, VerifyOptions};
use meridian_registry::store::{BlockStore as _, SledStore};
use serde_json::json;

use crate::command::Report;

/// Agents per organisation in the demo registry.
pub const DEMO_AGENTS_PER_ORG: usize = 2_500;

fn org_cards(org: &str, changed: Option<usize>) -> Vec<CardInput> {
    (0..DEMO_AGENTS_PER_ORG)
        .map(|index| {
            let skill = if Some(index) == changed {
                "translate"
            } else {
                "search"
            };
            sample_card(org, index, skill)
        })
        .collect()
}

struct Step {
    what: String,
    result: String,
    millis: f64,
}

/// Runs the demo under `data/demo` and reports what happened.
pub fn run(data: &Path, now: i64) -> Result<Report> {
    let dir = super::fresh_dir(data)?;
    let mut steps: Vec<Step> = Vec::new();
    let mut timed = |what: &str, started: Instant, result: String| {
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("  {what:<50} {result}");
        steps.push(Step {
            what: what.to_owned(),
            result,
            millis,
        });
    };

    eprintln!(
        "meridian demo: a signed registry snapshot round trip in {}",
        dir.display()
    );
    let node_key = Keypair::generate()?;
    let orgs = [("acme", "eu-west"), ("globex", "us-east")];
    let org_keys: Vec<Keypair> = orgs
        .iter()
        .map(|_| Keypair::generate())
        .collect::<Result<_, _>>()?;

    // Publisher: one node hosting two organisations; each org's cards are one build.
    let started = Instant::now();
    let first = build_first(&node_key, &orgs, &org_keys, now)?;
    let first_path = dir.join("snapshot-1.car");
    let first_car = first.write_car(Vec::new())?;
    fs::write(&first_path, &first_car)?;
    timed(
        "publish: sign 2 orgs' agents into a snapshot",
        started,
        format!(
            "seq {}, {} agents, {} KiB, root {}",
            first.commit.body.seq,
            first.tree.len(),
            first_car.len() / 1024,
            short(&first.commit_cid.to_string())
        ),
    );

    // Mirror: a second store verifies everything and imports atomically.
    let mirror = SledStore::open(&dir.join("mirror-store"))?;
    let options = VerifyOptions {
        now: Some(now),
        expected_publisher: Some(node_key.public()),
        ..VerifyOptions::default()
    };
    let started = Instant::now();
    let contents = snapshot::read_car(&first_car[..], Limits::DEFAULT)?;
    let verified = snapshot::import(&mirror, &contents, options.clone())?;
    let seconds = started.elapsed().as_secs_f64();
    timed(
        "mirror: verify every hash and signature, import",
        started,
        format!(
            "{} signatures checked ({:.0} agents/s)",
            verified.verified_manifests.len(),
            verified.tree.len() as f64 / seconds.max(1e-9)
        ),
    );

    let (second, report, delta) = change_one(
        &node_key,
        (&org_keys[0], orgs[0]),
        &first,
        now + 1,
        &dir,
        &mut timed,
    )?;

    import_delta(
        &mirror,
        &delta,
        options.clone(),
        &node_key,
        &second,
        &mut timed,
    )?;

    refuse_attacks(&mirror, &first_car, options, &node_key, &second, &mut timed)?;

    let text = summary(&steps, &dir, &first_path);
    Ok(Report {
        text,
        json: json!({
            "dir": dir,
            "publisher": node_key.did(),
            "agents": first.tree.len(),
            "snapshot_bytes": first_car.len(),
            "delta_bytes": delta.len(),
            "new_blocks_for_one_change": report.new_blocks,
            "steps": steps.iter().map(|s| json!({"what": s.what, "result": s.result, "ms": s.millis})).collect::<Vec<_>>(),
        }),
    })
}

/// One agent of `org` changes at `now`: only the path to it and its manifest are new. Builds
/// the second snapshot, writes it and the delta from `first` to `dir`, timed; returns the
/// snapshot, the build report and the delta's bytes.
fn change_one(
    node_key: &Keypair,
    (org_key, (org, region)): (&Keypair, (&str, &str)),
    first: &Snapshot,
    now: i64,
    dir: &Path,
    timed: &mut impl FnMut(&str, Instant, String),
) -> Result<(Snapshot, snapshot::BuildReport, Vec<u8>)> {
    let started = Instant::now();
    let (second, report) = snapshot::build(BuildInput {
        node_key,
        org_key,
        org,
        region,
        cards: org_cards(org, Some(42)),
        previous: Some(first),
        now,
        expires_in_secs: 7 * 86_400,
        limits: Limits::DEFAULT,
    })?;
    let (delta, diff) = second.write_delta(&first.tree, Vec::new())?;
    fs::write(dir.join("delta-1-2.car"), &delta)?;
    fs::write(dir.join("snapshot-2.car"), second.write_car(Vec::new())?)?;
    timed(
        "publish: change one agent, write the delta",
        started,
        format!(
            "{} changed, {} new blocks (tree depth {}), delta {} bytes",
            diff.changed.len(),
            report.new_blocks,
            second.tree.depth(),
            delta.len()
        ),
    );
    Ok((second, report, delta))
}

/// The demo's closing table.
fn summary(steps: &[Step], dir: &Path, first_path: &Path) -> String {
    let total: f64 = steps.iter().map(|s| s.millis).sum();
    let mut text = format!("\n{:<50} {:>10}\n", "step", "time");
    for step in steps {
        text.push_str(&format!("{:<50} {:>7.1} ms\n", step.what, step.millis));
    }
    text.push_str(&format!(
        "{:<50} {total:>7.1} ms\nfiles are in {}; try `meridian snapshot inspect {}`",
        "total",
        dir.display(),
        first_path.display()
    ));
    text
}

/// The mirror verifies and imports the delta to `second`, timed.
fn import_delta(
    mirror: &SledStore,
    delta: &[u8],
    options: VerifyOptions,
    node_key: &Keypair,
    second: &Snapshot,
    timed: &mut impl FnMut(&str, Instant, String),
) -> Result<()> {
    let started = Instant::now();
    let contents = snapshot::read_car(delta, Limits::DEFAULT)?;
    let verified = snapshot::import(mirror, &contents, options)?;
    let head = mirror
        .head(&node_key.did())?
        .context("mirror has no head after import")?;
    timed(
        "mirror: verify and import the delta",
        started,
        format!(
            "seq {}, {} signature checked, {} reused, heads agree: {}",
            head.seq,
            verified.verified_manifests.len(),
            verified.reused_manifests,
            head.commit == second.commit_cid
        ),
    );
    Ok(())
}

/// The first snapshot: one node hosting two organisations, each org's cards one build.
fn build_first(
    node_key: &Keypair,
    orgs: &[(&str, &str)],
    org_keys: &[Keypair],
    now: i64,
) -> Result<Snapshot> {
    let mut published: Option<Snapshot> = None;
    for ((org, region), org_key) in orgs.iter().zip(org_keys) {
        let (next, _) = snapshot::build(BuildInput {
            node_key,
            org_key,
            org,
            region,
            cards: org_cards(org, None),
            previous: published.as_ref(),
            now,
            expires_in_secs: 7 * 86_400,
            limits: Limits::DEFAULT,
        })?;
        published = Some(next);
    }
    published.context("no snapshot was built")
}

/// The attacks the mirror refuses (one flipped bit, a replay of the older snapshot), each
/// timed; and the mirror's head stays at `second`.
fn refuse_attacks(
    mirror: &SledStore,
    first_car: &[u8],
    options: VerifyOptions,
    node_key: &Keypair,
    second: &Snapshot,
    timed: &mut impl FnMut(&str, Instant, String),
) -> Result<()> {
    let started = Instant::now();
    let mut tampered = first_car.to_vec();
    let index = tampered.len() - 100;
    tampered[index] ^= 0x01;
    let refused_tamper = match snapshot::read_car(&tampered[..], Limits::DEFAULT) {
        Err(error) => error.to_string(),
        Ok(contents) => match snapshot::import(mirror, &contents, options.clone()) {
            Err(error) => error.to_string(),
            Ok(_) => bail!("a tampered snapshot was accepted"),
        },
    };
    timed(
        "attack: one flipped bit",
        started,
        format!("refused: {}", short_error(&refused_tamper)),
    );
    let started = Instant::now();
    let contents = snapshot::read_car(first_car, Limits::DEFAULT)?;
    let refused_rollback = match snapshot::import(mirror, &contents, options) {
        Err(error) => error.to_string(),
        Ok(_) => bail!("a rolled-back snapshot was accepted"),
    };
    timed(
        "attack: replay the older snapshot",
        started,
        format!("refused: {refused_rollback}"),
    );
    let after = mirror
        .head(&node_key.did())?
        .context("mirror lost its head")?;
    if after.commit != second.commit_cid {
        bail!("the mirror's head moved after refused imports");
    }
    Ok(())
}

fn short(text: &str) -> String {
    text.chars().take(16).collect::<String>() + "…"
}

fn short_error(text: &str) -> String {
    text.chars().take(90).collect()
}

//! A fuzzing harness that needs neither libFuzzer nor nightly: for a bounded time it feeds the
//! checks of `kafka_backup_format_fuzz` random inputs and mutations of valid segments, blocks and
//! manifests. It also replays files (crash artifacts, corpora) and writes the seed corpora.
//!
//! ```text
//! replay [--seconds N] [--seed S] [--artifacts DIR] [--write-seeds DIR] [FILE|DIR ...]
//! ```
//! Exits 1 on the first failing input, after saving it under the artifacts directory.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_backup_format_fuzz::{
    check_block, check_manifest, check_roundtrip, check_segment, doc_manifest_example,
    records_from_bytes, seeds, write_segment,
};

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 4] = [
    ("decode_segment", check_segment),
    ("decode_block", check_block),
    ("manifest", check_manifest),
    ("roundtrip", check_roundtrip),
];

/// SplitMix64: small, fast, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const INTERESTING_U32: [u32; 8] = [
    0,
    1,
    0x7f,
    0x80,
    0xffff,
    256 << 20,
    (256 << 20) + 1,
    u32::MAX,
];

/// Applies 1 to 8 random mutations: the kinds libFuzzer uses, plus length-field overwrites.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(8) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes = rng.bytes(n);
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let copy = input[at..at + n].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, copy);
            }
            5 if len > 0 => input.truncate(rng.below(len)),
            6 if len >= 4 => {
                let at = rng.below(len - 3);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                input[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            7 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0u8, 1, 2, 3, 0x7f, 0x80, 0xfe, 0xff][rng.below(8)];
            }
            _ => {
                // Append a random tail.
                let n = rng.below(40);
                let bytes = rng.bytes(n);
                input.extend(bytes);
            }
        }
    }
}

/// A valid segment and its blocks, from random records.
fn valid_segment(rng: &mut Rng) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let n = 8 + rng.below(600);
    let spec = rng.bytes(n);
    let (records, codec, block_bytes) = records_from_bytes(&spec)?;
    let (bytes, _, chunks) = write_segment(&records, codec, block_bytes);
    let blocks = chunks[1..chunks.len() - 1].to_vec();
    Some((bytes, blocks))
}

/// The next input: which check it is for and the bytes.
fn generate(rng: &mut Rng, manifests: &[Vec<u8>]) -> (usize, Vec<u8>) {
    match rng.below(8) {
        0 => {
            let n = rng.below(300);
            (rng.below(3), rng.bytes(n))
        }
        1 => {
            let n = rng.below(2000);
            (3, rng.bytes(n))
        }
        2..=4 => match valid_segment(rng) {
            Some((mut bytes, _)) => {
                mutate(rng, &mut bytes);
                (0, bytes)
            }
            None => (0, Vec::new()),
        },
        5 | 6 => match valid_segment(rng) {
            Some((_, blocks)) if !blocks.is_empty() => {
                let mut b = blocks[rng.below(blocks.len())].clone();
                mutate(rng, &mut b);
                (1, b)
            }
            _ => (1, Vec::new()),
        },
        _ => {
            let mut m = manifests[rng.below(manifests.len())].clone();
            // Textual mutations keep JSON mostly valid: swap digits, drop or duplicate fields.
            for _ in 0..1 + rng.below(4) {
                if m.is_empty() {
                    break;
                }
                let i = rng.below(m.len());
                match rng.below(4) {
                    0 if m[i].is_ascii_digit() => m[i] = b'0' + rng.below(10) as u8,
                    1 => {
                        const JSON_BYTES: &[u8] = b"{}[],:\"-0123456789etrufnl ";
                        m[i] = JSON_BYTES[rng.below(JSON_BYTES.len())];
                    }
                    2 => {
                        let n = rng.below((m.len() - i).min(80));
                        m.drain(i..i + n);
                    }
                    _ => mutate(rng, &mut m),
                }
            }
            (2, m)
        }
    }
}

/// Runs one check, catching a panic; on failure saves the input and returns its path.
fn run(target: usize, input: &[u8], artifacts: &Path) -> Result<(), PathBuf> {
    let (name, check) = TARGETS[target];
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_ok() {
        return Ok(());
    }
    let dir = artifacts.join(name);
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("crash-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    Err(path)
}

fn usage() -> ! {
    eprintln!(
        "usage: replay [--seconds N] [--seed S] [--artifacts DIR] [--write-seeds DIR] [FILE|DIR ...]"
    );
    std::process::exit(2)
}

fn main() {
    let mut seconds = 30u64;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut artifacts = PathBuf::from("artifacts/replay");
    let mut write_seeds: Option<PathBuf> = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--seed" => {
                seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--artifacts" => artifacts = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--write-seeds" => {
                write_seeds = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage()))
            }
            "-h" | "--help" => usage(),
            _ => files.push(PathBuf::from(arg)),
        }
    }
    // Panics are caught and reported once, with the input saved; keep the message short.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));

    if let Some(dir) = write_seeds {
        let seeds = seeds();
        for (i, (target, bytes)) in seeds.iter().enumerate() {
            let d = dir.join(target);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
            std::fs::write(d.join(format!("seed-{i:03}")), bytes)
                .unwrap_or_else(|e| panic!("writing seeds: {e}"));
        }
        println!("wrote {} seeds under {}", seeds.len(), dir.display());
        return;
    }

    if !files.is_empty() {
        // Replay: every file through every check (a crash file's target is not always known).
        let mut inputs = Vec::new();
        for f in &files {
            if f.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(f)
                    .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                    .unwrap_or_default();
                entries.sort();
                inputs.extend(entries.into_iter().filter(|p| p.is_file()));
            } else {
                inputs.push(f.clone());
            }
        }
        let mut failed = 0;
        for path in &inputs {
            let Ok(bytes) = std::fs::read(path) else {
                eprintln!("cannot read {}", path.display());
                failed += 1;
                continue;
            };
            for (t, (name, _)) in TARGETS.iter().enumerate() {
                if let Err(saved) = run(t, &bytes, &artifacts) {
                    eprintln!(
                        "FAILED: {} on {} (saved as {})",
                        name,
                        path.display(),
                        saved.display()
                    );
                    failed += 1;
                }
            }
        }
        println!(
            "replay: {} passed, {failed} failed",
            inputs.len() * TARGETS.len() - failed
        );
        std::process::exit(i32::from(failed > 0));
    }

    println!("replay: fuzzing for {seconds} s with --seed {seed}");
    let mut rng = Rng(seed);
    let mut manifests = vec![doc_manifest_example().into_bytes()];
    manifests.extend(
        seeds()
            .into_iter()
            .filter(|(t, _)| *t == "manifest")
            .map(|(_, b)| b),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut counts = [0u64; TARGETS.len()];
    let mut total = 0u64;
    while Instant::now() < deadline {
        let (target, input) = generate(&mut rng, &manifests);
        if let Err(saved) = run(target, &input, &artifacts) {
            eprintln!(
                "FAILED: {} after {total} inputs (seed {seed}); input saved as {}",
                TARGETS[target].0,
                saved.display()
            );
            std::process::exit(1);
        }
        counts[target] += 1;
        total += 1;
    }
    let per_target: Vec<String> = TARGETS
        .iter()
        .zip(counts)
        .map(|((n, _), c)| format!("{n} {c}"))
        .collect();
    println!(
        "replay: {total} inputs ({}), no failure",
        per_target.join(", ")
    );
}

//! A policy that misbehaves on request; see README.md.

use std::hint::black_box;
use std::sync::Mutex;

use umbra_guest::{
    Action, AssetStatus, Comparison, DriftAssessment, DriftLevel, LoadPlan, ProfileInfo,
    ServiceStatus,
};

/// The hostile policy.
pub struct Hostile;

umbra_guest::export!(Hostile);

/// Memory kept across calls by `grow-once`.
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn mode() -> String {
    umbra_guest::setting("hostile.mode").unwrap_or_else(|| "ok".to_owned())
}

fn recurse(depth: u64) -> u64 {
    // The guard never holds; it keeps the compiler from rejecting the
    // recursion as unconditional.
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let frame = black_box([depth; 64]);
    recurse(depth + 1) + frame[0]
}

impl umbra_guest::Drift for Hostile {
    fn assess(_asset: AssetStatus, _comparisons: Vec<Comparison>) -> DriftAssessment {
        let valid = DriftAssessment {
            score: 0.25,
            level: DriftLevel::Small,
            reasons: vec!["hostile policy at rest".to_owned()],
        };
        match mode().as_str() {
            "loop" => {
                let mut counter = 0u64;
                loop {
                    counter = black_box(counter.wrapping_add(1));
                }
            }
            "recursion" => {
                let depth = recurse(0);
                DriftAssessment {
                    score: (depth % 2) as f64,
                    ..valid
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("hostile policy panics on purpose"),
            "huge" => DriftAssessment {
                reasons: vec!["x".repeat(200); 20_000],
                ..valid
            },
            "nan" => DriftAssessment {
                score: f64::NAN,
                ..valid
            },
            "stdout" => loop {
                println!("hostile policy floods stdout");
            },
            "log" => loop {
                umbra_guest::log(umbra_guest::Level::Info, "hostile policy floods the log");
            },
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3));
                valid
            }
            "grow-once" => {
                if let Ok(mut kept) = KEPT.lock() {
                    kept.push(black_box(vec![7u8; 4 << 20]));
                }
                valid
            }
            _ => valid,
        }
    }
}

impl umbra_guest::Sequencer for Hostile {
    fn next_plan(_asset: AssetStatus, _profiles: Vec<ProfileInfo>) -> Option<LoadPlan> {
        None
    }
}

impl umbra_guest::Remediation for Hostile {
    fn decide(_service: ServiceStatus, _assets: Vec<AssetStatus>) -> Vec<Action> {
        let count = if mode() == "huge" { 10_000 } else { 1 };
        vec![Action::Hold("hostile policy holds".to_owned()); count]
    }
}

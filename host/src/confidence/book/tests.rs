use proptest::prelude::*;

use super::*;
use crate::confidence::RiskField;

type TestResult = Result<(), BookError>;

fn service(name: &str, assets: &[&str], depends_on: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        assets: assets.iter().map(|&a| a.to_owned()).collect(),
        depends_on: depends_on.iter().map(|&d| d.to_owned()).collect(),
    }
}

/// Builds a chain in which `web` depends on `api` and `api` on `db`, with
/// one asset each.
fn chain(config: ConfidenceConfig) -> Result<ConfidenceBook, BookError> {
    ConfidenceBook::new(
        config,
        &[
            service("web", &["web-1"], &["api"]),
            service("api", &["api-1"], &["db"]),
            service("db", &["db-1"], &[]),
        ],
    )
}

fn confidence_of(report: &ConfidenceReport, name: &str) -> f64 {
    report.service(name).map_or(f64::NAN, |s| s.confidence)
}

fn calm() -> TickInputs {
    TickInputs::default()
        .with("web-1", 0.0, 0.0)
        .with("api-1", 0.0, 0.0)
        .with("db-1", 0.0, 0.0)
}

#[test]
fn confidence_starts_at_one() -> TestResult {
    let book = chain(ConfidenceConfig::default())?;
    assert_eq!(book.service_confidence("api"), Some(1.0));
    assert_eq!(book.asset_confidence("db-1"), Some(1.0));
    Ok(())
}

#[test]
fn confidence_recovers_after_drift() -> TestResult {
    let config = ConfidenceConfig::default();
    let mut book = ConfidenceBook::new(config, &[service("api", &["api-1"], &[])])?;
    let drifting = TickInputs::default().with("api-1", 0.8, 0.0);
    let calm = TickInputs::default().with("api-1", 0.0, 0.0);

    for _ in 0..10 {
        book.update(&drifting);
    }
    let low = book.service_confidence("api").unwrap_or(f64::NAN);
    assert!(low < 0.5, "confidence after drift {low}");

    // At zero risk, 1 - c_k = smoothing^k * (1 - low). So the first k with
    // c_k > 0.95 is the smallest whole number above this bound.
    let bound = (0.05 / (1.0 - low)).ln() / config.smoothing.ln();
    let ticks = bound.floor() as usize + 1;
    for _ in 0..ticks {
        book.update(&calm);
    }
    let recovered = book.service_confidence("api").unwrap_or(f64::NAN);
    assert!(
        recovered > 0.95,
        "confidence after {ticks} calm ticks {recovered}"
    );
    Ok(())
}

#[test]
fn dependency_caps_service_at_weakest_dependency() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    let report = book.update(&calm().with("db-1", 0.9, 0.0));

    let db = confidence_of(&report, "db");
    assert!(db < 1.0);
    assert_eq!(confidence_of(&report, "api"), db);
    let api = report
        .service("api")
        .and_then(|s| s.weakest_dependency.clone());
    assert_eq!(api.map(|bound| bound.service), Some("db".to_owned()));
    Ok(())
}

#[test]
fn dependency_bound_propagates_through_chain() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    let report = book.update(&calm().with("db-1", 0.9, 0.5));
    assert_eq!(confidence_of(&report, "web"), confidence_of(&report, "db"));
    Ok(())
}

#[test]
fn dependency_weight_blends_towards_bound() -> TestResult {
    let config = ConfidenceConfig {
        dependency_weight: 0.25,
        ..ConfidenceConfig::default()
    };
    let mut book = chain(config)?;
    let report = book.update(&calm().with("db-1", 0.9, 0.0));

    // The db reports 0.7 * 1 + 0.3 * 0.1 = 0.73, and the api 0.75 * 1 + 0.25 * 0.73.
    let expected = 0.75 + 0.25 * 0.73;
    let api = confidence_of(&report, "api");
    assert!((api - expected).abs() < 1e-12, "api {api}");
    Ok(())
}

#[test]
fn dependency_bound_never_raises_service() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    let report = book.update(&calm().with("api-1", 0.5, 0.0));
    let api = report.service("api");
    assert_eq!(api.map(|s| s.confidence), api.map(|s| s.smoothed));
    assert!(confidence_of(&report, "api") < confidence_of(&report, "db"));
    Ok(())
}

#[test]
fn service_recovers_when_dependency_recovers() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    for _ in 0..10 {
        book.update(&calm().with("db-1", 1.0, 0.0));
    }
    let low = book.service_confidence("web").unwrap_or(f64::NAN);
    assert!(low < 0.1, "web while db fails {low}");

    for _ in 0..20 {
        book.update(&calm());
    }
    let recovered = book.service_confidence("web").unwrap_or(f64::NAN);
    assert!(recovered > 0.99, "web after db recovered {recovered}");
    Ok(())
}

#[test]
fn culprit_is_asset_with_largest_contribution() -> TestResult {
    let mut book = ConfidenceBook::new(
        ConfidenceConfig::default(),
        &[service("api", &["api-1", "api-2", "api-3"], &[])],
    )?;
    // Survivals 0.9, 0.2 * 0.9 = 0.18 and 0.3: api-2 lowers most, although
    // api-3 has the highest drift score.
    let inputs = TickInputs::default()
        .with("api-1", 0.1, 0.0)
        .with("api-2", 0.8, 0.1)
        .with("api-3", 0.7, 0.0);
    let mut report = book.update(&inputs);
    for _ in 0..5 {
        report = book.update(&inputs);
    }

    let api = report.service("api");
    assert_eq!(api.map(|s| s.below_threshold), Some(true));
    let culprit = api.and_then(|s| s.culprit.clone());
    assert_eq!(culprit.map(|c| c.asset), Some("api-2".to_owned()));
    Ok(())
}

#[test]
fn service_above_threshold_has_no_culprit() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    let report = book.update(&calm().with("api-1", 0.1, 0.0));
    let api = report.service("api");
    assert_eq!(api.map(|s| s.below_threshold), Some(false));
    assert_eq!(api.and_then(|s| s.culprit.clone()), None);
    Ok(())
}

#[test]
fn service_low_through_dependency_names_dependency_not_asset() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    let mut report = book.update(&calm());
    for _ in 0..5 {
        report = book.update(&calm().with("db-1", 1.0, 0.0));
    }

    let api = report.service("api");
    assert_eq!(api.map(|s| s.below_threshold), Some(true));
    assert_eq!(api.and_then(|s| s.culprit.clone()), None);
    let bound = api.and_then(|s| s.weakest_dependency.clone());
    assert_eq!(bound.map(|b| b.service), Some("db".to_owned()));
    let db_culprit = report.service("db").and_then(|s| s.culprit.clone());
    assert_eq!(db_culprit.map(|c| c.asset), Some("db-1".to_owned()));
    Ok(())
}

#[test]
fn invalid_inputs_count_as_worst_case() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    let report = book.update(&calm().with("db-1", f64::NAN, 1.5));

    assert_eq!(report.input_issues.len(), 2);
    assert_eq!(report.input_issues[0].field, RiskField::DriftScore);
    assert!(report.input_issues[0].value.is_nan());
    assert_eq!(report.input_issues[1].value, 1.5);
    // A worst-case input gives instant 0: 0.7 * 1 + 0.3 * 0.
    assert_eq!(confidence_of(&report, "db"), 0.7);
    Ok(())
}

#[test]
fn unknown_asset_is_reported_and_ignored() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    let report = book.update(&calm().with("ghost", 1.0, 1.0));
    assert_eq!(report.unknown_assets, vec!["ghost".to_owned()]);
    assert_eq!(confidence_of(&report, "web"), 1.0);
    Ok(())
}

#[test]
fn missing_asset_keeps_previous_inputs() -> TestResult {
    let mut book = chain(ConfidenceConfig::default())?;
    book.update(&calm().with("db-1", 0.5, 0.0));
    let report = book.update(
        &TickInputs::default()
            .with("web-1", 0.0, 0.0)
            .with("api-1", 0.0, 0.0),
    );

    assert_eq!(report.stale_assets, vec!["db-1".to_owned()]);
    let db = report.service("db");
    assert_eq!(db.map(|s| s.instant), Some(0.5));
    Ok(())
}

#[test]
fn asset_confidence_uses_own_inputs_only() -> TestResult {
    let mut book = ConfidenceBook::new(
        ConfidenceConfig::default(),
        &[service("api", &["api-1", "api-2"], &[])],
    )?;
    let report = book.update(
        &TickInputs::default()
            .with("api-1", 0.5, 0.0)
            .with("api-2", 0.0, 0.0),
    );
    let asset = |name| report.asset(name).map_or(f64::NAN, |a| a.confidence);
    // 0.7 * 1 + 0.3 * 0.5 for the drifting asset, 1 for the other.
    assert!((asset("api-1") - 0.85).abs() < 1e-12);
    assert_eq!(asset("api-2"), 1.0);
    Ok(())
}

#[test]
fn book_rejects_dependency_cycle() {
    let result = ConfidenceBook::new(
        ConfidenceConfig::default(),
        &[service("a", &[], &["b"]), service("b", &[], &["a"])],
    );
    let message = result.err().map(|e| e.to_string());
    assert_eq!(
        message.as_deref(),
        Some("dependency cycle `a -> b -> a`: remove one of these dependencies")
    );
}

#[test]
fn book_rejects_unknown_dependency() {
    let result = ConfidenceBook::new(ConfidenceConfig::default(), &[service("api", &[], &["db"])]);
    let expected = BookError::UnknownDependency {
        service: "api".to_owned(),
        dependency: "db".to_owned(),
    };
    assert_eq!(result.err(), Some(expected));
}

#[test]
fn book_rejects_shared_asset() {
    let result = ConfidenceBook::new(
        ConfidenceConfig::default(),
        &[service("api", &["box"], &[]), service("db", &["box"], &[])],
    );
    let message = result.err().map(|e| e.to_string());
    assert_eq!(
        message.as_deref(),
        Some(
            "asset `box` belongs to both service `api` and service `db`: list it under one service"
        )
    );
}

#[test]
fn book_rejects_asset_listed_twice() {
    let result = ConfidenceBook::new(
        ConfidenceConfig::default(),
        &[service("api", &["box", "box"], &[])],
    );
    let expected = BookError::DuplicateAsset {
        asset: "box".to_owned(),
        service: "api".to_owned(),
    };
    assert_eq!(result.err(), Some(expected));
}

#[test]
fn book_rejects_duplicate_service() {
    let result = ConfidenceBook::new(
        ConfidenceConfig::default(),
        &[service("api", &[], &[]), service("api", &[], &[])],
    );
    assert_eq!(
        result.err(),
        Some(BookError::DuplicateService("api".to_owned()))
    );
}

#[test]
fn book_rejects_invalid_config() {
    let config = ConfidenceConfig {
        smoothing: 1.0,
        ..ConfidenceConfig::default()
    };
    let result = ConfidenceBook::new(config, &[]);
    assert_eq!(
        result.err(),
        Some(BookError::InvalidConfig(ConfigError::Smoothing(1.0)))
    );
}

fn any_input() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..=1.0_f64,
        1 => any::<f64>(),
        1 => Just(f64::NAN),
    ]
}

proptest! {
    #[test]
    fn confidence_stays_in_unit_interval(
        ticks in prop::collection::vec(
            prop::collection::vec((any_input(), any_input()), 3),
            1..30,
        ),
        weight in 0.0..=1.0_f64,
    ) {
        let config = ConfidenceConfig { dependency_weight: weight, ..ConfidenceConfig::default() };
        let mut book = chain(config).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for tick in ticks {
            let mut inputs = TickInputs::default();
            for (asset, (drift, probability)) in ["web-1", "api-1", "db-1"].into_iter().zip(tick) {
                inputs.insert(asset, AssetRisk::new(drift, probability));
            }
            let report = book.update(&inputs);
            for service in &report.services {
                prop_assert!((0.0..=1.0).contains(&service.confidence), "{service:?}");
                prop_assert!(service.confidence <= service.smoothed, "{service:?}");
            }
            for asset in &report.assets {
                prop_assert!((0.0..=1.0).contains(&asset.confidence), "{asset:?}");
                prop_assert!(asset.contribution.is_finite(), "{asset:?}");
            }
        }
    }
}

//! Import, activation, rollback and hot swap through the store's model repository.

use umbra_host::model::{
    ActiveChoice, AssetFeatures, HistoryEntry, ModelError, ModelMetadata, ModelRepository,
    PredictionSource, Predictor, RULE_BASED,
};

use crate::support::{TestResult, default_metadata, model_file, temp_store};

fn small_model() -> Result<(Vec<u8>, ModelMetadata), Box<dyn std::error::Error>> {
    let metadata = ModelMetadata::from_json(&model_file("fixtures/small.json")?)?;
    Ok((model_file("fixtures/small.onnx")?, metadata))
}

/// A shadow shedding load 25 s into an ×8 ramp, shaped like the ticks before a failure
/// in the recorded training runs.
fn stressed_asset() -> AssetFeatures {
    AssetFeatures {
        latency_p99_slo_ratio: 1.5,
        error_rate_slo_ratio: 12.0,
        throughput_plan_ratio: 0.9,
        profile_intensity: 8.0,
        stress_seconds: 25.0,
        ..AssetFeatures::default()
    }
}

/// A fast shadow at baseline load.
fn healthy_asset() -> AssetFeatures {
    AssetFeatures {
        latency_p99_slo_ratio: 0.02,
        throughput_plan_ratio: 1.0,
        profile_intensity: 1.0,
        ..AssetFeatures::default()
    }
}

fn source_name(source: &PredictionSource) -> String {
    source.to_string()
}

#[test]
fn repository_starts_with_built_in_default() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let models = repository.list()?;
    assert_eq!(models.len(), 1);
    assert!(models[0].built_in);
    assert_eq!(models[0].metadata.reference(), "umbra-default@3");
    assert_eq!(
        repository.active()?,
        ActiveChoice::Model {
            reference: "umbra-default@3".to_owned()
        }
    );
    Ok(())
}

#[test]
fn earlier_built_in_reads_as_current_default() -> TestResult {
    let (_dir, store) = temp_store()?;
    // What an earlier release left active: its built-in default, which this one lacks.
    store.kv("models")?.put(
        "active",
        &ActiveChoice::Model {
            reference: "umbra-default@2".to_owned(),
        },
    )?;
    let repository = ModelRepository::open(&store)?;

    assert_eq!(
        repository.active()?,
        ActiveChoice::Model {
            reference: "umbra-default@3".to_owned()
        }
    );
    Ok(())
}

#[test]
fn import_activate_and_roll_back() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let (bytes, metadata) = small_model()?;

    let stored = repository.import(&bytes, metadata.clone())?;
    assert_eq!(stored.metadata.reference(), "small@1");
    assert_eq!(Some(&stored.sha256), metadata.sha256.as_ref());
    assert_eq!(repository.list()?.len(), 2);

    let previous = repository.activate("small@1")?;
    assert_eq!(
        previous,
        ActiveChoice::Model {
            reference: "umbra-default@3".to_owned()
        }
    );
    assert_eq!(
        repository.active()?,
        ActiveChoice::Model {
            reference: "small@1".to_owned()
        }
    );

    // Rolling back is activating the previous choice.
    repository.activate("umbra-default@3")?;
    assert_eq!(
        repository.active()?,
        ActiveChoice::Model {
            reference: "umbra-default@3".to_owned()
        }
    );
    repository.activate(RULE_BASED)?;
    assert_eq!(repository.active()?, ActiveChoice::RuleBased);

    let history = repository.history()?;
    let actions: Vec<&HistoryEntry> = history.iter().map(|(_, entry)| entry).collect();
    assert_eq!(actions.len(), 4);
    assert!(matches!(actions[0], HistoryEntry::Import { reference, .. } if reference == "small@1"));
    assert!(matches!(
        actions[3],
        HistoryEntry::Activate {
            active: ActiveChoice::RuleBased,
            ..
        }
    ));
    Ok(())
}

#[test]
fn reimport_same_bytes_is_idempotent() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let (bytes, metadata) = small_model()?;
    let first = repository.import(&bytes, metadata.clone())?;
    let second = repository.import(&bytes, metadata)?;
    assert_eq!(first, second);
    assert_eq!(repository.list()?.len(), 2);
    Ok(())
}

#[test]
fn reimport_other_bytes_is_rejected() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let (bytes, metadata) = small_model()?;
    repository.import(&bytes, metadata.clone())?;

    // The default model's bytes under the name `small@1`: same reference, other file.
    let mut other = default_metadata()?;
    other.name = metadata.name.clone();
    other.version = metadata.version.clone();
    let error = repository
        .import(&model_file("default.onnx")?, other)
        .err()
        .ok_or("a second file was accepted under an existing version")?;
    assert!(
        error
            .to_string()
            .starts_with("invalid model metadata: model `small@1` already exists"),
        "{error}"
    );
    Ok(())
}

#[test]
fn import_checks_declared_sha256() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let (bytes, mut metadata) = small_model()?;
    metadata.sha256 = Some("00".repeat(32));
    let error = repository
        .import(&bytes, metadata)
        .err()
        .ok_or("a file with the wrong hash was imported")?;
    assert!(
        error.to_string().contains("does not match the file's"),
        "{error}"
    );
    assert_eq!(repository.list()?.len(), 1);
    Ok(())
}

#[test]
fn rejected_import_stores_nothing() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let mut metadata = default_metadata()?;
    metadata.name = "scaled".to_owned();
    metadata.sha256 = None;
    let result = repository.import(&model_file("fixtures/unsupported-scaler.onnx")?, metadata);
    assert!(matches!(
        result,
        Err(ModelError::UnsupportedOperators { .. })
    ));
    assert_eq!(repository.list()?.len(), 1);
    Ok(())
}

#[test]
fn activate_unknown_model_keeps_choice() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let error = repository
        .activate("ghost@3")
        .err()
        .ok_or("an unknown model was activated")?;
    assert!(matches!(error, ModelError::NotFound(_)), "{error:?}");
    assert!(matches!(
        repository.activate("no-version"),
        Err(ModelError::Reference(_))
    ));
    assert_eq!(
        repository.active()?,
        ActiveChoice::Model {
            reference: "umbra-default@3".to_owned()
        }
    );
    Ok(())
}

#[test]
fn predictor_follows_activation() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let (bytes, metadata) = small_model()?;
    repository.import(&bytes, metadata)?;
    let mut predictor = Predictor::from_repository(repository.clone());
    let batch = [healthy_asset(), stressed_asset()];

    let first = predictor.predict(&batch);
    assert_eq!(source_name(&first[0].source), "umbra-default@3");
    assert!(first[1].probability > first[0].probability);

    repository.activate("small@1")?;
    let second = predictor.predict(&batch);
    assert_eq!(source_name(&second[0].source), "small@1");
    assert_ne!(second[1].probability, first[1].probability);

    repository.activate(RULE_BASED)?;
    let third = predictor.predict(&batch);
    assert_eq!(third[0].source, PredictionSource::RuleBased);
    Ok(())
}

#[test]
fn predictor_keeps_model_when_new_one_fails() -> TestResult {
    let (_dir, store) = temp_store()?;
    let repository = ModelRepository::open(&store)?;
    let (bytes, metadata) = small_model()?;
    repository.import(&bytes, metadata)?;
    let mut predictor = Predictor::from_repository(repository.clone());
    let before = predictor.predict(&[stressed_asset()]);

    // Activate a good model, then damage its stored bytes, as a disk fault or a future
    // host writing another format would: the predictor must keep the model it has.
    repository.activate("small@1")?;
    store
        .kv("models")?
        .put_bytes("model/small@1/onnx", b"damaged")?;
    let after = predictor.predict(&[stressed_asset()]);

    assert_eq!(source_name(&after[0].source), "umbra-default@3");
    assert_eq!(after[0].probability, before[0].probability);
    assert_eq!(
        predictor.rejected(),
        Some(&ActiveChoice::Model {
            reference: "small@1".to_owned()
        })
    );
    Ok(())
}

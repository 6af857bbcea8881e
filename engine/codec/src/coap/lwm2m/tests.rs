//! Tests of the LwM2M Register and Update query rules of `docs/coap.md`.

use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const BOUNDS: RangeInclusive<u32> = 60..=31_536_000;

fn register(query: &[&str]) -> Result<RegisterParams, Lwm2mError> {
    parse_register(query, &BOUNDS)
}

#[test]
fn typical_1_1_register() -> TestResult {
    let params = register(&["ep=863921034567890", "lt=300", "lwm2m=1.1", "b=U", "Q"])?;
    assert_eq!(
        params,
        RegisterParams {
            endpoint: "863921034567890".into(),
            lifetime_secs: Some(300),
            version: Lwm2mVersion::V1_1,
            binding: Binding { queue: true },
            sms_number: None,
            endpoint_type: None,
            domain: None,
        }
    );
    assert_eq!(params.lifetime_or_default(), 300);
    Ok(())
}

#[test]
fn minimal_register_takes_the_defaults() -> TestResult {
    let params = register(&["ep=urn:imei:863921034567890"])?;
    assert_eq!(params.endpoint, "urn:imei:863921034567890");
    assert_eq!(params.lifetime_secs, None);
    assert_eq!(params.lifetime_or_default(), DEFAULT_LIFETIME_SECS);
    assert_eq!(params.version, Lwm2mVersion::V1_0);
    assert_eq!(params.binding, Binding { queue: false });
    Ok(())
}

#[test]
fn queue_mode_in_1_0_is_uq() -> TestResult {
    let params = register(&["ep=dev-1", "lwm2m=1.0", "b=UQ"])?;
    assert_eq!(params.binding, Binding { queue: true });
    assert_eq!(
        register(&["ep=dev-1", "lwm2m=1.0", "b=U", "Q"]),
        Err(Lwm2mError::QueueParamIn1_0)
    );
    assert_eq!(
        register(&["ep=dev-1", "b=U", "Q"]),
        Err(Lwm2mError::QueueParamIn1_0)
    );
    Ok(())
}

#[test]
fn queue_mode_in_1_1_and_1_2_is_the_q_parameter() -> TestResult {
    for version in ["1.1", "1.2"] {
        let lwm2m = format!("lwm2m={version}");
        assert_eq!(
            register(&["ep=d", &lwm2m, "Q"])?.binding,
            Binding { queue: true }
        );
        assert_eq!(
            register(&["ep=d", &lwm2m, "b=U"])?.binding,
            Binding { queue: false }
        );
        assert_eq!(
            register(&["ep=d", &lwm2m, "b=UQ"]),
            Err(Lwm2mError::BadBinding {
                binding: "UQ".into(),
                v1_0: false
            })
        );
    }
    assert_eq!(
        register(&["ep=d", "lwm2m=1.1", "Q=1"]),
        Err(Lwm2mError::QueueParamWithValue)
    );
    Ok(())
}

#[test]
fn other_bindings_are_refused() {
    for b in ["S", "US", "UQS", "T", "N", "u", ""] {
        let query = format!("b={b}");
        let result = register(&["ep=d", "lwm2m=1.0", &query]);
        if b.is_empty() {
            assert_eq!(result, Err(Lwm2mError::MissingValue { name: "b" }));
        } else {
            assert_eq!(
                result,
                Err(Lwm2mError::BadBinding {
                    binding: b.into(),
                    v1_0: true
                }),
                "{b}"
            );
        }
    }
    let err = register(&["ep=d", "lwm2m=1.1", "b=S"]).unwrap_err();
    assert_eq!(
        err.diagnostic(),
        "unsupported binding (b=S): only U, with Q for queue mode"
    );
    let err = register(&["ep=d", "b=SQ"]).unwrap_err();
    assert_eq!(err.diagnostic(), "unsupported binding (b=SQ): only U or UQ");
}

#[test]
fn endpoint_rules() {
    assert_eq!(register(&["lt=300"]), Err(Lwm2mError::MissingEndpoint));
    assert_eq!(
        register(&["ep"]),
        Err(Lwm2mError::MissingValue { name: "ep" })
    );
    assert_eq!(register(&["ep="]), Err(Lwm2mError::BadEndpoint));
    for bad in ["a b", "dev/1", "é", "dev%201", "a+b"] {
        let query = format!("ep={bad}");
        assert_eq!(register(&[&query]), Err(Lwm2mError::BadEndpoint), "{bad}");
    }
    let longest = format!("ep={}", "a".repeat(MAX_ENDPOINT_LEN));
    assert!(register(&[&longest]).is_ok());
    let too_long = format!("ep={}", "a".repeat(MAX_ENDPOINT_LEN + 1));
    assert_eq!(register(&[&too_long]), Err(Lwm2mError::BadEndpoint));
    assert!(register(&["ep=A-z_0.9:x"]).is_ok());
}

#[test]
fn lifetime_bounds_come_from_the_caller() -> TestResult {
    let bad = Lwm2mError::BadLifetime {
        min: 60,
        max: 31_536_000,
    };
    assert_eq!(register(&["ep=d", "lt=60"])?.lifetime_secs, Some(60));
    assert_eq!(
        register(&["ep=d", "lt=31536000"])?.lifetime_secs,
        Some(31_536_000)
    );
    for lt in [
        "lt=59",
        "lt=31536001",
        "lt=-1",
        "lt=+300",
        "lt=3e2",
        "lt=",
        "lt",
        "lt=99999999999",
    ] {
        assert_eq!(register(&["ep=d", lt]), Err(bad.clone()), "{lt}");
    }
    assert_eq!(
        bad.diagnostic(),
        "invalid lifetime (lt): must be 60-31536000 seconds"
    );
    assert_eq!(
        parse_register(&["ep=d", "lt=30"], &(10..=20)),
        Err(Lwm2mError::BadLifetime { min: 10, max: 20 })
    );
    Ok(())
}

#[test]
fn versions() {
    assert_eq!(
        register(&["ep=d", "lwm2m=1.2"]).map(|p| p.version),
        Ok(Lwm2mVersion::V1_2)
    );
    for v in ["lwm2m=2.0", "lwm2m=1", "lwm2m=1.3", "lwm2m=1.1.0"] {
        assert_eq!(register(&["ep=d", v]), Err(Lwm2mError::BadVersion), "{v}");
    }
    assert_eq!(Lwm2mVersion::V1_1.to_string(), "1.1");
    assert!(Lwm2mVersion::V1_0 < Lwm2mVersion::V1_2);
}

#[test]
fn optional_parameters_are_kept_and_unknown_ones_ignored() -> TestResult {
    let params = register(&[
        "ep=d",
        "sms=+8613800000000",
        "et=watermeter",
        "d=fleet",
        "apn=cmnbiot",
        "pct=11543",
    ])?;
    assert_eq!(params.sms_number.as_deref(), Some("+8613800000000"));
    assert_eq!(params.endpoint_type.as_deref(), Some("watermeter"));
    assert_eq!(params.domain.as_deref(), Some("fleet"));
    Ok(())
}

#[test]
fn duplicates_are_refused() {
    assert_eq!(
        register(&["ep=a", "ep=b"]),
        Err(Lwm2mError::Duplicate { name: "ep" })
    );
    assert_eq!(
        register(&["ep=a", "Q", "lwm2m=1.1", "Q"]),
        Err(Lwm2mError::Duplicate { name: "Q" })
    );
}

#[test]
fn update_changes_only_what_it_names() -> TestResult {
    assert_eq!(
        parse_update(&[], Lwm2mVersion::V1_1, &BOUNDS)?,
        UpdateParams::default()
    );
    assert_eq!(
        parse_update(&["lt=600"], Lwm2mVersion::V1_1, &BOUNDS)?,
        UpdateParams {
            lifetime_secs: Some(600),
            ..UpdateParams::default()
        }
    );
    assert_eq!(
        parse_update(&["Q"], Lwm2mVersion::V1_1, &BOUNDS)?.binding,
        Some(Binding { queue: true })
    );
    assert_eq!(
        parse_update(&["b=U"], Lwm2mVersion::V1_2, &BOUNDS)?.binding,
        Some(Binding { queue: false })
    );
    assert_eq!(
        parse_update(&["b=UQ", "sms=123"], Lwm2mVersion::V1_0, &BOUNDS)?,
        UpdateParams {
            lifetime_secs: None,
            binding: Some(Binding { queue: true }),
            sms_number: Some("123".into()),
        }
    );
    // Register-only parameters are ignored.
    assert_eq!(
        parse_update(&["ep=x", "lwm2m=9"], Lwm2mVersion::V1_0, &BOUNDS)?,
        UpdateParams::default()
    );
    assert_eq!(
        parse_update(&["Q"], Lwm2mVersion::V1_0, &BOUNDS),
        Err(Lwm2mError::QueueParamIn1_0)
    );
    assert_eq!(
        parse_update(&["lt=1"], Lwm2mVersion::V1_0, &BOUNDS),
        Err(Lwm2mError::BadLifetime {
            min: 60,
            max: 31_536_000
        })
    );
    assert!(matches!(
        parse_update(&["b=S"], Lwm2mVersion::V1_1, &BOUNDS),
        Err(Lwm2mError::BadBinding { .. })
    ));
    Ok(())
}

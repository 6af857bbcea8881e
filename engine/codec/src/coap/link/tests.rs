//! Tests of the CoRE Link Format parser (RFC 6690) and of the LwM2M object list.

use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const MAX_LINKS: usize = 64;
const MAX_LEN: usize = 4096;

fn links(input: &str) -> Result<Vec<Link>, LinkError> {
    parse(input, MAX_LINKS, MAX_LEN)
}

fn oi(object: u16, instance: Option<u16>) -> ObjectInstance {
    ObjectInstance { object, instance }
}

#[test]
fn lwm2m_register_body() -> TestResult {
    let parsed = links(r#"</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>,</19/0>,</19/1>"#)?;
    assert_eq!(parsed.len(), 5);
    assert_eq!(parsed[0].target, "/");
    assert_eq!(
        parsed[0].params,
        [
            LinkParam {
                name: "rt".into(),
                value: Some(ParamValue::Quoted("oma.lwm2m".into()))
            },
            LinkParam {
                name: "ct".into(),
                value: Some(ParamValue::Token("11543".into()))
            },
        ]
    );
    assert_eq!(parsed[0].value("CT"), Some("11543"));
    assert!(parsed[0].has_resource_type("oma.lwm2m"));
    assert_eq!(parsed[3].target, "/19/0");
    assert!(parsed[3].params.is_empty());
    assert_eq!(
        lwm2m_objects(&parsed),
        [
            oi(1, Some(0)),
            oi(3, Some(0)),
            oi(19, Some(0)),
            oi(19, Some(1))
        ]
    );
    Ok(())
}

/// RFC 6690 §5, the examples of `/.well-known/core` answers.
#[test]
fn rfc6690_examples() -> TestResult {
    let parsed = links(
        r#"</sensors/temp>;if="sensor",</sensors/light>;if="sensor";title="Light \"lux\"";sz=12"#,
    )?;
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[1].value("title"), Some(r#"Light "lux""#));
    assert_eq!(parsed[1].value("sz"), Some("12"));

    let parsed = links(
        r#"</sensors>;ct=40;title="Sensor Index",</sensors/temp>;rt="temperature-c";if="sensor",</sensors/light>;rt="light-lux";if="sensor",<http://www.example.com/sensors/t123>;anchor="/sensors/temp";rel="describedby",</t>;anchor="/sensors/temp";rel="alternate""#,
    )?;
    assert_eq!(parsed.len(), 5);
    assert_eq!(parsed[3].target, "http://www.example.com/sensors/t123");
    assert_eq!(parsed[3].value("anchor"), Some("/sensors/temp"));
    assert!(lwm2m_objects(&parsed).is_empty());
    Ok(())
}

#[test]
fn bare_parameters_and_extensions() -> TestResult {
    let parsed = links(r#"</a>;obs;ct="40 41";title*=UTF-8'de'n%c3%a4chstes"#)?;
    assert_eq!(
        parsed[0].param("obs"),
        Some(&LinkParam {
            name: "obs".into(),
            value: None
        })
    );
    assert_eq!(parsed[0].value("obs"), None);
    assert_eq!(parsed[0].value("ct"), Some("40 41"));
    assert_eq!(parsed[0].value("title*"), Some("UTF-8'de'n%c3%a4chstes"));
    Ok(())
}

#[test]
fn whitespace_around_separators_is_skipped() -> TestResult {
    let parsed = links(" </1/0> ;ver=1.1 ,\r\n</3/0>\n")?;
    assert_eq!(lwm2m_objects(&parsed), [oi(1, Some(0)), oi(3, Some(0))]);
    assert_eq!(parsed[0].value("ver"), Some("1.1"));
    Ok(())
}

#[test]
fn empty_documents_have_no_links() -> TestResult {
    assert!(links("")?.is_empty());
    assert!(links(" \n")?.is_empty());
    Ok(())
}

#[test]
fn syntax_errors_carry_their_offset() {
    let cases: [(&str, LinkError); 11] = [
        ("/1/0", LinkError::ExpectedTarget { offset: 0 }),
        ("</1/0>,", LinkError::ExpectedTarget { offset: 7 }),
        ("</1/0>,,</3>", LinkError::ExpectedTarget { offset: 7 }),
        ("</1/0", LinkError::UnterminatedTarget { offset: 0 }),
        ("</1 0>", LinkError::BadTarget { offset: 3 }),
        ("</1\"0>", LinkError::BadTarget { offset: 3 }),
        ("</1/0>;", LinkError::BadParamName { offset: 7 }),
        ("</1/0>;=1", LinkError::BadParamName { offset: 7 }),
        ("</1/0>;ct=", LinkError::BadParamValue { offset: 10 }),
        (r#"</>;rt="oma"#, LinkError::UnterminatedQuote { offset: 7 }),
        (
            "</1/0> </3/0>",
            LinkError::UnexpectedChar {
                offset: 7,
                found: '<',
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(links(input), Err(expected), "{input:?}");
    }
    assert_eq!(
        links("</a>;t=\"x\u{1}\""),
        Err(LinkError::BadParamValue { offset: 9 })
    );
    assert_eq!(
        links(r#"</a>;t="x\"#),
        Err(LinkError::UnterminatedQuote { offset: 7 })
    );
}

#[test]
fn limits_are_enforced() {
    assert_eq!(
        parse("</1>,</2>,</3>", 2, MAX_LEN),
        Err(LinkError::TooManyLinks { max: 2 })
    );
    assert!(parse("</1>,</2>", 2, MAX_LEN).is_ok());
    assert_eq!(
        parse("</1>,</2>", 2, 8),
        Err(LinkError::TooLong { len: 9, max: 8 })
    );
    assert_eq!(
        parse_bytes(b"</1>,</2>", 2, 8),
        Err(LinkError::TooLong { len: 9, max: 8 })
    );
    assert_eq!(
        parse("</1>", 0, MAX_LEN),
        Err(LinkError::TooManyLinks { max: 0 })
    );
}

#[test]
fn payload_must_be_utf8() {
    assert_eq!(
        parse_bytes(b"</1>;t=\"\xFF\"", MAX_LINKS, MAX_LEN),
        Err(LinkError::NotUtf8 { valid_up_to: 8 })
    );
    assert!(parse_bytes("</1>;t=\"é\"".as_bytes(), MAX_LINKS, MAX_LEN).is_ok());
}

#[test]
fn alternate_path_prefix() -> TestResult {
    let parsed = links(
        r#"</lwm2m>;rt="oma.lwm2m",</lwm2m/1/0>,</lwm2m/3>,</lwm2m/3/0>,</1/0>,</lwm2mx/5/0>"#,
    )?;
    assert_eq!(
        lwm2m_objects(&parsed),
        [oi(1, Some(0)), oi(3, None), oi(3, Some(0))]
    );
    let parsed = links(r#"</lwm2m/>;rt="core.rd oma.lwm2m",</lwm2m/19/0>"#)?;
    assert_eq!(lwm2m_objects(&parsed), [oi(19, Some(0))]);
    Ok(())
}

#[test]
fn objects_skip_what_is_not_an_object_or_instance() -> TestResult {
    let parsed = links(
        "</>,</1>;ver=1.1,</1/0>,</3/0/1>,</x/0>,</65535/0>,</3/65534>,</-1>,</70000>,</>,</3//>,<3/0>",
    )?;
    assert_eq!(
        lwm2m_objects(&parsed),
        [oi(1, None), oi(1, Some(0)), oi(3, Some(65_534))]
    );
    Ok(())
}

#[test]
fn render_writes_what_parse_reads() -> TestResult {
    let input = r#"</>;rt="oma.lwm2m";ct=11543,</1/0>,</a>;obs;title="q\"b\\s""#;
    let parsed = links(input)?;
    let rendered = render(&parsed);
    assert_eq!(rendered, input);
    assert_eq!(links(&rendered)?, parsed);
    Ok(())
}

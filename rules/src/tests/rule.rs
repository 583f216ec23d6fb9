use super::*;

fn shape(mirrored: &[&str], target: &[&str], part: &[&str]) -> TableShape {
    let v = |s: &[&str]| s.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    TableShape {
        legacy_columns: v(mirrored),
        target_columns: v(target),
        mirrored_columns: v(mirrored),
        target_partition_key: v(part),
        ..TableShape::default()
    }
}

#[test]
fn defaults_fill_in() {
    let rule = Rule::new(
        TableName::parse("orders").unwrap(),
        Mode::DualWrite,
        vec!["id".into()],
    );
    assert_eq!(rule.table, TableName::new(Some("public"), "orders"));
    assert_eq!(rule.target, TableName::new(Some("public"), "orders_v2"));
    assert_eq!(rule.on_mirror_error, MirrorErrorPolicy::Fail);
    assert_eq!(rule.sample_rate, 0.0, "shadow sampling is opt-in");
}

#[test]
fn deserializes_from_config() {
    let rule: Rule = toml::from_str(
        r#"
        table = "app.\"Orders\""
        mode = "dual_write"
        key = ["id"]
        on_mirror_error = "record"
        set = [["source", "'tandem'"]]
        sample_rate = 0.5
        "#,
    )
    .unwrap();
    assert_eq!(rule.table, TableName::new(Some("app"), "Orders"));
    assert_eq!(rule.target, TableName::new(Some("app"), "Orders_v2"));
    assert_eq!(rule.mode, Mode::DualWrite);
    assert_eq!(rule.on_mirror_error, MirrorErrorPolicy::Record);
    assert_eq!(
        rule.set,
        vec![("source".to_string(), "'tandem'".to_string())]
    );

    let rule: Rule =
        toml::from_str("table = 'orders'\ntarget = 'orders_new'\nkey = ['id']").unwrap();
    assert_eq!(rule.mode, Mode::Off);
    assert_eq!(rule.target, TableName::new(Some("public"), "orders_new"));
}

#[test]
fn every_mode_is_representable() {
    for (text, mode) in [
        ("off", Mode::Off),
        ("dual_write", Mode::DualWrite),
        ("union_read", Mode::UnionRead),
        ("cutover", Mode::Cutover),
        ("target_only", Mode::TargetOnly),
    ] {
        let rule: Rule =
            toml::from_str(&format!("table = 't'\nmode = '{text}'\nkey = ['id']")).unwrap();
        assert_eq!(rule.mode, mode);
        assert_eq!(mode.as_str(), text);
    }
}

#[test]
fn bad_configs_are_refused() {
    let err = |text: &str| toml::from_str::<Rule>(text).unwrap_err().to_string();
    // An empty or missing key is allowed in configuration (the primary key is used) but
    // a resolved rule must have one.
    assert!(toml::from_str::<Rule>("table = 't'")
        .unwrap()
        .key
        .is_empty());
    let keyless: Rule = toml::from_str("table = 't'\nkey = []").unwrap();
    let shape = TableShape {
        legacy_columns: vec!["id".into()],
        target_columns: vec!["id".into()],
        mirrored_columns: vec!["id".into()],
        target_partition_key: vec![],
        ..TableShape::default()
    };
    assert!(matches!(
        ResolvedRule::new(keyless, shape),
        Err(RuleError::NoKey(_))
    ));
    assert!(err("table = 't'\nkey = ['id']\nsample_rate = 2.0").contains("sample_rate"));
    assert!(err("table = 't'\nkey = ['id']\nset = [['c', 'now(']]").contains("does not parse"));
    assert!(err("table = 't'\ntarget = 'public.t'\nkey = ['id']").contains("must differ"));
    assert!(err("table = 't'\nkey = ['id']\nbogus = 1").contains("bogus"));
}

#[test]
fn shape_is_checked_against_the_rule() {
    let rule = |key: &[&str]| {
        Rule::new(
            TableName::parse("t").unwrap(),
            Mode::DualWrite,
            key.iter().map(|k| k.to_string()).collect(),
        )
    };
    assert!(ResolvedRule::new(rule(&["id"]), shape(&["id", "a"], &["id", "a"], &[])).is_ok());
    assert!(matches!(
        ResolvedRule::new(rule(&["nope"]), shape(&["id"], &["id"], &[])),
        Err(RuleError::KeyNotMirrored(_, _))
    ));
    assert!(matches!(
        ResolvedRule::new(
            rule(&["id"]),
            shape(&["id", "region"], &["id", "region"], &["region"])
        ),
        Err(RuleError::PartitionKeyNotInKey(_, _))
    ));
    let mut with_set = rule(&["id"]);
    with_set.set = vec![("missing".into(), "1".into())];
    assert!(matches!(
        ResolvedRule::new(with_set.clone(), shape(&["id"], &["id"], &[])),
        Err(RuleError::SetColumnMissing(_, _))
    ));
    with_set.set = vec![("id".into(), "1".into())];
    assert!(matches!(
        ResolvedRule::new(with_set, shape(&["id"], &["id"], &[])),
        Err(RuleError::SetColumnMirrored(_, _))
    ));
}

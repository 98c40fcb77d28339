//! Tests of selector parsing, refusal messages, strengths and ordering.

use super::*;

const HEX: &str = "3f1c2b0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

fn err(s: &str) -> String {
    s.parse::<Selector>().unwrap_err().to_string()
}

#[test]
fn accepts_every_documented_shape() {
    for s in [
        "unix:uid:1000".to_string(),
        "unix:user:agent".into(),
        "unix:gid:0".into(),
        "unix:group:wheel".into(),
        "unix:supplementary_gid:27".into(),
        "unix:supplementary_group:docker".into(),
        "unix:path:/usr/bin/python3.11".into(),
        format!("unix:sha256:{HEX}"),
        "script:interpreter:python3".into(),
        "script:path:/opt/agent/main.py".into(),
        format!("script:sha256:{HEX}"),
        format!("config:sha256:/etc/agents/support/prompt.md:{HEX}"),
        format!("config:sha256:/odd:name/with:colons:{HEX}"),
        "env:AGENT_ROLE:support".into(),
        "env:URL:http://x:8080/".into(),
        "env:EMPTY:".into(),
        "systemd:id:support-agent.service".into(),
        "systemd:fragment_path:/etc/systemd/system/support-agent.service".into(),
        "cgroup:path:/system.slice/support-agent.service".into(),
        format!("container:id:{HEX}"),
        "container:runtime:cri-o".into(),
        "k8s:pod-uid:7f3b2c1a-1234-4cde-9abc-0123456789ab".into(),
    ] {
        let sel: Selector = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(sel.to_string(), s);
    }
}

#[test]
fn refusals_say_what_to_write() {
    assert!(err("unix:uid:root").contains("unix:user:root"));
    assert!(err(&format!("unix:sha256:{}", HEX.to_uppercase())).contains(HEX));
    assert!(err("unix:sha256:abc").contains("64 lowercase hex"));
    assert!(err("unix:path:bin/x").contains("unix:path:/bin/x"));
    assert!(err("unix:pid:3").contains("unix:uid:…"));
    assert!(err("uinx:uid:3").contains("did you mean \"unix\""));
    assert!(err("config:sha256:/etc/x").contains("config:sha256:/absolute/path:HEX"));
    assert!(err(&format!("config:sha256:/etc/../x:{HEX}")).contains(".."));
    assert!(err("env:1BAD:x").contains("env:AGENT_ROLE"));
    assert!(err("env:ROLE").contains("env:ROLE:"));
    assert!(err("systemd:id:foo").contains("systemd:id:foo.service"));
    assert!(err("container:runtime:lxc").contains("docker"));
    assert!(err("k8s:ns:default").contains("k8s:pod-uid"));
    assert!(err("k8s:pod-uid:7F3B").contains("k8s:pod-uid:"));
    assert!(matches!("nocolon".parse::<Selector>(), Err(SelectorError::Malformed(_))));
}

#[test]
fn strengths() {
    let s = |x: &str| x.parse::<Selector>().unwrap().strength();
    assert_eq!(s("unix:uid:1"), Strength::Kernel);
    assert_eq!(s(&format!("config:sha256:/a:{HEX}")), Strength::Kernel);
    assert_eq!(s("cgroup:path:/system.slice/a.service"), Strength::Kernel);
    assert_eq!(s("cgroup:path:/user.slice/user-1000.slice/user@1000.service/app.slice/a.service"), Strength::Weak);
    assert_eq!(s("script:path:/a.py"), Strength::Weak);
    assert_eq!(s("env:A:b"), Strength::Weak);
}

#[test]
fn kinds_round_trip_and_order_like_their_text() {
    for k in Kind::ALL {
        assert_eq!(Kind::from_name(k.as_str()), Some(k));
        assert_eq!(k, k.as_str());
    }
    assert_eq!(known_selector_types(), ["unix", "script", "config", "env", "systemd", "cgroup", "container", "k8s"]);
    assert_eq!(Kind::from_name("Unix"), None);
    let texts = [
        "unix:uid:1".to_string(),
        "k8s:pod-uid:7f3b2c1a-1234-4cde-9abc-0123456789ab".into(),
        "env:A:b".into(),
        format!("container:id:{HEX}"),
        format!("config:sha256:/a:{HEX}"),
        "cgroup:path:/a".into(),
        "systemd:id:a.service".into(),
        "script:path:/a.py".into(),
        "unix:gid:1".into(),
    ];
    let set: std::collections::BTreeSet<Selector> = texts.iter().map(|t| t.parse().unwrap()).collect();
    let mut sorted = texts.to_vec();
    sorted.sort();
    assert_eq!(set.iter().map(ToString::to_string).collect::<Vec<_>>(), sorted);
    // Serialize uses Display (collect_str), Deserialize uses FromStr: the text form both ways.
    let sel: Selector = "unix:uid:1".parse().unwrap();
    assert_eq!(sel.kind(), Kind::Unix);
    assert_eq!(sel.to_string(), "unix:uid:1");
}

#[test]
fn config_path_extraction() {
    let sel: Selector = format!("config:sha256:/etc/a:b/p.md:{HEX}").parse().unwrap();
    assert_eq!(config_path_of(&sel), Some(PathBuf::from("/etc/a:b/p.md")));
    assert_eq!(config_path_of(&"unix:uid:1".parse().unwrap()), None);
}

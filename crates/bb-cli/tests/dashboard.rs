//! The Grafana dashboard in docs/ queries only metrics the programs export,
//! under the names and labels they export them with.

use bb_util::metrics::Family;

fn families() -> Vec<&'static Family> {
    [bb_scheduler::metrics::FAMILIES, bb_storage::metrics::FAMILIES, bb_worker::metrics::FAMILIES]
        .into_iter()
        .flatten()
        .collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-dashboard.json"))
            .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let families = families();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("bb_"))
            {
                let base = name.strip_suffix("_bucket").unwrap_or(name);
                let family = families.iter().find(|f| f.name == base);
                let family = family.unwrap_or_else(|| {
                    panic!("panel {:?} queries {name}, which nothing exports", panel["title"])
                });
                if let Some(label) = expr.split("by (").nth(1).and_then(|rest| rest.split(')').next()) {
                    for label in label.split(',').map(str::trim).filter(|l| *l != "le") {
                        assert_eq!(
                            family.label.map(|(key, _)| key),
                            Some(label),
                            "{name} has no label {label}"
                        );
                    }
                }
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "only {queried} queries found");
}

//! Checks that `template.yaml`'s alarms and dashboard read only the metrics, and the dimension
//! sets, of Sluice's metric contract (docs/architecture.md, "Observability"), and that every
//! alarm follows the naming and notification rules the health summary relies on.

use serde_yaml::Value;

use crate::telemetry;

/// The template, as built into the crate.
const TEMPLATE: &str = include_str!("../../../template.yaml");

/// Panics unless `metric` with the dimension names `dims` is a series of the contract.
fn assert_in_contract(metric: &str, dims: &[String], at: &str) {
    let Some(def) = telemetry::ALL.iter().find(|def| def.name == metric) else {
        panic!("{at}: metric {metric} is not in the contract");
    };
    let ok = dims.is_empty()
        || def
            .dimension_sets
            .iter()
            .any(|set| set.iter().eq(dims.iter()));
    assert!(ok, "{at}: {metric} has no dimension set {dims:?}");
}

fn template() -> Value {
    serde_yaml::from_str(TEMPLATE).expect("template.yaml parses")
}

/// The argument of an intrinsic tag such as `!Ref X`, if `value` is that tag.
fn tagged<'v>(value: &'v Value, tag: &str) -> Option<&'v Value> {
    match value {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

fn is_ref(value: &Value, name: &str) -> bool {
    tagged(value, "!Ref").and_then(Value::as_str) == Some(name)
}

fn resources_of_type<'t>(doc: &'t Value, kind: &str) -> Vec<(String, &'t Value)> {
    let Some(Value::Mapping(resources)) = doc.get("Resources") else {
        panic!("template has no Resources");
    };
    resources
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
        .map(|(id, r)| (id.as_str().unwrap_or_default().to_owned(), &r["Properties"]))
        .collect()
}

/// Checks one `Metric` (or alarm properties) block if it reads Sluice's namespace.
fn check_metric(metric: &Value, at: &str) -> bool {
    if !is_ref(&metric["Namespace"], "MetricsNamespace") {
        return false;
    }
    let name = metric["MetricName"].as_str().expect("MetricName");
    let dims: Vec<String> = metric
        .get("Dimensions")
        .and_then(Value::as_sequence)
        .map(|ds| {
            ds.iter()
                .map(|d| d["Name"].as_str().expect("Name").to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_in_contract(name, &dims, at);
    true
}

#[test]
fn alarms_read_contract_metrics_and_notify_the_topic() {
    let doc = template();
    let alarms = resources_of_type(&doc, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 7, "expected the seven required alarms");
    let mut sluice_metrics = 0;
    for (id, alarm) in &alarms {
        let name = tagged(&alarm["AlarmName"], "!Sub").and_then(Value::as_str);
        assert!(
            name.is_some_and(|n| n.starts_with("${AWS::StackName}-")),
            "{id}: AlarmName must be !Sub \"${{AWS::StackName}}-<suffix>\""
        );
        assert_eq!(
            alarm["TreatMissingData"].as_str(),
            Some("notBreaching"),
            "{id}"
        );
        for actions in ["AlarmActions", "OKActions"] {
            let list = alarm[actions].as_sequence().expect(actions);
            assert!(
                list.len() == 1 && is_ref(&list[0], "AlarmTopic"),
                "{id}: {actions} must be [!Ref AlarmTopic]"
            );
        }
        if check_metric(alarm, id) {
            sluice_metrics += 1;
        }
        for query in alarm
            .get("Metrics")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(stat) = query.get("MetricStat") {
                if check_metric(&stat["Metric"], id) {
                    sluice_metrics += 1;
                }
            }
        }
    }
    assert!(sluice_metrics >= 5, "latency, errors and 3 outcome series");
}

#[test]
fn dashboard_reads_contract_metrics() {
    let doc = template();
    let dashboards = resources_of_type(&doc, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1);
    let body = tagged(&dashboards[0].1["DashboardBody"], "!Sub")
        .and_then(Value::as_str)
        .expect("DashboardBody is a !Sub string");
    // Fn::Sub: the namespace becomes NS, every other ${...} a 0 (valid quoted or not).
    let mut json = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        json.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("closed ${");
        let var = &rest[start + 2..end];
        json.push_str(if var == "MetricsNamespace" { "NS" } else { "0" });
        rest = &rest[end + 1..];
    }
    json.push_str(rest);
    let body: serde_json::Value = serde_json::from_str(&json).expect("dashboard body is JSON");

    let mut seen = Vec::new();
    for widget in body["widgets"].as_array().expect("widgets") {
        let title = widget["properties"]["title"].as_str().unwrap_or_default();
        for metric in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let parts = metric.as_array().expect("a metric is an array");
            let strings: Vec<&str> = parts.iter().map_while(|p| p.as_str()).collect();
            if strings.first() == Some(&"NS") {
                let dims: Vec<String> = strings[2..]
                    .iter()
                    .step_by(2)
                    .map(|d| d.to_string())
                    .collect();
                assert_in_contract(strings[1], &dims, title);
                seen.push(strings[1].to_owned());
            }
            for expression in parts.iter().filter_map(|p| p["expression"].as_str()) {
                if let Some(schema) = expression.strip_prefix("SEARCH('{NS,") {
                    let (dims, after) = schema.split_once('}').expect("schema closes");
                    let name = after
                        .split_once("MetricName=\"")
                        .and_then(|(_, n)| n.split_once('"'))
                        .map(|(n, _)| n)
                        .expect("SEARCH names its metric");
                    let dims: Vec<String> = dims.split(',').map(str::to_owned).collect();
                    assert_in_contract(name, &dims, title);
                    seen.push(name.to_owned());
                }
            }
        }
    }
    for required in [
        "pipeline_run_outcome_total",
        "tool_latency_ms",
        "tool_error",
        "breaker_transitions_total",
        "pipeline_throttled_total",
    ] {
        assert!(
            seen.iter().any(|s| s == required),
            "dashboard lacks {required}"
        );
    }
}

#[test]
fn functions_get_the_namespace_and_replay_the_alarm_prefix() {
    let doc = template();
    let globals = &doc["Globals"]["Function"]["Environment"]["Variables"];
    assert!(is_ref(
        &globals["SLUICE_METRICS_NAMESPACE"],
        "MetricsNamespace"
    ));
    let replay = &doc["Resources"]["ReplayFunction"]["Properties"];
    assert_eq!(
        tagged(
            &replay["Environment"]["Variables"]["SLUICE_ALARM_PREFIX"],
            "!Sub"
        )
        .and_then(Value::as_str),
        Some("${AWS::StackName}-")
    );
    let statements = replay["Policies"][0]["Statement"]
        .as_sequence()
        .expect("statements");
    assert!(statements
        .iter()
        .any(|s| s["Action"].as_str() == Some("cloudwatch:DescribeAlarms")));
}

#[test]
fn every_route_of_the_http_api_is_throttled_by_parameters() {
    let doc = template();
    let apis = resources_of_type(&doc, "AWS::Serverless::HttpApi");
    assert_eq!(apis.len(), 1, "one HTTP API");
    let settings = &apis[0].1["DefaultRouteSettings"];
    for (property, parameter, default) in [
        ("ThrottlingBurstLimit", "ApiThrottlingBurstLimit", 200),
        ("ThrottlingRateLimit", "ApiThrottlingRateLimit", 100),
    ] {
        assert!(
            is_ref(&settings[property], parameter),
            "DefaultRouteSettings.{property} is !Ref {parameter}"
        );
        let p = &doc["Parameters"][parameter];
        assert_eq!(p["Type"].as_str(), Some("Number"), "{parameter}");
        assert_eq!(p["Default"].as_u64(), Some(default), "{parameter}");
        assert!(
            p["MinValue"].as_u64().is_some_and(|min| min >= 1),
            "{parameter}: 0 would refuse every request"
        );
    }
    // No route overrides them (a per-route setting would bypass the default).
    assert!(apis[0].1.get("RouteSettings").is_none());
}

#[test]
fn the_executor_is_told_its_own_timeout_visibility_and_batch_size() {
    let doc = template();
    let executor = &doc["Resources"]["ExecutorFunction"]["Properties"];
    let vars = &executor["Environment"]["Variables"];
    let var = |name: &str| -> u64 {
        let text = vars[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is a string"));
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text} is a number"))
    };
    let number = |v: &Value, what: &str| v.as_u64().unwrap_or_else(|| panic!("{what}"));
    assert_eq!(
        var(crate::config::EXECUTOR_TIMEOUT_VAR),
        number(&executor["Timeout"], "executor Timeout")
    );
    let queue = &doc["Resources"]["StageQueue"]["Properties"];
    assert_eq!(
        var(crate::config::STAGE_QUEUE_VISIBILITY_VAR),
        number(&queue["VisibilityTimeout"], "VisibilityTimeout")
    );
    let trigger = &executor["Events"]["Stages"]["Properties"];
    assert_eq!(
        var(crate::config::EXECUTOR_BATCH_SIZE_VAR),
        number(&trigger["BatchSize"], "BatchSize")
    );
    // And they pass the executor's cold-start check with the example manifest.
    let lookup = |name: &str| vars[name].as_str().map(str::to_owned);
    let config = crate::config::ReliabilityConfig::from_lookup(lookup).expect("config");
    let manifest = crate::manifest::Manifest::parse(
        include_str!("../../../infra/sluice.example.yaml"),
        "sluice.example.yaml",
    )
    .expect("example manifest");
    let flush = std::time::Duration::from_secs(20);
    let fit = crate::startup::validate_executor(lookup, &config, &manifest, flush)
        .expect("the template's limits fit")
        .expect("the template sets them");
    assert!(fit.worst_batch_ms <= 90_000, "{fit:?}");
}

//! CloudWatch Embedded Metric Format: one JSON object per line, whose `_aws` member tells
//! CloudWatch Logs which members are metrics (with units) and which are dimensions.
//! Metrics that share their dimension sets share one directive.

use serde_json::{json, Map, Value};

use super::MetricDef;
use crate::domain::time::Timestamp;

/// The EMF line for `values` recorded at `at`, the dimension values in `dims`.
pub fn line(
    namespace: &str,
    at: Timestamp,
    values: &[(MetricDef, f64)],
    dims: &[(&str, &str)],
) -> String {
    let mut directives: Vec<(&'static [&'static [&'static str]], Vec<Value>)> = Vec::new();
    for (def, _) in values {
        let metric = json!({"Name": def.name, "Unit": def.unit.as_str()});
        match directives
            .iter_mut()
            .find(|(sets, _)| *sets == def.dimension_sets)
        {
            Some((_, metrics)) => metrics.push(metric),
            None => directives.push((def.dimension_sets, vec![metric])),
        }
    }
    let directives: Vec<Value> = directives
        .into_iter()
        .map(|(sets, metrics)| {
            let mut dimensions: Vec<Value> = sets.iter().map(|set| json!(set)).collect();
            // The aggregate across every value of every dimension.
            dimensions.push(json!([]));
            json!({"Namespace": namespace, "Dimensions": dimensions, "Metrics": metrics})
        })
        .collect();

    let mut object = Map::new();
    object.insert(
        "_aws".into(),
        json!({"Timestamp": at.as_millis(), "CloudWatchMetrics": directives}),
    );
    for (key, value) in dims {
        object.insert((*key).to_owned(), Value::String((*value).to_owned()));
    }
    for (def, value) in values {
        object.insert(def.name.to_owned(), json!(value));
    }
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{BREAKER_TRANSITIONS, RETRIES, THROTTLED};

    #[test]
    fn metrics_with_other_dimension_sets_get_their_own_directive() {
        let text = line(
            "Ns",
            Timestamp::from_millis(5),
            &[(RETRIES, 1.0), (THROTTLED, 1.0)],
            &[("Pipeline", "p"), ("Cause", "rate_limit")],
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        let directives = v["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 2);
        assert_eq!(directives[0]["Dimensions"], json!([["Pipeline"], []]));
        assert_eq!(directives[1]["Dimensions"], json!([["Cause"], []]));
        assert_eq!(v["Cause"], "rate_limit");
    }

    #[test]
    fn breaker_transitions_carry_both_dimension_sets_and_the_aggregate() {
        let text = line(
            "Ns",
            Timestamp::from_millis(5),
            &[(BREAKER_TRANSITIONS, 1.0)],
            &[("Connector", "crm"), ("To", "open")],
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Connector", "To"], ["To"], []])
        );
    }
}

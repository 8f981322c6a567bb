//! Every address a rollout would call, checked before anything changes (exit 2 with the field it
//! came from and the fix), so a rollout never shifts traffic and then fails on an address it could
//! never call. The URL rules themselves are [`crate::urls::check_address`].

use crate::spec::{Canary, Diagnostic, MetricTemplate};
use crate::urls::{check_address, redact, AddressProblem};

/// Every address a rollout of `canary` would call, checked before anything changes:
/// `prometheus_url` (`--prometheus-url`, `AVIARY_PROMETHEUS_URL`, the step's `prometheus-url`),
/// the Canary's `spec.metricsServer`, each `spec.analysis.webhooks[i].url` and each template's
/// `spec.provider.address` (empty ones mean "not set" and are skipped, as the metrics code reads
/// them). Each error names the file and line of the document, the field, the address (redacted),
/// what is wrong and the fix; all of them are returned at once.
///
/// Errors are [`Diagnostic`]s so a caller can report them as spec errors (exit 2):
/// `SpecError::Invalid { errors, warnings: vec![] }`. The flag's file is `--prometheus-url`.
pub fn check_addresses(
    canary: &Canary,
    templates: &[MetricTemplate],
    prometheus_url: Option<&str>,
) -> Result<(), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut check = |file: &str, line: usize, path: &str, what: &str, address: &str| {
        if address.trim().is_empty() {
            return;
        }
        if let Err(problem) = check_address(address) {
            errors.push(address_error(file, line, path, what, address, &problem));
        }
    };
    if let Some(url) = prometheus_url {
        check("--prometheus-url", 0, "", "the Prometheus address", url);
    }
    let (file, line) = (canary.origin.file.as_str(), canary.origin.line);
    if let Some(server) = &canary.metrics_server {
        check(
            file,
            line,
            "spec.metricsServer",
            "the Prometheus address",
            server,
        );
    }
    if let Some(analysis) = &canary.analysis {
        for (i, hook) in analysis.webhooks.iter().enumerate() {
            check(
                file,
                line,
                &format!("spec.analysis.webhooks[{i}].url"),
                &format!("the URL of webhook {:?}", hook.name),
                &hook.url,
            );
        }
    }
    for t in templates {
        if let Some(address) = &t.provider.address {
            check(
                &t.origin.file,
                t.origin.line,
                "spec.provider.address",
                &format!("the address of MetricTemplate {}.{}", t.name, t.namespace),
                address,
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn address_error(
    file: &str,
    line: usize,
    path: &str,
    what: &str,
    address: &str,
    problem: &AddressProblem,
) -> Diagnostic {
    let shown = redact(address);
    let example = if path.contains("webhooks") {
        "http://flagger-loadtester.test/"
    } else {
        "http://prometheus.monitoring:9090"
    };
    let trimmed = address.trim();
    let help = match problem {
        // `prometheus:9090`, `localhost:9090`: a host and port without the scheme.
        AddressProblem::Scheme(_) | AddressProblem::NotAUrl
            if !trimmed.contains("://") && !trimmed.contains(char::is_whitespace) =>
        {
            format!(
                "write the full address with http:// or https://, for example http://{}",
                redact(trimmed)
            )
        }
        _ => format!("write it as http(s)://host[:port][/path], for example {example}"),
    };
    Diagnostic::error(
        file,
        line,
        path,
        format!("{what} {shown:?} cannot be called: {problem}"),
    )
    .with_help(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(hooks: &[(&str, &str)], metrics_server: Option<&str>) -> Canary {
        let mut hook_yaml = String::new();
        for (name, url) in hooks {
            hook_yaml.push_str(&format!(
                "      - name: {name}\n        type: rollout\n        url: {url}\n"
            ));
        }
        let server = metrics_server
            .map(|s| format!("  metricsServer: {s:?}\n"))
            .unwrap_or_default();
        let text = format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n{server}  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n    interval: 1m\n    threshold: 2\n    stepWeight: 10\n    maxWeight: 50\n    webhooks:\n{hook_yaml}"
        );
        let docs = match crate::spec::load_str("canary.yaml", &text) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        match docs.canaries.into_iter().next() {
            Some(c) => c,
            None => panic!("no canary"),
        }
    }

    fn template(address: &str) -> MetricTemplate {
        let text = format!(
            "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: errors\n  namespace: test\nspec:\n  provider:\n    type: prometheus\n    address: {address:?}\n  query: up\n"
        );
        match crate::spec::load_str("templates.yaml", &text) {
            Ok(d) => match d.templates.into_iter().next() {
                Some(t) => t,
                None => panic!("no template"),
            },
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_address_of_a_rollout_is_checked_with_its_field_and_fix() {
        let c = canary(
            &[
                ("ok", "http://loadtester.test/"),
                ("also-ok", "https://u:p@hooks.test/x"),
            ],
            None,
        );
        assert_eq!(
            check_addresses(&c, &[], Some("http://prometheus:9090")),
            Ok(())
        );
        assert_eq!(check_addresses(&c, &[], None), Ok(()));
        assert_eq!(check_addresses(&c, &[], Some("  ")), Ok(()));

        let c = canary(
            &[("ok", "http://loadtester.test/")],
            Some("prometheus:9090"),
        );
        let t = template("ftp://admin:hunter2@metrics.test");
        let errors = match check_addresses(&c, &[t], Some("not a url")) {
            Err(e) => e,
            Ok(()) => panic!("accepted"),
        };
        let text: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(errors.len(), 3, "{text:#?}");
        assert_eq!(
            text[0],
            "--prometheus-url: the Prometheus address \"not a url\" cannot be called: it is not a URL\n  help: write it as http(s)://host[:port][/path], for example http://prometheus.monitoring:9090"
        );
        assert_eq!(errors[1].path, "spec.metricsServer");
        assert_eq!(errors[1].file, "canary.yaml");
        assert!(errors[1].line > 0);
        assert!(
            text[1].contains("the scheme must be http or https, not \"prometheus\""),
            "{}",
            text[1]
        );
        assert!(
            text[1].contains("for example http://prometheus:9090"),
            "{}",
            text[1]
        );
        assert_eq!(errors[2].path, "spec.provider.address");
        assert_eq!(errors[2].file, "templates.yaml");
        assert!(
            text[2].contains("MetricTemplate errors.test"),
            "{}",
            text[2]
        );
        assert!(
            text[2].contains("\"ftp://***@metrics.test\""),
            "{}",
            text[2]
        );
        assert!(!text.concat().contains("hunter2"));
    }

    #[test]
    fn a_bad_webhook_url_names_its_index() {
        let mut c = canary(&[("a", "http://ok.test/"), ("b", "http://ok.test/")], None);
        if let Some(a) = c.analysis.as_mut() {
            a.webhooks[1].url = "http://user:hunter2@".into();
        }
        let errors = check_addresses(&c, &[], None).err().unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "spec.analysis.webhooks[1].url");
        let text = errors[0].to_string();
        assert!(text.contains("webhook \"b\""), "{text}");
        assert!(text.contains("it has no host"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

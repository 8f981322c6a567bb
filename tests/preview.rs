//! `service.previewHosts` (aviary.dev) end to end: the real `aviary rollout` binary against the
//! API server emulator writes, beside each router's own objects, one preview object that sends
//! the preview host to the canary Service alone, and keeps it so through a bootstrap, a
//! promotion and a rollback (put back when someone deletes it), and deletes it once the Canary no
//! longer has `previewHosts`. The sandbox's end-to-end test
//! (`sandbox::a_good_release_is_promoted_without_a_failed_request`) sends real requests to it.

use serde_json::{json, Value};

use super::routers::{
    applied_by_aviary, canary, insert, rollouts, user_ingress, CANARY_STEPS, HTTPROUTE, INGRESS,
    INGRESS_REF, ISTIO,
};
use crate::util::*;

const PREVIEW: &str = "    previewHosts: [canary.example.com]";

/// The three rollouts for `provider`, checking after each that the preview object (`api`,
/// `plural`, `name`) was applied by aviary and that `reaches_canary` holds for it; before the
/// last, the preview object is deleted, and the rollout puts it back.
#[allow(clippy::too_many_arguments)]
fn preview_through_every_run(
    provider: &str,
    spec: &str,
    service: &str,
    setup: impl FnOnce(&Cluster),
    (api, plural, name): (&str, &str, &str),
    reaches_canary: impl Fn(&Value),
) {
    let c = cluster();
    let hook = Hook::start();
    setup(&c);
    let file = c.write(
        "canary.yaml",
        &canary(
            provider,
            spec,
            &format!("{service}\n{PREVIEW}"),
            CANARY_STEPS,
            &hook.url,
        ),
    );
    let check = |c: &Cluster| {
        let object = c.get(api, plural, name);
        assert!(applied_by_aviary(&object), "{provider}: {object}");
        reaches_canary(&object);
    };
    rollouts(
        &c,
        &hook,
        &file,
        check,
        |c| {
            check(c);
            c.emu
                .delete(api, plural, Some("test"), name)
                .unwrap_or_else(|e| panic!("delete {name}: {e}"));
            assert_eq!(c.get(api, plural, name), Value::Null);
        },
        check,
    );
    // previewHosts taken out of the Canary: the next rollout deletes the preview object.
    let without = c.write(
        "canary.yaml",
        &canary(provider, spec, service, CANARY_STEPS, &hook.url),
    );
    hook.set(200);
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.3.0", 2);
    let out = c.run(&without);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(c.get(api, plural, name), Value::Null, "{provider}");
}

#[test]
fn gatewayapi_preview_route_on_the_gateway_for_the_canary_only() {
    preview_through_every_run(
        "gatewayapi:v1",
        "",
        "    hosts: [app.example.com]\n    gatewayRefs: [{name: public, namespace: gateway-system}]",
        |_| {},
        (HTTPROUTE, "httproutes", "podinfo-preview"),
        |route| {
            assert_eq!(route["spec"]["hostnames"], json!(["canary.example.com"]));
            assert_eq!(
                route["spec"]["parentRefs"],
                json!([{"name": "public", "namespace": "gateway-system"}])
            );
            assert_eq!(
                route["spec"]["rules"],
                json!([{"backendRefs": [{"name": "podinfo-canary", "port": 9898, "weight": 100}]}])
            );
            // Accepted by its Gateway, like the main route.
            assert_eq!(
                route["status"]["parents"][0]["conditions"][0]["type"],
                "Accepted"
            );
        },
    );
}

#[test]
fn istio_preview_virtualservice_for_the_canary_only() {
    preview_through_every_run(
        "istio",
        "",
        "    hosts: [app.example.com]\n    gateways: [public-gateway.istio-system.svc.cluster.local]",
        |_| {},
        (ISTIO, "virtualservices", "podinfo-preview"),
        |vs| {
            assert_eq!(vs["spec"]["hosts"], json!(["canary.example.com"]));
            assert_eq!(
                vs["spec"]["gateways"],
                json!(["public-gateway.istio-system.svc.cluster.local"])
            );
            assert_eq!(
                vs["spec"]["http"],
                json!([{"route": [{"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 100}]}])
            );
        },
    );
}

#[test]
fn nginx_preview_ingress_for_the_canary_only() {
    preview_through_every_run(
        "nginx",
        INGRESS_REF,
        "",
        |c| insert(c, user_ingress()),
        (INGRESS, "ingresses", "podinfo-preview"),
        |ing| {
            // A plain Ingress of the user's class (no canary annotation: ingress-nginx serves
            // it as the one Ingress of its host), the user's other annotations, no TLS.
            let annotations = &ing["metadata"]["annotations"];
            assert_eq!(
                annotations["nginx.ingress.kubernetes.io/proxy-body-size"],
                "8m"
            );
            assert_eq!(
                annotations["nginx.ingress.kubernetes.io/canary"],
                Value::Null
            );
            assert_eq!(
                ing["spec"],
                json!({
                    "ingressClassName": "nginx",
                    "rules": [{"host": "canary.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "podinfo-canary", "port": {"number": 9898}}}}
                    ]}}]
                })
            );
        },
    );
}

#[test]
fn a_provider_without_host_routing_warns_and_writes_no_preview() {
    let c = cluster();
    let hook = Hook::start();
    let file = c.write(
        "canary.yaml",
        &canary("kubernetes:replicas", "", PREVIEW, CANARY_STEPS, &hook.url),
    );
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.0.0", 2);
    let out = c.run(&file);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "service.previewHosts has no effect with provider kubernetes:replicas, which routes no host names"
        ),
        "{}",
        stderr(&out)
    );
    for (api, plural) in [(HTTPROUTE, "httproutes"), (INGRESS, "ingresses")] {
        assert_eq!(c.get(api, plural, "podinfo-preview"), Value::Null);
    }
}

//! The binary's integration tests, in one test binary (one link of the dependency graph instead of
//! one per file). Each file next to this one is a module; `cargo test --test tests MODULE::` runs
//! one of them, `cargo test --test tests NAME` the tests whose path contains NAME.
//!
//! aviary-core's fuzz target is `crates/core/tests/fuzz.rs`; the metrics client's tests against a
//! real Prometheus are `crates/kube/tests/prometheus.rs`.

// What the tests share: an emulated cluster with a kubeconfig, a webhook endpoint, the binary
// under test, temporary directories, a local GCS.
mod util;

// `aviary plan`, `simulate`, `validate` and the spec reader's errors, through the binary.
mod cli;
// Flagger conformance of the spec reader: each spec Flagger accepts, accepted and understood.
mod conformance;
// Cloud Deploy's custom target contract: results.json, SKIPPED phases, kubeconfig sources, GKE.
mod cloud_deploy;
// `aviary deploy` and `rollout --target` on Skaffold projects, against the API emulator.
mod deploy;
// The fault-injection suite behind the README's "Failure modes" table (`fNN_*`).
mod faults;
// GitHub Actions' contract end to end: report paths later steps can open, no workflow command
// from user text, the annotation budget, annotations at repository files only.
mod github;
// The pipeline hosts' contracts: GitHub Actions, Tekton, Cloud Deploy (with a local GCS).
mod hosts;
// The step image (scripts/image, buildah): `aviary step` inside it with GitHub's mounts, as root
// and as a non-root user with a read-only root filesystem.
mod image;
// A rollout judged by a real Prometheus scraping workloads under real load.
mod prometheus;
// Rollouts judged by MetricTemplates of the other metric providers, on local servers that answer
// as each provider documents.
mod providers;
// service.previewHosts: the preview HTTPRoute, VirtualService and Ingress through every run.
mod preview;
// `aviary render` against what `kubectl kustomize` prints.
mod render;
// A release of several canaries in one run: unchanged canaries, the verdict policies, a Lease
// held on one of them, SIGTERM.
mod release;
// Rollouts through the Gateway API and the Kubernetes providers: bootstrap, promote, roll back,
// signals, resume, the Lease, API faults.
mod rollout;
// The Istio, Gloo and NGINX routers.
mod routers;
// The Tekton Task's contract: params, results in the termination message, workspaces.
mod tekton;
// SIGTERM before the rollout begins (aviary as a container's PID 1): the step stops and reports.
mod signals;
// The sandbox's real data path (Prometheus, HAProxy, demo apps): only with the `sandbox` feature.
#[cfg(feature = "sandbox")]
mod sandbox;

//! Engine tests: every phase transition and gate, Flagger's counting rules, the protocol, and
//! properties over random specs and random answers.

use super::sim::{self, Run};
use super::*;
use crate::spec::{HookType, ThresholdRange};

fn base() -> Config {
    Config {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        provider: "istio".into(),
        metrics_provider: String::new(),
        traffic_shifting: true,
        skip_analysis: false,
        suspend: false,
        interval_ms: 60_000,
        threshold: 5,
        max_weight: 50,
        step_weight: 10,
        step_weights: vec![],
        step_weight_promotion: 0,
        iterations: 0,
        provider_warnings: vec![],
        strategy: Strategy::Canary,
        mirror: false,
        mirror_weight: None,
        progress_deadline_ms: 600_000,
        webhooks: vec![],
        metrics: vec![MetricCheck {
            name: "request-success-rate".into(),
            kind: MetricKind::SuccessRate,
            range: ThresholdRange {
                min: Some(99.0),
                max: None,
            },
        }],
        judge: None,
    }
}

fn hook(name: &str, hook: HookType) -> HookRef {
    HookRef {
        name: name.into(),
        hook,
    }
}

fn fresh(config: Config) -> Engine {
    Engine::new(config, State::initialized_with_new_revision("r1", "r2"))
}

/// An oracle from closures over the request.
fn oracle(
    metric: impl Fn(&str, usize) -> MetricOutcome + 'static,
    webhook: impl Fn(&str, usize) -> bool + 'static,
) -> impl FnMut(&Request, Millis) -> Answer {
    let mut metric_calls = std::collections::HashMap::<String, usize>::new();
    let mut hook_calls = std::collections::HashMap::<String, usize>::new();
    move |r: &Request, _| match r {
        Request::Readiness { .. } => Answer::Readiness(Readiness::Ready),
        Request::Metric { name, .. } => {
            let n = metric_calls.entry(name.clone()).or_default();
            *n += 1;
            Answer::Metric(metric(name, *n - 1))
        }
        Request::Webhook { name, .. } => {
            let n = hook_calls.entry(name.clone()).or_default();
            *n += 1;
            Answer::Webhook(if webhook(name, *n - 1) {
                HookOutcome::Pass
            } else {
                HookOutcome::Fail("nope".into())
            })
        }
    }
}

fn good() -> impl FnMut(&Request, Millis) -> Answer {
    oracle(|_, _| MetricOutcome::Value(99.9), |_, _| true)
}

fn run(config: Config, o: &mut dyn sim::Oracle) -> Run {
    let mut engine = fresh(config);
    match sim::run(&mut engine, o, 500) {
        Ok(run) => run,
        Err(e) => panic!("engine refused the simulator: {e}"),
    }
}

fn weights(run: &Run) -> Vec<u32> {
    run.commands()
        .filter_map(|c| match c {
            Command::SetRoutes { routes } => Some(routes.canary),
            _ => None,
        })
        .collect()
}

fn events(run: &Run) -> Vec<String> {
    run.commands()
        .filter_map(|c| match c {
            Command::Event { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn phases(run: &Run) -> Vec<Phase> {
    run.commands()
        .filter_map(|c| match c {
            Command::SetPhase { phase } => Some(*phase),
            _ => None,
        })
        .collect()
}

fn has_event(run: &Run, text: &str) -> bool {
    events(run).iter().any(|e| e == text)
}

#[test]
fn canary_promotes_with_flagger_timing_and_messages() {
    let run = run(base(), &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    assert_eq!(weights(&run), vec![10, 20, 30, 40, 50, 0]);
    assert_eq!(
        phases(&run),
        vec![
            Phase::Progressing,
            Phase::Promoting,
            Phase::Finalising,
            Phase::Succeeded
        ]
    );
    // t0 scale up, t1 pre-rollout + 10, t2..t5 analysis + 20..50, t6 promote, t7 routes, t8 done.
    assert_eq!(
        run.first_time(|c| matches!(c, Command::ScaleCanaryUp)),
        Some(0)
    );
    assert_eq!(
        run.first_time(|c| matches!(c, Command::Promote { .. })),
        Some(360_000)
    );
    assert_eq!(run.ticks.last().map(|t| t.at), Some(480_000));
    assert!(has_event(
        &run,
        "New revision detected! Scaling up podinfo.test"
    ));
    assert!(has_event(&run, "Starting canary analysis for podinfo.test"));
    assert!(has_event(&run, "Advance podinfo.test canary weight 10"));
    assert!(has_event(
        &run,
        "Copying podinfo.test template spec to podinfo-primary.test"
    ));
    assert!(has_event(&run, "Routing all traffic to primary"));
    assert!(has_event(
        &run,
        "Promotion completed! Scaling down podinfo.test"
    ));
    assert_eq!(run.state.last_promoted_revision.as_deref(), Some("r2"));
}

#[test]
fn first_tick_at_weight_zero_runs_only_pre_rollout_hooks() {
    let mut config = base();
    config.webhooks = vec![
        hook("smoke", HookType::PreRollout),
        hook("load", HookType::Rollout),
    ];
    let run = run(config, &mut good());
    // Tick 0 scales up; tick 1 is the weight-0 tick.
    let t1 = &run.ticks[1];
    let asked: Vec<String> = t1
        .exchanges
        .iter()
        .map(|(r, _)| match r {
            Request::Readiness { workload } => format!("{workload:?}"),
            Request::Webhook { name, .. } => name.clone(),
            Request::Metric { name, .. } => name.clone(),
        })
        .collect();
    assert_eq!(asked, vec!["Primary", "Canary", "smoke"]);
    assert_eq!(t1.routes.canary, 10);
    // From then on the rollout hook runs before the metric each tick, and pre-rollout never again.
    let t2: Vec<_> = run.ticks[2]
        .exchanges
        .iter()
        .map(|(r, _)| r.clone())
        .collect();
    assert!(matches!(&t2[2], Request::Webhook { name, .. } if name == "load"));
    assert!(matches!(&t2[3], Request::Metric { .. }));
    let smoke_calls = run
        .ticks
        .iter()
        .flat_map(|t| &t.exchanges)
        .filter(|(r, _)| matches!(r, Request::Webhook { name, .. } if name == "smoke"))
        .count();
    assert_eq!(smoke_calls, 1);
}

#[test]
fn failed_checks_count_in_total_not_consecutively() {
    let mut config = base();
    config.threshold = 2;
    config.max_weight = 100;
    // Calls: pass, fail, pass, fail, pass, ... — never two failures in a row.
    let mut o = oracle(
        |_, n| MetricOutcome::Value(if n % 2 == 1 { 50.0 } else { 99.9 }),
        |_, _| true,
    );
    let run = run(config, &mut o);
    assert_eq!(run.verdict, Some(Phase::Failed));
    assert_eq!(run.state.failed_checks, 2);
    assert!(has_event(
        &run,
        "Rolling back podinfo.test failed checks threshold reached 2"
    ));
    assert!(has_event(&run, "Canary failed! Scaling down podinfo.test"));
    // A failing check halts advancement: the weight rose only on the passing ticks (t2, t4),
    // and the second failure (t5) is followed by the rollback (t6).
    assert_eq!(weights(&run), vec![10, 20, 30, 0]);
    assert_eq!(run.ticks.last().map(|t| t.at), Some(360_000));
}

#[test]
fn failing_check_halts_advancement_with_flagger_message() {
    let mut o = oracle(
        |_, n| MetricOutcome::Value(if n == 0 { 69.17 } else { 99.9 }),
        |_, _| true,
    );
    let run = run(base(), &mut o);
    assert!(has_event(
        &run,
        "Halt podinfo.test advancement success rate 69.17% < 99%"
    ));
    let t2 = &run.ticks[2];
    assert_eq!(
        t2.routes.canary, 10,
        "the weight must not advance on a failed check"
    );
    assert_eq!(t2.failed_checks, 1);
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    assert_eq!(run.state.failed_checks, 1);
}

#[test]
fn metrics_stop_at_first_failure_in_flagger_order() {
    let mut config = base();
    config.metrics = vec![
        MetricCheck {
            name: "errors".into(),
            kind: MetricKind::Template,
            range: ThresholdRange {
                min: None,
                max: Some(1.0),
            },
        },
        MetricCheck {
            name: "request-duration".into(),
            kind: MetricKind::Duration,
            range: ThresholdRange {
                min: None,
                max: Some(500.0),
            },
        },
    ];
    let mut o = oracle(
        |name, _| match name {
            "request-duration" => MetricOutcome::Value(1500.0),
            _ => MetricOutcome::Value(0.0),
        },
        |_, _| true,
    );
    let run = run(config, &mut o);
    let asked_errors = run
        .ticks
        .iter()
        .flat_map(|t| &t.exchanges)
        .filter(|(r, _)| matches!(r, Request::Metric { name, .. } if name == "errors"))
        .count();
    // `config.metrics` is already in Flagger's order here (templates listed first on purpose):
    // the failing duration check comes second and is reached every time.
    assert_eq!(asked_errors, 5);
    assert!(has_event(
        &run,
        "Halt podinfo.test advancement request duration 1.5s > 500ms"
    ));
    assert_eq!(run.verdict, Some(Phase::Failed));
}

#[test]
fn builtins_are_checked_before_templates() {
    use crate::spec::*;
    let canary = Canary {
        api_version: ApiVersion::FlaggerV1beta1,
        name: "podinfo".into(),
        namespace: "test".into(),
        namespace_explicit: true,
        origin: Origin {
            file: "x".into(),
            line: 1,
        },
        provider: Some(Provider::Istio),
        provider_written: None,
        metrics_server: None,
        target_ref: ObjectRef {
            name: "podinfo".into(),
            ..ObjectRef::default()
        },
        autoscaler_ref: None,
        ingress_ref: None,
        route_ref: None,
        upstream_ref: None,
        service: Service::default(),
        analysis: Some(Analysis {
            step_weight: 10,
            metrics: vec![
                Metric {
                    name: "custom".into(),
                    interval: std::time::Duration::from_secs(60),
                    interval_text: "1m".into(),
                    threshold_range: ThresholdRange::default(),
                    source: MetricSource::Template {
                        template: ObjectRef::default(),
                        variables: Default::default(),
                    },
                },
                Metric {
                    name: "request-success-rate".into(),
                    interval: std::time::Duration::from_secs(60),
                    interval_text: "1m".into(),
                    threshold_range: ThresholdRange::default(),
                    source: MetricSource::Builtin(BuiltinMetric::RequestSuccessRate),
                },
            ],
            ..Analysis::default()
        }),
        progress_deadline_seconds: 600,
        skip_analysis: false,
        revert_on_deletion: false,
        suspend: false,
    };
    let config = Config::from_canary(&canary, &Provider::Istio);
    let names: Vec<_> = config.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["request-success-rate", "custom"]);
    assert_eq!(config.strategy, Strategy::Canary);
    assert_eq!(config.effective_max_weight(), 100);

    // With the kubernetes provider Flagger turns the same spec into blue/green with 10 iterations.
    let k8s = Config::from_canary(
        &Canary {
            provider: Some(Provider::Kubernetes),
            ..canary
        },
        &Provider::Istio,
    );
    assert!(!k8s.traffic_shifting);
    assert_eq!(k8s.strategy, Strategy::BlueGreen);
    assert_eq!(k8s.iterations, 10);
}

#[test]
fn no_values_and_nan_fail_the_check() {
    for outcome in [
        MetricOutcome::NoValues("empty result".into()),
        MetricOutcome::Value(f64::NAN),
    ] {
        let mut config = base();
        config.threshold = 1;
        let o2 = outcome.clone();
        let mut o = oracle(move |_, _| o2.clone(), |_, _| true);
        let run = run(config, &mut o);
        assert_eq!(run.verdict, Some(Phase::Failed), "{outcome:?} must fail");
        assert!(
            has_event(&run,
                "Halt advancement no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic: no values found"
            ),
            "{:?}",
            events(&run)
        );
        assert_eq!(weights(&run), vec![10, 0]);
    }
}

#[test]
fn max_weight_caps_the_last_step() {
    let mut config = base();
    config.step_weight = 20;
    config.max_weight = 50;
    let run = run(config, &mut good());
    assert_eq!(weights(&run), vec![20, 40, 50, 0]);
}

#[test]
fn step_weights_follow_the_list() {
    let mut config = base();
    config.step_weight = 0;
    config.step_weights = vec![1, 2, 10, 80];
    let run = run(config, &mut good());
    assert_eq!(weights(&run), vec![1, 2, 10, 80, 0]);
}

#[test]
fn ab_testing_routes_matched_requests_for_iterations_then_promotes() {
    let mut config = base();
    config.strategy = Strategy::AbTesting;
    config.iterations = 3;
    let run = run(config, &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    let routes: Vec<Routes> = run
        .commands()
        .filter_map(|c| match c {
            Command::SetRoutes { routes } => Some(*routes),
            _ => None,
        })
        .collect();
    assert_eq!(routes[0], Routes::split(100, RouteScope::Matched));
    assert_eq!(routes.last(), Some(&Routes::PRIMARY));
    assert!(has_event(&run, "Advance podinfo.test canary iteration 3/3"));
    // t0 scale up, t1 pre-rollout + it1, t2 it2, t3 it3, t4 promote.
    assert_eq!(
        run.first_time(|c| matches!(c, Command::Promote { .. })),
        Some(240_000)
    );
}

#[test]
fn blue_green_on_kubernetes_never_touches_routes() {
    let mut config = base();
    config.traffic_shifting = false;
    config.provider = "kubernetes".into();
    config.strategy = Strategy::BlueGreen;
    config.iterations = 2;
    let run = run(config, &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    assert!(weights(&run).is_empty());
    // it1, it2, switch tick, promote, finalise, succeed.
    assert_eq!(
        run.first_time(|c| matches!(c, Command::Promote { .. })),
        Some(240_000)
    );
}

#[test]
fn blue_green_with_mirroring_mirrors_then_switches() {
    let mut config = base();
    config.strategy = Strategy::BlueGreen;
    config.iterations = 2;
    config.mirror = true;
    config.mirror_weight = Some(50);
    let run = run(config, &mut good());
    let routes: Vec<Routes> = run
        .commands()
        .filter_map(|c| match c {
            Command::SetRoutes { routes } => Some(*routes),
            _ => None,
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            Routes {
                mirror: true,
                mirror_weight: Some(50),
                ..Routes::PRIMARY
            },
            Routes::split(100, RouteScope::All),
            Routes::PRIMARY
        ]
    );
    assert!(has_event(
        &run,
        "Stop traffic mirroring and route all traffic to canary"
    ));
}

#[test]
fn canary_with_mirror_does_one_mirrored_step_first() {
    let mut config = base();
    config.mirror = true;
    let run = run(config, &mut good());
    let first = run.commands().find_map(|c| match c {
        Command::SetRoutes { routes } => Some(*routes),
        _ => None,
    });
    assert_eq!(
        first,
        Some(Routes {
            mirror: true,
            ..Routes::PRIMARY
        })
    );
    assert_eq!(weights(&run), vec![0, 10, 20, 30, 40, 50, 0]);
}

#[test]
fn confirm_rollout_gate_waits_then_scales_up() {
    let mut config = base();
    config.webhooks = vec![hook("approve", HookType::ConfirmRollout)];
    let mut o = oracle(|_, _| MetricOutcome::Value(99.9), |_, n| n >= 2);
    let run = run(config, &mut o);
    assert_eq!(run.ticks[0].phase, Phase::Waiting);
    assert_eq!(run.ticks[1].phase, Phase::Waiting);
    assert!(!run.ticks[0]
        .commands
        .iter()
        .any(|c| matches!(c, Command::ScaleCanaryUp)));
    assert_eq!(run.ticks[2].phase, Phase::Progressing);
    assert!(run.ticks[2]
        .commands
        .iter()
        .any(|c| matches!(c, Command::ScaleCanaryUp)));
    assert!(has_event(
        &run,
        "Halt podinfo.test advancement waiting for approval approve"
    ));
    assert!(has_event(&run, "Confirm-rollout check approve passed"));
    assert_eq!(run.verdict, Some(Phase::Succeeded));
}

#[test]
fn confirm_traffic_increase_holds_the_weight_without_counting_a_failure() {
    let mut config = base();
    config.webhooks = vec![hook("more", HookType::ConfirmTrafficIncrease)];
    let mut o = oracle(|_, _| MetricOutcome::Value(99.9), |_, n| n != 1);
    let run = run(config, &mut o);
    assert_eq!(run.ticks[2].routes.canary, 10);
    assert_eq!(run.ticks[2].failed_checks, 0);
    assert!(has_event(
        &run,
        "Halt podinfo.test advancement waiting for traffic increase approval more"
    ));
    assert_eq!(weights(&run), vec![10, 20, 30, 40, 50, 0]);
}

#[test]
fn confirm_promotion_parks_in_waiting_promotion_where_analysis_continues() {
    let mut config = base();
    config.threshold = 2;
    config.webhooks = vec![hook("ship-it", HookType::ConfirmPromotion)];
    // The gate stays closed; after three waiting ticks the metric goes bad.
    let mut o = oracle(
        |_, n| MetricOutcome::Value(if n >= 8 { 10.0 } else { 99.9 }),
        |_, _| false,
    );
    let run = run(config, &mut o);
    assert!(phases(&run).contains(&Phase::WaitingPromotion));
    assert!(has_event(
        &run,
        "Halt podinfo.test advancement waiting for promotion approval ship-it"
    ));
    assert_eq!(run.verdict, Some(Phase::Failed));
    assert!(!run.commands().any(|c| matches!(c, Command::Promote { .. })));
}

#[test]
fn confirm_promotion_opening_promotes() {
    let mut config = base();
    config.webhooks = vec![hook("ship-it", HookType::ConfirmPromotion)];
    let mut o = oracle(|_, _| MetricOutcome::Value(99.9), |_, n| n >= 2);
    let run = run(config, &mut o);
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    // Gate asked at t6 (closed), t7 (closed), t8 (open): promote at t8.
    assert_eq!(
        run.first_time(|c| matches!(c, Command::Promote { .. })),
        Some(480_000)
    );
    assert!(has_event(&run, "Confirm-promotion check ship-it passed"));
}

#[test]
fn rollback_webhook_rolls_back_at_once() {
    let mut config = base();
    config.webhooks = vec![
        hook("big-red-button", HookType::Rollback),
        hook("after", HookType::PostRollout),
    ];
    let mut o = oracle(
        |_, _| MetricOutcome::Value(99.9),
        |name, n| name == "after" || n >= 2,
    );
    let run = run(config, &mut o);
    assert_eq!(run.verdict, Some(Phase::Failed));
    assert!(has_event(&run, "Rollback check big-red-button passed"));
    assert!(has_event(
        &run,
        "Rolling back podinfo.test manual webhook invoked"
    ));
    assert!(has_event(
        &run,
        "Rollback hook big-red-button not signaling a rollback"
    ));
    // The post-rollout hook is told the run failed.
    let post = run
        .ticks
        .iter()
        .flat_map(|t| &t.exchanges)
        .find_map(|(r, _)| match r {
            Request::Webhook { name, phase, .. } if name == "after" => Some(*phase),
            _ => None,
        });
    assert_eq!(post, Some(Phase::Failed));
}

#[test]
fn step_weight_promotion_returns_traffic_gradually() {
    let mut config = base();
    config.step_weight_promotion = 20;
    let run = run(config, &mut good());
    assert_eq!(weights(&run), vec![10, 20, 30, 40, 50, 30, 10, 0]);
    assert!(has_event(&run, "Advance podinfo.test primary weight 70"));
    assert_eq!(run.verdict, Some(Phase::Succeeded));
}

#[test]
fn new_revision_mid_analysis_restarts_it() {
    let mut engine = fresh(base());
    let mut o = good();
    for k in 0..4 {
        sim::tick(&mut engine, k * 60_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(engine.state().routes.canary, 30);
    engine
        .handle(Input::Revision {
            revision: "r3".into(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let log = sim::tick(&mut engine, 240_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.routes, Routes::PRIMARY);
    assert_eq!(log.phase, Phase::Progressing);
    assert_eq!(engine.state().last_applied_revision.as_deref(), Some("r3"));
    assert!(log.commands.contains(&Command::Event {
        severity: EventLevel::Info,
        message: "New revision detected! Restarting analysis for podinfo.test".into()
    }));
    // The next tick starts over at weight 0 with the pre-rollout step.
    let log = sim::tick(&mut engine, 300_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.routes.canary, 10);
}

#[test]
fn canary_progress_deadline_rolls_back() {
    let mut config = base();
    config.progress_deadline_ms = 120_000;
    let mut o = |r: &Request, _| match r {
        Request::Readiness {
            workload: Workload::Canary,
        } => Answer::Readiness(Readiness::NotReady(
            "waiting for rollout to finish: 0 of 1 updated replicas are available".into(),
        )),
        Request::Readiness { .. } => Answer::Readiness(Readiness::Ready),
        _ => Answer::Webhook(HookOutcome::Pass),
    };
    let run = run(config, &mut o);
    assert_eq!(run.verdict, Some(Phase::Failed));
    // Not ready since t1; more than 120 s at t4.
    assert_eq!(run.ticks.last().map(|t| t.at), Some(240_000));
    assert!(events(&run)
        .iter()
        .any(|e| e.starts_with("Rolling back podinfo.test progress deadline exceeded")));

    // A runner that reports the deadline itself gets the same rollback at once.
    let mut o = |r: &Request, _| match r {
        Request::Readiness {
            workload: Workload::Canary,
        } => Answer::Readiness(Readiness::Failed(
            "deployment \"podinfo\" exceeded its progress deadline".into(),
        )),
        Request::Readiness { .. } => Answer::Readiness(Readiness::Ready),
        _ => Answer::Webhook(HookOutcome::Pass),
    };
    let run2 = run_fn(base(), &mut o);
    assert_eq!(run2.verdict, Some(Phase::Failed));
    assert_eq!(run2.ticks.last().map(|t| t.at), Some(60_000));
}

fn run_fn(config: Config, o: &mut dyn sim::Oracle) -> Run {
    run(config, o)
}

#[test]
fn abort_rolls_back_even_mid_tick() {
    let mut config = base();
    config.webhooks = vec![hook("load", HookType::Rollout)];
    let mut engine = fresh(config);
    let mut o = good();
    for k in 0..3 {
        sim::tick(&mut engine, k * 60_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    }
    // Start a tick and leave it waiting on a request.
    let step = engine
        .handle(Input::Tick { now: 180_000 })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(step.request.is_some());
    let step = engine
        .handle(Input::Abort {
            now: 185_000,
            reason: "cancelled by the pipeline".into(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(step.request.is_none());
    assert!(step.commands.contains(&Command::SetRoutes {
        routes: Routes::PRIMARY
    }));
    assert!(step.commands.contains(&Command::ScaleCanaryToZero));
    assert_eq!(engine.state().phase, Phase::Failed);
    assert!(step.commands.contains(&Command::Event {
        severity: EventLevel::Warning,
        message: "Rolling back podinfo.test abort requested: cancelled by the pipeline".into()
    }));
    // The answer to the dropped request is now stale.
    let err = engine.handle(Input::Answer {
        id: 1,
        answer: Answer::Readiness(Readiness::Ready),
    });
    assert!(matches!(err, Err(EngineError::StaleAnswer { .. })));
}

#[test]
fn cancel_returns_traffic_and_a_rerun_restarts_the_analysis() {
    let mut engine = fresh(base());
    let mut o = good();
    for k in 0..4 {
        sim::tick(&mut engine, k * 60_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(engine.state().routes.canary, 30);
    let step = engine
        .handle(Input::Cancel {
            now: 250_000,
            reason: "SIGTERM".into(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(step.commands.contains(&Command::SetRoutes {
        routes: Routes::PRIMARY
    }));
    assert!(step.commands.contains(&Command::ScaleCanaryToZero));
    assert_eq!(engine.state().phase, Phase::Initialized);
    assert!(engine.state().has_new_revision());
    // The next run picks the same revision up from the start.
    let state = engine.state().clone();
    let mut rerun = Engine::new(base(), state);
    let log = sim::tick(&mut rerun, 300_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert!(log.commands.contains(&Command::ScaleCanaryUp));
    assert_eq!(log.phase, Phase::Progressing);
    let log = sim::tick(&mut rerun, 360_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.routes.canary, 10);
}

#[test]
fn abort_during_promotion_is_refused() {
    let mut engine = fresh(base());
    let mut o = good();
    let mut k = 0;
    while engine.state().phase != Phase::Promoting {
        sim::tick(&mut engine, k * 60_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
        k += 1;
    }
    let step = engine
        .handle(Input::Abort {
            now: k * 60_000,
            reason: "too late".into(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(engine.state().phase, Phase::Promoting);
    assert!(!step
        .commands
        .iter()
        .any(|c| matches!(c, Command::SetRoutes { .. })));
}

#[test]
fn bootstrap_waits_for_the_primary_then_initializes() {
    let mut engine = Engine::new(
        base(),
        State {
            target_revision: Some("r1".into()),
            ..State::default()
        },
    );
    let mut ready = false;
    let mut o = |r: &Request, _: Millis| match r {
        Request::Readiness { .. } => Answer::Readiness(if ready {
            Readiness::Ready
        } else {
            ready = true;
            Readiness::NotReady("0 of 2 updated replicas are available".into())
        }),
        _ => Answer::Webhook(HookOutcome::Pass),
    };
    let t0 = sim::tick(&mut engine, 0, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t0.commands[0], Command::Bootstrap);
    assert_eq!(t0.phase, Phase::Initializing);
    assert!(!t0
        .commands
        .iter()
        .any(|c| matches!(c, Command::SetRoutes { .. })));
    let t1 = sim::tick(&mut engine, 60_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t1.phase, Phase::Initialized);
    // The apex moves to the primary before the target is scaled down.
    let routes_at = t1
        .commands
        .iter()
        .position(|c| matches!(c, Command::SetRoutes { .. }));
    let scale_at = t1
        .commands
        .iter()
        .position(|c| matches!(c, Command::ScaleCanaryToZero));
    assert!(routes_at < scale_at && routes_at.is_some());
    assert!(!engine.state().has_new_revision());
    // Nothing more happens until a new revision appears.
    let t2 = sim::tick(&mut engine, 120_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert!(t2.commands.is_empty());
}

#[test]
fn initialization_failure_leaves_traffic_alone() {
    let mut engine = Engine::new(base(), State::default());
    let mut o =
        |_: &Request, _: Millis| Answer::Readiness(Readiness::Failed("ImagePullBackOff".into()));
    let t0 = sim::tick(&mut engine, 0, &mut o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t0.phase, Phase::Failed);
    assert!(!t0
        .commands
        .iter()
        .any(|c| matches!(c, Command::SetRoutes { .. } | Command::ScaleCanaryToZero)));
}

#[test]
fn skip_analysis_promotes_without_checks() {
    let mut config = base();
    config.skip_analysis = true;
    config.webhooks = vec![hook("load", HookType::Rollout)];
    let run = run(config, &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    assert_eq!(run.ticks.len(), 2);
    assert!(!run
        .ticks
        .iter()
        .flat_map(|t| &t.exchanges)
        .any(|(r, _)| matches!(r, Request::Metric { .. } | Request::Webhook { .. })));
    assert!(has_event(
        &run,
        "Promotion completed! Canary analysis was skipped for podinfo.test"
    ));
}

#[test]
fn suspended_canary_does_nothing() {
    let mut config = base();
    config.suspend = true;
    let mut engine = fresh(config);
    let log = sim::tick(&mut engine, 0, &mut good()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.phase, Phase::Initialized);
    assert!(log.exchanges.is_empty());
}

#[test]
fn failed_promotion_keeps_traffic_on_the_healthy_canary() {
    let mut engine = fresh(base());
    let mut o = good();
    let mut k = 0;
    while engine.state().phase != Phase::Promoting {
        sim::tick(&mut engine, k * 60_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
        k += 1;
    }
    let mut broken = |r: &Request, _: Millis| match r {
        Request::Readiness {
            workload: Workload::Primary,
        } => Answer::Readiness(Readiness::Failed("exceeded its progress deadline".into())),
        _ => Answer::Readiness(Readiness::Ready),
    };
    let log = sim::tick(&mut engine, k * 60_000, &mut broken).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.phase, Phase::Failed);
    assert_eq!(log.routes, Routes::split(100, RouteScope::All));
    assert!(!log.commands.contains(&Command::ScaleCanaryToZero));
}

#[test]
fn protocol_errors_are_reported_not_panicked() {
    let mut engine = fresh(base());
    let step = engine
        .handle(Input::Tick { now: 0 })
        .unwrap_or_else(|e| panic!("{e}"));
    let Some((id, _)) = step.request else {
        panic!("the first tick asks for the primary's readiness")
    };
    assert_eq!(
        engine.handle(Input::Tick { now: 1 }),
        Err(EngineError::Busy { id })
    );
    assert_eq!(
        engine.handle(Input::Answer {
            id,
            answer: Answer::Webhook(HookOutcome::Pass)
        }),
        Err(EngineError::WrongAnswer {
            id,
            expected: "readiness",
            got: "webhook"
        })
    );
    assert_eq!(
        engine.handle(Input::Answer {
            id: id + 7,
            answer: Answer::Readiness(Readiness::Ready)
        }),
        Err(EngineError::StaleAnswer {
            id: id + 7,
            current: Some(id)
        })
    );
}

/// Drives a run step by step, serialising and restoring the engine before every input. The result
/// must be identical to an uninterrupted run: the state is plain data.
#[test]
fn state_round_trips_through_json_at_every_step() {
    let mut config = base();
    config.webhooks = vec![
        hook("smoke", HookType::PreRollout),
        hook("load", HookType::Rollout),
        hook("gate", HookType::ConfirmPromotion),
    ];
    let uninterrupted = run(config.clone(), &mut good());

    let mut engine = fresh(config);
    let mut o = good();
    let mut commands = Vec::new();
    for k in 0..uninterrupted.ticks.len() as u64 {
        let mut step = engine
            .handle(Input::Tick { now: k * 60_000 })
            .unwrap_or_else(|e| panic!("{e}"));
        loop {
            commands.append(&mut step.commands);
            let Some((id, request)) = step.request.take() else {
                break;
            };
            let json = serde_json::to_string(&engine).unwrap_or_else(|e| panic!("{e}"));
            engine = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
            let answer = sim::Oracle::answer(&mut o, &request, k * 60_000);
            step = engine
                .handle(Input::Answer { id, answer })
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let expected: Vec<Command> = uninterrupted.commands().cloned().collect();
    assert_eq!(commands, expected);
    assert_eq!(engine.state().phase, Phase::Succeeded);
}

mod properties {
    use super::*;
    use proptest::prelude::{
        any, prop, prop_assert, prop_assert_eq, proptest, ProptestConfig, Strategy as PropStrategy,
    };

    fn arb_config() -> impl PropStrategy<Value = Config> {
        (
            (
                1u32..=100,
                0u32..=100,
                prop::collection::vec(1u32..=100, 0..5),
            ),
            (0u32..=4, any::<bool>(), any::<bool>(), 1u32..=4, 0u32..=40),
            prop::collection::vec(0usize..8, 0..4),
            0usize..3,
        )
            .prop_map(
                |(
                    (step, max, mut steps),
                    (iterations, ab, mirror, threshold, swp),
                    hooks,
                    metrics,
                )| {
                    steps.sort_unstable();
                    steps.dedup();
                    let mut c = base();
                    c.step_weight = if steps.is_empty() { step } else { 0 };
                    c.step_weights = steps;
                    c.max_weight = max;
                    c.iterations = iterations;
                    c.strategy = if iterations == 0 {
                        super::super::Strategy::Canary
                    } else if ab {
                        super::super::Strategy::AbTesting
                    } else {
                        super::super::Strategy::BlueGreen
                    };
                    c.mirror = mirror;
                    c.threshold = threshold;
                    c.step_weight_promotion = swp;
                    c.webhooks = hooks
                        .into_iter()
                        .enumerate()
                        .map(|(i, h)| hook(&format!("h{i}"), HookType::ALL[h]))
                        .collect();
                    c.metrics.truncate(metrics.min(1));
                    if metrics == 2 {
                        c.metrics.push(MetricCheck {
                            name: "latency".into(),
                            kind: MetricKind::Duration,
                            range: ThresholdRange {
                                min: None,
                                max: Some(500.0),
                            },
                        });
                    }
                    c
                },
            )
    }

    /// Answers from a byte script (repeating), so a failing case shrinks to a short script.
    fn scripted(script: Vec<u8>) -> impl FnMut(&Request, Millis) -> Answer {
        let mut i = 0usize;
        move |r: &Request, _| {
            let b = if script.is_empty() {
                0
            } else {
                script[i % script.len()]
            };
            i += 1;
            match r {
                Request::Readiness {
                    workload: Workload::Primary,
                } => Answer::Readiness(if b % 7 == 3 {
                    Readiness::NotReady("rolling out".into())
                } else {
                    Readiness::Ready
                }),
                Request::Readiness {
                    workload: Workload::Canary,
                } => Answer::Readiness(match b % 11 {
                    5 => Readiness::NotReady("rolling out".into()),
                    7 => Readiness::Failed("deadline".into()),
                    _ => Readiness::Ready,
                }),
                Request::Webhook { .. } => Answer::Webhook(if b % 3 == 0 {
                    HookOutcome::Fail("no".into())
                } else {
                    HookOutcome::Pass
                }),
                Request::Metric { .. } => Answer::Metric(match b % 5 {
                    0 => MetricOutcome::NoValues("none".into()),
                    1 => MetricOutcome::Value(f64::NAN),
                    2 => MetricOutcome::Value(10.0),
                    _ => MetricOutcome::Value(99.5),
                }),
            }
        }
    }

    fn simulate(config: &Config, script: &[u8]) -> Run {
        let mut engine = fresh(config.clone());
        match sim::run(&mut engine, &mut scripted(script.to_vec()), 300) {
            Ok(run) => run,
            Err(e) => panic!("{e}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn weight_never_exceeds_max_weight(config in arb_config(), script in prop::collection::vec(any::<u8>(), 1..64)) {
            let run = simulate(&config, &script);
            let max = config.effective_max_weight();
            for c in run.commands() {
                if let Command::SetRoutes { routes } = c {
                    prop_assert_eq!(routes.primary + routes.canary, 100);
                    // A/B and blue/green route 100% (of matched, or of all at the switch); the
                    // progressive canary strategy never goes above maxWeight.
                    if config.strategy == super::super::Strategy::Canary {
                        prop_assert!(routes.canary <= max, "weight {} > max {}", routes.canary, max);
                    }
                }
            }
        }

        #[test]
        fn nothing_is_promoted_once_the_threshold_is_reached(config in arb_config(), script in prop::collection::vec(any::<u8>(), 1..64)) {
            let run = simulate(&config, &script);
            let mut failed_before = 0;
            for t in &run.ticks {
                if failed_before >= config.threshold {
                    let promotes = t.commands.iter().any(|c| matches!(c, Command::Promote { .. }));
                    prop_assert!(!promotes);
                }
                failed_before = t.failed_checks;
            }
            if run.verdict == Some(Phase::Succeeded) {
                let promote_tick = run.ticks.iter().position(|t| t.commands.iter().any(|c| matches!(c, Command::Promote { .. })));
                if let Some(p) = promote_tick {
                    let before = if p == 0 { 0 } else { run.ticks[p - 1].failed_checks };
                    prop_assert!(before < config.threshold);
                }
            }
        }

        #[test]
        fn every_failed_run_ends_on_the_primary_with_the_canary_at_zero(config in arb_config(), script in prop::collection::vec(any::<u8>(), 1..64)) {
            let run = simulate(&config, &script);
            if run.verdict == Some(Phase::Failed) {
                let last_tick = &run.ticks[run.ticks.len() - 1];
                let last_routes = run.commands().filter_map(|c| match c { Command::SetRoutes { routes } => Some(*routes), _ => None }).last();
                let promotion_failed = last_tick.commands.iter().any(|c| matches!(c, Command::Event { message, .. } if message.starts_with("Promotion of ")));
                if promotion_failed {
                    // The primary broke after promotion: the identical, healthy canary keeps the traffic.
                    prop_assert_eq!(run.state.routes.canary, 100);
                    prop_assert!(!last_tick.commands.contains(&Command::ScaleCanaryToZero));
                } else {
                    prop_assert_eq!(run.state.routes, Routes::PRIMARY);
                    prop_assert_eq!(last_routes, Some(Routes::PRIMARY));
                    prop_assert!(last_tick.commands.contains(&Command::ScaleCanaryToZero));
                }
            }
        }

        /// A runner reads the primary beside the target when the engine says the tick will ask
        /// for it: every such tick does ask (else that read would be a request for nothing).
        #[test]
        fn a_tick_asks_for_the_primary_whenever_the_engine_says_it_will(
            config in arb_config(),
            suspend in any::<bool>(),
            skip in any::<bool>(),
            script in prop::collection::vec(any::<u8>(), 1..64),
            switch_at in 0u64..8,
        ) {
            // Suspended (or set to skip the analysis) after `switch_at` ticks, maybe mid-analysis.
            let mut switched = config.clone();
            (switched.suspend, switched.skip_analysis) = (suspend, skip);
            let mut engine = fresh(config);
            let mut answers = scripted(script);
            for k in 0..300u64 {
                if k == switch_at {
                    engine = Engine::new(switched.clone(), engine.state().clone());
                }
                let says = engine.asks_primary_readiness();
                let log = sim::tick(&mut engine, k * 60_000, &mut answers)
                    .unwrap_or_else(|e| panic!("{e}"));
                let asked = log.exchanges.iter().any(|(r, _)| {
                    matches!(r, Request::Readiness { workload: Workload::Primary })
                });
                prop_assert!(!says || asked, "tick {k} in {:?} did not ask", log.phase);
                if engine.state().phase.is_verdict() {
                    break;
                }
            }
        }

        #[test]
        fn the_same_events_give_the_same_commands(config in arb_config(), script in prop::collection::vec(any::<u8>(), 1..64)) {
            // Compared as text: a NaN answer is not equal to itself under PartialEq.
            let a = format!("{:?}", simulate(&config, &script));
            let b = format!("{:?}", simulate(&config, &script));
            prop_assert_eq!(a, b);
        }
    }
}

/// A Config read from a Flagger Canary whose `spec` is `spec` (indented by two spaces).
fn from_yaml(spec: &str) -> Config {
    let text = format!(
        "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
{spec}"
    );
    match crate::spec::load_str("c.yaml", &text) {
        Ok(docs) => Config::from_canary(&docs.canaries[0], &crate::spec::Provider::Istio),
        Err(e) => panic!("{e}"),
    }
}

/// The events of the first tick whose events include one starting with `prefix`.
fn tick_events(run: &Run, prefix: &str) -> Vec<String> {
    run.ticks
        .iter()
        .map(|t| {
            t.commands
                .iter()
                .filter_map(|c| match c {
                    Command::Event { message, .. } => Some(message.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .find(|events| events.iter().any(|e| e.starts_with(prefix)))
        .unwrap_or_default()
}

#[test]
fn no_values_events_are_flaggers_for_every_kind_of_metric() {
    let cases = [
        (
            "request-success-rate",
            MetricKind::SuccessRate,
            "Halt advancement no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic: no values found",
        ),
        (
            "request-duration",
            MetricKind::Duration,
            "Halt advancement no values found for istio metric request-duration probably podinfo.test is not receiving traffic",
        ),
        (
            "errors",
            MetricKind::Query,
            "Halt advancement no values found for metric: errors",
        ),
        (
            "error-rate",
            MetricKind::Template,
            "Halt advancement no values found for custom metric: error-rate: no values found",
        ),
    ];
    for (name, kind, want) in cases {
        // An empty result (whatever detail the runner gives) and NaN read the same, as in Flagger.
        for outcome in [
            MetricOutcome::NoValues(
                "no values found for query `x` (an empty vector): the canary may be receiving no traffic"
                    .into(),
            ),
            MetricOutcome::Value(f64::NAN),
        ] {
            let mut config = base();
            config.threshold = 1;
            config.metrics = vec![MetricCheck {
                name: name.into(),
                kind,
                range: ThresholdRange {
                    min: Some(1.0),
                    max: None,
                },
            }];
            let o2 = outcome.clone();
            let mut o = oracle(move |_, _| o2.clone(), |_, _| true);
            let run = run(config, &mut o);
            let halts: Vec<String> = events(&run)
                .into_iter()
                .filter(|e| e.starts_with("Halt advancement"))
                .collect();
            assert_eq!(halts, vec![want.to_string()], "{name} {outcome:?}");
        }
    }
}

#[test]
fn thresholds_print_as_go_prints_a_float64() {
    let range = |min: Option<f64>, max: Option<f64>| ThresholdRange { min, max };
    let q = "podinfo.test";
    let cases = [
        (
            MetricKind::SuccessRate,
            99.9,
            range(Some(1e6), None),
            "Halt podinfo.test advancement success rate 99.90% < 1e+06%",
        ),
        (
            MetricKind::SuccessRate,
            98.25,
            range(Some(99.5), None),
            "Halt podinfo.test advancement success rate 98.25% < 99.5%",
        ),
        (
            MetricKind::Template,
            0.0,
            range(Some(0.00001), None),
            "Halt podinfo.test advancement custom 0.00 < 1e-05",
        ),
        (
            MetricKind::Template,
            0.5,
            range(None, Some(0.0001)),
            "Halt podinfo.test advancement custom 0.50 > 0.0001",
        ),
        (
            MetricKind::Query,
            2e9,
            range(None, Some(123456789.0)),
            "Halt podinfo.test advancement custom 2000000000.00 > 1.23456789e+08",
        ),
        (
            MetricKind::Query,
            600.0,
            range(None, Some(500.0)),
            "Halt podinfo.test advancement custom 600.00 > 500",
        ),
    ];
    for (kind, value, range, want) in cases {
        assert_eq!(
            super::machine::check_range(q, kind, "custom", value, range).as_deref(),
            Some(want)
        );
    }
}

#[test]
fn the_planned_checks_are_the_steps_to_the_maximum_weight_or_the_iterations() {
    let analysis = |lines: &str| {
        from_yaml(&format!(
            "  provider: istio
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
{lines}"
        ))
    };
    // 10% steps to 50%: 10, 20, 30, 40, 50.
    let c = analysis("    stepWeight: 10\n    maxWeight: 50\n");
    assert_eq!(c.planned_checks(), 5);
    // The judge's horizon in its steps: 5 checks of 1m in 30s steps.
    assert_eq!(c.judge_horizon(30_000), 10);
    assert_eq!(c.judge_horizon(0), 300_000);
    // Steps that overshoot stop at the maximum: 20, 40, 50.
    assert_eq!(
        analysis("    stepWeight: 20\n    maxWeight: 50\n").planned_checks(),
        3
    );
    // Listed step weights: one check each.
    assert_eq!(
        analysis("    stepWeights: [1, 5, 20, 50]\n").planned_checks(),
        4
    );
    // Blue/green and A/B testing: the iterations.
    assert_eq!(analysis("    iterations: 7\n").planned_checks(), 7);
    // The canary's planned share of the traffic: 0.1 + 0.2 + … + 0.5 per interval, twice that
    // in 30s steps; none without weights.
    let share = c.judge_planned_share(60_000).unwrap_or_default();
    assert!((share - 1.5).abs() < 1e-9, "{share}");
    let share = c.judge_planned_share(30_000).unwrap_or_default();
    assert!((share - 3.0).abs() < 1e-9, "{share}");
    assert_eq!(
        analysis("    iterations: 7\n").judge_planned_share(60_000),
        None
    );
}

#[test]
fn a_service_target_names_the_metrics_provider_with_service() {
    let config = from_yaml(
        "  provider: istio
  targetRef:
    apiVersion: v1
    kind: Service
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 1
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
",
    );
    assert_eq!(config.provider, "istio", "the router is still istio's");
    let mut o = oracle(|_, _| MetricOutcome::NoValues("empty".into()), |_, _| true);
    let run = run(config, &mut o);
    assert!(
        has_event(
            &run,
            "Halt advancement no values found for istio:service metric request-success-rate probably podinfo.test is not receiving traffic: no values found"
        ),
        "{:?}",
        events(&run)
    );
}

#[test]
fn the_metrics_provider_is_named_as_written() {
    let spec = |provider: &str| {
        format!(
            "  provider: {provider}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 1
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
"
        )
    };
    let config = from_yaml(&spec("gatewayapi:v1"));
    assert_eq!(config.provider, "gatewayapi", "the router is gatewayapi's");
    let mut o = oracle(|_, _| MetricOutcome::NoValues("empty".into()), |_, _| true);
    let run_v1 = run(config, &mut o);
    assert!(
        has_event(
            &run_v1,
            "Halt advancement no values found for gatewayapi:v1 metric request-success-rate probably podinfo.test is not receiving traffic: no values found"
        ),
        "{:?}",
        events(&run_v1)
    );
    // Without a version (an aviary leniency) it is named as written too.
    let config = from_yaml(&spec("istio"));
    assert_eq!(config.metrics_provider(), "istio");
}

#[test]
fn confirm_rollout_passing_on_its_first_call_is_announced() {
    let mut config = base();
    config.webhooks = vec![
        hook("approve", HookType::ConfirmRollout),
        hook("second", HookType::ConfirmRollout),
    ];
    let run = run(config, &mut good());
    assert_eq!(run.ticks[0].phase, Phase::Progressing);
    assert_eq!(
        tick_events(&run, "New revision detected!"),
        vec![
            "Confirm-rollout check approve passed",
            "Confirm-rollout check second passed",
            "New revision detected! Scaling up podinfo.test",
        ]
    );
    assert!(!events(&run)
        .iter()
        .any(|e| e.contains("waiting for approval")));
}

#[test]
fn waiting_for_promotion_approval_is_announced_once() {
    for strategy in [Strategy::Canary, Strategy::AbTesting, Strategy::BlueGreen] {
        let mut config = base();
        config.strategy = strategy;
        config.iterations = if strategy == Strategy::Canary { 0 } else { 2 };
        config.webhooks = vec![hook("ship-it", HookType::ConfirmPromotion)];
        // Closed for five calls, then open.
        let mut o = oracle(|_, _| MetricOutcome::Value(99.9), |_, n| n >= 5);
        let run = run(config, &mut o);
        assert_eq!(run.verdict, Some(Phase::Succeeded), "{strategy:?}");
        let halts = events(&run)
            .iter()
            .filter(|e| {
                *e == "Halt podinfo.test advancement waiting for promotion approval ship-it"
            })
            .count();
        assert_eq!(halts, 1, "{strategy:?}: {:?}", events(&run));
        assert_eq!(
            events(&run)
                .iter()
                .filter(|e| *e == "Confirm-promotion check ship-it passed")
                .count(),
            if strategy == Strategy::BlueGreen {
                2
            } else {
                1
            },
            "{strategy:?}"
        );
    }
}

#[test]
fn kubernetes_provider_without_iterations_warns_as_flagger_does() {
    let config = from_yaml(
        "  provider: kubernetes
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 2
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
",
    );
    assert_eq!(config.strategy, Strategy::BlueGreen);
    assert_eq!(config.iterations, 10);
    let run = run(config, &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    // Each analysis tick that passes warns before advancing, as Flagger's scheduler does.
    assert_eq!(
        tick_events(&run, "Advance podinfo.test canary iteration 1/10"),
        vec![
            "Starting canary analysis for podinfo.test",
            "Progressive traffic is not supported when using the kubernetes provider",
            "Setting canaryAnalysis.iterations: 10",
            "Advance podinfo.test canary iteration 1/10",
        ]
    );
    assert_eq!(
        tick_events(&run, "Advance podinfo.test canary iteration 10/10"),
        vec![
            "Progressive traffic is not supported when using the kubernetes provider",
            "Setting canaryAnalysis.iterations: 10",
            "Advance podinfo.test canary iteration 10/10",
        ]
    );
    let warnings = run
        .commands()
        .filter(|c| {
            matches!(c, Command::Event { severity: EventLevel::Warning, message }
                if message == "Setting canaryAnalysis.iterations: 10")
        })
        .count();
    // Iterations 1-10, the tick that would route all traffic to the canary, the promotion tick.
    assert_eq!(warnings, 12);

    // With iterations set, nothing to say; with a match, Flagger says it drops it.
    let config = from_yaml(
        "  provider: kubernetes
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 2
    iterations: 3
",
    );
    assert!(config.provider_warnings.is_empty());
    let quiet = super::tests::run(config, &mut good());
    assert!(!events(&quiet)
        .iter()
        .any(|e| e.contains("kubernetes provider")));
}

#[test]
fn blue_green_mirroring_starts_without_an_event() {
    let mut config = base();
    config.strategy = Strategy::BlueGreen;
    config.iterations = 2;
    config.mirror = true;
    let run = run(config, &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    assert!(run
        .commands()
        .any(|c| matches!(c, Command::SetRoutes { routes } if routes.mirror)));
    assert!(!events(&run)
        .iter()
        .any(|e| e.contains("traffic mirroring for")));
    assert!(has_event(
        &run,
        "Stop traffic mirroring and route all traffic to canary"
    ));
}

#[test]
fn skip_analysis_runs_the_post_rollout_hooks() {
    let mut config = base();
    config.skip_analysis = true;
    config.webhooks = vec![hook("notify", HookType::PostRollout)];
    let run = run(config, &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    let post: Vec<Phase> = run
        .ticks
        .iter()
        .flat_map(|t| &t.exchanges)
        .filter_map(|(r, _)| match r {
            Request::Webhook { name, phase, .. } if name == "notify" => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(post, vec![Phase::Succeeded]);
    assert_eq!(
        tick_events(&run, "Promotion completed!"),
        vec![
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Post-rollout check notify passed",
            "Promotion completed! Canary analysis was skipped for podinfo.test",
        ]
    );
}

#[test]
fn failed_promotion_reads_as_flaggers() {
    let mut engine = fresh(base());
    let mut o = good();
    let mut k = 0;
    while engine.state().phase != Phase::Promoting {
        sim::tick(&mut engine, k * 60_000, &mut o).unwrap_or_else(|e| panic!("{e}"));
        k += 1;
    }
    let mut broken = |r: &Request, _: Millis| match r {
        Request::Readiness {
            workload: Workload::Primary,
        } => Answer::Readiness(Readiness::Failed(
            "deployment exceeded its progress deadline".into(),
        )),
        _ => Answer::Readiness(Readiness::Ready),
    };
    let log = sim::tick(&mut engine, k * 60_000, &mut broken).unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<&str> = log
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Event { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec![
            "podinfo-primary.test not ready: deployment exceeded its progress deadline",
            "Promotion of podinfo.test failed, primary not ready: podinfo-primary.test not ready: deployment exceeded its progress deadline",
        ]
    );
}

#[test]
fn kubernetes_provider_drops_the_match_with_flaggers_warning() {
    let config = from_yaml(
        "  provider: kubernetes
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 2
    match:
    - headers:
        x-canary:
          exact: insider
",
    );
    assert_eq!(config.strategy, Strategy::BlueGreen);
    let run = run(config, &mut good());
    assert_eq!(run.verdict, Some(Phase::Succeeded));
    assert_eq!(
        tick_events(&run, "Advance podinfo.test canary iteration 1/10"),
        vec![
            "Starting canary analysis for podinfo.test",
            "A/B testing is not supported when using the kubernetes provider",
            "Progressive traffic is not supported when using the kubernetes provider",
            "Setting canaryAnalysis.iterations: 10",
            "Advance podinfo.test canary iteration 1/10",
        ]
    );
}

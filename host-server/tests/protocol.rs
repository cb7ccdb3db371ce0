//! Protocol v1 end to end: a real server on 127.0.0.1:0, devices over HTTP/SSE.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{ScriptedDevice, Server, ToolDevice, WAIT, client, ok};
use fusion_host_server::{CallOptions, CallOutcome, Error, HostEvent, ProposalStatus};
use fusion_tools::{CallResult, Mode};
use serde_json::{Value, json};

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (status, body["code"].as_str().unwrap().to_string())
}

fn output(outcome: CallOutcome) -> Value {
    match outcome {
        CallOutcome::Output(o) => o.output,
        CallOutcome::Proposal(p) => panic!("expected an output, got proposal {p:?}"),
    }
}

fn proposal(outcome: CallOutcome) -> fusion_host_server::ProposalRecord {
    match outcome {
        CallOutcome::Proposal(p) => *p,
        CallOutcome::Output(o) => panic!("expected a proposal, got {o:?}"),
    }
}

#[tokio::test]
async fn enroll_valid_code_gives_a_token_stored_hashed() {
    let server = Server::start().await;
    let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    assert_eq!(code.code.len(), 9);
    // Case and dashes do not matter.
    let typed = code.code.replace('-', "").to_lowercase();
    let response = server.post_enroll(&typed).await;
    assert_eq!(response.status(), 200);
    let enrolled: fusion_tools::EnrollResponse = response.json().await.unwrap();
    assert!(enrolled.token.starts_with("fh_dev_"));
    assert_eq!(enrolled.owner, "alice");
    assert_eq!(enrolled.protocol_version, 1);
    assert!(humantime::parse_rfc3339(&enrolled.server_time).is_ok());
    let stored = server
        .dispatcher
        .store()
        .device(&enrolled.device_id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.token_hash, enrolled.token);
    assert!(!stored.token_hash.contains(&enrolled.token[20..]));
    assert_eq!(stored.token_hash.len(), 64);
}

#[tokio::test]
async fn enroll_refusals() {
    let server = Server::start().await;
    let (status, code) = error_code(server.post_enroll("hello").await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_code"));
    let (_, code) = error_code(server.post_enroll("BCDF-GHJK").await).await;
    assert_eq!(code, "invalid_code", "well-formed but never minted");

    let minted = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    assert_eq!(server.post_enroll(&minted.code).await.status(), 200);
    let response = server.post_enroll(&minted.code).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_code");
    assert!(
        body["message"].as_str().unwrap().contains("already used"),
        "{body}"
    );

    let minted = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    server.clock.advance(Duration::from_secs(10 * 60 + 1));
    let (status, code) = error_code(server.post_enroll(&minted.code).await).await;
    assert_eq!((status, code.as_str()), (400, "code_expired"));

    let response = reqwest::Client::new()
        .post(server.url("/enroll"))
        .json(&json!({ "code": "BCDF-GHJK" }))
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(response).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
}

#[tokio::test]
async fn brute_force_gets_rate_limited_never_a_device() {
    let server = Server::with(|c| c.enroll_per_address = 10).await;
    let real = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let mut limited = 0;
    for i in 0..30 {
        let code = if i == 20 {
            real.code.clone()
        } else {
            format!("BCDF-{:04}", i).replace('0', "G").replace('1', "H")
        };
        let response = server.post_enroll(&code).await;
        match response.status().as_u16() {
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                let (_, code) = error_code(response).await;
                assert_eq!(code, "rate_limited");
                limited += 1;
            }
            200 => panic!("attempt {i} paired a device"),
            _ => {}
        }
    }
    assert_eq!(limited, 20);
    assert!(server.dispatcher.devices("alice").await.unwrap().is_empty());
}

/// An office behind one address pairs more laptops than the per-address
/// limit, each with its own code: codes that pair give their count back.
#[tokio::test]
async fn one_address_pairs_as_many_devices_as_it_has_codes() {
    let server = Server::with(|c| c.enroll_per_address = 10).await;
    for i in 0..15 {
        let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
        let response = server.post_enroll(&code.code).await;
        assert_eq!(response.status(), 200, "laptop {i}");
    }
    assert_eq!(server.dispatcher.devices("alice").await.unwrap().len(), 15);
}

/// RFC 8628 §5.1: a flood from many addresses checks no more codes than the
/// documented bound, and a correct code from a fresh address still pairs.
#[tokio::test]
async fn a_flood_from_many_addresses_is_bounded_and_a_correct_code_still_pairs() {
    let (global, per_address, addresses, guesses) = (20u32, 5u32, 30u8, 8u32);
    let server = Server::with(|c| {
        c.enroll_global_failures = global;
        c.enroll_per_address = per_address;
    })
    .await;
    let server = Arc::new(server);
    let mut flood = tokio::task::JoinSet::new();
    for a in 0..addresses {
        for g in 0..guesses {
            let server = Arc::clone(&server);
            flood.spawn(async move {
                let guess = format!("BCDF-{}", ["GHJK", "LMNP", "QRST", "VWXZ"][(g % 4) as usize]);
                let from = Some(IpAddr::from([127, 0, 1, 10 + a]));
                server.post_enroll_from(&guess, from).await.status().as_u16()
            });
        }
    }
    let statuses = flood.join_all().await;
    let checked = statuses.iter().filter(|s| **s == 400).count() as u32;
    let limited = statuses.iter().filter(|s| **s == 429).count() as u32;
    assert_eq!(checked + limited, u32::from(addresses) * guesses, "{statuses:?}");
    assert!(
        checked <= global + u32::from(addresses),
        "{checked} codes checked; the bound is {global} + one per fresh address"
    );
    assert!(checked >= global, "the backstop engaged early: {checked}");

    // During the flood's window, a person with a correct code on a fresh address pairs.
    let real = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let response = server
        .post_enroll_from(&real.code, Some(IpAddr::from([127, 0, 2, 1])))
        .await;
    assert_eq!(response.status(), 200);
    // An address of the flood is still refused, even with a correct code.
    let again = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let response = server
        .post_enroll_from(&again.code, Some(IpAddr::from([127, 0, 1, 10])))
        .await;
    assert_eq!(response.status(), 429);
}

#[tokio::test]
async fn manifest_needs_a_token_and_is_kept() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let response = reqwest::Client::new()
        .put(server.url("/manifest"))
        .json(&common::manifest())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (401, "token_unknown".into()));
    let (head, last) = enrolled.token.split_at(enrolled.token.len() - 1);
    let forged = format!("{head}{}", if last == "0" { "1" } else { "0" });
    let response = client(&forged)
        .put(server.url("/manifest"))
        .json(&common::manifest())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (401, "token_unknown".into()));

    let response = client(&enrolled.token)
        .put(server.url("/manifest"))
        .json(&common::manifest())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert_eq!(devices[0].manifest.as_ref().unwrap().tools.len(), 17);
    assert!(!devices[0].online);

    let response = client(&enrolled.token)
        .put(server.url("/manifest"))
        .header("fusion-host-protocol", "2")
        .json(&common::manifest())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "protocol_unsupported".into()));
}

#[tokio::test]
async fn stream_headers_and_hello() {
    let server = Server::with(|c| c.heartbeat = Duration::from_millis(50)).await;
    let enrolled = server.enroll("alice").await;
    let device = ScriptedDevice::connect(&server, &enrolled).await;
    assert_eq!(device.headers["x-accel-buffering"], "no");
    assert_eq!(device.headers["content-type"], "text/event-stream");
    assert!(server.dispatcher.is_online(&enrolled.device_id));

    // Heartbeats arrive as SSE comments on an otherwise idle stream.
    let response = client(&enrolled.token)
        .get(server.url("/stream"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.contains(": ping") {
        let chunk = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut body))
            .await
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(seen.starts_with("event: hello\n"), "{seen}");
}

#[tokio::test]
async fn read_call_round_trip_with_real_tools() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let device = ToolDevice::start(&server, &enrolled).await;
    std::fs::write(device.dir.path().join("scan.e57"), b"x").unwrap();
    let mut events = server.dispatcher.subscribe();
    let out = server
        .dispatcher
        .call(
            "alice",
            &enrolled.device_id,
            "list_directory",
            json!({}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(output(out)["entries"][0]["path"], "scan.e57");
    let started = events.recv().await.unwrap();
    assert!(
        matches!(started, HostEvent::CallStarted { ref tool, mode: Mode::Run, .. } if tool == "list_directory")
    );
    assert!(matches!(
        events.recv().await.unwrap(),
        HostEvent::CallFinished { ok: true, .. }
    ));
    let log = server.dispatcher.store().calls("alice", 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].tool, "list_directory");

    // A tool error comes back with the device's code.
    let e = server
        .dispatcher
        .call(
            "alice",
            &enrolled.device_id,
            "read_file",
            json!({ "path": "../../etc/passwd" }),
            CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "outside_scope");
    let e = server
        .dispatcher
        .call(
            "alice",
            &enrolled.device_id,
            "format_disk",
            json!({}),
            CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownTool { .. }), "{e}");
}

#[tokio::test]
async fn mutate_proposal_approve_applies_the_stored_input() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let device = ToolDevice::start(&server, &enrolled).await;
    let file = device.dir.path().join("notes.txt");
    std::fs::write(&file, "draft\n").unwrap();

    let input = json!({ "path": "notes.txt", "content": "final\n" });
    let outcome = server
        .dispatcher
        .call(
            "alice",
            &enrolled.device_id,
            "write_file",
            input.clone(),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let mut p = proposal(outcome);
    assert_eq!(p.status, ProposalStatus::Pending);
    assert!(p.plan.diff.as_deref().unwrap().contains("-draft\n+final\n"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "draft\n",
        "planning writes nothing"
    );
    assert_eq!(
        server
            .dispatcher
            .store()
            .proposals("alice", Some(ProposalStatus::Pending))
            .await
            .unwrap()
            .len(),
        1
    );

    // Whatever a client does to its copy, approval sends the stored input.
    p.input = json!({ "path": "notes.txt", "content": "tampered\n" });
    let applied = server.dispatcher.approve("alice", &p.id).await.unwrap();
    assert_eq!(applied.status, ProposalStatus::Applied);
    assert_eq!(applied.decided_by.as_deref(), Some("alice"));
    assert_eq!(applied.output.as_ref().unwrap()["created"], false);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "final\n");

    let again = server.dispatcher.approve("alice", &p.id).await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::ProposalResolved {
                status: ProposalStatus::Applied,
                ..
            }
        ),
        "{again}"
    );
    assert_eq!(again.code(), "proposal_resolved");
    let modes: Vec<Mode> = server
        .dispatcher
        .store()
        .calls("alice", 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.mode)
        .collect();
    assert_eq!(modes, [Mode::Apply, Mode::Plan]);
}

/// A `write_file` of `a.txt` planned by a scripted device: the proposal,
/// pending.
async fn proposed_write(
    server: &Server,
    device: &mut ScriptedDevice,
    device_id: &str,
) -> fusion_host_server::ProposalRecord {
    let planning = server.spawn_call(
        "alice",
        device_id,
        "write_file",
        json!({ "path": "a.txt", "content": "A" }),
        CallOptions::default(),
    );
    let plan_call = device.next().await.unwrap().call();
    assert_eq!(plan_call.mode, Mode::Plan);
    let plan = json!({
        "summary": "create a.txt", "effects": [], "effects_total": 0, "truncated": false,
        "precondition": { "expect": [{ "path": "/x/a.txt", "state": { "kind": "absent" } }] }
    });
    device.answer(&plan_call, plan).await;
    proposal(planning.await.unwrap().unwrap())
}

#[tokio::test]
async fn approve_sends_exactly_the_stored_input_and_precondition() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &enrolled).await;
    let input = json!({ "path": "a.txt", "content": "A" });
    let p = proposed_write(&server, &mut device, &enrolled.device_id).await;

    let d = server.dispatcher.clone();
    let pid = p.id.clone();
    let approving = tokio::spawn(async move { d.approve("alice", &pid).await });
    let apply = device.next().await.unwrap().call();
    assert_eq!(apply.mode, Mode::Apply);
    assert_eq!(apply.input, input);
    assert_eq!(apply.proposal_id.as_deref(), Some(p.id.as_str()));
    assert_eq!(apply.precondition.as_ref(), Some(&p.plan.precondition));
    device
        .answer(&apply, json!({ "path": "/x/a.txt", "created": true }))
        .await;
    assert_eq!(approving.await.unwrap().unwrap().status, ProposalStatus::Applied);
}

#[tokio::test]
async fn conflict_on_apply_marks_the_proposal_failed() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let device = ToolDevice::start(&server, &enrolled).await;
    let file = device.dir.path().join("notes.txt");
    std::fs::write(&file, "v1\n").unwrap();
    let outcome = server
        .dispatcher
        .call(
            "alice",
            &enrolled.device_id,
            "write_file",
            json!({ "path": "notes.txt", "content": "v2\n" }),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let p = proposal(outcome);
    std::fs::write(&file, "edited meanwhile\n").unwrap();
    let e = server.dispatcher.approve("alice", &p.id).await.unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert_eq!(e.status(), 409);
    let stored = server.dispatcher.store().proposal(&p.id).await.unwrap().unwrap();
    assert_eq!(stored.status, ProposalStatus::Failed);
    assert_eq!(stored.error.unwrap().code, "conflict");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "edited meanwhile\n");
}

#[tokio::test]
async fn reject_and_race_of_two_approvers() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let _device = ToolDevice::start(&server, &enrolled).await;
    let plan = |content: &'static str| {
        let d = server.dispatcher.clone();
        let id = enrolled.device_id.clone();
        async move {
            proposal(
                d.call(
                    "alice",
                    &id,
                    "write_file",
                    json!({ "path": "x.txt", "content": content }),
                    CallOptions::default(),
                )
                .await
                .unwrap(),
            )
        }
    };
    let p = plan("a").await;
    let rejected = server.dispatcher.reject("alice", &p.id).await.unwrap();
    assert_eq!(rejected.status, ProposalStatus::Rejected);
    let e = server.dispatcher.approve("alice", &p.id).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::ProposalResolved {
                status: ProposalStatus::Rejected,
                ..
            }
        ),
        "{e}"
    );

    let p = plan("b").await;
    let (a, b) = tokio::join!(
        server.dispatcher.approve("alice", &p.id),
        server.dispatcher.approve("alice", &p.id)
    );
    assert_eq!(
        a.is_ok() as u8 + b.is_ok() as u8,
        1,
        "exactly one approval wins: {a:?} {b:?}"
    );

    let p = plan("c").await;
    server.clock.advance(Duration::from_secs(25 * 60 * 60));
    let e = server.dispatcher.approve("alice", &p.id).await.unwrap_err();
    assert_eq!(e.code(), "proposal_expired");
    let stored = server.dispatcher.store().proposal(&p.id).await.unwrap().unwrap();
    assert_eq!(stored.status, ProposalStatus::Expired);
}

#[tokio::test]
async fn owners_are_isolated() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let _device = ToolDevice::start(&server, &enrolled).await;
    let p = proposal(
        server
            .dispatcher
            .call(
                "alice",
                &enrolled.device_id,
                "create_directory",
                json!({ "path": "d" }),
                CallOptions::default(),
            )
            .await
            .unwrap(),
    );
    let d = &server.dispatcher;
    let not_hers = server.stat("bob", &enrolled.device_id).await.unwrap_err();
    let missing = server.stat("bob", "dev_nope").await.unwrap_err();
    assert_eq!(not_hers.code(), "device_not_found");
    assert_eq!(not_hers.status(), missing.status());
    assert_eq!(
        d.approve("bob", &p.id).await.unwrap_err().code(),
        "proposal_not_found"
    );
    assert_eq!(
        d.reject("bob", &p.id).await.unwrap_err().code(),
        "proposal_not_found"
    );
    assert_eq!(
        d.revoke("bob", &enrolled.device_id).await.unwrap_err().code(),
        "device_not_found"
    );
    assert!(d.devices("bob").await.unwrap().is_empty());
    assert!(d.store().proposals("bob", None).await.unwrap().is_empty());
    assert!(d.store().calls("bob", 10).await.unwrap().is_empty());
    // And alice's proposal is still hers to decide.
    assert_eq!(
        d.approve("alice", &p.id).await.unwrap().status,
        ProposalStatus::Applied
    );
}

#[tokio::test]
async fn revocation_closes_the_live_stream() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &enrolled).await;
    let mut events = server.dispatcher.subscribe();
    server
        .dispatcher
        .revoke("alice", &enrolled.device_id)
        .await
        .unwrap();
    let revoked = device.next().await.unwrap();
    assert_eq!(revoked.event, "revoked");
    assert!(
        revoked.data["message"]
            .as_str()
            .unwrap()
            .contains("pair it again")
    );
    assert!(
        device.next().await.is_none(),
        "the stream is closed after `revoked`"
    );
    assert!(matches!(
        events.recv().await.unwrap(),
        HostEvent::DeviceRevoked { .. }
    ));
    assert!(!server.dispatcher.is_online(&enrolled.device_id));

    let response = client(&enrolled.token)
        .get(server.url("/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (401, "token_revoked".into()));
    let e = server.stat("alice", &enrolled.device_id).await.unwrap_err();
    assert_eq!(e.code(), "device_revoked");

    // A revoked device learns it from its manifest upload too, however large
    // the manifest: a refusal sent before the body is read closes the socket
    // on unread data, which Windows turns into a reset ("connection reset"
    // instead of "revoked", and the device retried forever).
    let mut manifest = fusion_tools::DeviceManifest {
        host_version: "test".into(),
        tools: fusion_tools::Toolbox::builtin().manifest().tools,
        roots: Vec::new(),
    };
    let padding = manifest.tools[0].clone();
    while serde_json::to_vec(&manifest).unwrap().len() < 4 * 1024 * 1024 {
        manifest.tools.extend(std::iter::repeat_n(padding.clone(), 500));
    }
    for _ in 0..5 {
        let response = client(&enrolled.token)
            .put(server.url("/manifest"))
            .json(&manifest)
            .send()
            .await
            .expect("a refusal, not a reset");
        assert_eq!(error_code(response).await, (401, "token_revoked".into()));
    }
}

#[tokio::test]
async fn a_newer_stream_replaces_the_older() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut first = ScriptedDevice::connect(&server, &enrolled).await;
    let mut events = server.dispatcher.subscribe();
    let mut second = ScriptedDevice::connect(&server, &enrolled).await;
    assert_eq!(first.next().await.unwrap().event, "replaced");
    assert!(first.next().await.is_none());
    // The old stream's end does not mark the device offline.
    assert!(matches!(
        events.recv().await.unwrap(),
        HostEvent::DeviceOnline { .. }
    ));
    assert!(server.dispatcher.is_online(&enrolled.device_id));

    let call = server.spawn_call(
        "alice",
        &enrolled.device_id,
        "stat",
        json!({ "path": "." }),
        CallOptions::default(),
    );
    let ev = second.next().await.unwrap().call();
    second.answer(&ev, json!({ "kind": "directory" })).await;
    assert_eq!(output(call.await.unwrap().unwrap())["kind"], "directory");
}

#[tokio::test]
async fn reconnect_redelivers_an_unanswered_call() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &enrolled).await;
    let call = server.spawn_call(
        "alice",
        &enrolled.device_id,
        "stat",
        json!({ "path": "." }),
        CallOptions::default(),
    );
    let sent = device.next().await.unwrap();
    let first = sent.call();
    drop(device); // the connection drops before the device answers

    let mut device = ScriptedDevice::connect_with(&server, &enrolled, Some(&sent.id)).await;
    let again = device.next().await.unwrap();
    assert_eq!(again.id, sent.id, "same SSE id");
    assert_eq!(
        again.call().call_id,
        first.call_id,
        "same call, so the device can deduplicate"
    );
    device.answer(&first, json!({ "kind": "directory" })).await;
    assert_eq!(output(call.await.unwrap().unwrap())["kind"], "directory");
}

#[tokio::test]
async fn results_are_idempotent_and_checked() {
    let server = Server::start().await;
    let alice = server.enroll("alice").await;
    let other = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &alice).await;
    let intruder = ScriptedDevice::connect(&server, &other).await;
    let call = server.spawn_call(
        "alice",
        &alice.device_id,
        "stat",
        json!({ "path": "." }),
        CallOptions::default(),
    );
    let ev = device.next().await.unwrap().call();

    // Another device's call is answered as if it did not exist: a device
    // learns nothing of other devices' calls.
    let response = intruder.answer(&ev, json!({ "kind": "forged" })).await;
    assert_eq!(error_code(response).await, (404, "call_unknown".into()));
    let response = device.answer(&ev, json!({ "kind": "file" })).await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "accepted": true })
    );
    let response = device.answer(&ev, json!({ "kind": "file" })).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "accepted": false })
    );
    assert_eq!(output(call.await.unwrap().unwrap())["kind"], "file");

    let response = device.post_result(&ok("call_unknown", json!({}))).await;
    assert_eq!(error_code(response).await, (404, "call_unknown".into()));
}

/// A running call's progress reaches its caller, if it listens, and every
/// page as an event; another device's report for that call reaches nobody,
/// and a message that is not plain text is refused.
#[tokio::test]
async fn progress_reaches_the_caller_and_no_other_device_can_forge_it() {
    let server = Server::start().await;
    let alice = server.enroll("alice").await;
    let other = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &alice).await;
    let intruder = ScriptedDevice::connect(&server, &other).await;
    let mut events = server.dispatcher.subscribe();
    let (progress, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let options = CallOptions {
        progress: Some(progress),
        ..CallOptions::default()
    };
    let call = server.spawn_call(
        "alice",
        &alice.device_id,
        "hash_file",
        json!({ "path": "big.bin" }),
        options,
    );
    let ev = device.next().await.unwrap().call();

    let response = intruder.progress(&ev, 999, 1000, "bytes hashed").await;
    assert_eq!(
        response.status(),
        204,
        "a report is a courtesy; a forged one goes nowhere"
    );
    let response = device.progress(&ev, 512, 1024, "bytes hashed").await;
    assert_eq!(response.status(), 204);
    let report = tokio::time::timeout(WAIT, reports.recv()).await.unwrap().unwrap();
    assert_eq!((report.done, report.total), (512, Some(1024)), "{report:?}");
    assert_eq!(
        report.describe("hash_file"),
        "hash_file: 512 of 1024 bytes hashed"
    );
    assert!(
        reports.try_recv().is_err(),
        "the intruder's report reached nobody"
    );
    let event = loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            e @ HostEvent::CallProgress { done: 512, .. } => break e,
            _ => continue,
        }
    };
    assert!(
        matches!(&event, HostEvent::CallProgress { device_id, call_id, .. } if device_id == &alice.device_id && call_id == &ev.call_id),
        "{event:?}"
    );

    let response = device.progress(&ev, 600, 1024, "bytes\u{1b}[2J hashed").await;
    assert_eq!(error_code(response).await, (400, "invalid_request".into()));
    let response = device.progress(&ev, 600, 1024, &"x".repeat(201)).await;
    assert_eq!(error_code(response).await, (400, "invalid_request".into()));
    let mut forged = ev.clone();
    forged.call_id = format!("call_{}", "x".repeat(100));
    let response = device.progress(&forged, 600, 1024, "bytes hashed").await;
    assert_eq!(error_code(response).await, (400, "invalid_request".into()));
    device.answer(&ev, json!({ "digest": "x" })).await;
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn offline_device_gets_a_grace_then_device_offline() {
    let server = Server::start().await; // grace 300 ms
    let enrolled = server.enroll("alice").await;
    let put = client(&enrolled.token)
        .put(server.url("/manifest"))
        .json(&common::manifest())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let e = server.stat("alice", &enrolled.device_id).await.unwrap_err();
    assert_eq!(e.code(), "device_offline");
    assert_eq!(e.status(), 503);
    assert!(e.is_retryable());

    // A device that comes back within the grace gets the call.
    let server = Server::with(|c| c.offline_grace = Duration::from_secs(5)).await;
    let enrolled = server.enroll("alice").await;
    let put = client(&enrolled.token)
        .put(server.url("/manifest"))
        .json(&common::manifest())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let call = server.spawn_call(
        "alice",
        &enrolled.device_id,
        "list_directory",
        json!({}),
        CallOptions::default(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _device = ToolDevice::start(&server, &enrolled).await;
    assert!(output(call.await.unwrap().unwrap())["entries"].is_array());
}

#[tokio::test]
async fn caller_timeout_and_dropped_caller_cancel_on_the_device() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &enrolled).await;
    let options = CallOptions {
        timeout: Some(Duration::from_millis(200)),
        ..CallOptions::default()
    };
    let call = server.spawn_call(
        "alice",
        &enrolled.device_id,
        "grep",
        json!({ "pattern": "x" }),
        options,
    );
    let ev = device.next().await.unwrap().call();
    assert_eq!(ev.timeout_ms, 200);
    let cancel = device.next().await.unwrap();
    assert_eq!(cancel.event, "cancel");
    assert_eq!(cancel.data, json!({ "call_id": ev.call_id, "reason": "timeout" }));
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code(), "timeout");
    // A late answer is refused: nobody is waiting for it.
    let response = device.answer(&ev, json!({})).await;
    assert_eq!(response.status(), 404);

    let call = server.spawn_call(
        "alice",
        &enrolled.device_id,
        "grep",
        json!({ "pattern": "y" }),
        CallOptions::default(),
    );
    let ev = device.next().await.unwrap().call();
    call.abort();
    let cancel = device.next().await.unwrap();
    assert_eq!(
        cancel.data,
        json!({ "call_id": ev.call_id, "reason": "caller_gone" })
    );
}

#[tokio::test]
async fn request_bodies_are_size_limited() {
    let server = Server::with(|c| c.max_body_bytes = 64 * 1024).await;
    let enrolled = server.enroll("alice").await;
    let device = ScriptedDevice::connect(&server, &enrolled).await;
    let big = CallResult {
        call_id: "call_x".into(),
        ok: true,
        output: Some(json!({ "content": "x".repeat(100 * 1024) })),
        error: None,
        truncated: false,
        duration_ms: 0,
    };
    let response = device.post_result(&big).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_large");
    assert!(
        body["message"].as_str().unwrap().contains("65536 bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn shutdown_ends_streams_cleanly() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &enrolled).await;
    server.dispatcher.shutdown();
    assert!(device.next().await.is_none());
    let e = server.stat("alice", &enrolled.device_id).await.unwrap_err();
    assert_eq!(e.code(), "shutting_down");
}

#[tokio::test]
async fn calls_follow_the_latest_manifest() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let _device = ToolDevice::start(&server, &enrolled).await;
    let d = &server.dispatcher;
    let stat = || server.stat("alice", &enrolled.device_id);
    assert!(stat().await.is_ok());
    // The device comes back with fewer tools.
    let mut smaller = common::manifest();
    smaller.tools.retain(|t| t.name != "stat");
    let put = client(&enrolled.token)
        .put(server.url("/manifest"))
        .json(&smaller)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let e = stat().await.unwrap_err();
    assert_eq!(e.code(), "unknown_tool");
    assert!(
        e.to_string().contains("list_directory"),
        "names what it offers: {e}"
    );
    assert_eq!(
        d.devices("alice").await.unwrap()[0]
            .manifest
            .as_ref()
            .unwrap()
            .tools
            .len(),
        16
    );
}

#[tokio::test]
async fn a_machine_paired_twice_gets_a_distinct_name_and_devices_can_be_renamed() {
    let server = Server::start().await;
    let first = server.enroll("alice").await;
    let second = server.enroll("alice").await;
    assert_eq!(first.name.as_deref(), Some("survey-laptop"));
    assert_eq!(second.name.as_deref(), Some("survey-laptop (2)"));
    // Another owner's names do not count.
    assert_eq!(server.enroll("bob").await.name.as_deref(), Some("survey-laptop"));

    let d = &server.dispatcher;
    // Renaming to a name another device has keeps them apart.
    let renamed = d
        .rename_device("alice", &second.device_id, " survey-laptop ")
        .await
        .unwrap();
    assert_eq!(renamed, "survey-laptop (2)");
    assert_eq!(
        d.rename_device("alice", &second.device_id, "site office")
            .await
            .unwrap(),
        "site office"
    );
    let names: Vec<String> = d
        .devices("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.device.name)
        .collect();
    assert_eq!(names, ["survey-laptop", "site office"]);
    let empty = d.rename_device("alice", &second.device_id, "  ").await;
    assert_eq!(empty.unwrap_err().code(), "invalid_request");
    let theirs = d.rename_device("bob", &second.device_id, "mine").await;
    assert_eq!(theirs.unwrap_err().code(), "device_not_found");
    // A revoked device's name is free again.
    d.revoke("alice", &first.device_id).await.unwrap();
    assert_eq!(
        server.enroll("alice").await.name.as_deref(),
        Some("survey-laptop")
    );
}

#[tokio::test]
async fn a_devices_update_report_shows_it_updating_then_goes_to_the_activity_log() {
    use fusion_host_server::Store;

    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut events = server.dispatcher.subscribe();
    let post = |body: Value| {
        client(&enrolled.token)
            .post(server.url("/update"))
            .json(&body)
            .send()
    };

    let response = post(json!({ "status": "started", "from": "0.1.0", "to": "0.2.0" }))
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert_eq!(devices[0].updating.as_deref(), Some("0.2.0"));
    let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(
        matches!(&event, HostEvent::DeviceUpdate { to, .. } if to == "0.2.0"),
        "{event:?}"
    );
    assert!(
        server.store.calls("alice", 10).await.unwrap().is_empty(),
        "a start is not an outcome"
    );

    let response = post(json!({ "status": "rolled_back", "from": "0.1.0", "to": "0.2.0", "reason": "0.2.0 did not connect within 120 s" }))
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert_eq!(devices[0].updating, None);
    let calls = server.store.calls("alice", 10).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, "update");
    assert_eq!(calls[0].requested_by, "automatic update 0.1.0 → 0.2.0");
    assert_eq!(calls[0].error_code.as_deref(), Some("update_rolled_back"));
    assert_eq!(
        calls[0].paths,
        vec!["0.2.0 did not connect within 120 s".to_string()]
    );

    // What a device says is checked like any input.
    let response = post(json!({ "status": "updated", "from": "0.1.0", "to": "0.2.0\u{1b}[31m" }))
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_request".into()));
    let response = post(json!({ "status": "finished", "from": "0.1.0", "to": "0.2.0" }))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = reqwest::Client::new()
        .post(server.url("/update"))
        .json(&json!({ "status": "started", "from": "0.1.0", "to": "0.2.0" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (401, "token_unknown".into()));
    assert_eq!(server.store.calls("alice", 10).await.unwrap().len(), 1);
}

/// A person who approves and closes the page at once: the request that
/// approved goes away mid-apply. The approval still runs to its end (the
/// device is not told to stop, the proposal ends `applied`, and pages hear
/// so), instead of the proposal staying `approved` for ever.
#[tokio::test]
async fn an_approval_whose_caller_goes_away_is_still_carried_out() {
    let server = Server::start().await;
    let enrolled = server.enroll("alice").await;
    let mut device = ScriptedDevice::connect(&server, &enrolled).await;
    let p = proposed_write(&server, &mut device, &enrolled.device_id).await;
    let mut events = server.dispatcher.subscribe();

    let d = server.dispatcher.clone();
    let pid = p.id.clone();
    let approving = tokio::spawn(async move { d.approve("alice", &pid).await });
    let apply = device.next().await.unwrap().call();
    approving.abort();
    let _ = approving.await;
    // The device hears no `cancel` for the apply.
    device.quiet(Duration::from_millis(200)).await;
    let answered = device
        .answer(&apply, json!({ "path": "/x/a.txt", "created": true }))
        .await;
    assert_eq!(answered.status(), 200);

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the proposal's end was announced")
            .unwrap();
        if let HostEvent::ProposalResolved { status, .. } = event {
            assert_eq!(status, ProposalStatus::Applied);
            break;
        }
    }
    let stored = server.dispatcher.proposal("alice", &p.id).await.unwrap();
    assert_eq!(stored.status, ProposalStatus::Applied);
}

#[tokio::test]
async fn a_heartbeat_past_the_protocols_ceiling_is_lowered_to_it() {
    let server = Server::with(|c| c.heartbeat = Duration::from_secs(60)).await;
    assert_eq!(
        server.dispatcher.config().heartbeat,
        fusion_host_server::MAX_HEARTBEAT
    );
    let enrolled = server.enroll("alice").await;
    let response = client(&enrolled.token)
        .get(server.url("/stream"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let chunk = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut body))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello = String::from_utf8_lossy(&chunk);
    assert!(hello.contains("\"heartbeat_ms\":15000"), "{hello}");
}

/// The client address that pairing is rate-limited by comes from
/// `X-Forwarded-For` only when the app says it is behind a proxy: anyone
/// can send the header, and trusting it would let one client pick a fresh
/// address for every guess.
#[tokio::test]
async fn x_forwarded_for_counts_only_when_the_app_trusts_its_proxy() {
    let guesses = |server: &Server| {
        let url = server.url("/enroll");
        async move {
            let mut codes = Vec::new();
            for n in 0..12 {
                let response = reqwest::Client::new()
                    .post(&url)
                    .header("x-forwarded-for", format!("203.0.113.{n}"))
                    .json(&json!({ "code": "BCDF-GHJK", "name": "n", "platform": "p", "host_version": "1" }))
                    .send()
                    .await
                    .unwrap();
                codes.push(error_code(response).await.1);
            }
            codes
        }
    };
    let direct = Server::start().await;
    let codes = guesses(&direct).await;
    assert_eq!(
        codes.last().map(String::as_str),
        Some("rate_limited"),
        "{codes:?}"
    );

    let proxied = Server::with(|c| c.trust_forwarded_for = true).await;
    let codes = guesses(&proxied).await;
    assert!(codes.iter().all(|c| c == "invalid_code"), "{codes:?}");
}

//! Signing in to `/mcp` with OAuth, as MCP clients do: the app as a real
//! process, client metadata documents served over real TLS from a test CA,
//! the official Rust MCP client's OAuth support driving the flow, and a
//! person answering the consent page over HTTP (the browser test clicks it
//! in Chromium).

mod common;

use std::collections::HashMap;

use common::documents::Documents;
use common::{App, User, mcp_status};
use oauth2::PkceCodeChallenge;
use reqwest::StatusCode;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const CALLBACK: &str = "http://127.0.0.1:9/callback";

/// A person in a browser that does not follow redirects, so each step's
/// `Location` can be checked.
async fn person(app: &App) -> User {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    User::sign_up_in(app, "oauth", client).await
}

/// The hidden fields of the consent form (the page's other forms left
/// out), unescaped.
fn consent_fields(html: &str) -> Vec<(String, String)> {
    let form = html
        .split("action=\"/oauth/authorize\"")
        .nth(1)
        .expect("the consent form");
    hidden_fields(form.split("</form>").next().unwrap())
}

/// The hidden fields of a page, unescaped.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let unescape = |v: &str| {
        v.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    };
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|rest| {
            let name = rest.strip_prefix("name=\"")?.split('"').next()?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((name.to_string(), unescape(value)))
        })
        .collect()
}

/// Opens the authorization URL and answers the consent page; returns the
/// `Location` the person's browser is sent to.
async fn consent(person: &User, auth_url: &str, decision: &str, propose: bool) -> String {
    let page = person.client.get(auth_url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the consent page");
    let html = page.text().await.unwrap();
    let mut fields = consent_fields(&html);
    fields.push(("decision".into(), decision.into()));
    if propose {
        fields.push(("propose".into(), "on".into()));
    }
    let answer = person
        .client
        .post(format!("{}/oauth/authorize", person.url))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::SEE_OTHER,
        "{}",
        answer.text().await.unwrap()
    );
    location(&answer)
}

fn location(response: &reqwest::Response) -> String {
    response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string()
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

#[tokio::test]
async fn a_client_signs_in_by_its_metadata_document_and_is_cut_off_when_disconnected() {
    let docs = Documents::start().await;
    let app = docs.app(true);
    let alice = person(&app).await;
    let device = alice.pair_device().await;
    std::fs::write(device.dir.path().join("north.txt"), "scan").unwrap();
    let client_id = docs.client("/survey-agent/client.json", "Survey Agent", CALLBACK);

    // Discovery, as a client added by URL does it.
    let (status, challenge) = mcp_status(&app, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    assert!(
        challenge.contains("scope=\"devices:read devices:propose\""),
        "{challenge}"
    );
    let resource: Value = reqwest::get(format!("{}/.well-known/oauth-protected-resource/mcp", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resource["authorization_servers"], json!([app.url]));
    let server: Value = reqwest::get(format!("{}/.well-known/oauth-authorization-server", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["issuer"], json!(app.url));
    assert_eq!(server["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(server["client_id_metadata_document_supported"], json!(true));

    // The official Rust client: discovery from the challenge, its client id
    // a metadata document, PKCE.
    let mut oauth = OAuthState::new(format!("{}/mcp", app.url), None).await.unwrap();
    oauth
        .start_authorization(
            AuthorizationRequest::new(CALLBACK)
                .with_client_metadata_url(&client_id)
                .with_challenge(&challenge),
        )
        .await
        .unwrap();
    let auth_url = oauth.get_authorization_url().await.unwrap();
    assert!(auth_url.contains("code_challenge_method=S256"), "{auth_url}");

    // The page says who asks, for whom, reaching what.
    let page = alice.client.get(&auth_url).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("form-action 'self' http://127.0.0.1:9"), "{csp}");
    let html = page.text().await.unwrap();
    for shown in ["Survey Agent", "localhost", CALLBACK, &alice.email, "test-laptop"] {
        assert!(html.contains(shown), "the consent page shows {shown}");
    }
    let back = consent(&alice, &auth_url, "allow", true).await;
    assert!(back.starts_with(&format!("{CALLBACK}?")), "{back}");
    assert_eq!(query(&back)["iss"], app.url);
    oauth.handle_callback_url(&back).await.unwrap();
    let oauth = oauth.into_authorization_manager().expect("signed in");
    let token = oauth.get_access_token().await.unwrap();
    assert!(token.starts_with("fha_"));

    // The token works at /mcp, and what it proposes names the client.
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url)).auth_header(&token);
    let mcp = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let tools = mcp.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "write_file"), "it may propose");
    let args = json!({"device": device.id, "path": "south.txt", "content": "hello"});
    let result = mcp
        .call_tool(CallToolRequestParams::new("write_file").with_arguments(args.as_object().unwrap().clone()))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let (_, proposals) = alice.get("/api/proposals?status=pending").await;
    let requested_by = proposals["proposals"][0]["requested_by"].as_str().unwrap();
    assert_eq!(requested_by, format!("{} via Survey Agent (MCP)", alice.email));

    // Listed where the person manages access.
    let (_, connected) = alice.get("/api/connected-clients").await;
    let clients = connected["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{connected}");
    assert_eq!(clients[0]["client_name"], "Survey Agent");
    assert_eq!(clients[0]["client_id"], json!(client_id));
    assert!(clients[0]["last_used_at"].is_i64(), "{connected}");
    let devices_page = alice.html("/devices").await;
    assert!(devices_page.contains("Connected apps") && devices_page.contains("Survey Agent"));

    // Refresh gives a new access token.
    oauth.refresh_token().await.unwrap();
    let renewed = oauth.get_access_token().await.unwrap();
    assert_ne!(renewed, token);
    assert_eq!(mcp_status(&app, &renewed).await.0, StatusCode::OK);

    // Disconnecting ends it at once: tokens, refresh, the open session.
    let grant = clients[0]["id"].as_str().unwrap();
    let gone = alice
        .client
        .delete(format!("{}/api/connected-clients/{grant}", app.url))
        .header("x-csrf-token", &alice.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let (status, challenge) = mcp_status(&app, &renewed).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let listed = mcp.call_tool(CallToolRequestParams::new("list_devices")).await;
    assert!(listed.is_err(), "the open session ended: {listed:?}");
    assert!(
        oauth.refresh_token().await.is_err(),
        "the refresh token ended too"
    );
    let (_, connected) = alice.get("/api/connected-clients").await;
    assert_eq!(connected["clients"], json!([]));
}

/// A registered client (RFC 7591) and a PKCE pair, driven by hand.
struct Hand {
    client_id: String,
    challenge: String,
    verifier: String,
}

impl Hand {
    async fn register(app: &App, name: &str) -> Hand {
        let response = reqwest::Client::new()
            .post(format!("{}/oauth/register", app.url))
            .json(&json!({"client_name": name, "redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_endpoint_auth_method"], "none");
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        Hand {
            client_id: body["client_id"].as_str().unwrap().to_string(),
            challenge: challenge.as_str().to_string(),
            verifier: verifier.secret().clone(),
        }
    }

    fn authorize_url(&self, app: &App, extra: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", app.url)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", CALLBACK)
                .append_pair("state", "st-1")
                .append_pair("code_challenge", &self.challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("resource", &format!("{}/mcp", app.url));
        }
        let mut url = url.to_string();
        for (k, v) in extra {
            // Later pairs of the same name win in serde_urlencoded: replace.
            url = url::Url::parse(&url)
                .map(|mut u| {
                    let kept: Vec<(String, String)> = u
                        .query_pairs()
                        .into_owned()
                        .filter(|(name, _)| name != k)
                        .collect();
                    u.query_pairs_mut().clear().extend_pairs(kept);
                    if !v.is_empty() {
                        u.query_pairs_mut().append_pair(k, v);
                    }
                    u.to_string()
                })
                .unwrap();
        }
        url
    }

    async fn code(&self, app: &App, person: &User, propose: bool) -> String {
        let back = consent(person, &self.authorize_url(app, &[]), "allow", propose).await;
        query(&back)["code"].clone()
    }

    async fn token(&self, app: &App, fields: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut form = vec![("client_id", self.client_id.as_str())];
        form.extend_from_slice(fields);
        let response = reqwest::Client::new()
            .post(format!("{}/oauth/token", app.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == StatusCode::OK {
            assert_eq!(response.headers()["cache-control"], "no-store");
        }
        (status, response.json().await.unwrap())
    }

    async fn exchange(&self, app: &App, code: &str) -> (StatusCode, Value) {
        self.token(
            app,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &self.verifier),
            ],
        )
        .await
    }
}

#[tokio::test]
async fn the_authorization_server_refuses_what_it_must_on_sqlite() {
    refuses_what_it_must(&App::start(None)).await;
}

/// The same on PostgreSQL (skipped, saying so, without
/// `FUSION_TEST_POSTGRES_URL`): every statement of the grants and tokens.
#[tokio::test]
async fn the_authorization_server_refuses_what_it_must_on_postgres() {
    match std::env::var("FUSION_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => refuses_what_it_must(&App::start(Some(&url))).await,
        _ => {
            eprintln!(
                "skipped on PostgreSQL: FUSION_TEST_POSTGRES_URL is not set (the SQLite run still ran)"
            );
        }
    }
}

async fn refuses_what_it_must(app: &App) {
    let alice = person(app).await;
    let _device = alice.pair_device().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Registration takes only redirect URIs that cannot leak a code.
    let bad = http
        .post(format!("{}/oauth/register", app.url))
        .json(&json!({"redirect_uris": ["http://evil.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"],
        "invalid_redirect_uri"
    );
    let hand = Hand::register(app, "Script").await;

    // Signed out: to sign-in and back through next=.
    let url = hand.authorize_url(app, &[]);
    let to_signin = http.get(&url).send().await.unwrap();
    let signin = location(&to_signin);
    assert!(
        signin.starts_with("/signin?next=%2Foauth%2Fauthorize%3F"),
        "{signin}"
    );
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser
        .get(format!("{}{signin}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let next = hidden_fields(&page)
        .into_iter()
        .find(|(k, _)| k == "next")
        .unwrap()
        .1;
    let signed_in = browser
        .post(format!("{}/signin", app.url))
        .form(&[
            ("email", alice.email.as_str()),
            ("password", "correct horse battery"),
            ("csrf", &common::hidden_csrf(&page)),
            ("next", &next),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        format!("{}{}", app.url, location(&signed_in)),
        url,
        "back to the request"
    );

    // A redirect URI the client did not register is never followed.
    let elsewhere = hand.authorize_url(app, &[("redirect_uri", "http://127.0.0.1:9/other")]);
    let refused = alice.client.get(&elsewhere).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.headers().get("location").is_none());
    assert!(refused.text().await.unwrap().contains("does not list"));

    // After that, problems go back to the client with its state.
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("resource", "https://elsewhere.example/mcp")],
            "invalid_target",
        ),
        (vec![("response_type", "token")], "unsupported_response_type"),
    ] {
        let response = alice
            .client
            .get(hand.authorize_url(app, &extra))
            .send()
            .await
            .unwrap();
        let back = query(&location(&response));
        assert_eq!(back["error"], error, "{extra:?}");
        assert_eq!(back["state"], "st-1");
    }

    // The consent form needs the session's CSRF token.
    let html = alice.html(&hand.authorize_url(app, &[])[app.url.len()..]).await;
    let mut forged: Vec<(String, String)> = consent_fields(&html)
        .into_iter()
        .filter(|(k, _)| k != "csrf")
        .collect();
    forged.push(("csrf".into(), "forged".into()));
    forged.push(("decision".into(), "allow".into()));
    let response = alice
        .client
        .post(format!("{}/oauth/authorize", app.url))
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("location").is_none());

    // Denied: the client hears access_denied.
    let back = consent(&alice, &hand.authorize_url(app, &[]), "deny", true).await;
    assert_eq!(query(&back)["error"], "access_denied");

    // A code needs the verifier of its challenge, and works once.
    let code = hand.code(app, &alice, true).await;
    let wrong = "w".repeat(43);
    let (status, body) = hand
        .token(
            app,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &wrong),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body) = hand
        .token(
            app,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9/other"),
                ("code_verifier", &hand.verifier),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, tokens) = hand.exchange(app, &code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "devices:propose devices:read");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(app, access).await.0, StatusCode::OK);
    // Used again: refused, and what it gave is revoked.
    let (status, body) = hand.exchange(app, &code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(mcp_status(app, access).await.0, StatusCode::UNAUTHORIZED);

    // Refresh tokens rotate; one used twice ends the grant.
    let (_, tokens) = hand.exchange(app, &hand.code(app, &alice, true).await).await;
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, renewed) = hand
        .token(
            app,
            &[("grant_type", "refresh_token"), ("refresh_token", &first_refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let renewed_access = renewed["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(app, renewed_access).await.0, StatusCode::OK);
    let (status, body) = hand
        .token(
            app,
            &[("grant_type", "refresh_token"), ("refresh_token", &first_refresh)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(mcp_status(app, renewed_access).await.0, StatusCode::UNAUTHORIZED);

    // Revocation (RFC 7009) of a refresh token ends its access tokens.
    let (_, tokens) = hand.exchange(app, &hand.code(app, &alice, true).await).await;
    let revoked = http
        .post(format!("{}/oauth/revoke", app.url))
        .form(&[
            ("token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &hand.client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        mcp_status(app, tokens["access_token"].as_str().unwrap()).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A token for another resource is not issued.
    let code = hand.code(app, &alice, true).await;
    let (status, body) = hand
        .token(
            app,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &hand.verifier),
                ("resource", "https://elsewhere.example/mcp"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );

    // Allowed to read only: no tool that changes files, even when named.
    let (_, tokens) = hand.exchange(app, &hand.code(app, &alice, false).await).await;
    assert_eq!(tokens["scope"], "devices:read");
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url))
        .auth_header(tokens["access_token"].as_str().unwrap());
    let mcp = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let tools = mcp.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "read_file"));
    assert!(!tools.iter().any(|t| t.name == "write_file"), "read-only");
    let args = json!({"device": "test-laptop", "path": "x.txt", "content": "no"});
    let refused = mcp
        .call_tool(CallToolRequestParams::new("write_file").with_arguments(args.as_object().unwrap().clone()))
        .await;
    let message = format!("{refused:?}");
    assert!(message.contains("allowed to read only"), "{message}");
    let (_, pending) = alice.get("/api/proposals?status=pending").await;
    assert_eq!(pending["proposals"], json!([]), "nothing was proposed");
}

#[tokio::test]
async fn client_metadata_documents_are_fetched_within_bounds() {
    let docs = Documents::start().await;
    let app = docs.app(true);
    let refusal = |client_id: String| {
        let url = format!(
            "{}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&code_challenge=x&code_challenge_method=S256",
            app.url,
            url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(CALLBACK.as_bytes()).collect::<String>(),
        );
        async move {
            let response = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(url)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{client_id}");
            assert!(response.headers().get("location").is_none());
            response.text().await.unwrap()
        }
    };

    let big = docs.put(
        "/big.json",
        200,
        json!({"client_id": format!("{}/big.json", docs.url), "redirect_uris": [CALLBACK], "padding": "x".repeat(20_000)}).to_string(),
    );
    assert!(refusal(big).await.contains("larger than 16 KiB"));
    let other = docs.put(
        "/other.json",
        200,
        json!({"client_id": "https://elsewhere.example/c.json", "redirect_uris": [CALLBACK]}).to_string(),
    );
    assert!(refusal(other).await.contains("names another client_id"));
    let secret = docs.put(
        "/secret.json",
        200,
        json!({"client_id": format!("{}/secret.json", docs.url), "redirect_uris": [CALLBACK], "token_endpoint_auth_method": "client_secret_basic"}).to_string(),
    );
    assert!(refusal(secret).await.contains("asks for a client secret"));
    assert!(
        refusal(format!("{}/missing.json", docs.url))
            .await
            .contains("answered HTTP 404")
    );
    let elsewhere = docs.put(
        "/elsewhere.json",
        200,
        json!({"client_id": format!("{}/elsewhere.json", docs.url), "redirect_uris": ["https://app.example/cb"]}).to_string(),
    );
    assert!(refusal(elsewhere).await.contains("does not list"));
    assert!(
        refusal("http://localhost/client.json".into())
            .await
            .contains("neither registered here nor an https URL")
    );

    // Without the development switch, the app's own networks are off limits.
    let public = docs.app(false);
    let fenced = |client_id: String| {
        let url = format!(
            "{}/oauth/authorize?response_type=code&client_id={}",
            public.url,
            url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>(),
        );
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let by_name = docs.client("/fine.json", "Fine", CALLBACK);
    assert!(fenced(by_name).await.contains("private network"));
    let port = docs.url.rsplit(':').next().unwrap();
    assert!(
        fenced(format!("https://127.0.0.1:{port}/fine.json"))
            .await
            .contains("private network")
    );
    assert!(
        fenced("https://169.254.169.254/latest/meta-data".into())
            .await
            .contains("private network")
    );
}

/// What the registration and token endpoints refuse, each with its RFC
/// error: more redirect URIs than kept, a body that is not JSON, a client
/// id too long to be one; a name with control characters is not shown; a
/// grant type not served, a missing field, and a refresh that asks for
/// more than was granted (a narrower one is fine).
#[tokio::test]
async fn registration_and_token_requests_are_checked() {
    let app = App::start(None);
    let alice = person(&app).await;
    let http = reqwest::Client::new();
    let register = |body: reqwest::RequestBuilder| async move {
        let response = body.send().await.unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let many: Vec<String> = (0..11).map(|i| format!("http://127.0.0.1:9/cb{i}")).collect();
    let endpoint = format!("{}/oauth/register", app.url);
    for (request, error) in [
        (
            http.post(&endpoint).json(&json!({ "redirect_uris": many })),
            "invalid_redirect_uri",
        ),
        (
            http.post(&endpoint)
                .header("content-type", "text/plain")
                .body("{}"),
            "invalid_client_metadata",
        ),
        (
            http.post(&endpoint)
                .header("content-type", "application/json")
                .body("{\"redirect_uris\": ["),
            "invalid_client_metadata",
        ),
    ] {
        let (status, body) = register(request).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(error))
        );
    }
    let (status, body) = register(
        http.post(&endpoint)
            .json(&json!({ "client_name": "Evil\u{7}\nAgent", "redirect_uris": [CALLBACK] })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["client_name"], "An MCP client",
        "a name with control characters is not shown"
    );

    let long = format!("https://example.com/{}", "a".repeat(2100));
    let page = http
        .get(format!(
            "{}/oauth/authorize?response_type=code&client_id={}",
            app.url,
            url::form_urlencoded::byte_serialize(long.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(page.text().await.unwrap().contains("is not a URL"));

    let hand = Hand::register(&app, "Script").await;
    let (status, body) = hand.token(&app, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (status, body) = hand.token(&app, &[("grant_type", "authorization_code")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    assert!(
        body["error_description"].as_str().unwrap().contains("`code`"),
        "{body}"
    );

    // Granted read only: asking to propose on refresh is refused.
    let (_, tokens) = hand.exchange(&app, &hand.code(&app, &alice, false).await).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = hand
        .token(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("scope", "devices:propose"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // Granted both: a refresh may narrow to reading.
    let (_, tokens) = hand.exchange(&app, &hand.code(&app, &alice, true).await).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = hand
        .token(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("scope", "devices:read"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (StatusCode::OK, Some("devices:read")),
        "{body}"
    );
}

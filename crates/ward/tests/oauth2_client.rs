//! The token service through the `oauth2` crate, a Rust client made for
//! the field: client credentials (HTTP Basic), introspection and
//! revocation (RFC 7662, RFC 7009), and a wrong secret refused with the
//! error code the crate understands.

mod support;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    ClientId, ClientSecret, IntrospectionUrl, RequestTokenError, RevocationUrl, Scope,
    StandardRevocableToken, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use support::*;

fn http(cacert: &str) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cacert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // As the oauth2 crate asks: a token endpoint must not redirect.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[test]
fn the_oauth2_crate_gets_introspects_and_revokes_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "oauth2.test");
    let out = s.ward(&[
        "client",
        "create",
        "reports",
        "--scope",
        "reports:read",
        "--scope",
        "reports:write",
        "--audience",
        "https://reports.oauth2.test",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    let base = s.addr().to_owned();
    let client = BasicClient::new(ClientId::new("reports".into()))
        .set_client_secret(ClientSecret::new(secret))
        .set_token_uri(TokenUrl::new(format!("{base}/oauth/token")).unwrap())
        .set_introspection_url(IntrospectionUrl::new(format!("{base}/oauth/introspect")).unwrap())
        .set_revocation_url(RevocationUrl::new(format!("{base}/oauth/revoke")).unwrap());
    let http = http(s.cacert());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tok = client
            .exchange_client_credentials()
            .add_scope(Scope::new("reports:read".into()))
            .request_async(&http)
            .await
            .expect("a token by client credentials");
        assert_eq!(tok.token_type().as_ref(), "bearer");
        let scopes: Vec<String> = tok
            .scopes()
            .map(|s| s.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(scopes, ["reports:read"], "down-scoped to what was asked");
        assert!(tok.expires_in().unwrap().as_secs() <= 900);

        let info = client
            .introspect(tok.access_token())
            .request_async(&http)
            .await
            .expect("introspection");
        assert!(info.active());
        assert_eq!(info.client_id().map(|c| c.as_str()), Some("reports"));

        client
            .revoke_token(StandardRevocableToken::AccessToken(
                tok.access_token().clone(),
            ))
            .unwrap()
            .request_async(&http)
            .await
            .expect("revocation");
        let info = client
            .introspect(tok.access_token())
            .request_async(&http)
            .await
            .expect("introspection after revocation");
        assert!(!info.active(), "a revoked token is inactive");

        // More scope than the client holds, and a wrong secret.
        let err = client
            .exchange_client_credentials()
            .add_scope(Scope::new("reports:admin".into()))
            .request_async(&http)
            .await
            .unwrap_err();
        match err {
            RequestTokenError::ServerResponse(r) => {
                assert_eq!(r.error(), &BasicErrorResponseType::InvalidScope)
            }
            other => panic!("expected invalid_scope, got {other:?}"),
        }
        let wrong = client
            .clone()
            .set_client_secret(ClientSecret::new("not-the-secret".into()));
        match wrong
            .exchange_client_credentials()
            .request_async(&http)
            .await
        {
            Err(RequestTokenError::ServerResponse(r)) => {
                assert_eq!(r.error(), &BasicErrorResponseType::InvalidClient)
            }
            other => panic!("expected invalid_client, got {other:?}"),
        }
    });
}

//! Per-request cost of authentication (`gate::auth`): a bearer JWT already verified (the
//! cache hit every later request of a client takes), an API key, and a DPoP-bound JWT with a
//! fresh proof (the proof's ES256 signature verified, its claims checked, its single use
//! recorded). Proofs are minted outside the timed part.
//!
//! Run: `cargo bench -p airlock-benches --bench auth`

use airlock::config::policy::{Dirs, Policy};
use airlock::gate::auth::{Authenticator, Credentials};
use airlock::gate::dpop::RequestTarget;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;

const API_KEY: &str = "bench-api-key-0123456789";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn bench_auth(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let issuer = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let issuer_public = Ed25519KeyPair::from_pkcs8(issuer.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let dir = std::env::temp_dir().join(format!("airlock-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("jwks.json"),
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": B64.encode(&issuer_public), "kid": "k1"}]})
            .to_string(),
    )
    .unwrap();
    let config = format!(
        "[auth]\nmode = \"jwt\"\nresource = \"https://airlock.test/mcp\"\n\
         issuer = \"https://idp.test/\"\njwks_file = \"jwks.json\"\n\
         dpop_max_proofs = 1000000\ndpop_max_proofs_per_principal = 1000000\n\
         [[auth.api_keys]]\nprincipal = \"ci-bot\"\nsha256 = \"{}\"\nroles = [\"readers\"]\n\
         [roles]\nreaders = [\"analysts\"]\n\
         [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"readers\"]\n",
        hex(&sha256(API_KEY.as_bytes()))
    );
    let state = std::env::temp_dir().join("airlock-bench-state");
    let policy = Policy::parse(&config, "bench.toml", &dir, &Dirs::state(&state)).unwrap();
    let auth = Authenticator::new(&policy.auth, None);

    // The client's DPoP key and the tokens.
    let dpop_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let dpop =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, dpop_pkcs8.as_ref(), &rng)
            .unwrap();
    let point = dpop.public_key().as_ref();
    let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..65]));
    let jkt = B64.encode(sha256(
        format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes(),
    ));
    let token = |cnf: Option<serde_json::Value>| {
        let mut claims = json!({"iss": "https://idp.test/", "aud": "https://airlock.test/mcp",
            "sub": "alice", "roles": ["analysts"], "iat": now(), "exp": now() + 3000});
        if let Some(cnf) = cnf {
            claims["cnf"] = cnf;
        }
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(issuer.as_ref()),
        )
        .unwrap()
    };
    let bearer = format!("Bearer {}", token(None));
    let bound = token(Some(json!({"jkt": jkt})));
    let dpop_authorization = format!("DPoP {bound}");
    let ath = B64.encode(sha256(bound.as_bytes()));
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk =
        Some(serde_json::from_value(json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})).unwrap());
    let signing = jsonwebtoken::EncodingKey::from_ec_der(dpop_pkcs8.as_ref());
    let mut jti = 0u64;
    let mut proof = || {
        jti += 1;
        jsonwebtoken::encode(
            &header,
            &json!({"jti": format!("bench-{jti}"), "htm": "POST",
                "htu": "http://localhost/mcp", "iat": now(), "ath": ath}),
            &signing,
        )
        .unwrap()
    };
    let target = RequestTarget {
        method: "POST",
        scheme: "http",
        authority: "localhost",
        path: "/mcp",
    };
    let api_key = format!("Bearer {API_KEY}");

    let mut g = c.benchmark_group("authenticate");
    g.bench_function("bearer_jwt_cached", |b| {
        b.iter(|| {
            assert!(
                auth.authenticate(&Credentials::header(Some(&bearer)))
                    .is_ok()
            );
        })
    });
    g.bench_function("api_key", |b| {
        b.iter(|| {
            assert!(
                auth.authenticate(&Credentials::header(Some(&api_key)))
                    .is_ok()
            );
        })
    });
    g.bench_function("dpop_jwt_fresh_proof", |b| {
        b.iter_batched(
            &mut proof,
            |p| {
                let presented = Credentials {
                    authorization: Some(&dpop_authorization),
                    dpop: Ok(Some(&p)),
                    client_cert: None,
                    target,
                };
                assert!(auth.authenticate(&presented).is_ok());
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);

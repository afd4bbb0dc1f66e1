//! AUTHORIZER and FILTER roles (spec 6.3, 6.4) through the handler surface.

mod common;

use bytes::Bytes;
use common::*;
use fcgi_client::RequestSpec;
use fcgi_proto::nv;
use fcgi_proto::record::{self, RecordType};
use fcgi_uring::{FilterData, RequestBody, Role, Server, TrustedParams, service_fn};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;

async fn authorizer(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let role = req
        .extensions()
        .get::<TrustedParams>()
        .map(TrustedParams::role);
    assert_eq!(role, Some(Role::Authorizer));
    let user = req
        .extensions()
        .get::<TrustedParams>()
        .and_then(|t| t.remote_user().map(str::to_owned));
    let mut r = Response::new(Full::new(Bytes::new()));
    match user.as_deref() {
        Some("alice") => {
            r.headers_mut()
                .insert("Variable-USER_TIER", "gold".parse().unwrap());
        }
        _ => *r.status_mut() = StatusCode::FORBIDDEN,
    }
    Ok(r)
}

#[test]
fn authorizer_allows_denies_and_passes_variables() {
    let server = Server::new(test_config())
        .start(|| service_fn(authorizer))
        .unwrap();
    let mut allowed = RequestSpec::get("/protected");
    allowed.role = Role::Authorizer as u16;
    allowed
        .extra_params
        .push((b"REMOTE_USER".to_vec(), b"alice".to_vec()));
    let r = connect(server.local_addr()).request(&allowed).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Variable-USER_TIER"), Some("gold"));

    let mut denied = allowed.clone();
    denied.extra_params = vec![(b"REMOTE_USER".to_vec(), b"mallory".to_vec())];
    let r = connect(server.local_addr()).request(&denied).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.header("Variable-USER_TIER"), None);
}

async fn upper_filter(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let role = req
        .extensions()
        .get::<TrustedParams>()
        .map(TrustedParams::role);
    assert_eq!(role, Some(Role::Filter));
    let declared = req
        .extensions()
        .get::<TrustedParams>()
        .and_then(|t| t.get("FCGI_DATA_LENGTH").map(str::to_owned))
        .unwrap_or_default();
    let data = req
        .extensions()
        .get::<FilterData>()
        .and_then(FilterData::take)
        .expect("a FILTER request carries its DATA stream");
    let stdin = req.into_body().collect().await.unwrap().to_bytes();
    let file = data.collect().await.unwrap().to_bytes();
    let out = format!(
        "stdin={} declared={declared} data={}",
        String::from_utf8_lossy(&stdin),
        String::from_utf8_lossy(&file).to_uppercase()
    );
    Ok(Response::new(Full::new(Bytes::from(out))))
}

#[test]
fn filter_receives_its_data_stream() {
    let server = Server::new(test_config())
        .start(|| service_fn(upper_filter))
        .unwrap();
    let mut spec = RequestSpec::get("/file.txt");
    spec.role = Role::Filter as u16;
    spec.keep_conn = true;
    spec.extra_params
        .push((b"FCGI_DATA_LENGTH".to_vec(), b"11".to_vec()));
    let mut bytes = Vec::new();
    record::encode_begin_request(&mut bytes, 1, spec.role, true);
    let mut params = Vec::new();
    for (n, v) in spec.params() {
        nv::encode_pair(&mut params, &n, &v);
    }
    record::encode_stream(&mut bytes, RecordType::Params, 1, &params);
    record::encode_stream_end(&mut bytes, RecordType::Params, 1);
    record::encode_stream(&mut bytes, RecordType::Stdin, 1, b"in");
    record::encode_stream_end(&mut bytes, RecordType::Stdin, 1);
    record::encode_stream(&mut bytes, RecordType::Data, 1, b"hello ");
    record::encode_stream(&mut bytes, RecordType::Data, 1, b"world");
    record::encode_stream_end(&mut bytes, RecordType::Data, 1);
    let mut c = connect(server.local_addr());
    c.send_raw(&bytes).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    let (_, body) = split_cgi(&got[&1].stdout);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "stdin=in declared=11 data=HELLO WORLD"
    );
}

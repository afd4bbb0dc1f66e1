//! Round trips against a fake application thread (TCP and UNIX) replying with canned records.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::thread::JoinHandle;

use super::conn::decode_pairs;
use super::*;
use fcgi_proto::Addr;
use fcgi_proto::record::{
    BeginRequestBody, Header, encode_end_request, encode_record, encode_stream, encode_stream_end,
};
use fcgi_proto::{ProtocolStatus, RecordType};

/// Reads one record from the application's side of the socket.
fn read_record(stream: &mut impl Read) -> Option<Record> {
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).ok()?;
    let header = Header::parse(&head);
    let mut body = vec![0u8; header.body_len()];
    stream.read_exact(&mut body).ok()?;
    body.truncate(usize::from(header.content_length));
    Some(Record {
        header,
        content: body,
    })
}

/// Reads records until a request is complete (empty STDIN) or a management record came, then
/// writes `reply(records)` and closes.
fn serve(mut stream: impl Read + Write, reply: impl FnOnce(&[Record]) -> Vec<u8>) -> Vec<Record> {
    let mut records = Vec::new();
    while let Some(record) = read_record(&mut stream) {
        let done = record.record_type() == Some(RecordType::GetValues)
            || (record.record_type() == Some(RecordType::Stdin) && record.content.is_empty());
        records.push(record);
        if done {
            break;
        }
    }
    stream.write_all(&reply(&records)).unwrap();
    records
}

type Reply = Box<dyn FnOnce(&[Record]) -> Vec<u8> + Send>;

fn fake_tcp(reply: Reply) -> (Addr, JoinHandle<Vec<Record>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Addr::Tcp(listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || serve(listener.accept().unwrap().0, reply));
    (addr, handle)
}

fn fake_unix(dir: &tempfile::TempDir, reply: Reply) -> (Addr, JoinHandle<Vec<Record>>) {
    let path = dir.path().join("app.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = std::thread::spawn(move || serve(listener.accept().unwrap().0, reply));
    (Addr::Unix(path), handle)
}

fn stream_bytes(records: &[Record], record_type: RecordType) -> Vec<u8> {
    records
        .iter()
        .filter(|r| r.record_type() == Some(record_type))
        .flat_map(|r| r.content.iter().copied())
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn nginx_params_names_order_and_values() {
    let headers: Vec<(String, String)> = [
        ("Host", "example.com"),
        ("Content-Type", "application/json"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("X_Underscore", "dropped"),
        ("x-request-id", "42"),
        ("Content-Length", "999"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let got = nginx_params("POST", "/caf%C3%A9/x?q=1&r", &headers, Some(2));
    let expected = pairs(&[
        ("QUERY_STRING", "q=1&r"),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_TYPE", "application/json"),
        ("CONTENT_LENGTH", "2"),
        ("SCRIPT_NAME", "/café/x"),
        ("REQUEST_URI", "/caf%C3%A9/x?q=1&r"),
        ("DOCUMENT_URI", "/café/x"),
        ("DOCUMENT_ROOT", "/var/www/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "50000"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "example.com"),
        ("HTTP_COOKIE", "a=1"),
        ("HTTP_COOKIE", "b=2"),
        ("HTTP_X_REQUEST_ID", "42"),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn nginx_params_without_body_length() {
    let got = nginx_params("GET", "/", &[], None);
    assert!(got.contains(&(b"QUERY_STRING".to_vec(), b"".to_vec())));
    assert!(got.contains(&(b"CONTENT_TYPE".to_vec(), b"".to_vec())));
    assert!(got.contains(&(b"CONTENT_LENGTH".to_vec(), b"".to_vec())));
    // A Content-Length header stands in when the length is not given (a lying one, for tests).
    let lying = [("Content-Length".to_owned(), "10".to_owned())];
    let got = nginx_params("POST", "/", &lying, None);
    assert!(got.contains(&(b"CONTENT_LENGTH".to_vec(), b"10".to_vec())));
    assert!(!got.iter().any(|(n, _)| n == b"HTTP_CONTENT_LENGTH"));
}

#[test]
fn percent_decoding_keeps_malformed_escapes() {
    assert_eq!(super::percent_decode(b"/a%20b%zz%4"), b"/a b%zz%4");
    assert_eq!(super::percent_decode(b"%41%2f"), b"A/");
}

/// A response split across STDOUT records (one padded, the split inside a header line), with
/// STDERR, over TCP; the application saw BEGIN, the params and an empty STDIN.
#[test]
fn request_round_trip_over_tcp() {
    let (addr, app) = fake_tcp(Box::new(|_| {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            RecordType::Stdout,
            1,
            b"Status: 404 Not Found\r\nContent-Ty",
        );
        // A padded record: 3 bytes of content, 5 of padding.
        let mut padded = Header::new(RecordType::Stdout, 1, 3);
        padded.padding_length = 5;
        out.extend_from_slice(&padded.encode());
        out.extend_from_slice(b"pe:\0\0\0\0\0");
        encode_stream(&mut out, RecordType::Stderr, 1, b"warning: x\n");
        encode_record(
            &mut out,
            RecordType::Stdout,
            1,
            b" text/plain\r\nSet-Cookie: a=1\r\n",
        );
        encode_record(
            &mut out,
            RecordType::Stdout,
            1,
            b"Set-Cookie: b=2\r\n\r\nno such page",
        );
        encode_stream_end(&mut out, RecordType::Stdout, 1);
        encode_stream_end(&mut out, RecordType::Stderr, 1);
        encode_end_request(&mut out, 1, 7, ProtocolStatus::RequestComplete);
        out
    }));
    let mut client = Client::connect(&addr).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let spec = RequestSpec::get("/missing?x=1").header("Host", "example.com");
    let response = client.request(&spec).unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(
        response.headers,
        [
            ("Content-Type".to_owned(), "text/plain".to_owned()),
            ("Set-Cookie".to_owned(), "a=1".to_owned()),
            ("Set-Cookie".to_owned(), "b=2".to_owned()),
        ]
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.body, b"no such page");
    assert_eq!(response.stderr, b"warning: x\n");
    assert_eq!(response.app_status, 7);
    assert_eq!(response.protocol_status, 0);
    assert_eq!(
        client.read_record().unwrap(),
        None,
        "clean EOF after the close"
    );

    let records = app.join().unwrap();
    let begin = &records[0];
    assert_eq!(begin.record_type(), Some(RecordType::BeginRequest));
    assert_eq!(begin.id(), 1);
    let body: [u8; 8] = begin.content[..].try_into().unwrap();
    assert_eq!(
        BeginRequestBody::parse(&body),
        BeginRequestBody {
            role: 1,
            keep_conn: false
        }
    );
    let params = decode_pairs(&stream_bytes(&records, RecordType::Params)).unwrap();
    assert_eq!(params, spec.params());
    assert!(params.contains(&(b"HTTP_HOST".to_vec(), b"example.com".to_vec())));
    let kinds: Vec<_> = records[1..]
        .iter()
        .map(|r| (r.record_type(), r.content.is_empty()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Some(RecordType::Params), false),
            (Some(RecordType::Params), true),
            (Some(RecordType::Stdin), true),
        ]
    );
}

/// A POST over a UNIX socket: the body goes as STDIN records of `stdin_chunk` bytes; extra
/// params come last; KEEP_CONN and the role are as asked.
#[test]
fn post_over_unix_in_stdin_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = fake_unix(
        &dir,
        Box::new(|records| {
            let body = stream_bytes(records, RecordType::Stdin);
            let mut stdout = b"Content-Type: application/octet-stream\n\n".to_vec();
            stdout.extend_from_slice(&body);
            let mut out = Vec::new();
            encode_stream(&mut out, RecordType::Stdout, 1, &stdout);
            encode_stream_end(&mut out, RecordType::Stdout, 1);
            encode_end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
            out
        }),
    );
    let mut spec = RequestSpec::post("/echo", b"abcdefg".to_vec());
    spec.stdin_chunk = 3;
    spec.keep_conn = true;
    spec.role = 2;
    spec.extra_params = vec![(b"SERVER_NAME".to_vec(), b"override".to_vec())];
    let response = Client::connect(&addr).unwrap().request(&spec).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"abcdefg");

    let records = app.join().unwrap();
    let body: [u8; 8] = records[0].content[..].try_into().unwrap();
    assert_eq!(
        BeginRequestBody::parse(&body),
        BeginRequestBody {
            role: 2,
            keep_conn: true
        }
    );
    let stdin_sizes: Vec<usize> = records
        .iter()
        .filter(|r| r.record_type() == Some(RecordType::Stdin))
        .map(|r| r.content.len())
        .collect();
    assert_eq!(stdin_sizes, [3, 3, 1, 0]);
    let params = decode_pairs(&stream_bytes(&records, RecordType::Params)).unwrap();
    assert_eq!(
        params.last().unwrap(),
        &(b"SERVER_NAME".to_vec(), b"override".to_vec())
    );
    assert!(params.contains(&(b"CONTENT_LENGTH".to_vec(), b"7".to_vec())));
    assert!(params.contains(&(b"REQUEST_METHOD".to_vec(), b"POST".to_vec())));
}

/// A body larger than the inline limit is sent by a second thread while the reply is read.
#[test]
fn large_body_round_trip() {
    let (addr, app) = fake_tcp(Box::new(|records| {
        let body = stream_bytes(records, RecordType::Stdin);
        let mut out = Vec::new();
        encode_stream(&mut out, RecordType::Stdout, 1, b"\r\n");
        encode_stream(&mut out, RecordType::Stdout, 1, &body);
        encode_stream_end(&mut out, RecordType::Stdout, 1);
        encode_end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
        out
    }));
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let response = Client::connect(&addr)
        .unwrap()
        .request(&RequestSpec::post("/big", body.clone()))
        .unwrap();
    assert_eq!(response.body.len(), body.len());
    assert!(response.body == body);
    app.join().unwrap();
}

#[test]
fn get_values_round_trip() {
    let (addr, app) = fake_tcp(Box::new(|_| {
        let mut pairs = Vec::new();
        fcgi_proto::nv::encode_pair(&mut pairs, b"FCGI_MAX_CONNS", b"1024");
        fcgi_proto::nv::encode_pair(&mut pairs, b"FCGI_MPXS_CONNS", b"1");
        let mut out = Vec::new();
        encode_record(&mut out, RecordType::GetValuesResult, 0, &pairs);
        out
    }));
    let mut client = Client::connect(&addr).unwrap();
    let values = client
        .get_values(&["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS", "NOPE"])
        .unwrap();
    assert_eq!(
        values,
        [
            ("FCGI_MAX_CONNS".to_owned(), "1024".to_owned()),
            ("FCGI_MPXS_CONNS".to_owned(), "1".to_owned()),
        ]
    );
    let records = app.join().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id(), 0);
    assert_eq!(
        decode_pairs(&records[0].content).unwrap(),
        pairs(&[
            ("FCGI_MAX_CONNS", ""),
            ("FCGI_MPXS_CONNS", ""),
            ("NOPE", "")
        ])
    );
}

#[test]
fn get_values_answered_with_unknown_type_is_an_error() {
    let (addr, app) = fake_tcp(Box::new(|_| {
        let mut out = Vec::new();
        fcgi_proto::record::encode_unknown_type(&mut out, 9);
        out
    }));
    let err = Client::connect(&addr)
        .unwrap()
        .get_values(&["FCGI_MAX_CONNS"])
        .unwrap_err();
    assert!(err.to_string().contains("UNKNOWN_TYPE"), "{err}");
    app.join().unwrap();
}

/// Two requests in flight (HAProxy style ids 1 and 3), answered interleaved and in reverse.
#[test]
fn multiplexed_requests_are_grouped_by_id() {
    let (addr, app) = fake_tcp(Box::new(|_| {
        let mut out = Vec::new();
        encode_record(&mut out, RecordType::Stdout, 3, b"Status: 201\r\n\r\nthree");
        encode_record(&mut out, RecordType::Stdout, 1, b"\r\none");
        encode_stream_end(&mut out, RecordType::Stdout, 3);
        encode_end_request(&mut out, 3, 0, ProtocolStatus::RequestComplete);
        encode_stream_end(&mut out, RecordType::Stdout, 1);
        encode_end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
        out
    }));
    let mut client = Client::connect(&addr).unwrap();
    let mut spec = RequestSpec::get("/a");
    spec.keep_conn = true;
    client.begin(&spec, 1).unwrap();
    // The fake stops reading at the first empty STDIN: request 3 goes as raw bytes first.
    let mut three = Vec::new();
    RequestSpec::get("/b").encode(3, &mut three);
    client.send_raw(&three).unwrap();
    let mut responses = Responses::new();
    client.collect(&mut responses, &[1, 3]).unwrap();
    assert_eq!(responses.end_order(), [3, 1]);
    assert!(
        responses.violations().is_empty(),
        "{:?}",
        responses.violations()
    );
    let three = responses.get(3).unwrap().response().unwrap();
    assert_eq!((three.status, three.body.as_slice()), (201, &b"three"[..]));
    let one = responses.take(1).unwrap().response().unwrap();
    assert_eq!((one.status, one.body.as_slice()), (200, &b"one"[..]));
    assert_eq!(responses.get(3).unwrap().stdout_records, 2);
    app.join().unwrap();
}

#[test]
fn eof_before_end_request_is_an_error() {
    let (addr, app) = fake_tcp(Box::new(|_| {
        let mut out = Vec::new();
        encode_record(&mut out, RecordType::Stdout, 1, b"\r\npartial");
        out
    }));
    let err = Client::connect(&addr)
        .unwrap()
        .request(&RequestSpec::get("/"))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    app.join().unwrap();
}

#[test]
fn eof_inside_a_record_is_unexpected() {
    let (addr, app) = fake_tcp(Box::new(|_| vec![1, 6, 0, 1, 0, 10, 0, 0, b'x']));
    let mut client = Client::connect(&addr).unwrap();
    client.begin(&RequestSpec::get("/"), 1).unwrap();
    let err = client.read_record().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    app.join().unwrap();
}

#[test]
fn connection_refused_names_the_address() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let addr: Addr = format!("127.0.0.1:{port}").parse().unwrap();
    let err = Client::connect(&addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let missing = Addr::Unix("/nonexistent/fcgi.sock".into());
    let err = Client::connect(&missing).unwrap_err();
    assert!(
        err.to_string().contains("unix:/nonexistent/fcgi.sock"),
        "{err}"
    );
}

fn end(protocol_status: u8) -> fcgi_proto::record::EndRequestBody {
    fcgi_proto::record::EndRequestBody {
        app_status: 0,
        protocol_status,
    }
}

#[test]
fn cgi_response_parsing() {
    let r = Response::parse(b"Content-Type: text/html\n\nhi", b"", end(0)).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
    let r = Response::parse(b"Location: /elsewhere\r\n\r\n", b"", end(0)).unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("LOCATION"), Some("/elsewhere"));
    let r = Response::parse(b"Status: 301\r\nLocation: /x\r\n\r\n", b"", end(0)).unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.headers.len(), 1);
    let r = Response::parse(b"status:418 I'm a teapot\r\nX-Empty:\r\n\r\n", b"", end(0)).unwrap();
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-empty"), Some(""));
    let r = Response::parse(b"\r\n", b"", end(0)).unwrap();
    assert_eq!((r.status, r.headers.len(), r.body.len()), (200, 0, 0));
    // The body may contain anything, blank lines included.
    let r = Response::parse(b"A: b\n\n\r\n\r\nbody", b"", end(0)).unwrap();
    assert_eq!(r.body, b"\r\n\r\nbody");
}

#[test]
fn malformed_cgi_responses_are_errors() {
    for bad in [
        &b""[..],
        b"Content-Type: text/plain\r\n",
        b"Content-Type: text/plain\r\nbody without blank line",
        b"no colon here\r\n\r\n",
        b": empty name\r\n\r\n",
        b"Bad Name: x\r\n\r\n",
        b"A: b\r\n folded\r\n\r\n",
        b"Status: abc\r\n\r\n",
        b"Status: 99\r\n\r\n",
        b"Status: 1000\r\n\r\n",
        b"Status: 200\r\nStatus: 404\r\n\r\n",
    ] {
        let err = Response::parse(bad, b"", end(0)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{bad:?}");
    }
}

#[test]
fn refused_request_names_the_protocol_status() {
    let err = Response::parse(b"", b"", end(2)).unwrap_err();
    assert!(err.to_string().contains("OVERLOADED"), "{err}");
    let err = Response::parse(b"", b"", end(3)).unwrap_err();
    assert!(err.to_string().contains("UNKNOWN_ROLE"), "{err}");
}

fn record(record_type: RecordType, id: u16, content: &[u8]) -> Record {
    Record::new(record_type, id, content.to_vec())
}

fn end_record(id: u16) -> Record {
    let mut out = Vec::new();
    encode_end_request(&mut out, id, 0, ProtocolStatus::RequestComplete);
    record(RecordType::EndRequest, id, &out[8..])
}

#[test]
fn collector_reports_protocol_violations() {
    let mut responses = Responses::new();
    assert_eq!(
        responses.push(record(RecordType::Stdout, 1, b"\r\nx")),
        None
    );
    // END_REQUEST before the empty STDOUT.
    assert_eq!(responses.push(end_record(1)), Some(1));
    // Data after the END_REQUEST, and a second END_REQUEST.
    responses.push(record(RecordType::Stdout, 1, b"late"));
    assert_eq!(responses.push(end_record(1)), Some(1));
    // STDOUT data after the stream's end on another id.
    responses.push(record(RecordType::Stdout, 2, b""));
    responses.push(record(RecordType::Stdout, 2, b"more"));
    // A type the application must not send, an undefined one, a management type on id 5.
    responses.push(record(RecordType::Params, 2, b""));
    let mut odd = record(RecordType::Stdout, 2, b"");
    odd.header.record_type = 42;
    responses.push(odd);
    responses.push(record(RecordType::GetValuesResult, 5, b""));
    let v = responses.violations();
    assert_eq!(v.len(), 7, "{v:#?}");
    assert!(v[1].starts_with("STDOUT"));
    assert!(v[0].contains("before STDOUT ended"));
    assert!(v[1].contains("after its END_REQUEST"));
    assert!(v[2].contains("after its END_REQUEST"));
    assert!(v[3].contains("after its end"));
    assert!(v[4].contains("PARAMS record"));
    assert!(v[5].contains("undefined type 42"));
    assert!(v[6].contains("request id 5"));
    assert_eq!(responses.end_order(), [1]);
    assert_eq!(responses.management().len(), 1);
}

#[test]
fn decode_pairs_rejects_truncation() {
    let mut ok = Vec::new();
    fcgi_proto::nv::encode_pair(&mut ok, &[b'n'; 200], b"v");
    assert_eq!(decode_pairs(&ok).unwrap()[0].0.len(), 200);
    for cut in 1..ok.len() {
        assert!(decode_pairs(&ok[..cut]).is_err(), "cut at {cut}");
    }
    // A 2 GiB announced name in a 10-byte record: refused, nothing allocated.
    assert!(decode_pairs(&[0xFF, 0xFF, 0xFF, 0xFF, 1, b'a', b'b', b'c', b'd', b'e']).is_err());
}

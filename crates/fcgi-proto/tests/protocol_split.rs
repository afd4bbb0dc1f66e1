//! Property: a valid byte stream (several multiplexed requests with random params, STDIN, DATA,
//! GET_VALUES, padding) gives the same events and output bytes however it is cut, and the events
//! carry what was sent.

use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{Header, RecordType, encode_begin_request};
use fcgi_proto::{Connection, Event, Limits, Params, RejectReason, Role};
use proptest::prelude::*;

/// An owned event; consecutive STDIN or DATA pieces of one id are joined.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Request(u16, Role, bool, Params),
    Stdin(u16, Vec<u8>),
    StdinEnd(u16),
    Data(u16, Vec<u8>),
    DataEnd(u16),
    Abort(u16),
    Rejected(u16, RejectReason),
}

fn push(events: &mut Vec<Ev>, event: Event<'_>) {
    let ev = match event {
        Event::Request {
            id,
            role,
            keep_conn,
            params,
        } => Ev::Request(id, role, keep_conn, params),
        Event::Stdin { id, data } => {
            assert!(!data.is_empty(), "empty Stdin event");
            if let Some(Ev::Stdin(last, acc)) = events.last_mut()
                && *last == id
            {
                acc.extend_from_slice(data);
                return;
            }
            Ev::Stdin(id, data.to_vec())
        }
        Event::Data { id, data } => {
            assert!(!data.is_empty(), "empty Data event");
            if let Some(Ev::Data(last, acc)) = events.last_mut()
                && *last == id
            {
                acc.extend_from_slice(data);
                return;
            }
            Ev::Data(id, data.to_vec())
        }
        Event::StdinEnd { id } => Ev::StdinEnd(id),
        Event::DataEnd { id } => Ev::DataEnd(id),
        Event::Abort { id } => Ev::Abort(id),
        Event::Rejected { id, reason } => Ev::Rejected(id, reason),
    };
    events.push(ev);
}

fn run(stream: &[u8], cuts: &[usize]) -> (Vec<Ev>, Vec<u8>) {
    let mut conn = Connection::new(Limits::default());
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        conn.receive(&stream[at..cut], &mut out, &mut |e| push(&mut events, e))
            .expect("valid stream");
        at = cut;
    }
    (events, out)
}

fn record(record_type: RecordType, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
    let header = Header {
        padding_length: padding,
        ..Header::new(record_type, id, content.len() as u16)
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0xA5, padding as usize));
    out
}

/// One generated request.
#[derive(Debug, Clone)]
struct Req {
    id: u16,
    role: u16,
    keep_conn: bool,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Cut points of the encoded params into PARAMS records.
    params_cuts: Vec<usize>,
    stdin: Vec<Vec<u8>>,
    data: Vec<Vec<u8>>,
    abort: bool,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..20),
        1 => proptest::collection::vec(any::<u8>(), 120..max),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop_oneof![9 => 1..=3u16, 1 => Just(7u16)],
        any::<bool>(),
        proptest::collection::vec((bytes(300), bytes(600)), 0..8),
        proptest::collection::vec(any::<usize>(), 0..4),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..4),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 0..3),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(role, keep_conn, pairs, params_cuts, stdin, data, abort)| Req {
                id: 0,
                role,
                // A refused request without KEEP_CONN would close the connection to new BEGINs.
                keep_conn: keep_conn || role == 7,
                pairs,
                params_cuts,
                stdin,
                data,
                abort,
            },
        )
}

impl Req {
    fn encoded_params(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in &self.pairs {
            encode_pair(&mut out, n, v);
        }
        out
    }

    /// Its records in order, each a separate byte vector.
    fn records(&self, paddings: &mut impl Iterator<Item = u8>) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        let mut begin = Vec::new();
        encode_begin_request(&mut begin, self.id, self.role, self.keep_conn);
        records.push(begin);
        let params = self.encoded_params();
        let mut cuts: Vec<usize> = self
            .params_cuts
            .iter()
            .map(|c| c % (params.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut at = 0;
        for cut in cuts.into_iter().chain([params.len()]) {
            if cut > at {
                let pad = paddings.next().unwrap_or(0);
                records.push(record(RecordType::Params, self.id, &params[at..cut], pad));
                at = cut;
            }
        }
        records.push(record(RecordType::Params, self.id, &[], 0));
        for (kind, chunks) in [
            (RecordType::Stdin, &self.stdin),
            (RecordType::Data, &self.data),
        ] {
            for chunk in chunks {
                let pad = paddings.next().unwrap_or(0);
                records.push(record(kind, self.id, chunk, pad));
            }
            records.push(record(kind, self.id, &[], paddings.next().unwrap_or(0)));
        }
        if self.abort {
            records.push(record(RecordType::AbortRequest, self.id, &[], 0));
        }
        records
    }

    /// The events this request must produce, in its own order.
    fn expected(&self) -> Vec<Ev> {
        let Some(role) = Role::from_u16(self.role) else {
            return vec![Ev::Rejected(self.id, RejectReason::UnknownRole(self.role))];
        };
        let params = Params::from_pairs(self.pairs.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut events = vec![Ev::Request(self.id, role, self.keep_conn, params)];
        let stdin = self.stdin.concat();
        if !stdin.is_empty() {
            events.push(Ev::Stdin(self.id, stdin));
        }
        events.push(Ev::StdinEnd(self.id));
        let data = self.data.concat();
        if !data.is_empty() {
            events.push(Ev::Data(self.id, data));
        }
        events.push(Ev::DataEnd(self.id));
        if self.abort {
            events.push(Ev::Abort(self.id));
        }
        events
    }
}

fn get_values(names: &[u8]) -> Vec<u8> {
    const NAMES: [&[u8]; 4] = [
        b"FCGI_MAX_CONNS",
        b"FCGI_MAX_REQS",
        b"FCGI_MPXS_CONNS",
        b"OTHER",
    ];
    let mut body = Vec::new();
    for &n in names {
        encode_pair(&mut body, NAMES[usize::from(n) % 4], b"");
    }
    body
}

/// Builds the stream: each request's records interleaved by `order`, GET_VALUES records
/// inserted by `management`.
fn stream(
    reqs: &[Req],
    order: &[usize],
    management: &[(usize, Vec<u8>)],
    paddings: &[u8],
) -> Vec<u8> {
    let mut paddings = paddings.iter().copied().cycle();
    let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> = reqs
        .iter()
        .map(|r| r.records(&mut paddings).into())
        .collect();
    let mut records = Vec::new();
    let mut choices = order.iter().copied().cycle();
    loop {
        let open: Vec<usize> = (0..queues.len())
            .filter(|&i| !queues[i].is_empty())
            .collect();
        if open.is_empty() {
            break;
        }
        let pick = open[choices.next().unwrap_or(0) % open.len()];
        records.extend(queues[pick].pop_front());
    }
    for (at, names) in management {
        let at = at % (records.len() + 1);
        let pad = paddings.next().unwrap_or(0);
        records.insert(
            at,
            record(RecordType::GetValues, 0, &get_values(names), pad),
        );
    }
    records.concat()
}

/// The events of `id`, in order.
fn of(events: &[Ev], id: u16) -> Vec<Ev> {
    events
        .iter()
        .filter(|e| match e {
            Ev::Request(i, ..)
            | Ev::Stdin(i, _)
            | Ev::StdinEnd(i)
            | Ev::Data(i, _)
            | Ev::DataEnd(i)
            | Ev::Abort(i)
            | Ev::Rejected(i, _) => *i == id,
        })
        .cloned()
        .collect()
}

/// Joins STDIN and DATA events per id and kind, whatever lies between them.
fn joined(events: Vec<Ev>) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    for e in events {
        let target = out.iter_mut().rev().find(|o| match (&**o, &e) {
            (Ev::Stdin(a, _), Ev::Stdin(b, _)) | (Ev::Data(a, _), Ev::Data(b, _)) => a == b,
            _ => false,
        });
        match (target, e) {
            (Some(Ev::Stdin(_, acc)), Ev::Stdin(_, d))
            | (Some(Ev::Data(_, acc)), Ev::Data(_, d)) => acc.extend(d),
            (_, e) => out.push(e),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_gives_the_same_events_and_output(
        mut reqs in proptest::collection::vec(req(), 1..6),
        ids in proptest::collection::hash_set(1..=u16::MAX, 6),
        order in proptest::collection::vec(any::<usize>(), 1..40),
        management in proptest::collection::vec(
            (any::<usize>(), proptest::collection::vec(any::<u8>(), 0..6)), 0..3),
        paddings in proptest::collection::vec(prop_oneof![3 => 0..8u8, 1 => any::<u8>()], 1..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        byte_at_a_time in proptest::bool::weighted(0.05),
    ) {
        for (r, id) in reqs.iter_mut().zip(ids) {
            r.id = id;
        }
        let stream = stream(&reqs, &order, &management, &paddings);
        let whole = run(&stream, &[]);
        let mut cuts: Vec<usize> = if byte_at_a_time {
            (1..stream.len()).collect()
        } else {
            cuts.iter().map(|c| c % (stream.len() + 1)).collect()
        };
        cuts.sort_unstable();
        let split = run(&stream, &cuts);
        prop_assert_eq!(&split.1, &whole.1);
        prop_assert_eq!(joined(split.0), joined(whole.0.clone()));
        for r in &reqs {
            prop_assert_eq!(joined(of(&whole.0, r.id)), r.expected());
        }
    }
}

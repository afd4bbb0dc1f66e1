//! A sequence of well-formed-header records with arbitrary types, ids and bodies, fed in
//! arbitrary pieces, with the application ending requests at random. Invariants: never more
//! END_REQUESTs for an id than BEGIN_REQUESTs sent for it, at most one per activation;
//! `active_requests() <= max_requests_per_conn`; no panic.
#![no_main]

use fcgi_proto::record::{HEADER_LEN, Header};
use fcgi_proto::{Connection, Event, Limits};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

const LIMITS: Limits = Limits {
    max_params_bytes: 300,
    max_params_pairs: 8,
    max_name_len: 40,
    max_value_len: 200,
    max_requests_per_conn: 3,
    advertised_max_conns: 10,
    advertised_max_reqs: 30,
};

/// Reads the fuzz input as commands.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (now, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        now
    }
}

#[derive(Default)]
struct Model {
    /// BEGIN_REQUEST records fully sent, per id.
    begins: HashMap<u16, usize>,
    /// END_REQUEST records written, per id.
    ends: HashMap<u16, usize>,
    /// Ids with a Request event and no END yet.
    dispatched: HashMap<u16, bool>,
    /// Output bytes already checked.
    checked: usize,
}

impl Model {
    fn check_output(&mut self, out: &[u8]) {
        while let Some(header) = out
            .get(self.checked..self.checked + HEADER_LEN)
            .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
        {
            let header = Header::parse(header);
            assert_eq!(header.version, 1);
            assert_eq!(header.padding_length, 0);
            if header.record_type == 3 {
                let id = header.request_id;
                assert_ne!(id, 0);
                let ends = self.ends.entry(id).or_default();
                *ends += 1;
                let begins = self.begins.get(&id).copied().unwrap_or(0);
                assert!(*ends <= begins, "END_REQUEST {id} without its own BEGIN");
                self.dispatched.remove(&id);
            } else {
                assert!(matches!(header.record_type, 10 | 11), "unexpected record");
                assert_eq!(header.request_id, 0);
            }
            self.checked += HEADER_LEN + header.body_len();
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Request { id, .. } => {
                assert!(self.dispatched.insert(id, true).is_none());
            }
            Event::Stdin { id, data } | Event::Data { id, data } => {
                assert!(!data.is_empty());
                assert!(self.dispatched.contains_key(&id));
            }
            Event::StdinEnd { id } | Event::DataEnd { id } | Event::Abort { id } => {
                assert!(self.dispatched.contains_key(&id));
            }
            Event::Rejected { .. } => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script(data);
    let mut conn = Connection::new(LIMITS);
    let mut out = Vec::new();
    let mut model = Model::default();
    while let Some(op) = script.byte() {
        // Low nibble: 0..=12 a record type (0 and 12 undefined), 13 the application ending a
        // request, 14 and 15 undefined types 200 and 255.
        let kind = op & 0x0F;
        let id = match op >> 4 {
            0 => 0,
            n @ 1..=12 => u16::from(n),
            _ => u16::from_be_bytes([script.byte().unwrap_or(0), script.byte().unwrap_or(0)]),
        };
        let len = usize::from(script.byte().unwrap_or(0));
        let padding = script.byte().unwrap_or(0) % 9;
        let content = script.bytes(len).to_vec();
        if kind == 13 {
            let before = out.len();
            let active = conn.is_active(id);
            assert_eq!(conn.end_request(id, 0, &mut out), active);
            assert_eq!(out.len() > before, active);
            model.check_output(&out);
            continue;
        }
        let record_type = match kind {
            14 => 200,
            15 => 255,
            k => k,
        };
        let header = Header {
            version: 1,
            record_type,
            request_id: id,
            content_length: content.len() as u16,
            padding_length: padding,
        };
        let mut record = header.encode().to_vec();
        record.extend_from_slice(&content);
        record.extend(std::iter::repeat_n(0, usize::from(padding)));
        let piece = usize::from(script.byte().unwrap_or(255)).max(1);
        if record_type == 1 && id != 0 {
            *model.begins.entry(id).or_default() += 1;
        }
        for chunk in record.chunks(piece) {
            let result = conn.receive(chunk, &mut out, &mut |e| model.event(e));
            assert!(conn.active_requests() <= LIMITS.max_requests_per_conn);
            assert!(conn.max_active_seen() <= LIMITS.max_requests_per_conn);
            model.check_output(&out);
            if result.is_err() {
                return;
            }
        }
    }
    // Ending everything still active writes exactly one END each.
    let begun: Vec<u16> = model.begins.keys().copied().collect();
    for id in begun {
        let active = conn.is_active(id);
        assert_eq!(conn.end_request(id, 0, &mut out), active);
    }
    model.check_output(&out);
    assert_eq!(conn.active_requests(), 0);
});

//! `system_tcp` and `system_udp`: SNMP counters of `/proc/net/snmp` and `/proc/net/netstat`
//! (header line / value line pairs, looked up by column name so missing columns are absent).

use crate::schema;
use crate::source::{HostPaths, Reader};
use crate::value::{delta_opt, percent, Fixed2};
use probe_sdk::record::RecordWriter;
use std::io::{self, Write};

/// TCP columns read, in `system_tcp` order after `tcp_curr_estab`; the last four are TcpExt.
const TCP: [(&str, &str); 15] = [
    ("Tcp", "CurrEstab"),
    ("Tcp", "InSegs"),
    ("Tcp", "OutSegs"),
    ("Tcp", "RetransSegs"),
    ("Tcp", "InErrs"),
    ("Tcp", "ActiveOpens"),
    ("Tcp", "PassiveOpens"),
    ("Tcp", "AttemptFails"),
    ("Tcp", "EstabResets"),
    ("Tcp", "OutRsts"),
    ("Tcp", "InCsumErrors"),
    ("TcpExt", "ListenOverflows"),
    ("TcpExt", "ListenDrops"),
    ("TcpExt", "TCPTimeouts"),
    ("TcpExt", "TCPSynRetrans"),
];

/// UDP columns read, in `system_udp` order.
const UDP: [(&str, &str); 7] = [
    ("Udp", "InDatagrams"),
    ("Udp", "OutDatagrams"),
    ("Udp", "NoPorts"),
    ("Udp", "InErrors"),
    ("Udp", "RcvbufErrors"),
    ("Udp", "SndbufErrors"),
    ("Udp", "InCsumErrors"),
];

/// One reading of the SNMP counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSample {
    /// Values of [`TCP`].
    pub tcp: [Option<u64>; 15],
    /// Values of [`UDP`].
    pub udp: [Option<u64>; 7],
}

/// Fills `out[i]` with the value of `wanted[i]` found in an SNMP-format file.
pub fn fold_snmp(text: &str, wanted: &[(&str, &str)], out: &mut [Option<u64>]) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((sec, names)), Some((vsec, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if sec != vsec {
            continue;
        }
        for (name, value) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            if let Some(i) = wanted.iter().position(|(s, n)| *s == sec && *n == name) {
                // Signed columns (MaxConn = -1) are not among the wanted ones.
                out[i] = value.parse().ok();
            }
        }
    }
}

/// Reads `/proc/net/snmp` and `/proc/net/netstat`.
pub fn sample(paths: &HostPaths, r: &mut Reader) -> NetSample {
    let mut s = NetSample::default();
    if let Some(t) = r.read(&paths.proc("net/snmp")) {
        fold_snmp(t, &TCP, &mut s.tcp);
        fold_snmp(t, &UDP, &mut s.udp);
    }
    if let Some(t) = r.read_optional(&paths.proc("net/netstat")) {
        fold_snmp(t, &TCP, &mut s.tcp);
    }
    s
}

/// Writes `system_tcp` and `system_udp`.
pub fn write<W: Write>(
    prev: &NetSample,
    cur: &NetSample,
    out: &mut RecordWriter<W>,
) -> io::Result<()> {
    let tcp: [Option<u64>; 15] = std::array::from_fn(|i| delta_opt(prev.tcp[i], cur.tcp[i]));
    let retrans_per = tcp[3]
        .zip(tcp[2])
        .map(|(retrans, sent)| Fixed2(percent(retrans as f64, sent as f64)));
    let mut rec = out
        .record(schema::SYSTEM_TCP.name)
        .field("/proc/net/snmp")
        .field(&cur.tcp[0]);
    for v in &tcp[1..11] {
        rec = rec.field(v);
    }
    rec = rec.field(&retrans_per);
    for v in &tcp[11..] {
        rec = rec.field(v);
    }
    rec.end()?;

    let mut rec = out.record(schema::SYSTEM_UDP.name).field("/proc/net/snmp");
    for (p, c) in prev.udp.iter().zip(&cur.udp) {
        rec = rec.field(&delta_opt(*p, *c));
    }
    rec.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_by_name() {
        let text = "Tcp: RtoAlgorithm MaxConn CurrEstab InSegs\nTcp: 1 -1 4 100\n\
                    Udp: InDatagrams OutDatagrams\nUdp: 7 8\n";
        let mut tcp = [None; 15];
        fold_snmp(text, &TCP, &mut tcp);
        assert_eq!(tcp[0], Some(4));
        assert_eq!(tcp[1], Some(100));
        assert_eq!(tcp[2], None, "OutSegs missing from this kernel");
        let mut udp = [None; 7];
        fold_snmp(text, &UDP, &mut udp);
        assert_eq!(&udp[..2], &[Some(7), Some(8)]);
    }
}

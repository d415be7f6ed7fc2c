//! Event descriptions in `event.desc_language` (v2023 feature; `en_US` is the default).
//!
//! Probes write English bodies (`<asctime> <SEV> Entity(<id>) <message>`). For `zh_CN` the
//! daemon matches `<message>` against the English template of the event's entity and metric,
//! and rewrites it with the Chinese template and the same arguments. A message that matches no
//! template is kept as the probe wrote it. Templates use `{}` for each argument, in order.

use std::borrow::Cow;

use crate::config::Language;

/// `(entity_name, metric, English template, Chinese template)`.
const TEMPLATES: &[(&str, &str, &str, &str)] = &[
    (
        "cpu",
        "total_used_per",
        "Too high cpu utilization({}%).",
        "CPU 利用率过高({}%)。",
    ),
    (
        "mem",
        "util",
        "Too high mem utilization({}%).",
        "内存利用率过高({}%)。",
    ),
    (
        "mem",
        "swap_util",
        "Too high swap utilization({}%).",
        "交换空间利用率过高({}%)。",
    ),
    (
        "fs",
        "IUsePer",
        "Too many Inodes consumed({}%).",
        "Inode 使用率过高({}%)。",
    ),
    (
        "fs",
        "UsePer",
        "Too many Blocks used({}%).",
        "磁盘空间使用率过高({}%)。",
    ),
    (
        "disk",
        "util",
        "Disk device saturated({}%).",
        "磁盘设备已饱和({}%)。",
    ),
    (
        "nic",
        "tx_dropped",
        "net device tx queue drops({}).",
        "网卡发送队列丢包({})。",
    ),
    (
        "nic",
        "rx_dropped",
        "net device rx queue drops({}).",
        "网卡接收队列丢包({})。",
    ),
    (
        "nic",
        "tx_errs",
        "net device tx queue errors({}).",
        "网卡发送队列错误({})。",
    ),
    (
        "nic",
        "rx_errs",
        "net device rx queue errors({}).",
        "网卡接收队列错误({})。",
    ),
    (
        "block",
        "latency_req_max",
        "Latency of request operation({}) exceeded threshold, occured on Block({}, disk {}).",
        "块设备请求时延({})超过阈值，发生在块设备({}，磁盘 {})。",
    ),
    (
        "tcp_link",
        "tcp_oom",
        "TCP out of memory({}).",
        "TCP 内存不足({})。",
    ),
    (
        "tcp_link",
        "backlog_drops",
        "TCP backlog queue drops({}).",
        "TCP backlog 队列丢包({})。",
    ),
    (
        "tcp_link",
        "filter_drops",
        "TCP filter drops({}).",
        "TCP 过滤器丢包({})。",
    ),
    (
        "tcp_link",
        "syn_srtt",
        "TCP connection establish timed out({} us).",
        "TCP 建连超时({} 微秒)。",
    ),
    (
        "endpoint",
        "listendrop",
        "TCP listen drops({}).",
        "TCP 监听端口丢包({})。",
    ),
    (
        "endpoint",
        "accept_overflow",
        "TCP accept queue overflow({}).",
        "TCP 全连接队列溢出({})。",
    ),
    (
        "endpoint",
        "syn_overflow",
        "TCP syn queue overflow({}).",
        "TCP 半连接队列溢出({})。",
    ),
    (
        "proc",
        "iowait_us",
        "Process(COMM:{} PID:{}) iowait {} us.",
        "进程(COMM:{} PID:{}) IO 等待 {} 微秒。",
    ),
    (
        "proc",
        "hang_count",
        "Process(COMM:{} PID:{}) hang count {}.",
        "进程(COMM:{} PID:{}) 挂起 {} 次。",
    ),
];

/// Arguments of `message` under `template`, or `None` if it does not match.
fn match_template<'a>(template: &str, message: &'a str) -> Option<Vec<&'a str>> {
    let mut parts = template.split("{}");
    let first = parts.next()?;
    let mut rest = message.strip_prefix(first)?;
    let literals: Vec<&str> = parts.collect();
    let mut args = Vec::with_capacity(literals.len());
    for (i, lit) in literals.iter().enumerate() {
        let end = if i + 1 == literals.len() {
            // The last literal anchors at the end of the message.
            if lit.is_empty() {
                rest.len()
            } else {
                rest.strip_suffix(lit)?.len()
            }
        } else if lit.is_empty() {
            return None;
        } else {
            rest.find(lit)?
        };
        let arg = &rest[..end];
        if arg.is_empty() {
            return None;
        }
        args.push(arg);
        rest = &rest[end + lit.len()..];
    }
    Some(args)
}

fn fill(template: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut parts = template.split("{}");
    if let Some(p) = parts.next() {
        out.push_str(p);
    }
    for (p, a) in parts.zip(args) {
        out.push_str(a);
        out.push_str(p);
    }
    out
}

/// The message with its English description replaced by the template of `lang`.
pub fn translate_message<'a>(
    lang: Language,
    entity_name: &str,
    metric: &str,
    message: &'a str,
) -> Cow<'a, str> {
    if lang == Language::EnUs {
        return Cow::Borrowed(message);
    }
    TEMPLATES
        .iter()
        .filter(|(e, m, _, _)| *e == entity_name && *m == metric)
        .find_map(|(_, _, en, zh)| match_template(en, message).map(|a| fill(zh, &a)))
        .map_or(Cow::Borrowed(message), Cow::Owned)
}

/// The body with the message after `Entity(<entity_id>) ` translated (the whole body if that
/// marker is missing).
pub fn translate_body<'a>(
    lang: Language,
    entity_name: &str,
    entity_id: &str,
    metric: &str,
    body: &'a str,
) -> Cow<'a, str> {
    if lang == Language::EnUs {
        return Cow::Borrowed(body);
    }
    let marker = format!("Entity({entity_id}) ");
    let (head, message) = match body.find(&marker) {
        Some(at) => body.split_at(at + marker.len()),
        None => ("", body),
    };
    match translate_message(lang, entity_name, metric, message) {
        Cow::Borrowed(_) => Cow::Borrowed(body),
        Cow::Owned(m) => Cow::Owned(format!("{head}{m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_body_keeps_time_severity_and_arguments() {
        let body = "Tue Apr 18 20:59:09 2023 WARN Entity(cpu) Too high cpu utilization(95.00%).";
        assert_eq!(
            translate_body(Language::ZhCn, "cpu", "cpu", "total_used_per", body),
            "Tue Apr 18 20:59:09 2023 WARN Entity(cpu) CPU 利用率过高(95.00%)。"
        );
        assert_eq!(
            translate_body(Language::EnUs, "cpu", "cpu", "total_used_per", body),
            body
        );
    }

    #[test]
    fn several_arguments() {
        let m = "Latency of request operation(900) exceeded threshold, occured on Block(sda, disk sda).";
        assert_eq!(
            translate_message(Language::ZhCn, "block", "latency_req_max", m),
            "块设备请求时延(900)超过阈值，发生在块设备(sda，磁盘 sda)。"
        );
    }

    #[test]
    fn unknown_or_unmatched_messages_are_kept() {
        for (e, m, msg) in [
            ("cpu", "total_used_per", "something else"),
            ("cpu", "nosuch", "Too high cpu utilization(1%)."),
            ("cpu", "total_used_per", "Too high cpu utilization(%)."),
        ] {
            assert_eq!(translate_message(Language::ZhCn, e, m, msg), msg);
        }
    }

    #[test]
    fn every_template_round_trips() {
        for (e, m, en, zh) in TEMPLATES {
            let n = en.matches("{}").count();
            assert_eq!(n, zh.matches("{}").count(), "{e}/{m}");
            let args: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let msg = fill(en, &refs);
            assert_eq!(
                translate_message(Language::ZhCn, e, m, &msg),
                fill(zh, &refs)
            );
        }
    }
}
